"""Matrix inversion, IRED's continuous reasoning task: predict ``A^{-1}`` from ``A`` (offline, continuous).

Du, Mao, Tenenbaum, "Learning Iterative Reasoning through Energy Diffusion" (IRED, ICML 2024), one of its
"continuous-space reasoning tasks"; reference code https://github.com/yilundu/ired_code_release at commit
9c3538d1ba862330d3fb616b71a52c1f2116020a (``dataset.py`` class ``Inverse``, ``train.py``).

What IRED does (read from that code): ``n = 20`` (``--rank`` default), ``U ~ Uniform(-1, 1)^{n x n}``,
``A = 2 U U^T + 0.5 I`` (symmetric positive definite), target ``A^{-1}``, both flattened into one vector for an
MLP energy model, metric MSE. The harder (``--ood``) split shrinks the diagonal shift to ``0.1 I``, which makes the
matrices ill conditioned: over 2,000 draws each (measured here), cond(A) has 5th-95th percentiles [71, 104]
(median 87) for training and [222, 503] (median 393) for the harder split at n = 20, and [19, 39] / [43, 181] at
n = 8. The top of the spectrum (about ``2 lambda_max(U U^T)``) is the same in both splits, so the harder split's
inverses have larger entries (RMS entry 0.28 -> 0.98 at n = 8); IRED does not rescale them.

This task, family and scale:

* ``symmetric=true`` (default, IRED's family): ``A = Q diag(s) Q^T``, symmetric positive definite, ``Q`` Haar
  orthogonal (QR of a Gaussian matrix, signs fixed). ``symmetric=false``: ``A = U diag(s) V^T`` with independent
  Haar ``U``, ``V`` (a general non-symmetric matrix with singular values ``s``).
* ``kappa`` is drawn log-uniformly in ``cond=[lo, hi]`` (``train``, ``val``, ``test``) or ``ood_cond=[lo, hi]``
  (``ood``); ``s_1 = 1``, ``s_n = 1 / kappa`` exactly, the other ``n - 2`` values log-uniform in between, so
  ``cond_2(A) = kappa`` exactly (up to float32 rounding of the returned matrix). Defaults: well conditioned
  ``[1, 10]``, ill conditioned ``[10, 100]`` (at n = 8; ``cond=[19, 39] ood_cond=[43, 181]`` mimics IRED's spread).
  Each range needs ``1 <= lo <= hi``; ``ood_cond`` may overlap ``cond`` or lie below it (a same-distribution or an
  easier control split), so that is not refused.
* Scale: ``||A||_2 = 1`` in every split (IRED also keeps the top of the spectrum fixed), so ``||A^{-1}||_2 =
  kappa``: ill-conditioned inverses have larger entries (RMS target entry about 1 on ``val``, about 8 on ``ood``
  with the defaults) and ``mse`` of different splits is not on one scale; ``rel_mse`` is.
* Generated in float64 (targets from the decomposition, ``Q diag(1/s) Q^T``, not from a numerical inverse) and
  returned as float32. Sample ``j`` of a split (``j = index * batch_size + row``) comes from its own stream
  ``rng(split, j)``, so every split, ``val`` / ``ood`` / ``test`` included, is one fixed sequence of matrices and
  an evaluation set does not change with the batch size it is cut into.

Tokens and batch: ``n`` tokens, token ``i`` for row ``i`` of ``A``; targets (B, n, n), token ``i`` = row ``i`` of
``A^{-1}``. Row ``i`` of ``A^{-1}`` is the vector with dot product 1 with column ``i`` of ``A`` and 0 with every
other column, so a token must know *which* row it is: attention's RoPE gives only relative positions (and other
mixers none) and the inverse is not equivariant to reordering rows alone (``(P A)^{-1} = A^{-1} P^T``). The token
features are chosen by ``features``, a list of parts concatenated in order (``input_dim = n * len(features)``):
``row`` (row ``i`` of ``A``), ``col`` (column ``i`` of ``A``; equal to the row when ``A`` is symmetric, useful
for ``symmetric=false``) and ``index`` (one-hot ``e_i``, the absolute position). Default ``[row, index]``: see the
docstring of :data:`DEFAULT_FEATURES` for the measurement behind it. The batch also holds ``matrix`` (B, n, n),
``A`` itself, which the metrics read whatever the features.

Deviations from IRED: conditioning is set directly (log-uniform ``kappa`` in a range, log-uniform interior
spectrum) instead of through the diagonal shift of ``2 U U^T`` (whose spectrum is Marchenko-Pastur-like with a
range that grows with ``n``); ``n = 8`` by default instead of 20 (CPU scale); ``||A||_2 = 1`` instead of about
19 (n = 8) / 47 (n = 20); a sequence of ``n`` row tokens instead of one flattened vector.

Metrics (scalars): ``mse`` (headline, lower is better; per entry), ``rel_mse`` (mean over samples of
``||Y - A^{-1}||_F^2 / ||A^{-1}||_F^2``, comparable across splits), ``residual`` (mean over samples of
``||A Y - I||_F / n``, in float64), ``solved`` (fraction of samples with residual below ``solved_tol``) and the
references beside them: ``mse_exact`` / ``residual_exact`` (``torch.linalg.inv(A)`` in float32: the limit of a
float32 answer) and ``mse_zero`` / ``residual_zero`` (predicting zeros; ``residual_zero = 1 / sqrt(n)``).
"""

