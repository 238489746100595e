"""Ablation grids: a small multirun through the CLI, collect.py's tables, failing cells, re-runs, launcher configs."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ebt.training import grid
from tests.utils import CONFIG_DIR, ROOT, group_options, run_cli

TINY = ["debug=fdr", "model.dim=32", "data.batch_size=16", "data.eval_batch_size=32", "data.eval_batches=2"]


def _statuses(sweep_dir) -> dict[str, str]:
    return {d.name: grid.status_of(d) for d in grid.job_dirs(sweep_dir)}


def test_grid_runs_and_collects(tmp_path):
    sweep = tmp_path / "grid"
    result = run_cli("train.py", "-m", "+sweep=mixers", "model/mixer=attention,pool", "seed=0,1", *TINY,
                     f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    statuses = _statuses(sweep)
    assert sorted(statuses.values()) == ["done"] * 4
    assert all(not grid.UNSAFE.search(name) for name in statuses)  # one valid folder per job

    collected = run_cli("collect.py", f"dirs={sweep}", cwd=tmp_path, env={"MPLBACKEND": "Agg"})
    assert collected.returncode == 0, collected.stderr[-3000:]
    rows = list(csv.DictReader((sweep / "collect" / "jobs.csv").open()))
    assert len(rows) == 4
    assert {"job", "status", "model/mixer", "seed", "val/acc", "ood/acc", "seconds"} <= set(rows[0])
    assert {(r["model/mixer"], r["seed"], r["status"]) for r in rows} == {
        (m, s, "done") for m in ("attention", "pool") for s in ("0", "1")}
    groups = list(csv.DictReader((sweep / "collect" / "groups.csv").open()))
    assert [(g["model/mixer"], g["done"]) for g in groups] == [("attention", "2"), ("pool", "2")]
    assert {"val/acc mean", "val/acc std"} <= set(groups[0])
    job_table = collected.stdout.split("\n\n")[1].splitlines()
    assert job_table[0].startswith("| status | model/mixer | seed | val/acc | ood/acc") and len(job_table) == 2 + 4
    assert (sweep / "collect" / "bars.png").stat().st_size > 0


def test_failing_cell_is_recorded_and_rerun_skips_finished_jobs(tmp_path):
    """Exit status of a multirun with a failed job: 1, after every job ran (a single run's user error exits 2)."""
    sweep = tmp_path / "grid"
    args = ["-m", "+sweep=thinking", "model.objective.steps=1", "model.objective.alpha=-1,1.0", *TINY,
            f"hydra.sweep.dir={sweep}"]
    first = run_cli("train.py", *args, cwd=tmp_path)
    assert first.returncode == grid.FAILED_EXIT == 1, first.stderr[-3000:]
    assert "error: model.objective.alpha must be > 0, got -1" in first.stderr
    statuses = _statuses(sweep)
    assert sorted(statuses.values()) == ["done", "failed"]
    failed = next(d for d in grid.job_dirs(sweep) if statuses[d.name] == "failed")
    assert "alpha must be > 0" in grid.read_status(failed)["error"]
    done = next(d for d in grid.job_dirs(sweep) if statuses[d.name] == "done")
    assert "val/acc" in grid.read_status(done)["metrics"]
    stamp = (done / "status.json").stat().st_mtime_ns

    second = run_cli("train.py", *args, cwd=tmp_path)
    assert second.returncode == 1
    assert f"skip: {done} is already done" in second.stdout
    assert (done / "status.json").stat().st_mtime_ns == stamp  # not run again
    assert "alpha must be > 0" in second.stderr  # the failed one was tried again

    collected = run_cli("collect.py", f"dirs={sweep}", cwd=tmp_path, env={"MPLBACKEND": "Agg"})
    assert collected.returncode == 0, collected.stderr[-3000:]
    assert "| failed | -1 |" in collected.stdout and "ConfigError: model.objective.alpha" in collected.stdout


def test_submitit_local_launcher_runs_a_job(tmp_path):
    sweep = tmp_path / "grid"
    result = run_cli("train.py", "-m", "+sweep=mixers", "hydra/launcher=submitit_local", "model/mixer=pool", "seed=0",
                     *TINY, f"hydra.sweep.dir={sweep}", cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(_statuses(sweep).values()) == ["done"]


def test_unexpected_error_in_a_multirun_is_recorded_and_swallowed(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(grid, "_hydra_job", lambda: (tmp_path, True, ["seed=0"]))

    def boom():
        raise RuntimeError("kaput")

    assert grid.run_job(boom, (), (ValueError,), report=lambda e: None) is None
    status = grid.read_status(tmp_path)
    assert status["status"] == "failed" and status["error"] == "RuntimeError: kaput"
    assert any("kaput" in line for line in status["traceback"])
    assert "failed:" in capsys.readouterr().err
    assert grid.run_job(lambda: {"val/acc": 1.0}, (), (ValueError,), report=lambda e: None) == {"val/acc": 1.0}
    assert grid.read_status(tmp_path)["metrics"] == {"val/acc": 1.0}
    assert grid.run_job(boom, (), (ValueError,), report=lambda e: None) == {"val/acc": 1.0}  # done: skipped

    single = tmp_path / "single"
    monkeypatch.setattr(grid, "_hydra_job", lambda: (single, False, []))
    with pytest.raises(RuntimeError, match="kaput"):  # a single run still fails loudly, and writes no status
        grid.run_job(boom, (), (ValueError,), report=lambda e: None)
    assert grid.read_status(single) is None


def test_a_signal_records_interrupted_and_stops_the_grid(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(grid, "_hydra_job", lambda: (tmp_path, True, ["seed=0"]))

    def preempted():
        raise SystemExit(143)  # what ebt.training.train.train does after SIGTERM, once last.ckpt is saved

    with pytest.raises(SystemExit):
        grid.run_job(preempted, (), (ValueError,), report=lambda e: None)
    status = grid.read_status(tmp_path)
    assert status["status"] == grid.status_of(tmp_path) == "interrupted" and status["exit_code"] == 143
    assert "ckpt_path=last" in capsys.readouterr().err


def test_sigterm_then_ckpt_path_last_resumes_the_grid_in_place(tmp_path):
    """The documented grid resume: SIGTERM during the second job, then the same command plus ckpt_path=last skips
    the finished job and resumes the interrupted one from its own last.ckpt, in its own folder."""
    sweep = tmp_path / "grid"
    args = ["-m", "+sweep=mixers", "model/mixer=pool", "seed=0,1", "model.dim=32", "data.batch_size=16",
            "data.eval_batch_size=32", "data.eval_batches=2", "trainer.max_steps=300",
            "trainer.val_check_interval=10", f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py"), *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not list(sweep.glob("*seed-1*/checkpoints/best-*.ckpt")):  # training is under way (first validation done)
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-3000:]
    first, second = grid.job_dirs(sweep)
    assert "seed-0" in first.name and "seed-1" in second.name
    assert _statuses(sweep) == {first.name: "done", second.name: "interrupted"}
    stamp = (first / "status.json").stat().st_mtime_ns

    resumed = run_cli("train.py", *args, "ckpt_path=last", cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"skip: {first} is already done" in resumed.stdout
    assert (first / "status.json").stat().st_mtime_ns == stamp
    assert _statuses(sweep) == {first.name: "done", second.name: "done"}  # the same folders, no new ones
    summary = json.loads((second / "summary.json").read_text())
    assert summary["resumed_from"] == str(second / "checkpoints" / "last.ckpt") and summary["steps"] == 300


def test_run_control_keys_stay_out_of_job_folder_names():
    cfg = _compose(["seed=1", "ckpt_path=last", "logger=csv", "+sweep=mixers"])
    assert cfg.hydra.job.override_dirname == "seed-1"
    assert set(grid.RUN_CONTROL_KEYS) == set(cfg.hydra.job.config.override_dirname.exclude_keys)
    assert grid.grid_tags(["ckpt_path=last", "logger=wandb", "logger.wandb.project=x", "seed=1"]) == "seed=1"


def test_job_folder_names_are_valid_and_distinct():
    assert grid.job_dirname("model/mixer-attention__seed-0") == "model.mixer-attention__seed-0"
    assert grid.job_dirname("") == "default"
    names = {grid.job_dirname(s) for s in ["x-[1,2]", "x-[1;2]", "x-" + "a" * 300, "x-" + "a" * 301]}
    assert len(names) == 4
    assert all(len(n) <= grid.MAX_NAME + 9 and not grid.UNSAFE.search(n) for n in names)
    assert grid.grid_group("outputs/grids/mixers/2025-01-01_00-00-00_12ab") == "mixers_2025-01-01_00-00-00_12ab"
    assert grid.grid_tags(["+sweep=mixers", "model/mixer=pool", "seed=1"]) == "model/mixer=pool,seed=1"


def _compose(overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return compose("train", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize(("launcher", "target"), [
    ("basic", "BasicLauncher"), ("joblib", "JoblibLauncher"), ("parallel", "JoblibLauncher"),
    ("submitit_local", "LocalLauncher"), ("submitit_slurm", "SlurmLauncher"), ("slurm", "SlurmLauncher"),
])
def test_launcher_configs_compose(launcher, target):
    cfg = _compose([f"hydra/launcher={launcher}", "+sweep=mixers"])
    assert cfg.hydra.launcher._target_.endswith(target)
    if launcher == "slurm":
        assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.timeout_min > 0
    if launcher == "parallel":
        assert cfg.hydra.launcher.n_jobs == 2


@pytest.mark.parametrize("name", group_options("sweep"))
def test_every_sweep_composes_with_each_value(name):
    params = _compose([f"+sweep={name}"]).hydra.sweeper.params
    assert params, f"configs/sweep/{name}.yaml has no hydra.sweeper.params"
    for key, values in params.items():
        for value in str(values).split(","):
            cfg = _compose([f"+sweep={name}", f"{key}={value}"])
            assert OmegaConf.select(cfg, "trainer.max_steps") <= 1500  # grids stay small enough for a CPU
