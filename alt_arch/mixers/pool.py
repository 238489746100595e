"""Pooling token mixer of PoolFormer ("MetaFormer Is Actually What You Need for Vision", Yu et al., CVPR 2022).

Reference code ("the reference" below): https://github.com/sail-sg/poolformer at commit
a075575b8b3dc3c76ecc5c49985d156167372bfa (``models/poolformer.py``, class ``Pooling``).

Equation (Eq. 4 of the paper), for a 2-D token grid ``u`` of shape (C, H, W)::

    Pool(u)_{:, i, j} = 1 / (K * K) * sum_{p, q = 1..K} u_{:, i + p - (K+1)/2, j + q - (K+1)/2}  -  u_{:, i, j}

i.e. ``AvgPool2d(K, stride=1, padding=K // 2, count_include_pad=False)(u) - u``: the average runs over the
window positions that lie inside the grid only (at borders fewer than ``K * K`` tokens), as in the reference
code. The subtraction of the input is there because the block adds a residual connection around the mixer.

Sequence variants (not in the paper, which is 2-D only; added so the mixer also runs on sequence tasks):

* non-causal 1-D: the centred window ``t - K//2 .. t + K//2`` (``K`` odd), same border rule;
* causal 1-D: the window ``t - K + 1 .. t`` (the current and ``K - 1`` previous tokens, fewer at the start),
  minus ``u_t``; output ``t`` depends on inputs ``<= t`` only.

Pooling has no parameters and no projections: the ``linear`` factory of the part contract is accepted and
unused. Causal pooling over a 2-D grid is undefined (there is no token order a causal mask could respect
that keeps the window shape) and raises :class:`MixerCapabilityError`.

Two-stream mode (autoregressive EBT, causal 1-D only; see :class:`~alt_arch.mixers.attention.Attention`): candidate
``y_t`` stands in for token ``t+1``, so its window is the context tokens ``x_{t-K+2} .. x_t`` (those that exist) and
itself::

    Pool(y)_t = (sum_{s = t-K+2 .. t, s >= 0} x_s + y_t) / min(t + 2, K)  -  y_t

``forward_context(x)`` returns the plain causal output and, as the cache, the context window sums
``sum_{s = t-K+2..t} x_s`` for every ``t`` (computed once, reused across thinking steps). Non-causal and 2-D pooling
raise :class:`MixerCapabilityError` there (a candidate has no defined window).
"""

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from alt_arch.errors import MixerCapabilityError, PartOptionError
from alt_arch.linears.dense import dense


def causal_window_sum(x: torch.Tensor, k: int) -> torch.Tensor:
    """``sum_{s = t-k+1..t, s >= 0} x_s`` for every ``t`` of ``x`` (B, N, C); zeros when ``k == 0``."""
    if k == 0:
        return torch.zeros_like(x)
    seq = F.pad(rearrange(x, "b n c -> b c n"), (k - 1, 0))  # zero left-padding: missing tokens add nothing
    return rearrange(F.avg_pool1d(seq, k, stride=1) * k, "b c n -> b n c")


class Pool(nn.Module):
    def __init__(
        self,
        dim: int,
        *,
        causal: bool,
        linear=dense,  # accepted for the part contract; pooling has no projections
        spatial_shape: tuple[int, ...] | None = None,
        pool_size: int = 3,
    ) -> None:
        super().__init__()
        if pool_size < 1:
            raise PartOptionError(f"pool: pool_size must be >= 1, got {pool_size}")
        shape = tuple(int(s) for s in spatial_shape) if spatial_shape is not None else None
        if shape is not None and len(shape) not in (1, 2):
            raise MixerCapabilityError(
                f"pool: spatial_shape={shape} has {len(shape)} axes; pooling supports sequences (1 axis) and "
                "2-D grids (H, W) only"
            )
        self.two_d = shape is not None and len(shape) == 2
        if causal and self.two_d:
            raise MixerCapabilityError(
                f"pool: causal pooling over a 2-D grid {shape} is undefined; use a non-causal task (image "
                "tasks are non-causal) or a sequence task for causal 1-D pooling"
            )
        if not causal and pool_size % 2 == 0:
            raise PartOptionError(f"pool: a centred window needs an odd pool_size, got {pool_size}; use e.g. 3")
        self.dim, self.causal, self.pool_size = dim, causal, pool_size
        self.spatial_shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C) -> (B, N, C)
        k = self.pool_size
        if self.spatial_shape is not None and math.prod(self.spatial_shape) != x.shape[1]:
            raise ValueError(f"pool: got N={x.shape[1]} tokens but spatial_shape={self.spatial_shape}")
        if self.two_d:
            h, w = self.spatial_shape
            grid = rearrange(x, "b (h w) c -> b c h w", h=h, w=w)
            pooled = F.avg_pool2d(grid, k, stride=1, padding=k // 2, count_include_pad=False)
            return rearrange(pooled, "b c h w -> b (h w) c") - x
        if self.causal:
            counts = torch.arange(1, x.shape[1] + 1, device=x.device).clamp(max=k).to(x.dtype)  # (N,)
            return causal_window_sum(x, k) / counts[:, None] - x
        seq = rearrange(x, "b n c -> b c n")
        pooled = F.avg_pool1d(seq, k, stride=1, padding=k // 2, count_include_pad=False)
        return rearrange(pooled, "b c n -> b n c") - x

    def _check_two_stream(self) -> None:
        if not self.causal:
            raise MixerCapabilityError(
                "pool: two-stream candidates need causal 1-D pooling (a centred or 2-D window has no slot for a "
                "candidate); use a causal sequence task or a whole-target EBT task"
            )

    def forward_context(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Causal pooling of the context ``x`` (B, T, C) and its window sums over ``t-K+2..t`` (B, T, C)."""
        self._check_two_stream()
        return self(x), causal_window_sum(x, self.pool_size - 1)

    def forward_candidates(self, y: torch.Tensor, context_sums: torch.Tensor) -> torch.Tensor:
        """Candidate ``t`` of ``y`` (B, T, C) pooled with its ``K - 1`` context predecessors ``x_{t-K+2..t}``."""
        self._check_two_stream()
        counts = torch.arange(2, y.shape[1] + 2, device=y.device).clamp(max=self.pool_size).to(y.dtype)  # (T,)
        return (context_sums + y) / counts[:, None] - y

    def flops_per_token(self, seq_len: int) -> float:
        """Window additions plus one division and one subtraction per channel (no matmuls)."""
        window = self.pool_size**2 if self.two_d else self.pool_size
        return (window + 1) * self.dim

    def extra_repr(self) -> str:
        return f"pool_size={self.pool_size}, causal={self.causal}, spatial_shape={self.spatial_shape}"
