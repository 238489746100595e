"""Rotary position embedding (Su et al., 2021, "RoFormer"), rotate-half convention.

For a head vector split into halves ``(x1, x2)`` at position ``p`` with frequencies
``theta_i = base^(-2i/d)``: ``rope(x) = (x1 cos(p theta) - x2 sin(p theta), x2 cos(p theta) + x1 sin(p theta))``.

:meth:`Rotary.tables` caches the cos / sin tables of the contiguous positions ``offset .. offset + n - 1`` per
(n, offset, device, dtype), so a model that runs many passes at the same length (the EBT's thinking steps, every
layer) builds them once; the cache is plain module state (not in the state dict), skipped while torch.compile traces.
"""

import torch
from torch import nn

from alt_arch.errors import PartOptionError

MAX_CACHED_TABLES = 16  # (n, offset, device, dtype) entries kept per module; the cache is cleared when full


class Rotary(nn.Module):
    def __init__(self, head_dim: int, *, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise PartOptionError(f"RoPE needs an even head dimension (width / heads), got {head_dim}; pick a width "
                                  "that is a multiple of 2 x the heads or turn RoPE off (model.mixer.rope=false)")
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _build(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        angles = positions.to(self.inv_freq.dtype)[:, None] * self.inv_freq[None, :]  # (N, Dh/2)
        cos = torch.cat([angles.cos(), angles.cos()], dim=-1).to(dtype)  # (N, Dh)
        sin = torch.cat([angles.sin(), angles.sin()], dim=-1).to(dtype)
        return cos, sin

    def tables(self, n: int, offset: int, device: torch.device, dtype: torch.dtype
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cos, sin)``, each (n, Dh), of positions ``offset .. offset + n - 1`` (cached, see the module doc)."""
        key = (n, offset, self.inv_freq.device, device, dtype)
        if torch.compiler.is_compiling():
            return self._build(torch.arange(offset, offset + n, device=device), dtype)
        if key not in self._tables:
            if len(self._tables) >= MAX_CACHED_TABLES:
                self._tables.clear()
            with torch.no_grad():
                self._tables[key] = self._build(torch.arange(offset, offset + n, device=device), dtype)
        return self._tables[key]

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` (B, H, N, Dh) by the tables ``cos`` / ``sin`` (N, Dh)."""
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` of shape (B, H, N, Dh) at integer ``positions`` of shape (N,) (tables not cached)."""
        return self.rotate(x, *self._build(positions, x.dtype))
