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

    @abstractmethod
    def metrics(self, prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Task metrics (scalars) of a prediction, including ``self.metric``."""

    def describe(self) -> str:
        return type(self).__name__


def token_accuracy_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Exact match (every scored token of a sequence right) and per-token accuracy."""
    scored = targets != IGNORE_INDEX
    correct = (logits.argmax(-1) == targets) & scored
    exact = (correct | ~scored).all(dim=-1).float().mean()
    tok_acc = correct.sum().float() / scored.sum().clamp_min(1)
    return {"acc": exact, "tok_acc": tok_acc}


def classification_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Top-1 accuracy of (B, num_classes) logits."""
    return {"acc": (logits.argmax(-1) == targets).float().mean()}
