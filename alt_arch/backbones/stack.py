"""A stack of pre-norm MetaFormer blocks with a final norm (Transformer++ with the default parts).

Initialisation follows GPT-2 / nanoGPT: every ``nn.Linear`` ~ N(0, 0.02), residual output projections
(``out``, ``down``) scaled by ``1/sqrt(2 L)``. Parts that define their own initialisation (e.g. TokenFormer
Pattention) are left alone because only ``nn.Linear`` modules are touched.
"""

import math

import torch
from torch import nn

from alt_arch.block import MetaFormerBlock
from alt_arch.errors import PartOptionError
from alt_arch.linears.dense import dense
from alt_arch.mlp import SwiGLU
from alt_arch.norms import RMSNorm

RESIDUAL_PROJECTIONS = ("out", "down")


def init_linear(model: nn.Module, std: float, n_layers: int) -> None:
    """GPT-2 init of every ``nn.Linear``; residual projections (``out``, ``down``) scaled by ``1/sqrt(2 L)``."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            scale = 1 / math.sqrt(2 * n_layers) if name.rsplit(".", 1)[-1] in RESIDUAL_PROJECTIONS else 1.0
            nn.init.normal_(module.weight, std=std * scale)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class Stack(nn.Module):
    def __init__(
        self,
        dim: int,
        *,
        causal: bool,
        mixer,
        linear=dense,
        mlp=SwiGLU,
        n_layers: int = 2,
        norm=RMSNorm,
        init_std: float = 0.02,
        spatial_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise PartOptionError(f"backbone: n_layers must be >= 1, got {n_layers}")
        self.dim = self.out_dim = dim
        self.causal = causal
        self.blocks = nn.ModuleList(
            MetaFormerBlock(
                dim,
                mixer=mixer(dim, causal=causal, linear=linear, spatial_shape=spatial_shape),
                mlp=mlp(dim, linear=linear),
                norm=norm,
            )
            for _ in range(n_layers)
        )
        self.norm = norm(dim)
        init_linear(self, init_std, n_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_context(self, x: torch.Tensor):
        """Context stream of the two-stream AR EBT: output and one key/value cache per layer."""
        caches = []
        for block in self.blocks:
            x, cache = block.forward_context(x)
            caches.append(cache)
        return self.norm(x), caches

    def forward_candidates(self, y: torch.Tensor, caches) -> torch.Tensor:
        """Candidate stream: each row attends to its own context (via ``caches``) and itself."""
        for block, cache in zip(self.blocks, caches, strict=True):
            y = block.forward_candidates(y, cache)
        return self.norm(y)
