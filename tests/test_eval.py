"""scripts/eval.py: any checkpoint (predictor or EBT) on any split, the same metrics validation logs."""

import csv
import json

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from ebt.analysis.thinking.thinking_eval import evaluate_thinking
from ebt.analysis.tools.evaluate import evaluate
from ebt.errors import ConfigError
from ebt.objectives.base import prediction_loss
from ebt.tasks.base import IGNORE_INDEX
from ebt.training.build import build_datamodule, build_lit_model, build_task
from ebt.training.restore import load_run
from ebt.training.train import train
from tests.utils import ROOT, compose_config, run_cli

FIXTURE = ROOT / "tests" / "fixtures" / "ebt_tokenformer_layout_v1.ckpt"
TINY = ["model/objective=predict", "model.dim=32", "data.batch_size=16", "data.eval_batch_size=32",
        "data.eval_batches=2", "trainer.max_steps=2", "trainer.val_check_interval=2",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def options(**values):
    return OmegaConf.merge(OmegaConf.load(ROOT / "configs" / "eval.yaml"), OmegaConf.create(values))


EBT_RUN = ["model/objective=ebt", "model.dim=16", "model.backbone.n_layers=1", "model.objective.eval_langevin_std=0.05",
           "data.batch_size=8", "data.eval_batch_size=16", "data.eval_batches=2", "trainer.max_steps=3",
           "trainer.val_check_interval=3", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
           "kernels=torch", "seed=3"]


def test_a_predictor_evaluates_like_its_final_validation_and_on_the_test_split(tmp_path):
    run = tmp_path / "run"
    final = train(compose_config(TINY, run))
    rows = evaluate(options(ckpt=str(run), splits=["val", "ood", "test"]))
    assert [r["split"] for r in rows] == ["val", "ood", "test"]
    assert rows[0]["acc"] == pytest.approx(final["val/acc"]) and rows[0]["loss"] == pytest.approx(final["val/loss"])
    # both are totals over the split: summed CE / scored tokens, right tokens / scored tokens, right
    # sequences / sequences; the batches score different numbers of tokens, so a mean of batch means is another number
    model = load_run(run)
    ce = scored = right = exact = 0.0
    batch_losses = []
    with torch.no_grad():
        for i in range(2):
            batch = model.task.make_batch("val", i, 32)
            logits, targets = model.objective.predict(batch), batch["targets"]
            mask = targets != IGNORE_INDEX
            correct = (logits.argmax(-1) == targets) & mask
            loss = prediction_loss(model.task, logits, batch)
            ce, scored = ce + float(loss) * int(mask.sum()), scored + int(mask.sum())
            right, exact = right + int(correct.sum()), exact + int((correct | ~mask).all(-1).sum())
            batch_losses.append(float(loss))
    samples = 2 * 32
    for values in (final, {f"val/{k}": v for k, v in rows[0].items()}):
        assert values["val/loss"] == pytest.approx(ce / scored, rel=1e-5)
        assert values["val/tok_acc"] == pytest.approx(right / scored, rel=1e-6)
        assert values["val/acc"] == pytest.approx(exact / samples, rel=1e-6)
    batch_mean = sum(batch_losses) / 2
    assert abs(batch_mean - ce / scored) > 1e-4 * ce / scored  # the check above tells the two apart
    with open(run / "eval" / "eval.csv") as f:
        assert [r["split"] for r in csv.DictReader(f)] == ["val", "ood", "test"]
    assert (run / "eval" / "eval.md").read_text().startswith("Predict on addition")


def test_an_ebt_checkpoint_reports_every_thinking_step_from_the_command_line(tmp_path):
    result = run_cli("eval.py", f"ckpt={FIXTURE}", "splits=[val]", "eval_batches=1", "eval_batch_size=8",
                     f"out_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "eval.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert {"acc", "loss", "acc_step0", "acc_step4", "energy_step2"} <= set(row)


def test_bad_options_are_one_error_line(tmp_path):
    with pytest.raises(ConfigError, match="unknown for this task"):
        evaluate(options(ckpt=str(FIXTURE), splits=["nope"]))
    with pytest.raises(ConfigError, match="eval_batches=0 must be an integer >= 1"):
        evaluate(options(ckpt=str(FIXTURE), eval_batches=0))
    result = run_cli("eval.py", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error: ckpt= is required")


def test_summary_eval_and_think_agree_on_a_noisy_ebt_whatever_the_global_stream(tmp_path):
    """Validation (summary.json), eval.py and think.py give one EBT checkpoint the same noise."""
    run = tmp_path / "run"
    train(compose_config(EBT_RUN, run))
    summary = json.loads((run / "summary.json").read_text())["metrics"]
    torch.manual_seed(123)  # the global stream's state must not matter
    rows = {r["split"]: r for r in evaluate(options(ckpt=str(run)))}
    again = {r["split"]: r for r in evaluate(options(ckpt=str(run)))}
    assert rows == again
    for split in ("val", "ood"):
        for name in ("loss", "acc", "energy_step2", "loss_step4"):
            assert rows[split][name] == pytest.approx(summary[f"{split}/{name}"], rel=1e-5, abs=1e-7), (split, name)
    other = {r["split"]: r for r in evaluate(options(ckpt=str(run), seed=1))}
    assert other["val"]["loss"] != pytest.approx(rows["val"]["loss"], rel=1e-5)  # the noise matters to this EBT
    trained = evaluate_thinking(load_run(run), steps=[2], best_of=[1], splits=["val"], batches=2, batch_size=16)
    assert trained[0]["loss"] == pytest.approx(summary["val/loss"], rel=1e-5)
    assert trained[0]["acc"] == pytest.approx(summary["val/acc"], rel=1e-6)


def test_two_validations_of_one_model_are_identical_and_leave_the_global_stream_alone(tmp_path):
    cfg = compose_config(EBT_RUN, tmp_path)
    task = build_task(cfg)
    model, data = build_lit_model(cfg, task), build_datamodule(cfg, task)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        inference_mode=False)  # thinking takes gradients (as configs/trainer sets)
    results = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        state = torch.get_rng_state()
        results.append(trainer.validate(model, datamodule=data, verbose=False))
        assert torch.equal(torch.get_rng_state(), state)  # validation draws from a fork
    assert results[0] == results[1] and "val/loss" in results[0][0]
