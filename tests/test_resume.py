"""Exact resume for every objective, the resume's config against the checkpoint's, and checkpoint integrity.

The EBT draws random numbers everywhere (initial candidates, Langevin noise, random step counts, step-size jitter,
replay picks), so a resumed EBT run equals the uninterrupted one only if nothing shifts torch's global stream.
"""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

import ebt.training.train
from ebt.errors import CheckpointError, ConfigError, ThinkingDivergedError, TrainingDivergedError
from ebt.training.checkpoint import load_checkpoint, weights_digest
from ebt.training.train import train
from tests.utils import ROOT, compose_config

EBT = ["model/objective=ebt_s2", "model.dim=32", "model.backbone.n_layers=1", "data.batch_size=8",
       "data.eval_batches=1", "data.eval_batch_size=16", "trainer.enable_progress_bar=false",
       "trainer.enable_model_summary=false", "optim.warmup_steps=3", "trainer.max_steps=20",
       "trainer.val_check_interval=5"]
REPLAY = [*EBT, "model/objective=ebt", "model.objective.replay_size=16", "model.objective.replay_fraction=0.5",
          "model.objective.langevin_std=0.02"]


class SignalAt(L.Callback):
    """Send this process SIGTERM after training step ``step`` (``during="validation"``: during its validation)."""

    def __init__(self, step: int, during: str = "training") -> None:
        self.step, self.during = step, during

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if self.during == "training" and trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)

    def on_validation_batch_end(self, trainer: L.Trainer, *args) -> None:
        if self.during == "validation" and trainer.global_step == self.step and trainer.state.fn == "fit":
            os.kill(os.getpid(), signal.SIGTERM)


def _assert_same_weights(a: Path, b: Path) -> None:
    first, second = load_checkpoint(a), load_checkpoint(b)
    assert first["global_step"] == second["global_step"]
    for key, value in first["state_dict"].items():
        assert torch.equal(second["state_dict"][key], value), key


@pytest.mark.parametrize(("overrides", "during"), [(EBT, "training"), (EBT, "validation"), (REPLAY, "training")],
                         ids=["ebt_s2", "ebt_s2-during-validation", "replay"])
def test_sigterm_then_resume_is_bit_exact(overrides, during, monkeypatch, tmp_path):
    train(compose_config(overrides, tmp_path / "full"))
    make_callbacks = ebt.training.train.make_callbacks
    monkeypatch.setattr(ebt.training.train, "make_callbacks", lambda cfg, task: [*make_callbacks(cfg, task),
                                                                         SignalAt(10, during)])
    with pytest.raises(SystemExit) as stopped:
        train(compose_config(overrides, tmp_path / "run"))
    assert stopped.value.code == 143
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == 10
    monkeypatch.setattr(ebt.training.train, "make_callbacks", make_callbacks)
    resumed = train(compose_config([*overrides, "ckpt_path=last"], tmp_path / "run"))
    _assert_same_weights(*(tmp_path / run / "checkpoints" / "last.ckpt" for run in ("full", "run")))
    full = json.loads((tmp_path / "full" / "summary.json").read_text())["metrics"]
    assert resumed == full


def test_replay_buffer_is_checkpointed(tmp_path):
    train(compose_config([*REPLAY, "trainer.max_steps=3"], tmp_path))
    (buffer,) = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["replay_buffers"].values()
    assert buffer["candidates"].shape[0] == 16 and "targets" in buffer["samples"]