import math
from collections.abc import Sequence

import numpy as np
import torch

from ebt.errors import ConfigError
from ebt.tasks.base import Task
from ebt.tasks.metrics import Sums, mean_sums

FEATURE_PARTS = ("row", "col", "index")
DEFAULT_FEATURES = ("row", "index")
"""Rows plus a one-hot row index. With the default predictor (``model/objective=predict``, dim 128, 2 attention layers,
1,000 steps of batch 64, seed 0, n = 8, cond [1, 10]) val MSE was 0.0042 with ``[row, index]`` against 0.0187 with
``[row]`` (do-nothing ``mse_zero`` 0.968): without the index a token has to infer which row it is."""


def _cond_range(name: str, value: Sequence[float]) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"data.task.{name} must be a pair [lo, hi] of numbers, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 1 or lo > hi:
        raise ConfigError(f"data.task.{name}=[{lo:g}, {hi:g}] must satisfy 1 <= lo <= hi (condition numbers)")
    return lo, hi


def haar_orthogonal(gaussian: np.ndarray) -> np.ndarray:
    """Haar-distributed orthogonal matrices (..., n, n) from standard Gaussian ones (QR with the signs of diag R)."""
    q, r = np.linalg.qr(gaussian)
    signs = np.sign(np.diagonal(r, axis1=-2, axis2=-1))
    return q * np.where(signs == 0, 1.0, signs)[..., None, :]


