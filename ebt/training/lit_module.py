"""One LightningModule for every objective.

The objective (an ``nn.Module`` from ``ebt.objectives``) owns the model and the loss; this module adds the
optimiser (AdamW with parameter groups, warm-up + cosine), logging under ``train/``, ``val/``, ``ood/``,
and checkpointed RNG states so that a resumed run continues exactly.

Parameters may carry two optional attributes read when building the optimiser:
``no_weight_decay = True`` and ``lr_scale = float`` (e.g. a learnable EBT step size).

A non-finite training loss, or a :class:`ThinkingDivergedError` from the objective, raises an error naming the
training step (``on_nan=raise``) or skips the batch (``on_nan=skip_batch``): the step still counts (the data stream
and the schedule move on) but every gradient is dropped, so parameters and optimiser state stay as they were. Skips
are counted (``train/skipped_batches``, checkpointed); more than ``max_consecutive_skips`` in a row is an error. Under
DDP the ranks agree on skipping (one all-reduce of a flag per step), so no rank waits for another in a collective.
When the parameters themselves are non-finite, or have grown more than ``LR_BLAME_GROWTH`` times since training
started, the error names ``optim.lr`` first (the optimizer steps are too large), whatever diverged downstream.

Exact resume: the checkpoint holds the RNG states of the training stream and every replay buffer. Validation
(during ``fit`` or after it) draws from a fork of the global stream, so evaluating - or being interrupted while
evaluating - never shifts the training noise.

Validation (:mod:`ebt.tasks.metrics`): each evaluation batch seeds the (forked) global stream from ``(EVAL_SEED,
split, batch index)`` before the objective evaluates it, so an EBT's or a diffusion model's noise is the same in every
validation of the same weights, in ``scripts/eval.py`` and ``scripts/think.py`` (their default ``seed=0``), whatever
the global stream was. Metrics are accumulated per split as ``(sum, count)`` (``Objective.evaluate_sums``) and logged at
the end of the validation epoch as total sum / total count; under DDP the sums and counts are summed over the ranks
(one collective per split), each batch counted once (the copies ``DistributedSampler`` pads the last round with
count zero), so the logged values equal one process's.

``weights_sha256`` (:func:`ebt.training.checkpoint.weights_digest`) lets loading detect weights altered on disk.
"""

import math
import random
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from ebt.errors import ConfigError, ThinkingDivergedError, TrainingDivergedError
from ebt.objectives.base import Objective
from ebt.objectives.replay import ReplayBuffer
from ebt.tasks.metrics import EVAL_SEED, MetricSums, seed_batch
from ebt.training.checkpoint import weights_digest

NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.Embedding)
ON_NAN = ("raise", "skip_batch")
LR_BLAME_GROWTH = 10.0  # parameter norm growth since the start of training that blames the learning rate


