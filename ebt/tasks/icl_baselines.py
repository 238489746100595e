"""Baselines for in-context regression (Garg et al., 2022, Sec. 3-4), computed on the same prompts as the model.

Every baseline maps ``xs`` (B, K, d) and ``ys`` (B, K) to predictions (B, K): the prediction at query ``i`` is
fitted on the examples ``0..i-1`` only (the ``i`` examples a causal model has seen) and is 0 when ``i = 0``.

* ``least_squares``: minimum-norm least squares ``w = pinv(X_<i) y_<i`` (the Bayes-optimal estimator for
  noiseless Gaussian linear regression; exact once ``i >= d``).
* ``averaging``: ``w = (1/i) sum_j y_j x_j``, then ``w.x_i``.
* ``nearest_neighbours``: mean ``y`` of the 3 (or fewer, when ``i < 3``) nearest earlier ``x`` (Euclidean).
* ``lasso``: scikit-learn ``Lasso(alpha)`` without intercept (sparse linear regression).
* ``decision_tree``: scikit-learn ``DecisionTreeRegressor(max_depth=4)`` (decision-tree prompts).
"""

from collections.abc import Callable

import numpy as np
import torch
from einops import einsum

Baseline = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check(xs: torch.Tensor, ys: torch.Tensor) -> None:
    if xs.ndim != 3 or ys.shape != xs.shape[:2]:
        raise ValueError(f"baselines need xs (B, K, d) and ys (B, K); got {tuple(xs.shape)} and {tuple(ys.shape)}")


def least_squares(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Minimum-norm least squares on the earlier examples of each query."""
    _check(xs, ys)
    x64, y64 = xs.double(), ys.double()
    preds = torch.zeros_like(y64)
    for i in range(1, xs.shape[1]):
        w = einsum(torch.linalg.pinv(x64[:, :i]), y64[:, :i], "b d i, b i -> b d")  # (B, d)
        preds[:, i] = einsum(x64[:, i], w, "b d, b d -> b")
    return preds.to(ys.dtype)


def averaging(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """``w_hat = mean_j y_j x_j`` over the earlier examples, prediction ``w_hat . x_i``."""
    _check(xs, ys)
    x64, y64 = xs.double(), ys.double()
    sums = torch.cumsum(x64 * y64[..., None], dim=1)  # (B, K, d): sum over j <= i
    counts = torch.arange(1, xs.shape[1] + 1, dtype=torch.float64, device=xs.device)[None, :, None]
    w = torch.cat([torch.zeros_like(sums[:, :1]), (sums / counts)[:, :-1]], dim=1)  # (B, K, d): j < i
    return einsum(x64, w, "b k d, b k d -> b k").to(ys.dtype)


def nearest_neighbours(xs: torch.Tensor, ys: torch.Tensor, n_neighbours: int = 3) -> torch.Tensor:
    """Uniform average of the ``y`` of the ``n_neighbours`` nearest earlier ``x``."""
    _check(xs, ys)
    dist = torch.cdist(xs.double(), xs.double())  # (B, K, K)
    preds = torch.zeros_like(ys)
    for i in range(1, xs.shape[1]):
        idx = dist[:, i, :i].topk(min(n_neighbours, i), dim=1, largest=False).indices  # (B, n)
        preds[:, i] = ys.gather(1, idx).mean(dim=1)
    return preds


def _sklearn_per_query(xs: torch.Tensor, ys: torch.Tensor, make_model, min_examples: int = 1) -> torch.Tensor:
    _check(xs, ys)
    x, y = xs.double().cpu().numpy(), ys.double().cpu().numpy()
    preds = np.zeros_like(y)
    for b in range(x.shape[0]):
        for i in range(min_examples, x.shape[1]):
            model = make_model().fit(x[b, :i], y[b, :i])
            preds[b, i] = model.predict(x[b, i : i + 1])[0]
    return torch.from_numpy(preds).to(ys)


def lasso(xs: torch.Tensor, ys: torch.Tensor, alpha: float = 0.01) -> torch.Tensor:
    """scikit-learn Lasso (no intercept) per query; for sparse linear functions."""
    from sklearn.linear_model import Lasso

    return _sklearn_per_query(xs, ys, lambda: Lasso(alpha=alpha, fit_intercept=False, max_iter=10_000))


def decision_tree(xs: torch.Tensor, ys: torch.Tensor, max_depth: int = 4) -> torch.Tensor:
    """scikit-learn CART regression tree per query; for decision-tree functions."""
    from sklearn.tree import DecisionTreeRegressor

    return _sklearn_per_query(xs, ys, lambda: DecisionTreeRegressor(max_depth=max_depth, random_state=0))


COMMON: dict[str, Baseline] = {
    "least_squares": least_squares,
    "averaging": averaging,
    "3-nn": nearest_neighbours,
}
EXTRA: dict[str, dict[str, Baseline]] = {
    "sparse_linear": {"lasso": lasso},
    "decision_tree": {"decision_tree": decision_tree},
}


def baselines_for(family: str) -> dict[str, Baseline]:
    """The baselines Garg et al. compare against for a function family (name -> function)."""
    return COMMON | EXTRA.get(family, {})
