"""One GPU check, ready to run: ``python scripts/gpu_check.py`` on a machine with one CUDA GPU (at most 8 minutes).

The stages' time limits add up to 480 s.

Stages, each a subprocess with its own time limit, all output in one folder (``gpu_check_results/<time>/``):

1. ``kernels``: the kernel tests without the interpreter (``tests/test_kernels.py``, ``tests/test_dispatch.py``:
   Triton on the GPU against the torch references);
2. ``bench_kernels``: ``scripts/bench_kernels.py`` (:mod:`ebt.benchmarks.kernels`: ``do_bench`` timing, GB/s against
   the device's peak);
3. ``bench_ebt``: ``scripts/bench_ebt.py``'s GPU preset (:mod:`ebt.benchmarks.ebt_step`: predictor, EBT, no cache,
   truncated, the large-vocabulary candidates, eval thinking, and the bf16 / checkpointed variants);
4. ``train``: the default EBT training with ``trainer=gpu`` for at most 1:45 minutes (``trainer.max_time``).

Writes ``<stage>.log`` per stage, the benchmarks' CSVs, the training run folder, and ``summary.md`` (stage, status,
seconds, the headline numbers) — printed at the end. Options (key=value): ``out=DIR`` (default
``gpu_check_results/<time>/``), ``smoke=true`` runs every stage at toy size on whatever device there is (the CPU parts
of this check are tested in tests/test_gpu_check.py), ``stages=[kernels,train]`` picks stages.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import DictConfig

from ebt.errors import EnvironmentSetupError
from ebt.options import plain_options

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("kernels", "bench_kernels", "bench_ebt", "train")
DEFAULTS = {"out": None, "stages": list(STAGES), "smoke": False}


def commands(out: Path, smoke: bool) -> dict[str, tuple[list[str], int, dict[str, str]]]:
    """Stage -> (command, time limit in seconds, extra environment)."""
    py = sys.executable
    if smoke:  # toy sizes: checks the plumbing on any machine
        return {
            "kernels": ([py, "-m", "pytest", "-q", "-x", "tests/test_dispatch.py", "-k", "auto"], 300,
                        {"TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET", "")}),
            "bench_kernels": ([py, "scripts/bench_kernels.py", "V=256", "D=16", "M=32", "reps=2", "warmup=1",
                               "backends=eager", "modes=full", "plot=false", f"out={out / 'kernels.csv'}"], 300, {}),
            "bench_ebt": ([py, "scripts/bench_ebt.py", "dim=16", "layers=1", "heads=2", "seq=8", "vocab=32", "batch=2",
                           "reps=1", "topk=8", f"out={out / 'ebt.csv'}"], 300, {}),
            "train": ([py, "scripts/train.py", "debug=fdr", "kernels=torch", f"hydra.run.dir={out / 'train'}"], 300,
                      {}),
        }
    return {
        "kernels": ([py, "-m", "pytest", "-q", "tests/test_kernels.py", "tests/test_dispatch.py"], 120,
                    {"TRITON_INTERPRET": "0"}),
        "bench_kernels": ([py, "scripts/bench_kernels.py", "V=[256,32768,131072]", "D=384", "M=[2048,8192]",
                           f"out={out / 'kernels.csv'}"], 90, {}),
        "bench_ebt": ([py, "scripts/bench_ebt.py", "preset=gpu", f"out={out / 'ebt.csv'}"], 120, {}),
        "train": ([py, "scripts/train.py", "trainer=gpu", "+trainer.max_time=00:00:01:45",
                   f"hydra.run.dir={out / 'train'}"], 150, {}),
    }


def run_stage(name: str, command: list[str], limit: int, env: dict[str, str], out: Path) -> dict[str, object]:
    """Run one stage; its output goes to ``<name>.log``. Returns status (ok / failed rc / timeout) and seconds."""
    start = time.perf_counter()
    full_env = {**os.environ, "WANDB_MODE": "offline", "MPLBACKEND": "Agg", **env}
    full_env = {k: v for k, v in full_env.items() if v != ""}
    with (out / f"{name}.log").open("w") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        try:
            rc = subprocess.run(command, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                timeout=limit).returncode
            status = "ok" if rc == 0 else f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
            status = f"timeout ({limit} s)"
    return {"stage": name, "status": status, "seconds": round(time.perf_counter() - start, 1)}


def headline(name: str, out: Path) -> str:
    """The numbers worth a glance from a stage's outputs ('' when it wrote none)."""
    log = out / f"{name}.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    if name == "kernels":
        return next((line.strip() for line in reversed(text.splitlines()) if " passed" in line or " failed" in line),
                    "")
    if name == "bench_kernels" and (out / "kernels.csv").exists():
        rows = [r for r in csv.DictReader((out / "kernels.csv").open()) if r.get("median_ms")]
        best = max(rows, key=lambda r: float(r.get("gbytes_per_s") or 0), default=None)
        if best is None:
            return ""
        return (f"best {float(best['gbytes_per_s']):.0f} GB/s ({best['op']} {best['mode']} {best['backend']} "
                f"V={best['V']}; peak fraction {best['peak_bw_frac'] or '?'})")
    if name == "bench_ebt" and (out / "ebt.csv").exists():
        rows = list(csv.DictReader((out / "ebt.csv").open()))
        return "; ".join(f"V={r['vocab']} {r['kind']} {float(r['median_ms']):.1f} ms ({float(r['ratio']):.2f}x)"
                         for r in rows if r.get("ratio"))
    if name == "train" and (out / "train" / "summary.json").exists():
        summary = json.loads((out / "train" / "summary.json").read_text())
        keep = {k: v for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        return ", ".join(f"{k}={v:.4g}" for k, v in list(keep.items())[:6])
    return ""


def main(cfg: DictConfig) -> int:
    """Run the stages; 0 when every stage is ok, else 1 (EnvironmentSetupError without a GPU unless ``smoke``)."""
    args = plain_options(cfg, lists=("stages",), choices={"stages": STAGES}, flags=("smoke",))
    out = Path(str(args.out)) if args.out is not None else (
        ROOT / "gpu_check_results" / dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    out.mkdir(parents=True, exist_ok=True)
    import torch  # after the options are read

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    if not torch.cuda.is_available() and not args.smoke:
        raise EnvironmentSetupError(f"no CUDA device here ({device}); run it on a GPU machine, or with smoke=true to "
                                    "check the plumbing on this one")
    plan = commands(out, args.smoke)
    rows = []
    for name in args.stages:
        command, limit, env = plan[name]
        print(f"[{name}] {' '.join(command)}", file=sys.stderr, flush=True)
        row = run_stage(name, command, limit, env, out)
        row["headline"] = headline(name, out)
        print(f"[{name}] {row['status']} in {row['seconds']} s {row['headline']}", file=sys.stderr, flush=True)
        rows.append(row)
    lines = [f"# GPU check: {device}, torch {torch.__version__}{' (smoke)' if args.smoke else ''}", "",
             "| stage | status | seconds | headline |", "|---|---|---|---|",
             *(f"| {r['stage']} | {r['status']} | {r['seconds']} | {r['headline']} |" for r in rows)]
    tmp = out / "summary.md.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out / "summary.md")
    print("\n".join(lines))
    print(f"\nresults: {out}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1

