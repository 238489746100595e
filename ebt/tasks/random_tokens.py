"""Uniform random tokens: the workload of the benchmarks (``ebt/benchmarks/``), where the cost of a step does not
depend on the data."""

import torch

from ebt.tasks.base import Task


class RandomTokens(Task):
    """Uniform random tokens of ``vocab_size`` ids, ``seq`` per row; batch ``index`` is seeded by ``index``."""

    kind, metric, metric_mode, causal = "tokens", "acc", "max", True

    def __init__(self, vocab_size: int, seq: int) -> None:
        super().__init__(seed=0)
        self.vocab_size, self.seq = vocab_size, seq

    def make_batch(self, split: str, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(index)
        ids = torch.randint(0, self.vocab_size, (batch_size, self.seq + 1), generator=generator)
        return {"input_ids": ids[:, :-1], "targets": ids[:, 1:]}

    def metrics(self, prediction, batch):
        return {"acc": (prediction.argmax(-1) == batch["targets"]).float().mean()}
