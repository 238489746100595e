"""What every objective shares: the input encoder and output head a task needs, and its loss.

An objective is an ``nn.Module`` built as ``objective(task=..., backbone=..., dim=...)`` where ``backbone``
is a factory ``backbone(dim, causal=...)``. It implements ``loss(batch) -> (loss, logs)`` for training and
``predict(batch) -> prediction`` for evaluation; ``evaluate`` adds the task's metrics.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ebt.errors import ConfigError
from ebt.tasks.base import IGNORE_INDEX, Task

CONTINUOUS_LOSSES = ("mse", "smooth_l1")


def input_encoder(task: Task, dim: int) -> nn.Module:
    """Token embedding (tokens tasks) or a linear map of the input features (continuous tasks)."""
    if task.kind == "tokens":
        embedding = nn.Embedding(task.vocab_size, dim)
        nn.init.normal_(embedding.weight, std=0.02)
        return embedding
    return nn.Linear(task.input_dim, dim)


def output_size(task: Task) -> int:
    return {"tokens": task.vocab_size, "classes": task.num_classes, "continuous": task.output_dim}[task.kind]


def output_head(task: Task, dim: int) -> nn.Linear:
    """Linear map to vocabulary logits (tokens), class logits (classes) or target features (continuous)."""
    head = nn.Linear(dim, output_size(task), bias=False)
    nn.init.normal_(head.weight, std=0.02)
    return head


def task_inputs(task: Task, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return batch["input_ids"] if task.kind == "tokens" else batch["inputs"]


def prediction_loss(task: Task, prediction: torch.Tensor, batch: dict[str, torch.Tensor],
                    continuous_loss: str = "mse") -> torch.Tensor:
    """Cross-entropy over scored tokens, or MSE / SmoothL1 for continuous targets."""
    targets = batch["targets"]
    if task.kind == "tokens":
        return F.cross_entropy(prediction.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)
    if task.kind == "classes":
        return F.cross_entropy(prediction.float(), targets)
    mask = batch.get("target_mask")
    if mask is not None:  # (B, N) bool: only these positions are scored (e.g. the x tokens of an ICL prompt)
        prediction, targets = prediction[mask], targets[mask]
    if continuous_loss == "mse":
        return F.mse_loss(prediction.float(), targets.float())
    if continuous_loss == "smooth_l1":
        return F.smooth_l1_loss(prediction.float(), targets.float())
    raise ValueError(f"unknown continuous loss {continuous_loss!r}; use 'mse' or 'smooth_l1'")


class Objective(nn.Module):
    def __init__(self, *, task: Task, continuous_loss: str = "mse") -> None:
        super().__init__()
        if continuous_loss not in CONTINUOUS_LOSSES:
            raise ConfigError(f"model.objective.continuous_loss={continuous_loss!r} is not one of "
                              f"{', '.join(CONTINUOUS_LOSSES)}")
        self.task = task
        self.continuous_loss = continuous_loss  # continuous tasks: the training loss, also reported in evaluation

    def set_progress(self, step: int) -> None:
        """Called by the trainer before every training step; forwarded to parts that schedule themselves."""
        for module in self.modules():
            if module is not self and hasattr(module, "set_progress") and not isinstance(module, Objective):
                module.set_progress(step)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        prediction = self.predict(batch)
        metrics = dict(self.task.metrics(prediction, batch))
        metrics["loss"] = prediction_loss(self.task, prediction, batch, self.continuous_loss)
        return metrics
