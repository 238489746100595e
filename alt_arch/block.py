"""The MetaFormer block (Yu et al., 2022): ``x + Mixer(Norm(x))`` then ``x + MLP(Norm(x))``.

Any mixer fits; the channel MLP and the norm are factories as well.
"""

from typing import Any

import torch
from torch import nn

from alt_arch.errors import MixerCapabilityError


def blocks_extend_context(module: nn.Module) -> bool:
    """Whether every MetaFormer block in ``module`` has a mixer that takes a key/value cache (``extends_context``)."""
    return all(getattr(block.mixer, "extends_context", False) for block in module.modules()
               if isinstance(block, MetaFormerBlock))


class MetaFormerBlock(nn.Module):
    def __init__(self, dim: int, *, mixer: nn.Module, mlp: nn.Module, norm) -> None:
        super().__init__()
        self.norm1 = norm(dim)
        self.mixer = mixer
        self.norm2 = norm(dim)
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def forward_context(self, x: torch.Tensor, past: Any = None):
        """The context stream's output and the mixer's cache; ``past``: the cache of earlier positions (mixers with
        ``extends_context`` only): ``x`` holds the rows after them."""
        if not hasattr(self.mixer, "forward_candidates"):
            raise MixerCapabilityError(
                f"mixer {type(self.mixer).__name__} cannot run the two-stream autoregressive EBT "
                "(it has no forward_context/forward_candidates); use an attention-type mixer "
                "(model/mixer=attention or moh) or a whole-target task"
            )
        if past is None:
            h, cache = self.mixer.forward_context(self.norm1(x))
        elif getattr(self.mixer, "extends_context", False):
            h, cache = self.mixer.forward_context(self.norm1(x), past)
        else:
            raise MixerCapabilityError(f"mixer {type(self.mixer).__name__} cannot extend a cached context by new "
                                       "positions; run the whole window again (no cache)")
        x = x + h
        return x + self.mlp(self.norm2(x)), cache

    def forward_candidates(self, y: torch.Tensor, cache) -> torch.Tensor:
        y = y + self.mixer.forward_candidates(self.norm1(y), cache)
        return y + self.mlp(self.norm2(y))
