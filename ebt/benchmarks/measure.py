"""The benchmark harness shared by ``ebt/benchmarks/``: one timing function, one CSV appender.

* :func:`measure_step`: ``warmup`` untimed calls, one call for the memory peak, then ``reps`` timed calls (device
  synchronised around each); returns the median, p20 and p80 (ms, linear interpolation) and the peak memory (MB)
  above what was held before the memory call: on CUDA ``torch.cuda.max_memory_allocated``; on CPU (Linux), with
  ``cpu_peak="rss"`` (the default), the growth of the resident set (freed heap returned with ``malloc_trim``, the
  high-water mark reset via ``/proc/self/clear_refs``, peak = ``VmHWM`` - ``VmRSS`` before the call), with
  ``cpu_peak="allocator"`` the peak of torch's CPU tensor allocations (:func:`cpu_allocator_peak_mb`: exact bytes of
  live tensors, no allocator caching or heap fragmentation, so small differences such as activation checkpointing's
  show).
* :func:`measure_interleaved`: the same timing for several variants in turns (one call of each per round, ``reps``
  rounds), so a change of the machine's load hits every variant alike; :func:`peak_memory_mb` is the memory part of
  :func:`measure_step` on its own and :func:`step_flops` counts a call's FLOPs (``torch.utils.flop_counter``: matmuls
  and attention, forward and every backward).
* :func:`append_csv`: appends rows to ``bench_results/<name>.csv`` with the columns of :func:`environment` first
  (timestamp, git sha, device, torch, triton and python versions), so rows from different machines and commits can
  share one file. A file written with other columns is rewritten with the union of both.
"""

import contextlib
import csv
import ctypes
import datetime as dt
import functools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from ebt.training.flops import FlopCount
from ebt.training.provenance import git_state

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench_results"


# --------------------------------------------------------------------------------------------------- environment
def git_sha() -> str:
    """The short commit of the checkout, ``+dirty`` when tracked files differ from it; ``unknown`` outside git."""
    state = git_state()
    return "unknown" if state["commit"] is None else state["commit"][:7] + ("+dirty" if state["dirty"] else "")


def device_name(device: str | torch.device) -> str:
    """The GPU's name, or the CPU's model name with the number of torch threads."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU {line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def triton_version() -> str:
    try:
        import triton
    except ImportError:
        return "none"
    return triton.__version__


@functools.cache
def environment(device: str | torch.device) -> dict[str, str]:
    """The columns every benchmark row starts with (computed once per process and device)."""
    return {"timestamp": dt.datetime.now().isoformat(timespec="seconds"), "git_sha": git_sha(),
            "device": device_name(device), "torch": torch.__version__, "triton": triton_version(),
            "python": platform.python_version()}


# --------------------------------------------------------------------------------------------------- timing
def status_mb(key: str) -> float:
    """A ``/proc/self/status`` field (kB) in MB, e.g. ``VmRSS`` or ``VmHWM``."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(key))


