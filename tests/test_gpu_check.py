"""scripts/gpu_check.py (:mod:`ebt.benchmarks.gpu_check`): its CPU-runnable parts (the smoke plan end to end, the
summary table, the no-GPU error)."""

import subprocess
import sys

import pytest

from ebt.benchmarks import gpu_check
from tests.utils import ROOT, run_cli, run_if

SCRIPT = ROOT / "scripts" / "gpu_check.py"


@pytest.mark.slow  # subprocesses end to end (~20 s); .ci/run runs the slow tests too
def test_smoke_plan_runs_every_benchmark_stage_and_writes_the_summary(tmp_path):
    out = tmp_path / "results"
    result = subprocess.run([sys.executable, str(SCRIPT), "smoke=true", f"out={out}",
                             "stages=[kernels,bench_kernels,bench_ebt]"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    summary = (out / "summary.md").read_text()
    for stage in ("kernels", "bench_kernels", "bench_ebt"):
        assert f"| {stage} | ok |" in summary, summary
        assert (out / f"{stage}.log").is_file()
    assert "passed" in summary and "GB/s" in summary and "ebt" in summary
    assert (out / "kernels.csv").is_file() and (out / "ebt.csv").is_file()


def test_the_full_plan_stays_inside_eight_minutes_and_trains_on_the_gpu(tmp_path):
    plan = gpu_check.commands(tmp_path, smoke=False)
    assert sum(limit for _, limit, _ in plan.values()) <= 480
    assert "trainer=gpu" in plan["train"][0] and plan["kernels"][2]["TRITON_INTERPRET"] == "0"


def test_a_failed_stage_is_reported_and_fails_the_check(tmp_path):
    row = gpu_check.run_stage("broken", [sys.executable, "-c", "raise SystemExit(3)"], 60, {}, tmp_path)
    assert row["status"] == "failed (exit 3)" and (tmp_path / "broken.log").is_file()


@run_if(no_gpu=True)
def test_without_a_gpu_the_full_check_refuses_in_one_line(tmp_path):
    result = run_cli("gpu_check.py", f"out={tmp_path}", cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        line for line in result.stderr.splitlines() if "no CUDA device here" in line]


@pytest.mark.parametrize("smoke", [False, True])
def test_every_benchmark_stage_passes_options_its_module_accepts(tmp_path, smoke):
    from ebt.benchmarks import ebt_step, kernels
    from ebt.options import read_options

    plan = gpu_check.commands(tmp_path, smoke=smoke)
    for stage, module in (("bench_kernels", kernels), ("bench_ebt", ebt_step)):
        command = plan[stage][0]
        assert command[1] == f"scripts/{stage}.py"
        read_options(command[2:], module.DEFAULTS)  # a ConfigError names a key the module does not take
