"""Reliability: bad input gets one clear line, on_nan=raise|skip_batch, SIGTERM/SIGINT checkpoint and resume."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from alt_arch.errors import MixerCapabilityError
from ebt.errors import CheckpointError, ConfigError, DataError, ThinkingDivergedError, TrainingDivergedError
from ebt.objectives.predict import Predict
from ebt.training.checkpoint import load_checkpoint, resolve_ckpt_path
from ebt.training.train import train
from tests.utils import ROOT, compose_config, run_cli

TINY = ["model/objective=predict", "model.dim=16", "data.batch_size=8",
        "data.eval_batches=1", "data.eval_batch_size=16", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false"]



def _write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, dtype=">i4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _mnist(root, train_hw: tuple[int, int], test_hw: tuple[int, int]) -> str:
    """A tiny MNIST stand-in: 20 train and 10 test images of the given sizes."""
    root.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n, hw in (("train", 20, train_hw), ("t10k", 10, test_hw)):
        _write_idx(root / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, *hw)))
        _write_idx(root / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
    return str(root)


MNIST = ["data=mnist", "data.task.val_size=5", "data.task.patch=4", "data.eval_batch_size=5"]

# (overrides, error, message): every bad input a user can give the trainer, each a one-line error naming the fix
BAD_INPUT = {
    # unknown keys anywhere in the model tree (and the data / optimiser / trainer / callback nodes)
    "mixer key": (["+model.mixer.n_head=4"], ConfigError,
                  r"model\.mixer\.n_head is not an option of alt_arch\.mixers\.attention\.Attention \(did you mean "
                  r"model\.mixer\.n_heads\?\); valid keys: n_heads, rope"),
    "backbone key": (["+model.backbone.depth=2"], ConfigError, r"model\.backbone\.depth is not an option of .*Stack"),
    "nested key": (["+model.backbone.norm.epsilon=1e-5"], ConfigError,
                   r"model\.backbone\.norm\.epsilon .* \(did you mean model\.backbone\.norm\.eps\?\)"),
    "mlp key": (["+model.mlp.ratio=2"], ConfigError, r"model\.mlp\.ratio .*valid keys: hidden_ratio"),
    "linear key": (["+model.linear.biases=true"], ConfigError,
                   r"model\.linear\.biases .*did you mean model\.linear\.bias"),
    "objective key": (["model/objective=ebt", "+model.objective.step=3"], ConfigError,
                      r"model\.objective\.step is not an option of ebt\.objectives\.ebt\.EBT \(did you mean "
                      r"model\.objective\.steps\?\)"),
    "model key": (["+model.width=64"], ConfigError, r"model\.width is not an option of the model"),
    "task key": (["+data.task.digits=2"], ConfigError, r"data\.task\.digits .*did you mean data\.task\.n_digits"),
    "data key": (["+data.batchsize=4"], ConfigError, r"data\.batchsize .*did you mean data\.batch_size"),
    "optim key": (["+optim.learning_rate=0.1"], ConfigError, r"optim\.learning_rate is not an option of the optimiser"),
    "trainer key": (["+trainer.max_step=3"], ConfigError, r"trainer\.max_step .*did you mean trainer\.max_steps"),
    "callback key": (["+callbacks.model_checkpoint.every_n_step=5"], ConfigError,
                     r"callbacks\.model_checkpoint\.every_n_step .*ModelCheckpoint"),
    "on_nan value": (["on_nan=ignore"], ConfigError, r"on_nan='ignore' is not one of raise, skip_batch"),
    # incompatible combinations
    "2-D mixer on a sequence": (["model/mixer=hyena", "model.mixer.dims=2"], MixerCapabilityError,
                                r"hyena: dims=2 needs a 2-D spatial_shape \(an image task\)"),
    "image backbone on a causal task": (["model/backbone=metaformer_vision"], MixerCapabilityError,
                                        r"metaformer_vision is a non-causal image backbone"),
    "memory width": (["model/linear=memory", "model.linear.tau=7"], MixerCapabilityError, r"not divisible by tau=7"),
    "fsdp on cpu": (["trainer=fsdp"], ConfigError, r"trainer=fsdp .* CUDA GPUs only"),
    "grid not square": ([*MNIST, "data.task.root={mnist_wide}", "model/mixer=hyena", "model.mixer.dims=2"],
                        MixerCapabilityError, r"Hyena-ND needs a square grid, got \(7, 5\)"),
    # data
    "text too short": (["data=text", "data.task.path={small_text}", "data.task.seq_len=500"], DataError,
                       r"no file has at least 501 bytes \(data\.task\.seq_len \+ 1\); lower data\.task\.seq_len"),
    "no matching files": (["data=text", "data.task.path={empty_dir}"], DataError, r"holds no files matching"),
    "mnist missing": ([*MNIST, "data.task.root={empty_dir}"], DataError, r"train-images-idx3-ubyte\[\.gz\] not found"),
    "images of the wrong size": ([*MNIST, "data.task.root={mnist_mixed}"], DataError,
                                 r"data split 'ood': inputs are 25 tokens of 16 features but the model expects 49 "
                                 r"tokens \(a 7x7 grid\)"),
    # checkpoints
    "folder without checkpoint": (["ckpt_path={empty_dir}"], CheckpointError,
                                  r"is a folder without checkpoints/last\.ckpt"),
    "other architecture": (["model/backbone=looped", "ckpt_path={attention_ckpt}"], CheckpointError,
                           r"does not fit this model \(missing keys: objective\.backbone\..*\(\d+ more\); unexpected "
                           r"keys: objective\.backbone\.blocks\.0\..*; use the same model/\* and data options"),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    (tmp / "empty_dir").mkdir()
    (tmp / "small.txt").write_text("x = 1\n" * 20)
    train(compose_config(["debug=fdr", *TINY], tmp / "attention"))
    return {"empty_dir": tmp / "empty_dir", "small_text": tmp / "small.txt",
            "attention_ckpt": tmp / "attention" / "checkpoints" / "last.ckpt",
            "mnist_wide": _mnist(tmp / "wide", (28, 20), (28, 20)),
            "mnist_mixed": _mnist(tmp / "mixed", (28, 28), (20, 20))}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_gets_one_clear_line(case, inputs, tmp_path):
    overrides, error, message = BAD_INPUT[case]
    with pytest.raises(error, match=message) as info:
        train(compose_config(["debug=fdr", *TINY, *(o.format(**inputs) for o in overrides)], tmp_path / "run"))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("overrides", "message"), [
    (["+model.mixer.n_head=4"], "error: model.mixer.n_head is not an option"),
    # accelerator=cpu: the same error on every machine (with a GPU, trainer=fsdp alone would start training)
    (["trainer=fsdp", "trainer.accelerator=cpu"],
     "error: trainer=fsdp (Lightning's FSDPStrategy) runs on CUDA GPUs only"),
])
def test_cli_bad_input_exits_2_with_one_error_line(overrides, message, tmp_path):
    result = run_cli("train.py", *overrides, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [result.stderr.strip().splitlines()[-1]] and errors[0].startswith(message)


def test_ckpt_path_resolution(tmp_path):
    assert resolve_ckpt_path(None, tmp_path) is None
    assert resolve_ckpt_path("last", tmp_path) is None  # nothing yet: start fresh
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert resolve_ckpt_path("last", tmp_path) == str(tmp_path / "checkpoints" / "last.ckpt")
    assert resolve_ckpt_path(tmp_path, "/elsewhere") == str(tmp_path / "checkpoints" / "last.ckpt")
    assert resolve_ckpt_path("a/b.ckpt", tmp_path) == "a/b.ckpt"


# ------------------------------------------------------------------------------------------------ on_nan
def _faulty_loss(monkeypatch, faults: dict[int, str]) -> None:
    """Make training call ``n`` (from 0) of ``Predict.loss`` return a NaN loss or raise ThinkingDivergedError."""
    original, calls = Predict.loss, [0]

    def loss(self, batch):
        n = calls[0]
        calls[0] += 1
        if faults.get(n) == "think" or faults.get("all") == "think":
            raise ThinkingDivergedError("non-finite energy at thinking step 1 (alpha=1); lower model.objective.alpha")
        value, logs = original(self, batch)
        if faults.get(n) == "nan" or faults.get("all") == "nan":
            value = value * float("nan")
        return value, logs

    monkeypatch.setattr(Predict, "loss", loss)


STEPS = [*TINY, "model.backbone.n_layers=1", "trainer.max_steps=8", "trainer.val_check_interval=8",
         "trainer.log_every_n_steps=1"]


def test_skip_batch_skips_and_counts(monkeypatch, tmp_path):
    _faulty_loss(monkeypatch, {2: "think", 3: "nan", 6: "think"})
    train(compose_config([*STEPS, "on_nan=skip_batch"], tmp_path))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["skipped_batches"] == 3
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert ckpt["skipped_batches"] == 3
    assert {int(s["step"]) for s in ckpt["optimizer_states"][0]["state"].values()} == {5}  # 8 steps - 3 skipped
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    rows = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    assert max(float(r["train/skipped_batches"]) for r in rows if r.get("train/skipped_batches")) == 3


@pytest.mark.parametrize(("fault", "error", "message"), [
    ("nan", TrainingDivergedError, r"training step 2: the training loss is nan; lower optim\.lr .*on_nan=skip_batch"),
    ("think", ThinkingDivergedError, r"training step 2: non-finite energy at thinking step 1 .*on_nan=skip_batch"),
])
def test_on_nan_raise_names_the_step(fault, error, message, monkeypatch, tmp_path):
    _faulty_loss(monkeypatch, {2: fault})
    with pytest.raises(error, match=message):
        train(compose_config(STEPS, tmp_path))


def test_too_many_skips_in_a_row_is_an_error(monkeypatch, tmp_path):
    _faulty_loss(monkeypatch, {"all": "nan"})
    with pytest.raises(TrainingDivergedError, match=r"training step 3: 4 batches in a row skipped"):
        train(compose_config([*STEPS, "on_nan=skip_batch", "max_consecutive_skips=3"], tmp_path))


# ------------------------------------------------------------------------------------------------ signals
SIGNAL_RUN = [*TINY, "model.backbone.n_layers=1", "trainer.max_steps=400", "trainer.val_check_interval=100",
              "trainer.log_every_n_steps=1", "optim.warmup_steps=10", "+logger.csv.flush_logs_every_n_steps=1"]


def _start_and_interrupt(run_dir, signum: int) -> subprocess.CompletedProcess:
    """Start a run, send ``signum`` once its metrics.csv shows >= 10 training steps, wait for it to end."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py"), *SIGNAL_RUN,
                             f"hydra.run.dir={run_dir}"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    metrics, deadline = run_dir / "csv" / "metrics.csv", time.time() + 120
    while not (metrics.is_file() and metrics.read_text().count("\n") > 10) and proc.poll() is None:
        assert time.time() < deadline, "the run never logged 10 steps"
        time.sleep(0.02)
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def test_sigterm_saves_a_checkpoint_and_resume_matches_an_uninterrupted_run(tmp_path):
    run = tmp_path / "run"
    killed = _start_and_interrupt(run, signal.SIGTERM)
    assert killed.returncode == 143, killed.stdout[-3000:]
    assert "interrupted by signal 15" in killed.stdout and not (run / "summary.json").exists()
    stopped_at = load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"]
    assert 0 < stopped_at < 400

    resumed = run_cli("train.py", *SIGNAL_RUN, f"hydra.run.dir={run}", "ckpt_path=last", cwd=tmp_path,
                      env={"OMP_NUM_THREADS": "1"})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 400 and summary["resumed_from"] == str(run / "checkpoints" / "last.ckpt")
    steps = [int(r["step"]) for r in csv.DictReader((run / "csv" / "metrics.csv").open()) if r["train/loss"]]
    assert steps == list(range(400))  # the rows from before the signal were kept, none twice

    full = train(compose_config(SIGNAL_RUN, tmp_path / "full"))
    assert summary["metrics"]["val/loss"] == pytest.approx(full["val/loss"], abs=1e-6)
    a = load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]
    b = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.ckpt")["state_dict"]
    for key, value in b.items():
        torch.testing.assert_close(a[key], value, atol=1e-6, rtol=0)


def test_sigint_stops_at_a_step_boundary_with_a_checkpoint(tmp_path):
    killed = _start_and_interrupt(tmp_path / "run", signal.SIGINT)
    assert killed.returncode == 130, killed.stdout[-3000:]
    assert "interrupted by signal 2" in killed.stdout and "ckpt_path=last" in killed.stdout
    assert 0 < load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] < 400


@pytest.mark.parametrize(("key", "value"), [("on_nan", "skip_batch"), ("max_consecutive_skips", 3)])
def test_top_level_training_key_under_optim_is_refused_with_its_spelling(key, value, tmp_path):
    """Every optim key the validator accepts must work: on_nan / max_consecutive_skips are top-level keys."""
    from ebt.training.build import build_lit_model, build_task

    cfg = compose_config([*TINY, f"+optim.{key}={value}"], tmp_path)
    with pytest.raises(ConfigError, match=rf"optim\.{key} is not an option of the optimiser: {key} is a top-level "
                                          rf"key; write {key}={value}"):
        build_lit_model(cfg, build_task(cfg))
    cfg = compose_config([*TINY, f"{key}={value}"], tmp_path)
    assert getattr(build_lit_model(cfg, build_task(cfg)), key) == value
