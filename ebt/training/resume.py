"""Run bookkeeping around ``trainer.fit``: the run folder's lock and checks, the resume's config against the
checkpoint's, metrics kept across resumes, effective batch, DDP rank digests."""

import csv
import fcntl
import hashlib
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from ebt.errors import ConfigError, EnvironmentSetupError
from ebt.training.checkpoint import atomic_write_text, remove_stale_temporaries, upgrade_config

RESULTS = ("summary.json", "checkpoints/last.ckpt")  # a folder holding either has a run's results
# keys that legitimately differ when a run is resumed: not compared with the checkpoint's config
RESUME_IGNORED = ("ckpt_path", "paths", "hydra", "overwrite", "logger", "trust_checkpoint")


def check_writable(folder: Path) -> None:
    """A one-line :class:`ConfigError` now, rather than a traceback at the first checkpoint, when ``folder`` cannot
    be created or written (read-only file system, permissions)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise EnvironmentSetupError(f"output folder {folder} is not writable ({why}); run in a writable folder "
                                    "(hydra.run.dir=<folder>)") from e


class RunLock:
    """An exclusive ``flock`` on ``<run>/.lock`` holding the owner's pid: one run per folder at a time. The kernel
    releases it when the process ends, however it ends (kill -9 included); :meth:`release` frees it earlier."""

    held: dict[Path, "RunLock"] = {}  # folders this process has claimed

    def __init__(self, folder: Path) -> None:
        self.folder, self.fd = folder, None

    def acquire(self) -> "RunLock":
        fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(f"run folder {self.folder} is in use by another run (pid {holder}); wait for it to "
                              "end, or start this run in another folder (hydra.run.dir=<folder>)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        RunLock.held[self.folder.resolve()] = self
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
            RunLock.held.pop(self.folder.resolve(), None)


def claim_run_folder(folder: Path, *, resuming: bool, overwrite: bool) -> RunLock | None:
    """Rank 0 (the other DDP ranks share its folder): writable, locked, no stale temporaries, and no results that a
    fresh start would replace. Returns the lock to release at the end; a folder this process already claimed (the
    ``RunFolderGuard`` Hydra callback claims it before Hydra writes into it) returns the lock it holds."""
    if rank_zero_only.rank != 0:
        return None
    if folder.resolve() in RunLock.held:
        return RunLock.held[folder.resolve()]
    check_writable(folder)
    lock = RunLock(folder).acquire()
    try:
        for sub in (folder, folder / "checkpoints", folder / "csv"):
            for tmp in remove_stale_temporaries(sub):
                print(f"removed {tmp} (a write interrupted by a kill)", flush=True)
        check_fresh_start(folder, resuming=resuming, overwrite=overwrite)
    except BaseException:
        lock.release()
        raise
    return lock


def check_fresh_start(folder: Path, resuming: bool, overwrite: bool) -> None:
    """A run started without ``ckpt_path`` must not replace another run's results: refused unless ``overwrite``,
    which deletes them (``summary.json``, ``checkpoints/``, ``csv/``) first."""
    found = [name for name in RESULTS if (folder / name).is_file()]
    if resuming or not found:
        return
    if not overwrite:
        raise ConfigError(f"run folder {folder} already holds a run's results ({', '.join(found)}); resume it with "
                          "ckpt_path=last, start in another folder (drop hydra.run.dir), or pass overwrite=true to "
                          "replace them")
    (folder / "summary.json").unlink(missing_ok=True)
    for sub in ("checkpoints", "csv"):
        shutil.rmtree(folder / sub, ignore_errors=True)
    print(f"overwrite=true: deleted the previous results in {folder}", flush=True)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _flatten(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: tree}


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old, new)}`` for every leaf that differs between two resolved configs, except the keys of
    :data:`RESUME_IGNORED` and paths that differ only by the run folder (``trainer.default_root_dir``, ...)."""
    old_flat, new_flat = _flatten(old), _flatten(new)
    old_dir, new_dir = old_flat.get("paths.output_dir"), new_flat.get("paths.output_dir")
    unset = "<unset>"
    diffs = {}
    for key in sorted(set(old_flat) | set(new_flat)):
        if key.split(".")[0] in RESUME_IGNORED:
            continue
        before, after = old_flat.get(key, unset), new_flat.get(key, unset)
        if before == unset and after is None:
            continue  # an option added since the checkpoint was written, at its off default
        if isinstance(before, str) and old_dir and new_dir:
            before = before.replace(str(old_dir), str(new_dir))
        if before != after:
            diffs[key] = (before, after)
    return diffs


# implementation choices: same weights, same numbers (activation checkpointing, torch.compile, how dE/dy is taken)
SAME_MODEL_KEYS = {"model.backbone.checkpoint", "model.objective.compile", "model.objective.thinking_grad"}


