"""scripts/think.py: settings table, forward-pass counts, best-of-N, adaptive stopping, outputs, verifier
diagnostics, errors."""

import csv
import math

import pytest
import torch
from hydra import compose, initialize_config_dir

from ebt.analysis.thinking.report import improvement_report, improvement_rows, think
from ebt.analysis.thinking.thinking_eval import evaluate_thinking
from ebt.errors import CheckpointError, ConfigError, DataError
from ebt.objectives.search import forward_passes, sample_energy, think_best_of
from ebt.training.build import build_lit_model, build_task
from ebt.training.restore import load_run
from tests.utils import CONFIG_DIR, compose_config, run_cli

TINY = ["model.dim=16", "model.backbone.n_layers=1", "kernels=torch", "data.eval_batch_size=8",
        "data.eval_batches=1"]


def write_checkpoint(tmp_path, name: str, *overrides: str):
    tiny = [o for o in TINY if not (o.startswith("model.backbone.") and "model/backbone=looped" in overrides)]
    cfg = compose_config([*tiny, *overrides], tmp_path / name)
    torch.manual_seed(0)
    model = build_lit_model(cfg, build_task(cfg))
    path = tmp_path / name / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return path


def think_config(ckpt, *overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return compose("think", overrides=[f"ckpt={ckpt}", *overrides])


@pytest.fixture(scope="module")
def ebt_ckpt(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("think"), "ebt", "model/objective=ebt")


def test_one_row_per_setting_with_its_forward_passes_and_outputs(ebt_ckpt, tmp_path):
    baseline = write_checkpoint(tmp_path, "predict", "model/objective=predict")
    rows = think(think_config(ebt_ckpt, "steps=[1,3]", "best_of=[1,2]", "splits=[val,ood]", "energy_tol=1e-3",
                              f"baseline_ckpt={baseline}", f"out_dir={tmp_path / 'out'}"))
    ebt_rows = [r for r in rows if r["mode"] != "predictor"]
    assert len(ebt_rows) == 2 * (2 * 2 + 2)  # splits x best_of x (steps + one adaptive row)
    for r in ebt_rows:
        assert r["forward_passes"] == pytest.approx(r["best_of"] * r["steps_used"] + (r["best_of"] > 1) * r["best_of"])
        if r["mode"] == "fixed":
            assert r["steps_used"] == r["steps"]
        else:  # the adaptive rule never exceeds its cap
            assert 1 <= r["steps_used"] <= 3
    predictors = [r for r in rows if r["mode"] == "predictor"]
    assert [r["split"] for r in predictors] == ["val", "ood"] and all(r["forward_passes"] == 1 for r in predictors)
    png = (tmp_path / "out" / "thinking.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    csv_lines = (tmp_path / "out" / "thinking.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(rows) and "forward_passes" in csv_lines[0]
    for r in ebt_rows:  # the verifier columns: on fixed-mode rows, in range (an untrained model: all wrong)
        if r["mode"] == "fixed":  # every sample of eval_batches=2 (think.yaml) x data.eval_batch_size=8
            assert r["samples"] == 2 * 8 and 0 <= r["right"] <= 1 and -1 <= r["energy_error_rho"] <= 1
            assert math.isnan(r["energy_auroc"]) if r["right"] in (0, 1) else 0 <= r["energy_auroc"] <= 1
        else:
            assert "energy_auroc" not in r
    for name in ("right", "energy_auroc", "energy_error_rho"):
        assert name in csv_lines[0]
    with open(tmp_path / "out" / "verifier.csv") as f:
        verifier = list(csv.DictReader(f))
    assert [(v["split"], v["best_of"], v["steps"]) for v in verifier] == [
        (r["split"], str(r["best_of"]), str(r["steps"])) for r in ebt_rows if r["mode"] == "fixed"]
    assert {v["right_rule"] for v in verifier} == {"right = every scored token's argmax right"}
    assert all(v["note"] == "all wrong: AUROC undefined" for v in verifier if float(v["right"]) == 0)
    energy_png = (tmp_path / "out" / "thinking_energy.png").read_bytes()
    assert energy_png[:8] == b"\x89PNG\r\n\x1a\n" and len(energy_png) > 10_000
    report = (tmp_path / "out" / "thinking.md").read_text()
    assert "| split | best_of | steps | samples | right | energy_auroc | energy_error_rho |" in report
    assert "Energy along the thinking steps (best-of-1):\nval: energy " in report and "\nood: energy " in report
    assert "(no best-of-1 row at the trained 2 steps: add 2 to steps=)" in report  # trained 2, steps=[1,3]


def _row(split, steps, best_of, acc, loss, mode="fixed"):
    return {"split": split, "mode": mode, "best_of": best_of, "steps": steps, "acc": acc, "loss": loss}


def test_the_improvement_setting_is_chosen_on_val_and_read_on_the_other_splits():
    """Val picks best-of-4 at 2 steps; ood is read there (0.5 -> 0.45: -10 %), not at its own best
    (4 steps, best-of-1: 0.7); fixed columns at 2x and 4x the trained 1 step need no choice."""
    rows = [_row("val", 1, 1, 0.5, 1.0), _row("val", 2, 1, 0.55, 0.9), _row("val", 4, 1, 0.52, 0.8),
            _row("val", 2, 4, 0.6, 0.95),
            _row("ood", 1, 1, 0.5, 2.0), _row("ood", 2, 1, 0.4, 2.2), _row("ood", 4, 1, 0.7, 1.8),
            _row("ood", 2, 4, 0.45, 2.1), _row("ood", 0, 1, 0.9, 0.1, mode="predictor")]
    table = {(r["split"], r["metric"]): r for r in improvement_rows(rows, {"acc": "max", "loss": "min"}, 1)}
    assert table["val", "acc"]["setting"] == "best-of-4, 2 steps" and table["val", "acc"]["improvement"] == \
        "+20.0% (in-sample)"
    assert table["ood", "acc"]["selected on val"] == 0.45 and table["ood", "acc"]["improvement"] == "-10.0%"
    assert table["ood", "acc"]["2 steps (2x), best-of-1"] == "-20.0%"
    assert table["ood", "acc"]["4 steps (4x), best-of-1"] == "+40.0%"
    assert table["ood", "loss"]["setting"] == "best-of-1, 4 steps" and table["ood", "loss"]["improvement"] == "+10.0%"
    report = improvement_report(rows, {"acc": "max"}, 1)
    assert "chosen on val" in report and "in-sample" in report
    assert "No val rows" in improvement_report([r for r in rows if r["split"] == "ood"], {"acc": "max"}, 1)


def test_forward_pass_count():
    assert forward_passes(8, 1) == 8 and forward_passes(8, 4) == 36 and forward_passes(2.5, 2) == 7


def test_best_of_one_is_plain_thinking_and_best_of_n_picks_the_lowest_energy(ebt_ckpt):
    run = load_run(ebt_ckpt)
    batch = run.task.make_batch("val", 0, 4)
    torch.manual_seed(3)
    plain = run.objective.think(batch, steps=3).candidates[-1]
    torch.manual_seed(3)
    best = think_best_of(run.objective, batch, [3], 1)[3]["prediction"]
    torch.testing.assert_close(best, plain)
    torch.manual_seed(3)
    many = think_best_of(run.objective, batch, [3], 3)[3]
    torch.manual_seed(3)
    energies = run.objective.think({k: v.repeat(3, 1) for k, v in batch.items()}, steps=3,
                                   final_energy=True).energies[-1]
    assert many["energy"] == pytest.approx(float(energies.unflatten(0, (3, 4)).min(0).values.mean()), abs=1e-5)


def test_best_of_n_returns_the_chosen_candidates_energies_per_element_and_per_sample(ebt_ckpt):
    run = load_run(ebt_ckpt)
    batch = run.task.make_batch("val", 0, 4)
    torch.manual_seed(3)
    out = think_best_of(run.objective, batch, [1, 2], 3)
    for s in (1, 2):
        assert out[s]["energies"].shape == batch["targets"].shape  # addition: one energy per position
        assert float(out[s]["energy"]) == pytest.approx(float(out[s]["energies"].mean()))
        torch.testing.assert_close(out[s]["sample_energy"], sample_energy(out[s]["energies"], run.task, batch))
        scored = batch["targets"] != -100
        expected = (out[s]["energies"] * scored).sum(1) / scored.sum(1)
        torch.testing.assert_close(out[s]["sample_energy"], expected)


def test_a_task_s_own_sample_error_and_sample_correct_are_honoured(ebt_ckpt):
    run = load_run(ebt_ckpt)
    calls = []

    def sample_correct(prediction, batch):
        calls.append("correct")
        return torch.arange(prediction.shape[0]) % 2 == 0  # every other sample right

    def sample_error(prediction, batch):
        calls.append("error")
        return torch.full((prediction.shape[0],), 0.25)

    run.task.sample_correct, run.task.sample_error = sample_correct, sample_error
    rows = evaluate_thinking(run, steps=[1, 2], best_of=[1], splits=["val"], batches=2, batch_size=4)
    assert calls.count("correct") == calls.count("error") == 4  # 2 batches x 2 step counts
    for r in rows:
        assert r["samples"] == 8 and r["right"] == 0.5 and 0 <= r["energy_auroc"] <= 1
        assert math.isnan(r["energy_error_rho"]) and r["verifier_note"] == "errors all equal: rho undefined"
        assert r["right_rule"].endswith(".sample_correct")


def test_adaptive_stop_uses_one_step_when_everything_converged_at_once(ebt_ckpt, tmp_path):
    rows = think(think_config(ebt_ckpt, "steps=[4]", "best_of=[1]", "splits=[val]", "energy_tol=1e9",
                              f"out_dir={tmp_path}"))
    adaptive = [r for r in rows if r["mode"] == "adaptive"]
    assert adaptive[0]["steps_used"] == 1


@pytest.mark.parametrize(("override", "error", "message"), [
    ("steps=[0,2]", ConfigError, r"steps=\[0, 2\] must be a non-empty list of integers >= 1"),
    ("best_of=[-1]", ConfigError, "best_of"),
    ("energy_tol=-1", ConfigError, "energy_tol"),
    ("splits=[nope]", ConfigError, "unknown for this task"),
])
def test_bad_settings_get_clear_errors(ebt_ckpt, override, error, message):
    with pytest.raises(error, match=message):
        think(think_config(ebt_ckpt, override))


def test_wrong_checkpoints_get_clear_errors(ebt_ckpt, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        think(think_config(tmp_path / "missing.ckpt"))
    predictor = write_checkpoint(tmp_path, "predict", "model/objective=predict")
    with pytest.raises(ConfigError, match="is a Predict checkpoint; think.py needs an EBT"):
        think(think_config(predictor))
    other_task = write_checkpoint(tmp_path, "digits", "data=digits", "model/objective=predict")
    with pytest.raises(ConfigError, match="same task"):
        think(think_config(ebt_ckpt, f"baseline_ckpt={other_task}"))


def test_command_line_on_a_trained_checkpoint(tmp_path):
    train = run_cli("train.py", *TINY, "model/objective=ebt", "trainer.max_steps=3", "trainer.val_check_interval=3",
                    f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-2000:]
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    done = run_cli("think.py", f"ckpt={ckpt}", "steps=[1,2]", "best_of=[1]", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| val | fixed | 1 | 2 |" in done.stdout and (tmp_path / "run" / "thinking" / "thinking.png").is_file()
    assert (tmp_path / "run" / "thinking" / "thinking_energy.png").is_file() and "energy_auroc" in done.stdout
    val_loss = next(line for line in done.stdout.splitlines() if line.startswith("| val | loss |"))
    ood_loss = next(line for line in done.stdout.splitlines() if line.startswith("| ood | loss |"))
    assert "(in-sample)" in val_loss and "(in-sample)" not in ood_loss and "chosen on val" in done.stdout
    bad = run_cli("think.py", f"ckpt={ckpt}", "steps=[0]", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: steps=[0]")


def test_looped_backbone_is_evaluated_at_each_number_of_loops(tmp_path):
    ckpt = write_checkpoint(tmp_path, "looped", "model/objective=predict", "model/backbone=looped")
    rows = think(think_config(ckpt, "loops=[1,3]", "splits=[val]", f"out_dir={tmp_path / 'out'}"))
    assert [(r["split"], r["loops"]) for r in rows] == [("val", 1), ("val", 3)]
    assert rows[0]["loss"] != rows[1]["loss"]  # the loop count really changed the computation
    assert (tmp_path / "out" / "loops.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ConfigError, match="needs a looped backbone"):
        think(think_config(write_checkpoint(tmp_path, "stack", "model/objective=predict"), "loops=[2]"))


def test_a_looped_predictor_is_its_own_loops_axis_beside_the_ebt(ebt_ckpt, tmp_path):
    looped = write_checkpoint(tmp_path, "looped", "model/objective=predict", "model/backbone=looped")
    rows = think(think_config(ebt_ckpt, "steps=[1,2]", "best_of=[1]", "splits=[val]", f"looped_ckpt={looped}",
                              "looped_loops=[1,4]", f"out_dir={tmp_path / 'out'}"))
    loops = [r for r in rows if r["mode"] == "loops"]
    # pre 1 + loop 1 + post 1 blocks: 4 loops = 6 block evaluations = 2 passes of the same-parameter 3-block stack
    assert [(r["loops"], r["forward_passes"]) for r in loops] == [(1, 1.0), (4, 2.0)]
    assert (tmp_path / "out" / "thinking.png").read_bytes()[:4] == b"\x89PNG"
    assert "| val | loops |" in (tmp_path / "out" / "thinking.md").read_text()
    stack = write_checkpoint(tmp_path, "stack", "model/objective=predict")
    with pytest.raises(ConfigError, match="is not a looped predictor"):
        think(think_config(ebt_ckpt, f"looped_ckpt={stack}"))


def test_a_run_folder_stands_for_its_last_checkpoint(ebt_ckpt, capsys):
    run_dir = ebt_ckpt.parent.parent
    rows = think(think_config(run_dir, "steps=[1,2]", "best_of=[1]", "eval_batches=1"))
    assert {r["split"] for r in rows} == {"val", "ood"}  # the task's evaluation splits by default
    assert (run_dir / "thinking" / "thinking.csv").is_file()
    err = capsys.readouterr().err
    assert "thinking: settings 2/4, batch 1/1" in err and "thinking: settings 4/4, batch 1/1" in err  # progress


def test_moved_corpus_and_a_task_without_ood_split(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    ckpt = write_checkpoint(tmp_path, "text", "model/objective=ebt", "data=text", f"data.task.path={corpus}",
                            "data.task.seq_len=16")
    moved = corpus.rename(tmp_path / "moved.txt")
    with pytest.raises(DataError, match="corpus.txt"):
        think(think_config(ckpt, "steps=[1]", "best_of=[1]"))
    rows = think(think_config(ckpt, "steps=[1]", "best_of=[1]", f"+data.task.path={moved}"))
    assert [r["split"] for r in rows] == ["val"]  # the task has no ood split: the defaults still work
    with pytest.raises(ConfigError, match="nope"):
        think(think_config(ckpt, "+data.task.nope=1"))


@pytest.mark.parametrize("override", ["eval_batches=0", "eval_batches=-2", "eval_batch_size=0"])
def test_zero_or_negative_evaluation_sizes_are_refused(ebt_ckpt, override):
    with pytest.raises(ConfigError, match=f"{override} must be an integer >= 1"):
        think(think_config(ebt_ckpt, override))


def test_baseline_must_be_a_predictor_and_ckpt_is_required(ebt_ckpt):
    with pytest.raises(ConfigError, match="is a EBT checkpoint; the baseline is a predictor"):
        think(think_config(ebt_ckpt, f"baseline_ckpt={ebt_ckpt}"))
    with (initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)),
          pytest.raises(ConfigError, match="ckpt= is required")):
        think(compose("think"))


def test_backtracking_is_switched_on_for_the_evaluation_of_a_checkpoint_trained_without_it(ebt_ckpt, tmp_path):
    overshooting = write_checkpoint(tmp_path, "big_steps", "data=linear_solve", "data.task.n=4", "model/objective=ebt",
                                    "model.objective.energy_form=squared", "model.objective.alpha=1e8")  # overshoots

    def energies(*overrides):
        rows = think(think_config(overshooting, "steps=[1,2,4,8]", "best_of=[1]", "splits=[val]", f"out_dir={tmp_path}",
                                  *overrides))
        return [r["energy"] for r in rows if r["mode"] == "fixed"]

    plain, undone = energies(), energies("backtrack=true")
    assert energies("backtrack=false") == plain  # the run's own setting (off)
    assert all(later <= earlier + 1e-6 for earlier, later in zip(undone, undone[1:], strict=False))
    assert any(later > earlier for earlier, later in zip(plain, plain[1:], strict=False))  # plain steps overshoot
    with pytest.raises(ConfigError, match="backtrack='sometimes' must be true, false or null"):
        think(think_config(ebt_ckpt, "backtrack=sometimes"))
