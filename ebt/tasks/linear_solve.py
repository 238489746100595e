"""Linear solve ``A x = b``: the continuous task on which thinking longer should pay (offline, continuous).

Gradient descent on a residual energy ``||A y - b||^2`` is a convergent solver whose step count grows with the
condition number of ``A``: a model that has learnt an energy whose minimum is the solution should need more steps,
and gain from them, on ill-conditioned systems it never saw. IRED (Du, Mao, Tenenbaum, ICML 2024) reasons about the
matrix inverse (:mod:`ebt.tasks.matrix_inverse`); one right-hand side is the same problem with an ``n``-number answer.

Systems: ``A`` from :meth:`MatrixInverse.matrices` (symmetric positive definite by default, ``||A||_2 = 1``,
``cond_2(A) = kappa`` drawn log-uniformly in ``cond`` for ``train`` / ``val`` / ``test`` and in ``ood_cond`` for
``ood``), the answer ``x ~ N(0, I_n)`` and ``b = A x`` (float64, returned as float32). Drawing the answer rather than
``b`` keeps the targets on one scale in every split (``mse`` of predicting zeros is about 1 everywhere), so the
splits' ``mse`` compare directly; what changes out of distribution is that ``b`` carries the answer's components
along the small singular directions scaled down by up to ``1 / kappa``. Sample ``j`` of a split comes from its own
stream (the matrix's ``rng(split, j)`` and, for ``x``, ``rng(split, OFFSET + j)``), so evaluation sets are fixed.

Tokens: ``n`` tokens, token ``i`` = row ``i`` of ``A``, ``b_i`` and a one-hot ``e_i`` (``input_dim = 2 n + 1``);
target token ``i`` = ``x_i`` (``output_dim = 1``). The batch also holds ``matrix`` (B, n, n) and ``rhs`` (B, n).

Metrics (means over systems): ``mse`` (headline, lower is better; per entry of ``x``), ``rel_error``
(``||y - x|| / ||x||``), ``residual`` (``||A y - b|| / ||b||``, float64), ``solved`` (``rel_error < solved_tol``), and
``mse_zero`` (predicting zeros) beside them.
"""

from collections.abc import Sequence

import numpy as np
import torch

from ebt.errors import ConfigError
from ebt.tasks.base import Task
from ebt.tasks.matrix_inverse import MatrixInverse
from ebt.tasks.metrics import Sums, mean_sums

ANSWER_STREAM_OFFSET = 1 << 40  # x of sample j comes from rng(split, OFFSET + j): apart from A's stream


class LinearSolve(Task):
    kind = "continuous"
    metric = "mse"
    metric_mode = "min"
    causal = False

    def __init__(self, *, n: int = 8, cond: Sequence[float] = (1.0, 10.0), ood_cond: Sequence[float] = (10.0, 30.0),
                 symmetric: bool = True, solved_tol: float = 0.1, seed: int = 0) -> None:
        super().__init__(seed=seed)
        if not solved_tol > 0:
            raise ConfigError(f"data.task.solved_tol must be > 0, got {solved_tol}")
        self.systems = MatrixInverse(n=n, cond=cond, ood_cond=ood_cond, symmetric=symmetric, seed=seed)
        self.n, self.solved_tol = n, float(solved_tol)
        self.input_dim, self.output_dim, self.max_len = 2 * n + 1, 1, n

    def make_batch(self, split: str, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        a, _ = self.systems.matrices(split, index, batch_size)
        x = np.stack([self.rng(split, ANSWER_STREAM_OFFSET + index * batch_size + row).standard_normal(self.n)
                      for row in range(batch_size)])
        b = np.einsum("bij,bj->bi", a, x)
        matrix, rhs = torch.from_numpy(a).float(), torch.from_numpy(b).float()
        eye = torch.eye(self.n).expand(batch_size, -1, -1)
        inputs = torch.cat([matrix, rhs.unsqueeze(-1), eye], dim=-1).contiguous()
        return {"inputs": inputs, "targets": torch.from_numpy(x).float().unsqueeze(-1), "matrix": matrix, "rhs": rhs}

    def sample_error(self, prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-system MSE (B,) against ``x``."""
        return (prediction.detach().double() - batch["targets"].double()).square().flatten(1).mean(dim=1)

    def sample_correct(self, prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per system (B,) bool: ``||y - x|| / ||x|| < solved_tol``."""
        return self._relative_error(prediction, batch) < self.solved_tol

    @staticmethod
    def _relative_error(prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        y, x = prediction.detach().double().flatten(1), batch["targets"].double().flatten(1)
        return (y - x).norm(dim=1) / x.norm(dim=1)

    def metric_sums(self, prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> Sums:
        """Every metric is a mean over systems (samples)."""
        if prediction.shape != batch["targets"].shape:
            raise ValueError(f"prediction shape {tuple(prediction.shape)} != targets {tuple(batch['targets'].shape)}")
        y = prediction.detach().double().flatten(1)
        a, b = batch["matrix"].double(), batch["rhs"].double()
        relative = self._relative_error(prediction, batch)
        per_sample = {"mse": self.sample_error(prediction, batch), "rel_error": relative,
                      "residual": (torch.einsum("bij,bj->bi", a, y) - b).norm(dim=1) / b.norm(dim=1),
                      "solved": (relative < self.solved_tol).double(),
                      "mse_zero": batch["targets"].double().square().flatten(1).mean(dim=1)}
        return {k: mean_sums(v.float().to(prediction.device)) for k, v in per_sample.items()}

    def describe(self) -> str:
        lo, hi = self.systems.cond
        ood_lo, ood_hi = self.systems.ood_cond
        family = "symmetric positive definite" if self.systems.symmetric else "general"
        return f"linear solve {self.n}x{self.n}, {family}, cond {lo:g}-{hi:g} (ood {ood_lo:g}-{ood_hi:g})"
