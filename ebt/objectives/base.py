"""What every objective shares: the input encoder and output head a task needs, and its loss.

An objective is an ``nn.Module`` built as ``objective(task=..., backbone=..., dim=...)`` where ``backbone``
is a factory ``backbone(dim, causal=...)``. It implements ``loss(batch) -> (loss, logs)`` for training and
``predict(batch) -> prediction`` for evaluation, and declares what else it can do (:attr:`Objective.thinks`,
:attr:`Objective.samples`), so the tools that need a capability ask for it instead of a class.
``evaluate_sums`` gives the task's metrics and the loss of one batch as ``(sum, count)`` pairs
(:mod:`ebt.tasks.metrics`: a split's value is total sum / total count), ``evaluate`` the same batch's ratios.
"""

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ebt.errors import ConfigError
from ebt.tasks.base import IGNORE_INDEX, Task
from ebt.tasks.metrics import Sums, ratios

CONTINUOUS_LOSSES = ("mse", "smooth_l1")


class GroupedEncoder(nn.Module):
    """An input encoder plus learned position-group embeddings: ``base(x)[:, n] + sum_g groups(position_groups[n, g])``.

    ``position_groups`` (N, G) gives each of N positions G group ids (Sudoku: its row, column and box) in
    ``[0, num_groups)``; a sequence may be shorter than N (its positions are the first ones). ``weight`` is the base
    encoder's weight (the token embedding matrix of a tokens task, for tied embeddings and candidate projections).
    The group ids are a non-persistent buffer: they come from the task, so the state dict holds only the weights
    (``base.weight`` and ``groups.weight``).
    """

    def __init__(self, base: nn.Module, dim: int, position_groups: torch.Tensor, num_groups: int) -> None:
        super().__init__()
        groups = torch.as_tensor(position_groups)
        if groups.dim() != 2 or groups.dtype.is_floating_point or groups.dtype == torch.bool:
            raise ValueError(f"position_groups must be an (N, G) integer tensor, got {tuple(groups.shape)} "
                             f"{groups.dtype}")
        if groups.numel() and not (int(groups.min()) >= 0 and int(groups.max()) < num_groups):
            raise ValueError(f"position_groups ids must lie in [0, num_position_groups={num_groups}), got "
                             f"{int(groups.min())}..{int(groups.max())}")
        self.base = base
        self.groups = nn.Embedding(num_groups, dim)
        nn.init.normal_(self.groups.weight, std=0.02)
        self.register_buffer("position_groups", groups.to(torch.int64).clone(), persistent=False)

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    def position_embeddings(self, n: int) -> torch.Tensor:
        """(n, dim): the summed group embeddings of the first ``n`` positions."""
        if n > self.position_groups.shape[0]:
            raise ValueError(f"a sequence of {n} positions, but position_groups covers {self.position_groups.shape[0]}")
        return self.groups(self.position_groups[:n]).sum(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.base(x)  # (B, N, dim)
        return h + self.position_embeddings(h.shape[1]).to(h.dtype)


def input_encoder(task: Task, dim: int) -> nn.Module:
    """Token embedding (tokens tasks) or a linear map of the input features (continuous tasks).

    A task that declares ``position_groups`` (N, G) and ``num_position_groups`` gets a :class:`GroupedEncoder`: the
    encoder above plus, per position, the sum of learned embeddings of its G group ids (std 0.02 at init); its
    ``weight`` is still the token embedding. Tasks without them get the plain ``nn.Embedding`` / ``nn.Linear``.
    """
    if task.kind == "tokens":
        encoder = nn.Embedding(task.vocab_size, dim)
        nn.init.normal_(encoder.weight, std=0.02)
    else:
        encoder = nn.Linear(task.input_dim, dim)
    groups = getattr(task, "position_groups", None)
    if groups is None:
        return encoder
    return GroupedEncoder(encoder, dim, groups, task.num_position_groups)


def caches_context(task: Task, encoder: nn.Module, backbone: nn.Module) -> bool:
    """Whether a causal model can run new positions after a key/value cache of earlier ones: a causal task, an input
    encoder that embeds each position on its own (a token embedding or a linear map; a grouped encoder also reads the
    position) and a backbone whose mixers cache (``extends_context``: attention, MoH)."""
    return (task.causal and isinstance(encoder, nn.Embedding | nn.Linear)
            and getattr(backbone, "extends_context", False))


def output_size(task: Task) -> int:
    return {"tokens": task.vocab_size, "classes": task.num_classes, "continuous": task.output_dim}[task.kind]


def output_head(task: Task, dim: int) -> nn.Linear:
    """Linear map to vocabulary logits (tokens), class logits (classes) or target features (continuous)."""
    head = nn.Linear(dim, output_size(task), bias=False)
    nn.init.normal_(head.weight, std=0.02)
    return head


def task_inputs(task: Task, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return batch["input_ids"] if task.kind == "tokens" else batch["inputs"]


def scored_positions(task: Task, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """(B, N) bool: the positions the task scores (tokens: targets not ``IGNORE_INDEX``; continuous: the batch's
    ``target_mask`` if any), or ``None`` when every position counts."""
    if task.kind == "tokens":
        return batch["targets"] != IGNORE_INDEX
    if task.kind == "continuous":
        return batch.get("target_mask")
    return None


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


def loss_sums(task: Task, prediction: torch.Tensor, batch: dict[str, torch.Tensor],
              continuous_loss: str = "mse") -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`prediction_loss` as ``(sum, count)``: summed cross-entropy over scored tokens (tokens) or samples
    (classes), summed MSE / SmoothL1 over the scored elements (continuous), and how many were summed."""
    targets = batch["targets"]
    if task.kind == "tokens":
        total = F.cross_entropy(prediction.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX,
                                reduction="sum")
        return total, (targets != IGNORE_INDEX).sum().to(total.device)
    if task.kind == "classes":
        total = F.cross_entropy(prediction.float(), targets, reduction="sum")
        return total, torch.tensor(targets.numel(), device=total.device)
    mask = batch.get("target_mask")
    if mask is not None:
        prediction, targets = prediction[mask], targets[mask]
    if continuous_loss == "mse":
        total = F.mse_loss(prediction.float(), targets.float(), reduction="sum")
    elif continuous_loss == "smooth_l1":
        total = F.smooth_l1_loss(prediction.float(), targets.float(), reduction="sum")
    else:
        raise ValueError(f"unknown continuous loss {continuous_loss!r}; use 'mse' or 'smooth_l1'")
    return total, torch.tensor(targets.numel(), device=total.device)


class Objective(nn.Module):
    """A trainable predictor of a task's targets (see the module docstring)."""

    thinks: ClassVar[bool] = False  # predicts by gradient descent on an energy: ``think(batch, steps=...)``, ``steps``
    samples: ClassVar[bool] = False  # predicts by iterative sampling from noise: ``sample(batch, steps=...)``

    @property
    def one_pass(self) -> bool:
        """Whether a prediction is one forward pass (neither thinking nor sampling): the plain predictor."""
        return not (self.thinks or self.samples)

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
    def evaluate_sums(self, batch: dict[str, torch.Tensor]) -> Sums:
        """The task's metrics and ``loss`` (:func:`loss_sums`) of the prediction for ``batch``, as ``(sum, count)``
        pairs: what every split evaluation accumulates (validation, ``scripts/eval.py``)."""
        prediction = self.predict(batch)
        sums = dict(self.task.metric_sums(prediction, batch))
        sums["loss"] = loss_sums(self.task, prediction, batch, self.continuous_loss)
        return sums

    def evaluate(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """:meth:`evaluate_sums` of one batch as ratios (scalars)."""
        return ratios(self.evaluate_sums(batch))