def rng_states() -> dict[str, Any]:
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


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
                 schedule_steps: int | None = None, on_nan: str = "raise", max_consecutive_skips: int = 10,
                 config: dict | None = None) -> None:
        super().__init__()
        if on_nan not in ON_NAN:
            raise ConfigError(f"on_nan={on_nan!r} is not one of {', '.join(ON_NAN)}")
        self.objective = objective
        self.task = objective.task
        self.optim = {"lr": lr, "weight_decay": weight_decay, "betas": tuple(betas),
                      "warmup_steps": warmup_steps, "min_lr_ratio": min_lr_ratio,
                      "schedule_steps": schedule_steps}
        self.on_nan, self.max_consecutive_skips = on_nan, max_consecutive_skips
        self.skipped_batches = self.consecutive_skips = 0
        self._skip_step = False
        self._train_rng: dict[str, Any] | None = None  # the training stream's RNG states while validation runs
        self._pending_replay: dict[str, dict] = {}  # replay buffers from a checkpoint, restored on the device
        self._start_norm: float | None = None
        self.eval_seed = EVAL_SEED  # with the split and batch index, seeds each evaluation batch's noise
        self._eval_sums: dict[str, MetricSums] = {}  # per split, during a validation epoch
        self.save_hyperparameters({"config": config, "optim": self.optim})

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.objective.set_progress(self.global_step)
        bs = next(iter(batch.values())).shape[0]
        error, loss, logs = None, None, {}
        try:
            loss, logs = self.objective.loss(batch)
        except ThinkingDivergedError as e:
            error = e
        bad = error is not None or not bool(torch.isfinite(loss.detach()).all())
        if self.trainer.world_size > 1:  # every rank skips (or raises) together
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        self._skip_step = self._skip_step or bad  # sticky until the optimizer step (gradient accumulation)
        if bad:
            return self._diverged(error, loss, bs)
        self.consecutive_skips = 0
        self.log("train/loss", loss, prog_bar=True, batch_size=bs, sync_dist=True)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=bs)
        self.log("train/skipped_batches", float(self.skipped_batches), batch_size=bs)
        for name, value in logs.items():
            self.log(f"train/{name}", value, batch_size=bs, prog_bar=name == self.task.metric)
        return loss

    def _diverged(self, error: Exception | None, loss: torch.Tensor | None, bs: int) -> torch.Tensor:
        """Raise (``on_nan=raise``) or count the skip and return a zero loss that reaches every trainable parameter
        (so DDP's gradient all-reduce completes on every rank); ``on_before_optimizer_step`` drops the gradients."""
        step = self.global_step
        if error is not None:
            what = f"thinking diverged ({error})"
        elif loss is not None and not bool(torch.isfinite(loss.detach()).all()):
            what = f"the training loss is {float(loss.detach()):g}"
        else:
            what = "another rank's step diverged (non-finite loss or thinking)"
        blame_lr = self._lr_blame()
        if blame_lr:
            what = f"{blame_lr}; then {what}"
        if self.on_nan == "raise" and error is not None:
            raise ThinkingDivergedError(f"training step {step}: {blame_lr + '; then ' if blame_lr else ''}{error}; "
                                        "or set on_nan=skip_batch") from error
        if self.on_nan == "raise" and blame_lr:
            raise TrainingDivergedError(f"training step {step}: {what}; or set on_nan=skip_batch")
        if self.on_nan == "raise":
            raise TrainingDivergedError(f"training step {step}: {what}; lower optim.lr (or model.objective.alpha, "
                                        "or set model.objective.grad_clamp), or set on_nan=skip_batch")
        self.skipped_batches += 1
        self.consecutive_skips += 1
        if self.consecutive_skips > self.max_consecutive_skips:
            raise TrainingDivergedError(
                f"training step {step}: {self.consecutive_skips} batches in a row skipped (on_nan=skip_batch, last: "
                f"{what}); training has diverged: lower optim.lr or model.objective.alpha, set "
                "model.objective.grad_clamp, or raise max_consecutive_skips") from error
        self.log("train/skipped_batches", float(self.skipped_batches), batch_size=bs)
        return sum((p.sum() * 0.0 for p in self.parameters() if p.requires_grad), torch.zeros((), device=self.device))

    def _param_norm(self) -> float:
        return float(torch.linalg.vector_norm(torch.stack([p.detach().float().norm() for p in self.parameters()])))

    def _lr_blame(self) -> str:
        """Non-empty when the parameters are non-finite or have grown ``LR_BLAME_GROWTH`` times since the start:
        the optimizer's updates, not the objective, are the cause (e.g. ``optim.lr=1e6``)."""
        norm, start = self._param_norm(), self._start_norm
        lr = f"lower optim.lr (now {self.optim['lr']:g}), the optimizer steps are too large"
        if not math.isfinite(norm):
            return f"the parameters are non-finite ({norm:g}) after the last optimizer step; {lr}"
        if start and norm > LR_BLAME_GROWTH * start:
            return f"the parameters' norm grew from {start:.4g} to {norm:.4g} since training started; {lr}"
        return ""

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self._skip_step:  # AdamW leaves parameters without a gradient (and their state) untouched
            optimizer.zero_grad(set_to_none=True)
        self._skip_step = False

    def on_train_start(self) -> None:
        """Under DDP every rank starts from the same seed; give each rank its own stream (noise, dropout)."""
        self._start_norm = self._param_norm()
        buffers = self._replay_buffers()
        for name, state in self._pending_replay.items():  # now that the model is on its device
            if name in buffers:
                buffers[name].load_state_dict(state, self.device)
        self._pending_replay = {}
        if self.trainer.world_size > 1:
            seed = int(torch.randint(0, 2**62, ()).item())
            torch.manual_seed(seed + self.trainer.global_rank)

    def on_validation_epoch_start(self) -> None:
        self._eval_sums = {}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        split = self.task.eval_splits[dataloader_idx]
        world, rank = self.trainer.world_size, self.trainer.global_rank
        index = batch_idx * world + rank  # the batch's place in the split (DistributedSampler deals them round-robin)
        seed_batch(self.eval_seed, split, index)
        sums = self._eval_sums.setdefault(split, MetricSums())
        sums.add(self.objective.evaluate_sums(batch), weight=0.0 if index >= self._eval_size(dataloader_idx) else 1.0)

    def _eval_size(self, dataloader_idx: int) -> float:
        """Batches in evaluation split ``dataloader_idx`` (an index past it: a padding copy under DDP)."""
        loaders = self.trainer.val_dataloaders
        loader = loaders[dataloader_idx] if isinstance(loaders, list | tuple) else loaders
        try:
            return len(loader.dataset)
        except (AttributeError, TypeError):  # an iterable dataset: no padding to detect
            return math.inf

    def on_validation_epoch_end(self) -> None:
        """Log every split's totals: ``<split>/<name>`` = sum over batches (and ranks) / count."""
        for split, sums in self._eval_sums.items():
            if self.trainer.world_size > 1:
                sums = sums.reduce(lambda t: self.trainer.strategy.reduce(t, reduce_op="sum"))
            for name, value in sums.compute().items():
                # equal on every rank already: sync_dist only keeps Lightning's epoch-level logging contract
                self.log(f"{split}/{name}", value, add_dataloader_idx=False, sync_dist=True,
                         prog_bar=split == "val" and name == self.task.metric)
        self._eval_sums = {}

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

    def on_validation_start(self) -> None:
        self._train_rng = rng_states()  # validation draws from a fork: the training stream is left as it was

    def on_validation_end(self) -> None:
        if self._train_rng is not None:
            set_rng_states(self._train_rng)
        self._train_rng = None

    def _replay_buffers(self) -> dict[str, ReplayBuffer]:
        return {name: m.replay for name, m in self.objective.named_modules()
                if isinstance(getattr(m, "replay", None), ReplayBuffer)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["skipped_batches"] = self.skipped_batches
        checkpoint["rng_states"] = self._train_rng or rng_states()  # saved during validation: the training stream
        checkpoint["replay_buffers"] = {name: b.state_dict() for name, b in self._replay_buffers().items()}
        checkpoint["weights_sha256"] = weights_digest(checkpoint["state_dict"])

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.skipped_batches = checkpoint.get("skipped_batches", 0)
        if checkpoint.get("rng_states"):
            set_rng_states(checkpoint["rng_states"])
        self._pending_replay = dict(checkpoint.get("replay_buffers") or {})
