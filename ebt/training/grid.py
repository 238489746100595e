"""Ablation grids (Hydra multirun): job folder names, per-job ``status.json``, skipping finished jobs, exit status.

Every job of a grid (a multirun; single runs write none) writes ``status.json`` into its output folder,
atomically: ``running`` when it starts, ``done`` with its final metrics, ``failed`` with the error (and a
traceback tail for unexpected errors), or ``interrupted`` when a signal (SIGTERM, Ctrl-C) stopped it. A failure
is recorded and the grid goes on; a job whose folder already says ``done`` is skipped, so re-running a grid into
the same ``hydra.sweep.dir`` only runs what is missing (plus ``ckpt_path=last``: resumes the interrupted ones).
After the grid, :class:`GridReport` prints the counts and ``scripts/train.py`` exits 1 if any job failed.

Job folders are named from the job's overrides (``hydra.job.override_dirname``, sorted by Hydra) by
:func:`job_dirname`: stable across re-runs and grid edits (no job number), valid as a path and as a Hydra
override value. Run-control keys (:data:`RUN_CONTROL_KEYS`: ``ckpt_path``, ``overwrite``, ``trust_checkpoint``,
``logger``, ``+sweep``; ``hydra.*`` never counts) are left out, so ``ckpt_path=last`` resumes every job in its own
folder.
Imports stay light (no torch): Hydra instantiates the callbacks on every start.
"""

import hashlib
import json
import logging
import os
import re
import socket
import sys
import time
import traceback
import warnings
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
# Overrides that say how to run a job, not which job it is: not part of job folder names (configs/hydra/default.yaml
# lists them in hydra.job.config.override_dirname.exclude_keys; tests check the two agree) nor of wandb tags.
RUN_CONTROL_KEYS = ("sweep", "ckpt_path", "overwrite", "logger", "trust_checkpoint")


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
    return ",".join(o.lstrip("+~").replace(",", ";")[:64] for o in overrides if not _run_control(o))


def _run_control(override: str) -> bool:
    key = override.lstrip("+~").split("=", 1)[0]
    return key in RUN_CONTROL_KEYS or key.split(".", 1)[0] in ("logger", "hydra")


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
    from ebt.training.checkpoint import atomic_write_text  # imported here: it loads torch, and this module stays light

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
    except (KeyboardInterrupt, SystemExit) as e:  # SIGTERM / Ctrl-C: train() saved last.ckpt and exits 143 / 130
        code = e.code if isinstance(e, SystemExit) else 130
        write_status(job_dir, "interrupted", exit_code=code, seconds=round(time.time() - started, 1))
        print(f"interrupted: {job_dir}; resume the grid with the same command plus ckpt_path=last "
              f"hydra.sweep.dir={job_dir.parent}", file=sys.stderr, flush=True)
        raise
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
    """``done`` / ``failed`` / ``interrupted`` (stopped by a signal) / ``running`` (started and not finished, or
    killed with SIGKILL); a ``summary.json`` without a status file (a single run) counts as done."""
    status = read_status(job_dir)
    if status:
        return status["status"]
    return "done" if (job_dir / "summary.json").is_file() else "running"


ADVERTISEMENT = "💡 Tip:"  # Lightning's lines recommending its cloud products (litlogger, litmodels)
NOISE = ("Trainer already configured with model summary callbacks",  # caused by our own callbacks/default.yaml
         "`weights_only` was not set")  # Lightning's note when it saves a full checkpoint (loads never unpickle
                                        # code whatever it asks: AtomicCheckpointIO, docs/security.md)


def _worth_printing(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not message.startswith(ADVERTISEMENT) and not message.startswith(NOISE)


class JobLogging(Callback):
    """At the start of every job: Lightning's log lines once, without its tool advertisements.

    Lightning adds its own console handler to the ``lightning`` logger when imported, and its records also propagate
    to the root logger, where Hydra's job logging prints them (and writes ``train.log``): every INFO line appeared
    twice. With Hydra's job logging on, Lightning's handler is removed, so each line is printed once, by Hydra."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        import lightning  # noqa: F401  (adds its handler now, so that it can be removed; the job imports it anyway)

        if logging.getLogger().handlers:
            lightning_logger = logging.getLogger("lightning")
            for handler in list(lightning_logger.handlers):
                lightning_logger.removeHandler(handler)
            lightning_logger.propagate = True
        for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                     "lightning.pytorch.trainer.connectors.checkpoint_connector"):
            logging.getLogger(name).addFilter(_worth_printing)  # a logger's filters see the records logged on it
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
        # a resume in place (or overwrite=true) writes into its own non-empty folders: expected here, since a fresh
        # start in a folder with results is refused (ebt.training.run_folder.check_fresh_start)
        warnings.filterwarnings("ignore", message=r"(Checkpoint|Experiment logs) directory .* exists and is not empty")


class RunFolderGuard(Callback):
    """Single runs: claim the run folder (writable, locked, no results a fresh start would replace; see
    :func:`ebt.training.run_folder.claim_run_folder`) *before* Hydra creates it and writes ``.hydra/config.yaml``
    into it, so a refused run leaves the folder's run untouched and a read-only folder is one ``error:`` line, not a
    traceback.
    ``train()`` finds the claim and keeps it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from ebt.errors import USER_ERRORS, report_user_error  # imported here: they load torch
        from ebt.training.run_folder import claim_run_folder

        folder = Path(str(config.hydra.run.dir))
        try:
            claim_run_folder(folder, resuming=bool(config.get("ckpt_path")), overwrite=bool(config.get("overwrite")))
        except USER_ERRORS as error:
            report_user_error(error)
            raise


class GridReport(Callback):
    """After a multirun: print how many jobs are done / failed / running, and remember it for the exit status."""

    counts: Counter = Counter()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        GridReport.counts = Counter(status_of(d) for d in job_dirs(sweep_dir))
        line = ", ".join(f"{n} {s}" for s, n in sorted(GridReport.counts.items())) or "no jobs"
        print(f"grid {sweep_dir}: {line} (python scripts/collect.py dirs={sweep_dir})", file=sys.stderr, flush=True)


def exit_status() -> int:
    """0, or :data:`FAILED_EXIT` when the multirun that just ended left a failed job in its folder."""
    return FAILED_EXIT if GridReport.counts.get("failed") else 0