def reset_cpu_peak() -> float:
    """Return freed heap to the OS, reset the resident high-water mark; the resident set (MB) afterwards."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status_mb("VmRSS")


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null (native libraries print there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def cpu_allocator_peak_mb(step: Callable[[], Any]) -> float:
    """Run ``step`` once under ``torch.profiler`` (``profile_memory=True``); the peak (MB) of the running sum of its
    CPU allocation and free events: the most tensor memory held at once above what was held before the call."""
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():  # the profiler's start and stop lines
        prof.start()
    try:
        step()
    finally:
        with _quiet_stderr():
            prof.stop()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    held = peak = 0
    for _, nbytes in events:
        held += nbytes
        peak = max(peak, held)
    return peak / 2**20


def measure_step(step: Callable[[], Any], reps: int, device: str | torch.device, *, warmup: int = 1,
                 cpu_peak: str = "rss") -> dict[str, float]:
    """``warmup`` calls, one call for the memory peak, then ``reps`` timed calls of ``step``.

    Returns ``median_ms``, ``p20_ms``, ``p80_ms`` and ``peak_mb`` (see the module docstring; ``cpu_peak``: ``rss``
    or ``allocator``, how the peak is measured on the CPU)."""
    if cpu_peak not in ("rss", "allocator"):
        raise ValueError(f"cpu_peak must be 'rss' or 'allocator', got {cpu_peak!r}")
    device = torch.device(device)
    for _ in range(warmup):  # lazy initialisation, compilation and autotuning must not count
        step()
    peak = peak_memory_mb(step, device, cpu_peak)
    times = [_timed(step, device) for _ in range(reps)]
    return _summary(times) | {"peak_mb": peak}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step: Callable[[], Any], device: torch.device) -> float:
    """Milliseconds of one call of ``step`` (device synchronised before and after)."""
    _sync(device)
    start = time.perf_counter()
    step()
    _sync(device)
    return (time.perf_counter() - start) * 1e3


def _summary(times: list[float]) -> dict[str, float]:
    q = statistics.quantiles(times, n=5, method="inclusive") if len(times) > 1 else [times[0]] * 4
    return {"median_ms": statistics.median(times), "p20_ms": q[0], "p80_ms": q[-1]}


def peak_memory_mb(step: Callable[[], Any], device: str | torch.device, cpu_peak: str = "rss") -> float:
    """The peak memory (MB) of one call of ``step`` above what was held before it (module docstring)."""
    if cpu_peak not in ("rss", "allocator"):
        raise ValueError(f"cpu_peak must be 'rss' or 'allocator', got {cpu_peak!r}")
    device = torch.device(device)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    if cpu_peak == "allocator":
        return cpu_allocator_peak_mb(step)
    before = reset_cpu_peak()
    step()
    return status_mb("VmHWM") - before


def measure_interleaved(steps: dict[str, Callable[[], Any]], reps: int, device: str | torch.device, *,
                        warmup: int = 1) -> dict[str, dict[str, float]]:
    """``median_ms`` / ``p20_ms`` / ``p80_ms`` of each named step, timed in turns: ``warmup`` untimed rounds, then
    ``reps`` rounds that call every step once, in the listed order."""
    device = torch.device(device)
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(reps):
        for name, step in steps.items():
            times[name].append(_timed(step, device))
    return {name: _summary(t) for name, t in times.items()}


def step_flops(step: Callable[[], Any]) -> float:
    """FLOPs of one call of ``step`` by ``torch.utils.flop_counter``'s formulas (matmuls, convolutions and attention;
    elementwise work is not counted), as ``summary.json`` counts them (:class:`ebt.training.flops.FlopCount`)."""
    with FlopCount() as counter:
        step()
    return float(counter.total)


# --------------------------------------------------------------------------------------------------- results
def append_csv(path: str | os.PathLike, rows: list[dict[str, Any]], device: str | torch.device,
               fieldnames: list[str] | None = None) -> Path:
    """Append ``rows`` (each prefixed with :func:`environment`) to the CSV file ``path``; returns the path.

    Columns: the environment's, then ``fieldnames`` (default: every key of ``rows`` in order of first appearance).
    A new file gets a header; an existing file with other columns is rewritten with the union of both."""
    path = Path(path)
    env = environment(device)
    rows = [{**env, **r} for r in rows]
    columns = list(dict.fromkeys([*env, *(fieldnames or (k for r in rows for k in r))]))
    path.parent.mkdir(parents=True, exist_ok=True)
    old_rows: list[dict[str, str]] = []
    if path.exists():
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            if header == columns:
                mode = "a"
            else:
                old_rows, mode = list(reader), "w"
                columns = list(dict.fromkeys([*header, *columns]))
    else:
        mode = "w"
    with path.open(mode, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        if mode == "w":
            writer.writeheader()
            writer.writerows(old_rows)
        writer.writerows(rows)
    return path

