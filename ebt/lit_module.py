"""One LightningModule for every objective.

The objective (an ``nn.Module`` from ``ebt.objectives``) owns the model and the loss; this module adds the
optimiser (AdamW with parameter groups, warm-up + cosine), logging under ``train/``, ``val/``, ``ood/``,
and checkpointed RNG states so that a resumed run continues exactly.

Parameters may carry two optional attributes read when building the optimiser:
``no_weight_decay = True`` and ``lr_scale = float`` (e.g. a learnable EBT step size).
"""

import math
import random
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from ebt.objectives.base import Objective

NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.Embedding)


def optimizer_groups(model: nn.Module, weight_decay: float, lr: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on norms, biases, embeddings, 1-D params and flagged params."""
    no_decay_ids = {id(p) for m in model.modules() if isinstance(m, NORM_TYPES) for p in m.parameters(False)}
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for p in model.parameters():
        if id(p) in seen:  # frozen params are kept: some become trainable later (AdamW skips grad-less ones)
            continue
        seen.add(id(p))
        decays = p.ndim >= 2 and id(p) not in no_decay_ids and not getattr(p, "no_weight_decay", False)
        key = (weight_decay if decays else 0.0, lr * getattr(p, "lr_scale", 1.0))
        groups.setdefault(key, []).append(p)
    return [{"params": ps, "weight_decay": wd, "lr": group_lr} for (wd, group_lr), ps in groups.items()]


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier: linear warm-up to 1, then cosine decay to ``min_lr_ratio`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class LitModel(L.LightningModule):
    def __init__(self, objective: Objective, *, lr: float = 1e-3, weight_decay: float = 0.1,
                 betas: tuple[float, float] = (0.9, 0.95), warmup_steps: int = 100, min_lr_ratio: float = 0.1,
                 schedule_steps: int | None = None, config: dict | None = None) -> None:
        super().__init__()
        self.objective = objective
        self.task = objective.task
        self.optim = {"lr": lr, "weight_decay": weight_decay, "betas": tuple(betas),
                      "warmup_steps": warmup_steps, "min_lr_ratio": min_lr_ratio,
                      "schedule_steps": schedule_steps}
        self.save_hyperparameters({"config": config, "optim": self.optim})

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.objective.set_progress(self.global_step)
        loss, logs = self.objective.loss(batch)
        bs = next(iter(batch.values())).shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=bs)
        for name, value in logs.items():
            self.log(f"train/{name}", value, batch_size=bs, prog_bar=name == self.task.metric)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        split = self.task.eval_splits[dataloader_idx]
        bs = next(iter(batch.values())).shape[0]
        for name, value in self.objective.evaluate(batch).items():
            self.log(f"{split}/{name}", value, batch_size=bs, add_dataloader_idx=False,
                     prog_bar=split == "val" and name == self.task.metric)

    def configure_optimizers(self):
        o = self.optim
        opt = torch.optim.AdamW(optimizer_groups(self.objective, o["weight_decay"], o["lr"]), lr=o["lr"],
                                betas=o["betas"])
        total = o["schedule_steps"] or self.trainer.max_steps
        total = total if total and total > 0 else 10**9
        schedule = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, warmup_steps=o["warmup_steps"], total_steps=total,
                                         min_lr_ratio=o["min_lr_ratio"]))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng_states"] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                                    "python": random.getstate()}
        if torch.cuda.is_available():
            checkpoint["rng_states"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("rng_states")
        if states:
            torch.set_rng_state(states["torch"])
            np.random.set_state(states["numpy"])
            random.setstate(states["python"])
            if "cuda" in states and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(states["cuda"])
