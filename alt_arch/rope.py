"""Rotary position embedding (Su et al., 2021, "RoFormer"), rotate-half convention.

For a head vector split into halves ``(x1, x2)`` at position ``p`` with frequencies
``theta_i = base^(-2i/d)``: ``rope(x) = (x1 cos(p theta) - x2 sin(p theta), x2 cos(p theta) + x1 sin(p theta))``.
"""

import torch
from torch import nn

from alt_arch.errors import PartOptionError


class Rotary(nn.Module):
    def __init__(self, head_dim: int, *, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise PartOptionError(f"RoPE needs an even head dimension (width / heads), got {head_dim}; pick a width "
                                  "that is a multiple of 2 x the heads or turn RoPE off (model.mixer.rope=false)")
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` of shape (B, H, N, Dh) at integer ``positions`` of shape (N,)."""
        angles = positions.to(self.inv_freq.dtype)[:, None] * self.inv_freq[None, :]  # (N, Dh/2)
        cos = torch.cat([angles.cos(), angles.cos()], dim=-1).to(x.dtype)  # (N, Dh)
        sin = torch.cat([angles.sin(), angles.sin()], dim=-1).to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        rotated = torch.cat([-x2, x1], dim=-1)
        return x * cos + rotated * sin
