"""Timing and peak-memory measurement shared by the benchmark scripts (CPU and CUDA)."""

import csv
import ctypes
import statistics
import time
from collections.abc import Callable
from pathlib import Path


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


def measure_step(step: Callable[[], None], reps: int, device: str) -> dict[str, float]:
    """Warm-up, one run for the memory peak above what was held before, then ``reps`` timed runs (ms)."""
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    step()  # warm-up: lazy initialisation must not count
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = reset_cpu_peak()
    step()
    sync()
    peak = (torch.cuda.max_memory_allocated() - before) / 2**20 if device == "cuda" else status_mb("VmHWM") - before
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    q = statistics.quantiles(times, n=5, method="inclusive") if len(times) > 1 else [times[0]] * 4
    return {"median_ms": statistics.median(times), "p20_ms": q[0], "p80_ms": q[-1], "peak_mb": peak}


def append_csv(path: Path, rows: list[dict]) -> None:
    """Append ``rows`` to a CSV file (header written when the file is new), creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            writer.writeheader()
        writer.writerows(rows)
