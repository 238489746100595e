"""The task protocol every data source implements.

A task is deterministic: ``make_batch(split, index, batch_size)`` always returns the same tensors for
the same ``(seed, split, index)``, which makes training streams resumable and evaluation sets fixed.

Three kinds of task exist:

* ``kind = "tokens"``: batches hold ``input_ids`` (B, T) and ``targets`` (B, T) with ``IGNORE_INDEX``
  where no prediction is scored; predictions are logits (B, T, V).
* ``kind = "continuous"``: batches hold ``inputs`` (B, N, F_in) and ``targets`` (B, N, F_out);
  predictions have the shape of ``targets``.
* ``kind = "classes"``: batches hold ``inputs`` (B, N, F_in) and integer ``targets`` (B,); predictions are
  logits (B, num_classes) made from the mean over tokens (image classification).
"""

import zlib
from abc import ABC, abstractmethod
from typing import ClassVar, Literal

import numpy as np
import torch

from ebt.tasks.metrics import Sums, masked_sums, mean_sums, ratios

IGNORE_INDEX = -100
SPLIT_IDS = {"train": 0, "val": 1, "ood": 2, "test": 3}  # fixed stream ids: never change them (resume, eval sets)


def split_id(split: str, extra: tuple[str, ...] | list[str] = ()) -> int:
    """The stream id of ``split``: :data:`SPLIT_IDS` for the standard splits, ``zlib.crc32(name)`` for a name in
    ``extra`` (a task's own evaluation splits); any other name is a ``ValueError`` listing the valid ones."""
    if split in SPLIT_IDS:
        return SPLIT_IDS[split]
    if split in extra:
        return zlib.crc32(split.encode())
    raise ValueError(f"unknown split {split!r}; expected one of {sorted({*SPLIT_IDS, *extra})}")


class Task(ABC):
    kind: ClassVar[Literal["tokens", "continuous", "classes"]]
    metric: ClassVar[str]  # the headline metric, a key of ``metrics()``
    metric_mode: ClassVar[Literal["max", "min"]]
    causal: bool  # predictions at position t may only depend on inputs <= t
    vocab_size: int | None = None  # tokens tasks
    num_classes: int | None = None  # classes tasks
    input_dim: int | None = None  # continuous and classes tasks
    output_dim: int | None = None
    spatial_shape: tuple[int, ...] | None = None  # token grid of image tasks, e.g. (H, W)
    max_len: int | None = None  # longest token sequence of any split (train/val/ood/test); None: unknown
    position_groups: torch.Tensor | None = None  # (N, G) int64 group ids of each position (e.g. a cell's row, column
    # and box), in [0, num_position_groups): the input encoder adds one learned embedding per group id
    num_position_groups: int = 0
    valid_range: tuple[float, float] | None = None  # continuous: the interval every target value lies in

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = seed

    @property
    def eval_splits(self) -> tuple[str, ...]:
        """Splits evaluated during validation, in order (``val`` first)."""
        return ("val", "ood")

    def rng(self, split: str, index: int) -> np.random.Generator:
        """Independent, reproducible random stream for one batch: ``default_rng([seed, split id, index])``.

        The split id is fixed for the standard splits (:data:`SPLIT_IDS`) and ``zlib.crc32`` of the name for any other
        split the task evaluates (``eval_splits``, e.g. the text task's named ``ood_<name>`` corpora); a name that is
        neither is a ``ValueError``."""
        extra = () if split in SPLIT_IDS else self.eval_splits
        return np.random.default_rng([self.seed, split_id(split, extra), index])

    @abstractmethod
    def make_batch(self, split: str, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        """The batch number ``index`` of ``split``."""

    def metric_sums(self, prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> Sums:
        """Each task metric of a prediction as ``(sum, count)`` over the batch (:mod:`ebt.tasks.metrics`), including
        ``self.metric``: a split's value is the total sum over the total count of its batches.

        A task implements this (or, older style, only :meth:`metrics`). The default, for a task that implements only
        :meth:`metrics`, weighs each batch metric by the batch's samples, ``(value * B, B)``: exact for per-sample
        means over equal-sized samples, approximate for a ratio whose denominator varies between batches."""
        if type(self).metrics is Task.metrics:
            raise NotImplementedError(f"{type(self).__name__} implements neither metric_sums nor metrics")
        samples = batch["targets"].shape[0]
        return {name: (value * samples, torch.tensor(samples, device=value.device))
                for name, value in self.metrics(prediction, batch).items()}

    def metrics(self, prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Task metrics (scalars) of one batch, including ``self.metric``: ``sum / count`` of :meth:`metric_sums`
        (per-batch callers: training logs, tests). Evaluating a split accumulates :meth:`metric_sums` instead."""
        if type(self).metric_sums is Task.metric_sums:
            raise NotImplementedError(f"{type(self).__name__} implements neither metric_sums nor metrics")
        return ratios(self.metric_sums(prediction, batch))

    def describe(self) -> str:
        return type(self).__name__


def token_accuracy_sums(logits: torch.Tensor, targets: torch.Tensor) -> Sums:
    """Exact match (``acc``: sequences with every scored token right / sequences) and per-token accuracy
    (``tok_acc``: right scored tokens / scored tokens)."""
    scored = targets != IGNORE_INDEX
    correct = (logits.argmax(-1) == targets) & scored
    return {"acc": mean_sums((correct | ~scored).all(dim=-1).float()), "tok_acc": masked_sums(correct.float(), scored)}


def token_accuracy_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`token_accuracy_sums` of one batch as ratios."""
    return ratios(token_accuracy_sums(logits, targets))


def classification_sums(logits: torch.Tensor, targets: torch.Tensor) -> Sums:
    """Top-1 accuracy of (B, num_classes) logits: right samples / samples."""
    return {"acc": mean_sums((logits.argmax(-1) == targets).float())}


def classification_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`classification_sums` of one batch as a ratio."""
    return ratios(classification_sums(logits, targets))
