"""Ablation grids (Hydra multirun): job folder names, per-job ``status.json``, skipping finished jobs, exit status.

Every job of a grid (a multirun; single runs write none) writes ``status.json`` into its output folder,
atomically: ``running`` when it starts, ``done`` with its final metrics, or ``failed`` with the error (and a
traceback tail for unexpected errors). A failure is recorded and the grid goes on; a job whose folder already
says ``done`` is skipped, so re-running a grid into the same ``hydra.sweep.dir`` only runs what is missing.
After the grid, :class:`GridReport` prints the counts and ``scripts/train.py`` exits 1 if any job failed.

Job folders are named from the job's overrides (``hydra.job.override_dirname``, sorted by Hydra) by
:func:`job_dirname`: stable across re-runs and grid edits (no job number), valid as a path and as a Hydra
override value. Imports stay light (no torch): Hydra instantiates the callback on every start.
"""

import hashlib
import json
import os
import re
import socket
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

STATUS_FILE = "status.json"
MAX_NAME = 120  # characters of the readable part of a job folder name (file systems allow 255 bytes)
UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")
FAILED_EXIT = 1  # exit status of a multirun in which some job failed (a single run's user error exits 2)


def job_dirname(override_dirname: str) -> str:
    """Folder name of a job: its overrides with ``/`` -> ``.``; other unsafe characters and over-long names get a
    short hash of the full string appended, so two different jobs never share a folder."""
    name = override_dirname.replace("/", ".") or "default"
    safe = UNSAFE.sub("-", name)[:MAX_NAME]
    if safe != name:
        safe += "_" + hashlib.sha1(override_dirname.encode()).hexdigest()[:8]
    return safe


def grid_group(sweep_dir: str) -> str:
    """wandb group shared by every job of a grid: ``<grid folder parent>_<grid folder>``, at most 128 chars."""
    path = Path(sweep_dir)
    return f"{path.parent.name}_{path.name}"[-128:]


def grid_tags(overrides: Iterable[str]) -> str:
    """wandb tags (``WANDB_TAGS``, comma-separated) from a job's overrides, e.g. ``model/mixer=pool,seed=1``."""
    return ",".join(o.lstrip("+~").replace(",", ";")[:64] for o in overrides if not o.lstrip("+~").startswith("sweep="))


def register_resolvers() -> None:
    for name, fn in {"grid_dir": job_dirname, "grid_group": grid_group, "grid_tags": grid_tags}.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()


def read_status(job_dir: str | os.PathLike) -> dict[str, Any] | None:
    try:
        return json.loads((Path(job_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None


def write_status(job_dir: str | os.PathLike, status: str, **fields: Any) -> None:
    from ebt.checkpoint import atomic_write_text  # imported here: it loads torch, and this module stays light

    record = {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **fields}
    atomic_write_text(Path(job_dir) / STATUS_FILE, json.dumps(record, indent=2, default=str))


def _hydra_job() -> tuple[Path | None, bool, list[str]]:
    """The job's output folder (None outside Hydra), whether this is a multirun, and the job's overrides."""
    if not HydraConfig.initialized():
        return None, False, []
    hydra_cfg = HydraConfig.get()
    return (Path(hydra_cfg.runtime.output_dir), hydra_cfg.mode == RunMode.MULTIRUN,
            list(hydra_cfg.overrides.task))


def run_job(fn: Callable[..., Any], args: tuple, user_errors: tuple[type[BaseException], ...],
            report: Callable[[BaseException], None]) -> Any:
    """Run ``fn(*args)``. Outside a multirun nothing changes: a user error goes to ``report`` (which prints it and
    exits), anything else propagates, no status file is written. In a multirun the job's status is recorded, a job
    already done is skipped, and every exception is recorded and printed, returning None so the grid goes on."""
    job_dir, multirun, overrides = _hydra_job()
    if not multirun or job_dir is None:
        try:
            return fn(*args)
        except user_errors as e:
            report(e)
            raise
    previous = read_status(job_dir)
    if previous and previous.get("status") == "done":
        print(f"skip: {job_dir} is already done", flush=True)
        return previous.get("metrics")
    write_status(job_dir, "running", pid=os.getpid(), host=socket.gethostname(), overrides=overrides)
    started = time.time()
    try:
        result = fn(*args)
    except Exception as e:
        user_error = isinstance(e, user_errors)
        details = {} if user_error else {"traceback": traceback.format_exc().splitlines()[-30:]}
        write_status(job_dir, "failed", error=f"{type(e).__name__}: {e}", seconds=round(time.time() - started, 1),
                     **details)
        if not user_error or os.environ.get("HYDRA_FULL_ERROR") == "1":
            traceback.print_exc()
        print(f"error: {e}\nfailed: {job_dir} (the grid goes on)", file=sys.stderr, flush=True)
        return None
    metrics = result if isinstance(result, dict) else None
    write_status(job_dir, "done", metrics=metrics, seconds=round(time.time() - started, 1))
    return result


def job_dirs(root: str | os.PathLike) -> list[Path]:
    """Every job folder (one holding ``.hydra/``) under ``root``, sorted; ``root`` itself for a single run."""
    root = Path(root)
    return sorted(p.parent for p in root.rglob(".hydra") if p.is_dir() and ".submitit" not in p.parts)


def status_of(job_dir: Path) -> str:
    """``done`` / ``failed`` / ``running`` (started and not finished, or killed); a ``summary.json`` without a
    status file (a run from before status files) counts as done."""
    status = read_status(job_dir)
    if status:
        return status["status"]
    return "done" if (job_dir / "summary.json").is_file() else "running"


class GridReport(Callback):
    """After a multirun: print how many jobs are done / failed / running, and remember it for the exit status."""

    counts: Counter = Counter()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        GridReport.counts = Counter(status_of(d) for d in job_dirs(sweep_dir))
        line = ", ".join(f"{n} {s}" for s, n in sorted(GridReport.counts.items())) or "no jobs"
        print(f"grid {sweep_dir}: {line} (python scripts/collect.py {sweep_dir})", file=sys.stderr, flush=True)


def exit_status() -> int:
    """0, or :data:`FAILED_EXIT` when the multirun that just ended left a failed job in its folder."""
    return FAILED_EXIT if GridReport.counts.get("failed") else 0