def residuals(matrix: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    """``||A Y - I||_F / n`` per sample (B,), computed in float64."""
    a, y = matrix.detach().double(), prediction.detach().double()
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    return torch.linalg.matrix_norm(a @ y - eye) / a.shape[-1]


class MatrixInverse(Task):
    kind = "continuous"
    metric = "mse"
    metric_mode = "min"
    causal = False

    def __init__(self, *, n: int = 8, cond: Sequence[float] = (1.0, 10.0), ood_cond: Sequence[float] = (10.0, 100.0),
                 symmetric: bool = True, features: Sequence[str] = DEFAULT_FEATURES, solved_tol: float = 0.1,
                 seed: int = 0) -> None:
        super().__init__(seed=seed)
        if n < 2:
            raise ConfigError(f"data.task.n must be >= 2 (matrix size), got {n}")
        self.cond, self.ood_cond = _cond_range("cond", cond), _cond_range("ood_cond", ood_cond)
        features = tuple(str(f) for f in features) if not isinstance(features, str) else (features,)
        unknown = [f for f in features if f not in FEATURE_PARTS]
        if not features or unknown or len(set(features)) != len(features):
            raise ConfigError(f"data.task.features={list(features)} must be distinct parts of {list(FEATURE_PARTS)}")
        if "row" not in features and "col" not in features:
            raise ConfigError(f"data.task.features={list(features)} must include row or col (the matrix itself)")
        if not solved_tol > 0:
            raise ConfigError(f"data.task.solved_tol must be > 0, got {solved_tol}")
        self.n, self.symmetric, self.features, self.solved_tol = n, bool(symmetric), features, float(solved_tol)
        self.input_dim = n * len(features)
        self.output_dim = self.max_len = n

    def cond_range(self, split: str) -> tuple[float, float]:
        return self.ood_cond if split == "ood" else self.cond

    def matrices(self, split: str, index: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """``A`` and ``A^{-1}`` (float64, (B, n, n)) of batch ``index``; sample ``j`` from ``rng(split, j)``."""
        n, lo, hi = self.n, *self.cond_range(split)
        log_kappa = np.empty(batch_size)
        interior = np.empty((batch_size, n - 2))
        gaussian = np.empty((batch_size, 1 if self.symmetric else 2, n, n))
        for row in range(batch_size):
            rng = self.rng(split, index * batch_size + row)
            log_kappa[row] = rng.uniform(math.log(lo), math.log(hi))
            interior[row] = rng.uniform(0.0, 1.0, n - 2)
            gaussian[row] = rng.standard_normal(gaussian.shape[1:])
        fraction = np.concatenate([np.zeros((batch_size, 1)), interior, np.ones((batch_size, 1))], axis=1)
        s = np.exp(-log_kappa[:, None] * fraction)  # (B, n): s_1 = 1 >= ... , s_n = 1 / kappa
        bases = haar_orthogonal(gaussian)
        u = bases[:, 0]
        v = u if self.symmetric else bases[:, 1]
        a = (u * s[:, None, :]) @ v.transpose(0, 2, 1)  # U diag(s) V^T
        inverse = (v / s[:, None, :]) @ u.transpose(0, 2, 1)  # V diag(1/s) U^T
        if self.symmetric:  # exactly symmetric despite rounding
            a, inverse = (a + a.transpose(0, 2, 1)) / 2, (inverse + inverse.transpose(0, 2, 1)) / 2
        return a, inverse

    def make_batch(self, split: str, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        a, inverse = self.matrices(split, index, batch_size)
        matrix = torch.from_numpy(a).float()
        parts = {"row": lambda: matrix, "col": lambda: matrix.transpose(1, 2),
                 "index": lambda: torch.eye(self.n).expand(batch_size, -1, -1)}
        inputs = torch.cat([parts[f]() for f in self.features], dim=-1).contiguous()
        return {"inputs": inputs, "targets": torch.from_numpy(inverse).float(), "matrix": matrix}

    # ----- metrics --------------------------------------------------------------------------------------------
    def sample_error(self, prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-sample MSE (B,) against ``A^{-1}``."""
        return (prediction.detach().double() - batch["targets"].double()).square().flatten(1).mean(dim=1)

    def sample_correct(self, prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per sample (B,) bool: ``||A Y - I||_F / n < solved_tol``."""
        return residuals(batch["matrix"], prediction) < self.solved_tol

    def metric_sums(self, prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> Sums:
        """Every metric is a mean over matrices (samples)."""
        if prediction.shape != batch["targets"].shape:
            raise ValueError(f"prediction shape {tuple(prediction.shape)} != targets {tuple(batch['targets'].shape)}")
        targets, matrix = batch["targets"].double(), batch["matrix"]
        target_sq = targets.square().flatten(1).mean(dim=1)  # (B,)
        error = self.sample_error(prediction, batch)
        residual = residuals(matrix, prediction)
        exact = torch.linalg.inv(matrix.float())
        per_sample = {"mse": error, "rel_mse": error / target_sq, "residual": residual,
                      "solved": (residual < self.solved_tol).double(), "mse_exact": self.sample_error(exact, batch),
                      "residual_exact": residuals(matrix, exact), "mse_zero": target_sq,
                      "residual_zero": torch.full_like(target_sq, 1.0 / math.sqrt(self.n))}
        return {k: mean_sums(v.float().to(prediction.device)) for k, v in per_sample.items()}

    def describe(self) -> str:
        family = "symmetric positive definite" if self.symmetric else "general"
        return (f"matrix inverse {self.n}x{self.n}, {family}, cond {self.cond[0]:g}-{self.cond[1]:g} "
                f"(ood {self.ood_cond[0]:g}-{self.ood_cond[1]:g}), tokens = [{', '.join(self.features)}]")
