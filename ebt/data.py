"""Lightning data plumbing around a :class:`~ebt.tasks.base.Task`.

Training reads an endless, deterministic stream: batch ``i`` is ``task.make_batch("train", i)``. The stream
starts at the trainer's current step, so a resumed run sees exactly the batches an uninterrupted run would.
Evaluation splits are fixed lists of batches generated once.
"""

from collections.abc import Callable, Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from ebt.errors import ConfigError
from ebt.tasks.base import Task


class TrainStream(IterableDataset):
    def __init__(self, task: Task, batch_size: int, start_index: Callable[[], int], overfit_batches: int = 0):
        self.task, self.batch_size = task, batch_size
        self.start_index, self.overfit_batches = start_index, overfit_batches

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        index = self.start_index()
        while True:
            source = index % self.overfit_batches if self.overfit_batches else index
            yield self.task.make_batch("train", source, self.batch_size)
            index += 1


class FixedBatches(Dataset):
    def __init__(self, batches: list[dict[str, torch.Tensor]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.batches[i]


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

    def _start_index(self) -> int:
        trainer = self.trainer
        return 0 if trainer is None else trainer.global_step * trainer.accumulate_grad_batches

    def eval_set(self, split: str) -> FixedBatches:
        if split not in self._eval_sets:
            if self.overfit_batches:  # overfitting: evaluate on the very batches trained on
                batches = [self.task.make_batch("train", i, self.batch_size) for i in range(self.overfit_batches)]
            else:
                batches = [self.task.make_batch(split, i, self.eval_batch_size) for i in range(self.eval_batches)]
            self._eval_sets[split] = FixedBatches(batches)
        return self._eval_sets[split]

    def train_dataloader(self) -> DataLoader:
        stream = TrainStream(self.task, self.batch_size, self._start_index, self.overfit_batches)
        return DataLoader(stream, batch_size=None, num_workers=0)

    def val_dataloader(self) -> list[DataLoader]:
        return [DataLoader(self.eval_set(s), batch_size=None, shuffle=False) for s in self.task.eval_splits]
