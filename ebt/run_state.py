"""Run bookkeeping around ``trainer.fit``: metrics kept across resumes, effective batch, DDP rank digests."""

import csv
import hashlib
import io
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from ebt.checkpoint import atomic_write_text


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
