"""The trainer end to end: CLI smoke runs per logger, learning, exact resume, clear errors on bad input."""

import json

import pytest
import torch

from ebt.errors import CheckpointError, ConfigError, DataError
from ebt.training.checkpoint import load_checkpoint
from ebt.training.train import train
from tests.utils import compose_config, run_cli, run_if

TINY = ["model/objective=predict", "model.dim=32", "data.batch_size=16", "data.eval_batch_size=32",
        "data.eval_batches=2",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


@pytest.mark.parametrize("logger", ["csv", "wandb", "tensorboard"])
def test_fast_dev_run_from_the_command_line(logger, tmp_path):
    result = run_cli("train.py", "debug=fdr", f"logger={logger}", f"hydra.run.dir={tmp_path}/run", *TINY,
                     cwd=tmp_path, env={"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 1 and "val/acc" in summary["metrics"] and "ood/acc" in summary["metrics"]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_default_task_learns(tmp_path):
    overrides = [*TINY, "model.dim=64", "data.task.n_digits=2", "data.task.ood_digits=3", "trainer.max_steps=400",
                 "trainer.val_check_interval=400", "optim.warmup_steps=20", "optim.lr=3e-3", "data.batch_size=32"]
    start = train(compose_config([*overrides, "trainer.max_steps=1"], tmp_path / "start"))
    end = train(compose_config(overrides, tmp_path / "end"))
    assert start["val/acc"] < 0.05
    assert end["val/acc"] > 0.3, end  # chance is ~1e-3 (3 answer digits)
    assert end["val/tok_acc"] > start["val/tok_acc"] + 0.3
    csv = (tmp_path / "end" / "csv" / "metrics.csv").read_text()
    assert "train/loss" in csv and "val/acc" in csv


def test_resume_continues_to_the_same_result(tmp_path):
    common = [*TINY, "trainer.val_check_interval=10", "optim.schedule_steps=30", "optim.warmup_steps=5"]
    full = train(compose_config([*common, "trainer.max_steps=30"], tmp_path / "full"))
    train(compose_config([*common, "trainer.max_steps=12"], tmp_path / "part"))
    part_ckpt = tmp_path / "part" / "checkpoints" / "last.ckpt"
    resumed = train(compose_config([*common, "trainer.max_steps=30", f"ckpt_path={part_ckpt}"], tmp_path / "resumed"))
    assert resumed["val/loss"] == pytest.approx(full["val/loss"], abs=1e-6)
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.ckpt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 30
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, atol=1e-6, rtol=0)


def test_text_task_reads_any_bytes(tmp_path):
    corpus = tmp_path / "corpus.bin"
    corpus.write_bytes(bytes(range(256)) * 40 + b"\xff\xfe\x80 not utf-8 \xc3\x28")
    metrics = train(compose_config(["data=text", f"data.task.path={corpus}", "data.task.seq_len=32", "debug=fdr",
                                    *TINY], tmp_path / "run"))
    assert "val/bpb" in metrics


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (["data=text", "data.task.path=/no/such/file"], DataError, "data.task.path=/no/such/file does not exist"),
        (["data=text", "data.task.path={empty}"], DataError, "no file has at least"),
        pytest.param(["trainer.accelerator=gpu"], ConfigError, "no CUDA GPU", marks=run_if(no_gpu=True)),
        (["ckpt_path=/no/such.ckpt"], CheckpointError, "does not exist"),
        (["ckpt_path={corrupt}"], CheckpointError, "unreadable"),
    ],
)
def test_bad_input_gets_a_clear_error(overrides, error, message, tmp_path):
    empty, corrupt = tmp_path / "empty.txt", tmp_path / "corrupt.ckpt"
    empty.write_text("")
    corrupt.write_bytes(b"PK\x03\x04 truncated")
    overrides = [o.format(empty=empty, corrupt=corrupt) for o in overrides]
    with pytest.raises(error, match=message):
        train(compose_config(["debug=fdr", *TINY, *overrides], tmp_path / "run"))


def test_checkpoint_from_another_architecture_is_refused(tmp_path):
    train(compose_config(["debug=fdr", *TINY], tmp_path / "small"))
    ckpt = tmp_path / "small" / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match="shape mismatch: .*objective"):
        train(compose_config(["debug=fdr", *TINY, "model.dim=48", f"ckpt_path={ckpt}"], tmp_path / "big"))


@run_if(min_gpus=1)
def test_gpu_accelerator_trains_where_there_is_a_gpu(tmp_path):
    metrics = train(compose_config(["debug=fdr", *TINY, "trainer.accelerator=gpu"], tmp_path / "run"))
    assert "val/acc" in metrics and "ood/acc" in metrics


def test_cli_prints_one_line_error(tmp_path):
    result = run_cli("train.py", "data=text", "data.task.path=/no/such/file", f"hydra.run.dir={tmp_path}/run",
                     cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: data.task.path=/no/such/file does not exist")


@run_if(no_gpu=True)
def test_triton_kernels_without_gpu_or_interpreter_are_one_error_line_before_training(tmp_path):
    result = run_cli("train.py", "kernels=triton", *TINY, "model/objective=ebt", f"hydra.run.dir={tmp_path}/run",
                     cwd=tmp_path, env={"TRITON_INTERPRET": "0"})
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: kernels=triton: kernels backend 'triton' cannot run here"), last
    assert "Traceback" not in result.stderr and not (tmp_path / "run" / "checkpoints").exists()
