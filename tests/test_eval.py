"""scripts/eval.py: any checkpoint (predictor or EBT) on any split, the same metrics validation logs."""

import csv

import pytest
from omegaconf import OmegaConf

from ebt.analysis.evaluate import evaluate
from ebt.errors import ConfigError
from ebt.training.train import train
from tests.utils import ROOT, compose_config, run_cli

FIXTURE = ROOT / "tests" / "fixtures" / "ebt_tokenformer_layout_v1.ckpt"
TINY = ["model/objective=predict", "model.dim=32", "data.batch_size=16", "data.eval_batch_size=32",
        "data.eval_batches=2", "trainer.max_steps=2", "trainer.val_check_interval=2",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def options(**values):
    return OmegaConf.merge(OmegaConf.load(ROOT / "configs" / "eval.yaml"), OmegaConf.create(values))


def test_a_predictor_evaluates_like_its_final_validation_and_on_the_test_split(tmp_path):
    run = tmp_path / "run"
    final = train(compose_config(TINY, run))
    rows = evaluate(options(ckpt=str(run), splits=["val", "ood", "test"]))
    assert [r["split"] for r in rows] == ["val", "ood", "test"]
    assert rows[0]["acc"] == pytest.approx(final["val/acc"]) and rows[0]["loss"] == pytest.approx(final["val/loss"])
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
