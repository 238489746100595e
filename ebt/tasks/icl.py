"""In-context learning of function classes (Garg, Tsipras, Liang, Valiant, NeurIPS 2022).

Reference code: https://github.com/dtsip/in-context-learning at commit 338337192195827c58356f9b627e5f999ea703d2
(``src/samplers.py``, ``src/tasks.py``).

Each prompt draws a function ``f`` from a family and ``K = n_points`` inputs ``x_i ~ N(0, I_d)``; the model
sees ``(x_1, f(x_1), ..., x_i)`` and predicts ``f(x_i)`` for every ``i`` (causally: from the ``i - 1`` earlier
examples and the query). Families (``data.task.family``):

* ``linear``: ``f(x) = w.x``, ``w ~ N(0, I_d)``.
* ``sparse_linear``: the same with all but ``sparsity`` random coordinates of ``w`` set to zero.
* ``relu_nn``: ``f(x) = sqrt(2 / r) * sum_j a_j relu(W_j.x)``, ``W_j ~ N(0, I_d)``, ``a_j ~ N(0, 1)``,
  ``r = hidden`` (Garg et al. use r = 100; the scale makes ``Var f(x) = d``).
* ``decision_tree``: a complete tree of depth ``depth``; each internal node tests one uniformly drawn
  coordinate ``x_c > 0`` (right) or not (left); leaves ``~ N(0, 1)``.

Optional label noise ``noise_std``. OOD split: inputs scaled by ``ood_x_scale`` (``x ~ N(0, s^2 I)``) and, if
set, ``ood_points`` examples per prompt (longer prompts than in training).

Prompt formats (``data.task.format``), with token features ``F_in = d + 1``:

* ``interleaved`` (Garg et al.): ``2K`` tokens ``[x_1, 0], [0, y_1], [x_2, 0], [0, y_2], ...``; the target of
  token ``2i`` (an ``x`` token) is ``y_i``; ``y`` tokens are not scored: their target is 0 and
  ``batch["target_mask"]`` is False there. Deviation: Garg et al. write ``y`` into the first coordinate of a
  ``d``-dim token; here it has its own coordinate, so ``x`` and ``y`` tokens cannot be confused.
* ``paired``: ``K`` tokens ``[x_i, y_{i-1}]`` (``y_0 = 0``), every token scored. The model sees exactly the same
  information before each prediction as in the interleaved format, at half the length, and a plain MSE over all
  positions is exactly the right loss.

The batch holds ``inputs`` (B, N, d+1), ``targets`` (B, N, 1), ``target_mask`` (B, N), the raw ``xs`` (B, K, d)
and ``ys`` (B, K) (for the baselines in ``ebt/tasks/icl_baselines.py``) and ``y_var`` (B,), the prior variance of
``f(x)`` (plus noise) under the split. Metric: ``err = (prediction - y)^2 / y_var`` averaged over prompts and
query positions (predicting 0 scores 1; for ``linear`` this is Garg et al.'s squared error / d), and ``err_k{k}``
at the query that follows ``k`` in-context examples.
"""

import math

import numpy as np
import torch
from einops import rearrange

from ebt.errors import ConfigError
from ebt.tasks.base import Task
from ebt.tasks.metrics import Sums, mean_sums

FAMILIES = ("linear", "sparse_linear", "relu_nn", "decision_tree")
FORMATS = ("interleaved", "paired")


