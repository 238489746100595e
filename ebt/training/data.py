"""Lightning data plumbing around a :class:`~ebt.tasks.base.Task`.

Training reads an endless, deterministic stream: batch ``i`` is ``task.make_batch("train", i)``. The stream
starts at the trainer's current step, so a resumed run sees exactly the batches an uninterrupted run would.
Evaluation splits are fixed lists of batches generated once.

Many processes (DDP/FSDP, ``W`` = devices x nodes): ``data.batch_size`` is the batch of one process. Global batch
``i`` is ``task.make_batch("train", i, batch_size * W)`` and rank ``r`` trains on its rows ``r*batch_size ..
(r+1)*batch_size - 1``, so ``W`` processes see exactly the batches of one process run with ``batch_size * W``.
Evaluation batches are split between ranks by Lightning's ``DistributedSampler`` (whole batches per rank).

Every loader has its own ``torch.Generator``: creating a loader's iterator draws a base seed from the loader's
generator, which would otherwise come from torch's global stream. A resumed run creates the training iterator right
after the checkpoint's RNG state is restored, so a global draw there would shift every later noise draw (EBT init
noise, Langevin noise, random step counts); with a generator per loader the global stream is untouched. (The base
seed only seeds worker processes, which these loaders do not use, so the generators' states need no checkpointing.)
"""

import math
from collections.abc import Callable, Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from ebt.errors import ConfigError, DataError
from ebt.tasks.base import Task


def own_generator() -> torch.Generator:
    """A loader's generator, seeded from the run seed without drawing from (or advancing) the global stream."""
    return torch.Generator().manual_seed(torch.initial_seed())


def single_process() -> tuple[int, int]:
    return 0, 1


class TrainStream(IterableDataset):
    """Endless training batches from ``start_index()`` on; this rank's shard of each global batch."""

    def __init__(self, task: Task, batch_size: int, start_index: Callable[[], int], overfit_batches: int = 0,
                 shard: Callable[[], tuple[int, int]] = single_process) -> None:
        self.task, self.batch_size = task, batch_size
        self.start_index, self.overfit_batches, self.shard = start_index, overfit_batches, shard

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        index = self.start_index()
        rank, world = self.shard()
        rows = slice(rank * self.batch_size, (rank + 1) * self.batch_size)
        while True:
            source = index % self.overfit_batches if self.overfit_batches else index
            batch = self.task.make_batch("train", source, self.batch_size * world)
            yield batch if world == 1 else {k: v[rows] for k, v in batch.items()}
            index += 1


class FixedBatches(Dataset):
    def __init__(self, batches: list[dict[str, torch.Tensor]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.batches[i]


def check_input_shapes(task: Task) -> None:
    """Every split's inputs must fit the model built from the task: ``input_dim`` features per token and, on a token
    grid (images), ``prod(spatial_shape)`` tokens. Raises :class:`DataError` naming the split otherwise."""
    if task.kind == "tokens":
        return
    grid = math.prod(task.spatial_shape) if task.spatial_shape else None
    for split in ("train", *task.eval_splits):
        n, features = task.make_batch(split, 0, 1)["inputs"].shape[1:]
        if features != task.input_dim or (grid is not None and n != grid):
            expected = f"{grid} tokens (a {'x'.join(map(str, task.spatial_shape))} grid) of " if grid else ""
            raise DataError(f"data split {split!r}: inputs are {n} tokens of {features} features but the model expects "
                            f"{expected}{task.input_dim} features (from the training data); every split's images "
                            "must have the training images' size and channels")


class TaskDataModule(L.LightningDataModule):
    def __init__(self, task: Task, *, batch_size: int = 64, eval_batches: int = 8,
                 eval_batch_size: int | None = None, overfit_batches: int = 0) -> None:
        super().__init__()
        if batch_size < 1 or eval_batches < 1:
            raise ConfigError("data.batch_size and data.eval_batches must be >= 1")
        self.task = task
        self.batch_size, self.eval_batches = batch_size, eval_batches
        self.eval_batch_size = eval_batch_size or batch_size
        self.overfit_batches = overfit_batches
        self._eval_sets: dict[str, FixedBatches] = {}
        check_input_shapes(task)

    def _start_index(self) -> int:
        trainer = self.trainer
        return 0 if trainer is None else trainer.global_step * trainer.accumulate_grad_batches

    def _shard(self) -> tuple[int, int]:
        trainer = self.trainer
        return (0, 1) if trainer is None else (trainer.global_rank, trainer.world_size)

    def eval_set(self, split: str) -> FixedBatches:
        if split not in self._eval_sets:
            if self.overfit_batches:  # overfitting: evaluate on the very batches trained on
                size = self.batch_size * self._shard()[1]  # the global batches trained on
                batches = [self.task.make_batch("train", i, size) for i in range(self.overfit_batches)]
            else:
                batches = [self.task.make_batch(split, i, self.eval_batch_size) for i in range(self.eval_batches)]
            self._eval_sets[split] = FixedBatches(batches)
        return self._eval_sets[split]

    def train_dataloader(self) -> DataLoader:
        stream = TrainStream(self.task, self.batch_size, self._start_index, self.overfit_batches, self._shard)
        return DataLoader(stream, batch_size=None, num_workers=0, generator=own_generator())

    def val_dataloader(self) -> list[DataLoader]:
        return [DataLoader(self.eval_set(s), batch_size=None, shuffle=False, generator=own_generator())
                for s in self.task.eval_splits]
