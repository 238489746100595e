"""A run's processes: the effective batch over every rank, printing once (rank 0), and the DDP ranks' parameter
digests compared at the end (docs/reliability.md)."""

import hashlib
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig


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
