"""World-model rollouts (scripts/rollout.py): autoregressive feedback, the same context for every model, outputs,
errors."""

import csv

import pytest
import torch
from omegaconf import OmegaConf

from ebt.analysis.task_eval import rollouts
from ebt.errors import ConfigError
from ebt.objectives.base import Objective
from ebt.options import read_options
from ebt.training.build import build_lit_model, build_task
from tests.utils import compose_config, run_cli

TINY = ["data=bouncing", "data.task.frame_size=8", "data.task.radius=1.0", "data.task.frames=5", "model.dim=16",
        "model.mixer.n_heads=2", "model.backbone.n_layers=1", "kernels=torch"]


class Shift(Objective):
    """A fake world model: the next frame is the current one plus ``delta``."""

    def __init__(self, task, delta: float) -> None:
        super().__init__(task=task)
        self.delta = delta

    def predict(self, batch):
        return batch["inputs"] + self.delta


def roll_out(*argv: str) -> list[dict]:
    """``scripts/rollout.py argv...`` in-process: the rows."""
    return rollouts.main(read_options(list(argv), rollouts.DEFAULTS))


def save_run(tmp_path, name: str, *extra: str):
    cfg = compose_config([*TINY, *extra], tmp_path / name)
    task = build_task(cfg)
    torch.manual_seed(0)
    model = build_lit_model(cfg, task)
    ckpt = tmp_path / name / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": model.state_dict(),
                "hyper_parameters": {"config": OmegaConf.to_container(cfg, resolve=True)}}, ckpt)
    return tmp_path / name, model.objective.eval()


def test_a_rollout_feeds_its_own_predictions_back():
    task = build_task(compose_config(TINY, "/tmp/unused"))
    context = torch.rand(2, 3, 64)
    predicted = rollouts.rollout(Shift(task, 0.25), context, 4)
    assert predicted.shape == (2, 4, 64)
    for h in range(4):
        torch.testing.assert_close(predicted[:, h], context[:, -1] + 0.25 * (h + 1))
    clipped = rollouts.rollout(Shift(task, 0.25), context, 4, clip=True)
    assert clipped.max() <= 1 and torch.equal(clipped[:, -1], torch.ones(2, 64))
    torch.testing.assert_close(rollouts.copy_last(context, 2), context[:, -1:].expand(-1, 2, -1))


def test_the_first_rolled_out_frame_is_the_one_step_prediction(tmp_path):
    """Horizon 1 from c context frames == the model's teacher-forced prediction at position c - 1."""
    _, predictor = save_run(tmp_path, "predictor", "model/objective=predict")
    _, ebt = save_run(tmp_path, "ebt", "model/objective=ebt")
    batch = predictor.task.make_batch("val", 0, 3)
    context = batch["inputs"][:, :2]
    with torch.no_grad():
        teacher = predictor.predict(batch)[:, 1]
    torch.testing.assert_close(rollouts.rollout(predictor, context, 1)[:, 0], teacher, atol=1e-6, rtol=1e-6)
    init = torch.zeros_like(batch["targets"])  # the EBT's noise is seeded the same way for both
    ebt.config.init = "zeros"
    with torch.no_grad():
        ebt.log_alpha.fill_(0.0)  # alpha = 1: float32 rounding of the energy is not magnified 100x
    full = ebt.think(batch, steps=ebt.steps, init=init).candidates[-1][:, 1].detach()
    torch.testing.assert_close(rollouts.rollout(ebt, context, 1)[:, 0], full, atol=1e-5, rtol=1e-5)


def test_rollout_script_writes_tables_and_pictures(tmp_path):
    predictor_run, _ = save_run(tmp_path, "predictor", "model/objective=predict")
    ebt_run, _ = save_run(tmp_path, "ebt", "model/objective=ebt")
    rows = roll_out(f"ebt_ckpt={ebt_run}", f"predictor_ckpt={predictor_run}", "context=2", "batches=1", "batch_size=4",
                    "samples=2", "splits=[val,ood]", "ebt_steps=1")
    out = ebt_run / "rollouts"
    with open(out / "rollouts.csv") as f:
        written = list(csv.DictReader(f))
    assert len(written) == len(rows) == 2 * 3 * 3  # 2 splits x (predictor, EBT, copy_last) x horizons 1..3
    assert {r["method"] for r in rows} == {"predictor", "EBT", "copy_last"}
    assert all(torch.isfinite(torch.tensor(r["psnr"])) for r in rows)
    for name in ("rollouts.png", "rollouts_val.png", "rollouts_ood.png", "rollouts.md"):
        assert (out / name).stat().st_size > 0
    assert "[ood] PSNR (dB) per frame predicted ahead" in (out / "rollouts.md").read_text()


def test_rollout_logs_to_wandb_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    predictor_run, _ = save_run(tmp_path, "predictor", "model/objective=predict")
    roll_out(f"predictor_ckpt={predictor_run}", "batches=1", "batch_size=2", "splits=[val]", "wandb=true",
             f"out_dir={tmp_path / 'out'}")
    assert (tmp_path / "out" / "rollouts_val.png").is_file()
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_bad_options_fail_clearly(tmp_path):
    predictor_run, _ = save_run(tmp_path, "predictor", "model/objective=predict")
    ebt_run, _ = save_run(tmp_path, "ebt", "model/objective=ebt")
    other_run, _ = save_run(tmp_path, "other", "model/objective=predict", "data.task.frames=6")
    cases = [
        ([], "pass ebt_ckpt=RUN and/or predictor_ckpt=RUN"),
        ([f"predictor_ckpt={predictor_run}", "context=4", "horizon=2"], "do not fit the 5-frame sequences"),
        ([f"predictor_ckpt={predictor_run}", "context=0"], "context=0 must be an integer >= 1"),
        ([f"ebt_ckpt={predictor_run}"], "Predict checkpoint; this option needs an EBT"),
        ([f"predictor_ckpt={ebt_run}"], "EBT checkpoint; this option needs a predictor"),
        ([f"ebt_ckpt={ebt_run}", f"predictor_ckpt={other_run}"], "roll out models of the same task"),
        ([f"predictor_ckpt={predictor_run}", "splits=[nope]"], "splits"),
        ([f"predictor_ckpt={predictor_run}", "steps=3"], r"unknown option\(s\) steps; valid keys: ebt_ckpt"),
    ]
    for argv, match in cases:
        with pytest.raises(ConfigError, match=match):
            roll_out(*argv)


def test_rollout_cli_error_is_one_line(tmp_path):
    predictor_run, _ = save_run(tmp_path, "predictor", "model/objective=predict")
    result = run_cli("rollout.py", f"predictor_ckpt={predictor_run}", "data.task.frame_size=12", cwd=tmp_path,
                     timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "does not fit this model" in lines[0], lines
