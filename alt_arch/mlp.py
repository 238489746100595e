"""Channel MLPs used by the blocks."""

import torch
import torch.nn.functional as F
from torch import nn

from alt_arch.linears.dense import dense


def _round_up(n: int, multiple: int) -> int:
    return ((n + multiple - 1) // multiple) * multiple


class SwiGLU(nn.Module):
    """SwiGLU MLP (Shazeer, 2020): ``down(silu(gate(x)) * up(x))``, hidden = ratio * dim rounded to 8."""

    def __init__(self, dim: int, *, linear=dense, hidden_ratio: float = 8 / 3) -> None:
        super().__init__()
        hidden = _round_up(int(hidden_ratio * dim), 8)
        self.gate = linear(dim, hidden)
        self.up = linear(dim, hidden)
        self.down = linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class GeluMLP(nn.Module):
    """Two-layer GELU MLP (the original Transformer / MetaFormer channel MLP)."""

    def __init__(self, dim: int, *, linear=dense, hidden_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(hidden_ratio * dim)
        self.up = linear(dim, hidden)
        self.down = linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))