def check_resume_config(checkpoint: dict[str, Any], config: dict[str, Any], ckpt_path: str) -> None:
    """Resume with the checkpoint's own model: a changed ``model.*`` option is a :class:`ConfigError` (shapes can
    match while the model differs, e.g. ``model.mixer.n_heads``); every other change is listed in one warning.
    ``kernels`` keys and :data:`SAME_MODEL_KEYS` (implementation choices, the same weights and results) only warn."""
    old = (checkpoint.get("hyper_parameters") or {}).get("config")
    if not isinstance(old, dict):
        return  # a checkpoint written before configs were stored
    diffs = config_differences(upgrade_config(old), upgrade_config(config))  # both: same option spelling
    model = {k: v for k, v in diffs.items()
             if k.startswith("model.") and not k.endswith(".kernels") and k not in SAME_MODEL_KEYS}
    if model:
        changes = ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in model.items())
        raise ConfigError(f"resuming {ckpt_path} with other model options than the run that wrote it ({changes}); "
                          "a resume keeps the checkpoint's model: drop these overrides, or start a new run without "
                          "ckpt_path")
    if diffs:
        lines = "\n".join(f"  {k}: {a} -> {b}" for k, (a, b) in diffs.items())
        print_rank_zero(f"warning: resuming {ckpt_path} with options that differ from the run that wrote it "
                        f"(old -> new):\n{lines}")


def set_aside_metrics(trainer: L.Trainer) -> Path | None:
    """Lightning's CSV logger deletes ``metrics.csv`` when it starts: when a run resumes in its own folder, move the
    rows so far aside (``metrics.before_resume.csv``) for :func:`merge_metrics` to put back in front."""
    csv_logger = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
    if csv_logger is None or rank_zero_only.rank != 0:
        return None
    current, aside = Path(csv_logger.log_dir) / "metrics.csv", Path(csv_logger.log_dir) / "metrics.before_resume.csv"
    if current.is_file():
        if aside.is_file():  # an earlier resume that never got to merge
            merge_metrics(aside, keep_aside=True)
        else:
            os.replace(current, aside)
    return aside if aside.is_file() else None


def merge_metrics(aside: Path, keep_aside: bool = False) -> None:
    """``metrics.csv`` = the set-aside rows logged before the first step of the new rows, then the new rows."""
    current = aside.with_name("metrics.csv")
    old = list(csv.DictReader(aside.open(newline="")))
    new = list(csv.DictReader(current.open(newline=""))) if current.is_file() else []
    first = min((int(r["step"]) for r in new if r.get("step")), default=None)
    rows = [r for r in old if first is None or not r.get("step") or int(r["step"]) < first] + new
    fields = sorted(set().union(*(r.keys() for r in rows)))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(aside if keep_aside else current, out.getvalue())
    if keep_aside:
        current.unlink()
    else:
        aside.unlink()


@rank_zero_only
def print_rank_zero(line: str) -> None:
    print(line, flush=True)


def batch_scale(cfg: DictConfig, trainer: L.Trainer) -> dict[str, Any]:
    """Effective batch = data.batch_size x devices x nodes x accumulate_grad_batches, and the (unscaled) lr."""
    num_nodes = int(getattr(trainer, "num_nodes", 1))
    devices = trainer.world_size // num_nodes
    accumulate = trainer.accumulate_grad_batches
    return {"batch_per_device": cfg.data.batch_size, "devices": devices, "num_nodes": num_nodes,
            "accumulate_grad_batches": accumulate, "world_size": trainer.world_size,
            "effective_batch": cfg.data.batch_size * trainer.world_size * accumulate, "lr": float(cfg.optim.lr),
            "strategy": type(trainer.strategy).__name__}


def describe_scale(scale: dict[str, Any]) -> str:
    return (f"effective batch {scale['effective_batch']} = {scale['batch_per_device']} (data.batch_size) x "
            f"{scale['devices']} devices x {scale['num_nodes']} nodes x {scale['accumulate_grad_batches']} "
            f"(accumulate_grad_batches); lr {scale['lr']:g} (optim.lr, not scaled); strategy {scale['strategy']}")


def rank_digests(trainer: L.Trainer, model: L.LightningModule) -> list[str] | None:
    """DDP: a SHA-256 of every rank's parameters, gathered on every rank (all equal when the ranks are in sync);
    None for one process or a sharded strategy. A mismatch is reported, not raised."""
    if trainer.world_size == 1 or not isinstance(trainer.strategy, DDPStrategy):
        return None
    sha = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        sha.update(name.encode())
        sha.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    digests: list[Any] = [None] * trainer.world_size
    torch.distributed.all_gather_object(digests, sha.hexdigest()[:16])
    if len(set(digests)) > 1:
        print_rank_zero(f"warning: parameters differ between ranks at the end of training: {digests}")
    return digests
