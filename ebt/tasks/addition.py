"""n-digit integer addition as a token sequence (the default task).

A sample with ``d`` digits is ``a + b = c`` where ``a, b`` are uniform in ``[0, 10^d)``, written
least-significant digit first and zero-padded to ``d`` digits; ``c`` has ``d + 1`` digits, also reversed
(reversal makes each answer digit depend on aligned operand digits and one carry, which small models
learn quickly). Training draws ``d`` uniformly from ``1..n_digits``; the OOD split uses
``n_digits+1 .. ood_digits`` digits, so it measures length generalisation. Sequences are right-padded.

Only the answer tokens are scored. ``acc`` is exact match over the whole answer; with teacher forcing it
equals greedy-decoding accuracy (greedy decoding is right iff every teacher-forced argmax is right).
"""

import numpy as np
import torch

from ebt.errors import ConfigError
from ebt.tasks.base import IGNORE_INDEX, Task, token_accuracy_sums
from ebt.tasks.metrics import Sums

PLUS, EQUALS, PAD = 10, 11, 12


class Addition(Task):
    kind = "tokens"
    metric = "acc"
    metric_mode = "max"
    causal = True
    vocab_size = 13

    def __init__(self, *, n_digits: int = 3, ood_digits: int | None = None, seed: int = 0) -> None:
        super().__init__(seed=seed)
        if n_digits < 1:
            raise ConfigError(f"data.task.n_digits must be >= 1, got {n_digits}")
        self.n_digits = n_digits
        self.ood_digits = ood_digits if ood_digits is not None else n_digits + 2
        if self.ood_digits <= n_digits:
            raise ConfigError(f"data.task.ood_digits ({self.ood_digits}) must exceed data.task.n_digits ({n_digits})")
        self.max_len = self.seq_len("ood")  # ood has the most digits

    def digit_range(self, split: str) -> tuple[int, int]:
        return (self.n_digits + 1, self.ood_digits) if split == "ood" else (1, self.n_digits)

    def seq_len(self, split: str) -> int:
        """Input length (the full sequence minus one for the next-token shift)."""
        d = self.digit_range(split)[1]
        return 3 * d + 3 - 1

    def make_batch(self, split: str, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        rng = self.rng(split, index)
        lo, hi = self.digit_range(split)
        total = self.seq_len(split) + 1
        seqs = np.full((batch_size, total), PAD, dtype=np.int64)
        scored = np.zeros((batch_size, total), dtype=bool)
        digits = rng.integers(lo, hi + 1, size=batch_size)
        for row, d in enumerate(digits):
            a, b = (rng.integers(0, 10, size=d) for _ in range(2))  # reversed digits
            c = _add_reversed(a, b)
            seq = np.concatenate([a, [PLUS], b, [EQUALS], c])
            seqs[row, : len(seq)] = seq
            scored[row, 2 * d + 2 : 3 * d + 3] = True
        inputs = torch.from_numpy(seqs[:, :-1])
        targets = torch.from_numpy(np.where(scored, seqs, IGNORE_INDEX)[:, 1:])
        return {"input_ids": inputs, "targets": targets}

    def metric_sums(self, prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> Sums:
        return token_accuracy_sums(prediction, batch["targets"])

    def describe(self) -> str:
        return f"addition of 1..{self.n_digits}-digit numbers (OOD: {self.n_digits + 1}..{self.ood_digits})"


def _add_reversed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Digit-wise sum of two reversed numbers of equal length; returns ``len(a) + 1`` reversed digits."""
    out = np.zeros(len(a) + 1, dtype=np.int64)
    carry = 0
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        s = int(x) + int(y) + carry
        out[i], carry = s % 10, s // 10
    out[-1] = carry
    return out
