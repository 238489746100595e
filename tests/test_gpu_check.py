"""scripts/gpu_check.py: its CPU-runnable parts (the smoke plan end to end, the summary table, the no-GPU error)."""

import importlib.util
import subprocess
import sys

import pytest

from tests.utils import ROOT, run_if

SCRIPT = ROOT / "scripts" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # subprocesses end to end (~20 s); .ci/run runs the slow tests too
def test_smoke_plan_runs_every_benchmark_stage_and_writes_the_summary(tmp_path):
    out = tmp_path / "results"
    result = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out), "--stages", "kernels",
                             "bench_kernels", "bench_ebt"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    summary = (out / "summary.md").read_text()
    for stage in ("kernels", "bench_kernels", "bench_ebt"):
        assert f"| {stage} | ok |" in summary, summary
        assert (out / f"{stage}.log").is_file()
    assert "passed" in summary and "GB/s" in summary and "ebt" in summary
    assert (out / "kernels.csv").is_file() and (out / "ebt.csv").is_file()


def test_the_full_plan_stays_inside_eight_minutes_and_trains_on_the_gpu(tmp_path):
    plan = load_script().commands(tmp_path, smoke=False)
    assert sum(limit for _, limit, _ in plan.values()) <= 480
    assert "trainer=gpu" in plan["train"][0] and plan["kernels"][2]["TRITON_INTERPRET"] == "0"


def test_a_failed_stage_is_reported_and_fails_the_check(tmp_path):
    module = load_script()
    row = module.run_stage("broken", [sys.executable, "-c", "raise SystemExit(3)"], 60, {}, tmp_path)
    assert row["status"] == "failed (exit 3)" and (tmp_path / "broken.log").is_file()


@run_if(no_gpu=True)
def test_without_a_gpu_the_full_check_refuses_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        line for line in result.stderr.splitlines() if "no CUDA device here" in line]