def test_kill_9_then_resume_is_bit_exact(tmp_path):
    """kill -9 once a checkpoint exists (maybe mid-write), resume with ckpt_path=last: equal to a run never killed."""
    overrides = [*EBT, "trainer.max_steps=150", "trainer.val_check_interval=10", "logger=csv"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py"), *overrides, f"hydra.run.dir={run}",
                             "trainer.accelerator=cpu"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (run / "checkpoints" / "last.ckpt").is_file() and proc.poll() is None:
        assert time.time() < deadline, "no checkpoint after 120 s"
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (run / "summary.json").exists(), proc.stderr.read()[-2000:]
    proc.stderr.close()
    (run / "checkpoints" / ".last.ckpt.stale.tmp").write_bytes(b"half a checkpoint")  # as a kill mid-write leaves
    resumed = train(compose_config([*overrides, "ckpt_path=last"], run))
    assert not list((run / "checkpoints").glob(".*.tmp"))
    full = train(compose_config(overrides, tmp_path / "full"))
    _assert_same_weights(tmp_path / "full" / "checkpoints" / "last.ckpt", run / "checkpoints" / "last.ckpt")
    assert resumed == full


# ------------------------------------------------------------------------------------------------ resume config
PREDICT = ["model/objective=predict", "model.dim=32", "model.backbone.n_layers=1", "data.batch_size=8",
           "data.eval_batches=1", "data.eval_batch_size=16", "trainer.enable_progress_bar=false",
           "trainer.enable_model_summary=false", "trainer.max_steps=4", "trainer.val_check_interval=4"]


@pytest.fixture(scope="module")
def predictor_ckpt(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("predictor")
    train(compose_config(PREDICT, run))
    return run / "checkpoints" / "last.ckpt"


def test_resume_with_another_model_option_is_refused(predictor_ckpt, tmp_path):
    # the same shapes (dim 32 with 4 or 8 heads): only the stored config tells them apart
    with pytest.raises(ConfigError, match=r"resuming .*last\.ckpt with other model options than the run that wrote "
                                          r"it \(model\.mixer\.n_heads: 4 -> 8\); .*drop these overrides") as info:
        train(compose_config([*PREDICT, "model.mixer.n_heads=8", f"ckpt_path={predictor_ckpt}"], tmp_path))
    assert "\n" not in str(info.value)


def test_resume_lists_every_other_difference(predictor_ckpt, tmp_path, capsys):
    train(compose_config([*PREDICT, "trainer.max_steps=6", "optim.lr=2e-3", f"ckpt_path={predictor_ckpt}"], tmp_path))
    out = capsys.readouterr().out
    assert "warning: resuming" in out and "  trainer.max_steps: 4 -> 6" in out and "  optim.lr: 0.001 -> 0.002" in out
    assert "paths." not in out and "default_root_dir" not in out and "ckpt_path" not in out


# ------------------------------------------------------------------------------------------------ integrity
def _rewrite(source: Path, target: Path, change) -> Path:
    checkpoint = torch.load(source, map_location="cpu", weights_only=False)
    change(checkpoint)
    torch.save(checkpoint, target)
    return target


def test_checkpoint_checksum_catches_altered_weights(predictor_ckpt, tmp_path):
    checkpoint = load_checkpoint(predictor_ckpt)
    assert checkpoint["weights_sha256"] == weights_digest(checkpoint["state_dict"])

    def alter(c):
        next(iter(c["state_dict"].values())).mul_(1.5)

    altered = _rewrite(predictor_ckpt, tmp_path / "altered.ckpt", alter)
    message = r"checkpoint .*altered\.ckpt: the weights do not match their checksum \(altered or corrupt\)"
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(altered)
    with pytest.raises(CheckpointError, match=message):
        train(compose_config([*PREDICT, f"ckpt_path={altered}"], tmp_path / "run"))
    old = _rewrite(predictor_ckpt, tmp_path / "old.ckpt", lambda c: c.pop("weights_sha256"))
    assert "weights_sha256" not in load_checkpoint(old)  # written before checksums: still loads


@pytest.mark.parametrize("part", ["weights", "optimizer"])
def test_nan_in_a_checkpoint_says_it_is_corrupt(part, predictor_ckpt, tmp_path):
    def poison(c):
        if part == "weights":
            next(iter(c["state_dict"].values())).view(-1)[0] = float("nan")
            c["weights_sha256"] = weights_digest(c["state_dict"])  # consistent checksum: the NaN check must catch it
        else:
            next(iter(c["optimizer_states"][0]["state"].values()))["exp_avg"].view(-1)[0] = float("nan")

    with pytest.raises(CheckpointError, match=r"checkpoint .*bad\.ckpt is corrupt: NaN in "):
        load_checkpoint(_rewrite(predictor_ckpt, tmp_path / "bad.ckpt", poison))


# ------------------------------------------------------------------------------------------------ causes
@pytest.mark.parametrize("objective", ["ebt", "predict"])
def test_nan_from_a_huge_learning_rate_names_optim_lr(objective, tmp_path):
    overrides = [*PREDICT, f"model/objective={objective}", "optim.lr=1e6", "trainer.max_steps=10"]
    with pytest.raises((ThinkingDivergedError, TrainingDivergedError), match=r"training step \d+: the parameters"
                       r"('| are).*lower optim\.lr \(now 1e\+06\)") as info:
        train(compose_config(overrides, tmp_path))
    assert str(info.value).index("optim.lr") < str(info.value).find("model.objective.alpha") or \
        "model.objective.alpha" not in str(info.value)


# ------------------------------------------------------------------------------------------------ files
def test_atomic_writes_respect_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        train(compose_config([*PREDICT, "trainer.max_steps=1"], tmp_path))
    finally:
        os.umask(previous)
    for path in (tmp_path / "checkpoints" / "last.ckpt", tmp_path / "summary.json"):
        assert oct(path.stat().st_mode & 0o777) == oct(0o644), path


def test_full_disk_names_the_last_good_checkpoint(monkeypatch, tmp_path):
    save = torch.save

    def full_after_step_4(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("global_step", 0) > 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_after_step_4)
    last = tmp_path / "checkpoints" / "last.ckpt"
    message = rf"the disk is full: writing .*\.ckpt failed \(No space left on device\); the last good checkpoint is " \
              rf"{last}; free space"
    with pytest.raises(CheckpointError, match=message):
        train(compose_config([*PREDICT, "trainer.max_steps=8"], tmp_path))
    assert load_checkpoint(last)["global_step"] == 4 and not list(last.parent.glob(".*.tmp"))