class ICLRegression(Task):
    kind = "continuous"
    metric = "err"
    metric_mode = "min"
    causal = True
    output_dim = 1

    def __init__(self, *, family: str = "linear", n_dims: int = 5, n_points: int = 11, sparsity: int = 2,
                 hidden: int = 100, depth: int = 4, noise_std: float = 0.0, format: str = "interleaved",
                 ood_x_scale: float = 2.0, ood_points: int | None = None, report_ks: list[int] | None = None,
                 seed: int = 0) -> None:
        super().__init__(seed=seed)
        if family not in FAMILIES:
            raise ConfigError(f"data.task.family={family!r} is unknown; use one of {', '.join(FAMILIES)}")
        if format not in FORMATS:
            raise ConfigError(f"data.task.format={format!r} is unknown; use one of {', '.join(FORMATS)}")
        for name, value in (("n_dims", n_dims), ("n_points", n_points), ("hidden", hidden), ("depth", depth)):
            if value < 1:
                raise ConfigError(f"data.task.{name} must be >= 1, got {value}")
        if family == "sparse_linear" and not 1 <= sparsity <= n_dims:
            raise ConfigError(f"data.task.sparsity={sparsity} must be in 1..n_dims={n_dims}")
        if noise_std < 0:
            raise ConfigError(f"data.task.noise_std must be >= 0, got {noise_std}")
        if ood_x_scale <= 0:
            raise ConfigError(f"data.task.ood_x_scale must be > 0, got {ood_x_scale}")
        if ood_points is not None and ood_points < 1:
            raise ConfigError(f"data.task.ood_points={ood_points} must be >= 1 (or null: same as n_points)")
        self.family, self.format = family, format
        self.n_dims, self.n_points, self.sparsity = n_dims, n_points, sparsity
        self.hidden, self.depth, self.noise_std = hidden, depth, noise_std
        self.ood_x_scale, self.ood_points = ood_x_scale, ood_points
        default_ks = (1, n_dims // 2, n_dims, 2 * n_dims)
        self.report_ks = tuple(sorted(set(report_ks if report_ks is not None else default_ks)))
        self.input_dim = n_dims + 1
        tokens_per_point = 2 if format == "interleaved" else 1
        self.max_len = tokens_per_point * max(self.points("train"), self.points("ood"))

    # ----- sampling -------------------------------------------------------------------------------------------
    def points(self, split: str) -> int:
        return (self.ood_points or self.n_points) if split == "ood" else self.n_points

    def x_scale(self, split: str) -> float:
        return self.ood_x_scale if split == "ood" else 1.0

    def y_variance(self, split: str) -> float:
        """Prior variance of ``f(x)`` plus noise: the error of always predicting 0."""
        if self.family == "decision_tree":  # leaves ~ N(0, 1) whatever the input scale
            return 1.0 + self.noise_std**2
        signal = self.sparsity if self.family == "sparse_linear" else self.n_dims  # Var(w.x) = ||w||^2, relu: d
        return signal * self.x_scale(split) ** 2 + self.noise_std**2

    def sample_functions(self, rng: np.random.Generator, xs: np.ndarray) -> np.ndarray:
        """``f(xs)`` (B, K) for one freshly drawn ``f`` per prompt; ``xs`` is (B, K, d)."""
        b, _, d = xs.shape
        if self.family in ("linear", "sparse_linear"):
            w = rng.standard_normal((b, d))
            if self.family == "sparse_linear":
                ranks = rng.random((b, d)).argsort(axis=1).argsort(axis=1)
                w = np.where(ranks < self.sparsity, w, 0.0)
            return np.einsum("bkd,bd->bk", xs, w)
        if self.family == "relu_nn":
            w1 = rng.standard_normal((b, d, self.hidden))
            a = rng.standard_normal((b, self.hidden))
            hidden = np.maximum(np.einsum("bkd,bdh->bkh", xs, w1), 0.0)
            return np.einsum("bkh,bh->bk", hidden, a) * math.sqrt(2 / self.hidden)
        n_internal = 2**self.depth - 1
        features = rng.integers(0, d, size=(b, n_internal))
        leaves = rng.standard_normal((b, n_internal + 1))
        node = np.zeros(xs.shape[:2], dtype=np.int64)  # (B, K), heap order: children of n are 2n+1, 2n+2
        for _ in range(self.depth):
            coord = np.take_along_axis(features, node, axis=1)  # (B, K)
            right = np.take_along_axis(xs, coord[..., None], axis=2)[..., 0] > 0
            node = 2 * node + 1 + right
        return np.take_along_axis(leaves, node - n_internal, axis=1)

    def make_batch(self, split: str, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        rng = self.rng(split, index)
        k, d = self.points(split), self.n_dims
        xs = rng.standard_normal((batch_size, k, d)) * self.x_scale(split)
        ys = self.sample_functions(rng, xs)
        if self.noise_std:
            ys = ys + self.noise_std * rng.standard_normal(ys.shape)
        xs_t = torch.from_numpy(xs).float()  # (B, K, d)
        ys_t = torch.from_numpy(ys).float()  # (B, K)
        zeros = torch.zeros_like(ys_t)
        if self.format == "interleaved":
            x_tokens = torch.cat([xs_t, zeros[..., None]], dim=-1)  # (B, K, d+1)
            y_tokens = torch.cat([torch.zeros_like(xs_t), ys_t[..., None]], dim=-1)  # (B, K, d+1)
            inputs = rearrange([x_tokens, y_tokens], "two b k f -> b (k two) f")  # (B, 2K, d+1)
            targets = rearrange([ys_t, zeros], "two b k -> b (k two) 1")  # (B, 2K, 1)
            mask = rearrange([torch.ones_like(ys_t), zeros], "two b k -> b (k two)").bool()  # (B, 2K)
        else:
            previous_y = torch.cat([zeros[:, :1], ys_t[:, :-1]], dim=1)  # (B, K): y_{i-1}, y_0 = 0
            inputs = torch.cat([xs_t, previous_y[..., None]], dim=-1)  # (B, K, d+1)
            targets = ys_t[..., None]  # (B, K, 1)
            mask = torch.ones_like(ys_t, dtype=torch.bool)  # (B, K)
        y_var = torch.full((batch_size,), self.y_variance(split))
        return {"inputs": inputs, "targets": targets, "target_mask": mask, "xs": xs_t, "ys": ys_t, "y_var": y_var}

    # ----- metrics --------------------------------------------------------------------------------------------
    def query_predictions(self, prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The model's prediction of ``y_i`` at each query (B, K), from a (B, N, 1) prediction."""
        b, k = batch["ys"].shape
        if prediction.shape != batch["targets"].shape:
            raise ValueError(f"prediction shape {tuple(prediction.shape)} != targets {tuple(batch['targets'].shape)}")
        return prediction[..., 0][batch["target_mask"]].reshape(b, k)

    @staticmethod
    def normalized_errors(query_pred: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(y_hat - y)^2 / y_var`` per prompt and query (B, K)."""
        return (query_pred.float() - batch["ys"].float()).square() / batch["y_var"][:, None]

    def metric_sums(self, prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> Sums:
        errors = self.normalized_errors(self.query_predictions(prediction, batch), batch)  # (B, K)
        out = {"err": mean_sums(errors), "err_last": mean_sums(errors[:, -1])}
        for k in self.report_ks:
            if k < errors.shape[1]:
                out[f"err_k{k}"] = mean_sums(errors[:, k])
        return out

    def describe(self) -> str:
        ood = f"x scale {self.ood_x_scale}" + (f", {self.ood_points} points" if self.ood_points else "")
        return (f"in-context {self.family} regression, d={self.n_dims}, {self.n_points} examples, "
                f"{self.format} prompts (OOD: {ood})")
