"""Run folders are protected: one run at a time (a lock), no silent replacement of results, no stale temporaries,
and an unwritable folder is one clear line before anything runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ebt.errors import ConfigError, EnvironmentSetupError
from ebt.training.train import train
from tests.utils import compose_config, run_cli

TINY = ["model/objective=predict", "model.dim=32", "model.backbone.n_layers=1", "data.batch_size=8",
        "data.eval_batches=1", "data.eval_batch_size=16", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "trainer.max_steps=2", "trainer.val_check_interval=2"]

HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.write(fd, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
time.sleep(60)
"""


@pytest.fixture
def held_lock(tmp_path):
    """Another process holding ``<run>/.lock``, as a run in progress does."""
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run / ".lock")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    yield run, holder.pid
    holder.kill()
    holder.wait()
    holder.stdout.close()


def test_a_second_run_in_a_locked_folder_is_refused(held_lock):
    run, pid = held_lock
    with pytest.raises(ConfigError, match=rf"run folder {run} is in use by another run \(pid {pid}\); wait for it to "
                                          r"end, or start this run in another folder") as info:
        train(compose_config(TINY, run))
    assert "\n" not in str(info.value) and not (run / "checkpoints").exists()


def test_cli_locked_folder_exits_2_with_one_error_line(held_lock, tmp_path):
    run, pid = held_lock
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("the running run's config\n")
    result = run_cli("train.py", *TINY, f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: run folder {run} is in use by another run (pid {pid}); wait for it to end, or start "
                      f"this run in another folder (hydra.run.dir=<folder>)"]
    assert "Traceback" not in result.stderr
    assert (run / ".hydra" / "config.yaml").read_text() == "the running run's config\n"  # refused before Hydra wrote


def test_cli_unwritable_run_folder_is_one_error_line(tmp_path):
    run = _read_only_folder(tmp_path)
    result = run_cli("train.py", *TINY, f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: output folder {run} is not writable")


def test_a_fresh_start_does_not_replace_results(tmp_path):
    train(compose_config(TINY, tmp_path))
    summary = (tmp_path / "summary.json").read_text()
    with pytest.raises(ConfigError, match=rf"run folder {tmp_path} already holds a run's results \(summary\.json, "
                                          r"checkpoints/last\.ckpt\); resume it with ckpt_path=last, .*overwrite=true"):
        train(compose_config(TINY, tmp_path))
    assert (tmp_path / "summary.json").read_text() == summary
    resumed = train(compose_config([*TINY, "trainer.max_steps=3", "ckpt_path=last"], tmp_path))  # resume: allowed
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 3 and resumed
    train(compose_config([*TINY, "overwrite=true", "trainer.max_steps=1"], tmp_path))  # explicit: replaced
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 1
    assert not list((tmp_path / "checkpoints").glob("best-step2*"))  # the old run's checkpoints went with it


def test_stale_temporary_checkpoints_are_removed(tmp_path, capsys):
    (tmp_path / "checkpoints").mkdir(parents=True)
    stale = tmp_path / "checkpoints" / ".last.ckpt.k2j3h4.tmp"  # what a kill during a checkpoint write leaves
    stale.write_bytes(b"half a checkpoint")
    train(compose_config(TINY, tmp_path))
    assert not stale.exists() and f"removed {stale}" in capsys.readouterr().out


def _read_only_folder(tmp_path: Path) -> Path:
    if os.geteuid() != 0:  # permissions stop everyone but root
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        return folder / "run"
    if sys.platform.startswith("linux"):  # nothing can be created under /proc
        return Path("/proc/ebt-test-run")
    pytest.skip("no read-only folder for root on this platform")


def test_unwritable_output_folder_is_one_line_before_anything_runs(tmp_path):
    run = _read_only_folder(tmp_path)
    message = rf"output folder {run} is not writable \(.+\); run in a writable folder \(hydra\.run\.dir=<folder>\)"
    with pytest.raises(EnvironmentSetupError, match=message) as info:
        train(compose_config(TINY, run))
    assert "\n" not in str(info.value)
