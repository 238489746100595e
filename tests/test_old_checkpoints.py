"""Checkpoints written before the package layout changed keep working: think, grow and resume.

``tests/fixtures/ebt_tokenformer_layout_v1.ckpt`` was written by ``scripts/train.py`` when the linear parts lived in
``alt_arch/pattention.py`` (and the trainer in flat ``ebt/*.py`` modules), with these overrides (3 steps, 92 kB)::

    experiment=tokenformer model/objective=ebt model.dim=16 model.backbone.n_layers=1 trainer.max_steps=3
    trainer.val_check_interval=3 data.batch_size=8 data.eval_batches=1 data.eval_batch_size=8
    callbacks.model_checkpoint=null kernels=torch

Its stored config names ``alt_arch.pattention.pattention``; restoring maps it to ``alt_arch.linears.pattention``.
Callbacks that left a module which stays are mapped by name (``ebt.training.checkpoint.MOVED_NAMES``).
"""

import shutil

import torch
from hydra.utils import get_object

from ebt.objectives.ebt import EBT
from ebt.training.checkpoint import load_checkpoint, stored_config, upgrade_config
from ebt.training.progress import model_summary, progress_bar
from ebt.training.restore import load_run
from ebt.training.train import train
from tests.utils import ROOT, compose_config, run_cli

FIXTURE = ROOT / "tests" / "fixtures" / "ebt_tokenformer_layout_v1.ckpt"
OVERRIDES = ["experiment=tokenformer", "model/objective=ebt", "model.dim=16", "model.backbone.n_layers=1",
             "trainer.val_check_interval=3", "data.batch_size=8", "data.eval_batches=1", "data.eval_batch_size=8",
             "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
             "callbacks.model_checkpoint=null", "kernels=torch"]


def test_the_fixture_uses_the_old_module_paths():
    raw = load_checkpoint(FIXTURE)["hyper_parameters"]["config"]["model"]["linear"]["_target_"]
    assert raw == "alt_arch.pattention.pattention"
    assert stored_config(load_checkpoint(FIXTURE), FIXTURE)["model"]["linear"]["_target_"] == \
        "alt_arch.linears.pattention.pattention"


def test_old_callback_targets_name_their_new_place():
    old = {"callbacks": {"progress_bar": {"_target_": "ebt.training.summary.progress_bar"},
                         "model_summary": {"_target_": "ebt.summary.model_summary"}}}
    callbacks = upgrade_config(old)["callbacks"]
    assert [get_object(c["_target_"]) for c in callbacks.values()] == [progress_bar, model_summary]


def test_an_old_checkpoint_restores_and_thinks(tmp_path):
    run = load_run(FIXTURE)
    assert isinstance(run.objective, EBT)
    batch = run.task.make_batch("val", 0, 4)
    metrics = run.objective.evaluate(batch)
    assert torch.isfinite(metrics["loss"])
    result = run_cli("think.py", f"ckpt={FIXTURE}", "steps=[1,2]", "best_of=[1]", "eval_batches=1",
                     "eval_batch_size=4", f"out_dir={tmp_path}/thinking", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "thinking" / "thinking.csv").is_file()


def test_an_old_checkpoint_grows(tmp_path):
    out = tmp_path / "grown.ckpt"
    result = run_cli("grow.py", f"ckpt={FIXTURE}", "slots=+2", f"out={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "extra_slots" in load_checkpoint(out)["hyper_parameters"]["config"]["model"]["linear"]


def test_an_old_checkpoint_resumes(tmp_path):
    ckpt = tmp_path / "old.ckpt"
    shutil.copy(FIXTURE, ckpt)
    metrics = train(compose_config([*OVERRIDES, "trainer.max_steps=4", f"ckpt_path={ckpt}"], tmp_path / "run"))
    assert "val/acc" in metrics
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == 4
