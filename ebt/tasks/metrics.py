"""Metrics of a split are ratios of totals: sums and counts accumulated over every evaluated batch.

Every metric a task reports is a ratio: bits per byte = total bits / total bytes, token accuracy = right tokens /
scored tokens, exact match = right samples / samples, a mean loss = summed loss / scored elements. A batch gives each
metric as ``(sum, count)`` (:data:`Sums`, what ``Task.metric_sums`` and ``Objective.evaluate_sums`` return), and a
split's value is the sum of the sums over the sum of the counts (:class:`MetricSums`): never the mean of per-batch
ratios, which weighs a batch of few scored tokens (or few bytes) like one of many.

Evaluation noise (:func:`evaluation_seed`, :func:`seed_batch` inside :func:`forked_rng`): an EBT's initial candidates
and Langevin noise, a diffusion model's sampling noise are drawn from the global torch stream. Every evaluation seeds
that stream per batch from ``(seed, split, batch index)``, so a split's numbers depend on the model, the batches and
the evaluation seed only: not on what ran before (training, another split, another setting), nor on the order or the
process (DDP rank) a batch is evaluated in. The evaluation seed is :data:`EVAL_SEED` (0) in validation, whatever the
run's training ``seed``, and the default ``seed=`` of ``scripts/eval.py`` and ``scripts/think.py``: validation during
training, the final validation behind ``summary.json``, ``eval.py`` and ``think.py`` evaluate a checkpoint with the
same noise; ``seed=N`` draws other noise for the same batches.
"""

import contextlib
import zlib
from collections.abc import Callable, Iterator

import numpy as np
import torch

Sums = dict[str, tuple[torch.Tensor, torch.Tensor]]  # metric name -> (sum, count) of one batch
EVAL_SEED = 0  # the evaluation seed of validation (and the default seed= of eval.py and think.py)


def ratio(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """``total / count``; 0 where nothing was counted (``count == 0``)."""
    total = torch.as_tensor(total)
    count = torch.as_tensor(count, device=total.device)
    quotient = total / torch.where(count > 0, count, torch.ones_like(count))
    return torch.where(count > 0, quotient, torch.zeros_like(quotient))


def ratios(sums: Sums) -> dict[str, torch.Tensor]:
    """``{name: sum / count}``: one batch's metrics from its :data:`Sums`."""
    return {name: ratio(total, count) for name, (total, count) in sums.items()}


def mean_sums(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum, count)`` of the mean of every element of ``values`` (e.g. (B,) per-sample values)."""
    return values.sum(), torch.tensor(values.numel(), device=values.device)


def masked_sums(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum, count)`` of the mean of ``values`` over the elements where ``mask`` is true."""
    mask = mask.to(values.device)
    return torch.where(mask, values, torch.zeros_like(values)).sum(), mask.sum()


class MetricSums:
    """Running sums and counts per metric over the batches of one split (float64, on the device of the values).

    ``add`` takes one batch's :data:`Sums`; ``compute`` gives ``{name: total sum / total count}``; ``reduce`` applies
    a sum over processes (``trainer.strategy.reduce(tensor, reduce_op="sum")`` under DDP) to every sum and count at
    once (one collective)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, torch.Tensor] = {}

    def __bool__(self) -> bool:
        return bool(self.sums)

    def add(self, sums: Sums, weight: float = 1.0) -> None:
        """Add one batch (``weight=0``: counted in nothing, only its names; a padded duplicate batch under DDP)."""
        for name, (total, count) in sums.items():
            total = torch.as_tensor(total).detach().double().reshape(())
            count = torch.as_tensor(count).detach().to(total.device).double().reshape(())
            if weight != 1.0:
                total, count = total * weight, count * weight
            if name in self.sums:
                self.sums[name] = self.sums[name] + total
                self.counts[name] = self.counts[name] + count
            else:
                self.sums[name], self.counts[name] = total, count

    def reduce(self, sum_over_processes: Callable[[torch.Tensor], torch.Tensor]) -> "MetricSums":
        """The sums and counts summed by ``sum_over_processes`` (every process must hold the same names)."""
        names = sorted(self.sums)
        out = MetricSums()
        if not names:
            return out
        stacked = torch.stack([*(self.sums[n] for n in names), *(self.counts[n] for n in names)])
        stacked = sum_over_processes(stacked)
        out.sums = dict(zip(names, stacked[:len(names)], strict=True))
        out.counts = dict(zip(names, stacked[len(names):], strict=True))
        return out

    def compute(self) -> dict[str, float]:
        """``{name: sum over batches / count over batches}`` in the order the names were first added."""
        return {name: float(ratio(self.sums[name], self.counts[name])) for name in self.sums}


def evaluation_seed(seed: int, split: str, index: int) -> int:
    """The torch seed of batch ``index`` of ``split`` in an evaluation with seed ``seed`` (a 63-bit integer from
    ``numpy.random.SeedSequence([seed, crc32(split), index, 1])``; the trailing 1 keeps it apart from any data stream
    seeded with the same numbers)."""
    entropy = [int(seed) % 2**63, zlib.crc32(split.encode()), int(index), 1]
    return int(np.random.SeedSequence(entropy).generate_state(2, np.uint64)[0] >> np.uint64(1))


def seed_batch(seed: int, split: str, index: int) -> None:
    """Seed the global torch stream (CPU and every CUDA device) for batch ``index`` of ``split``."""
    torch.manual_seed(evaluation_seed(seed, split, index))


@contextlib.contextmanager
def forked_rng() -> Iterator[None]:
    """The global torch streams (CPU and every CUDA device) as they were before, once the block ends."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        yield

