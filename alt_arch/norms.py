"""Normalisation layers.

:class:`RMSNorm` is torch's ``nn.RMSNorm`` (``torch.rms_norm``: the same numbers as the hand-written
``x * rsqrt(mean(x^2) + eps) * g`` in float32, any-order autograd) with this repository's constructor
(``RMSNorm(dim, eps=1e-6)``) and state-dict key (``weight``), so configs and old checkpoints are unchanged.
"""

import torch
from torch import nn
from torch.nn import functional as F


class RMSNorm(nn.RMSNorm):
    """Root-mean-square norm (Zhang & Sennrich, 2019): ``x / sqrt(mean(x^2) + eps) * g``, no bias, no mean
    subtraction, over the last dimension.

    An input whose dtype differs from the weight's (a bf16 stream under autocast, float32 weights) is normalised in
    its own dtype (float32 arithmetic inside) and then scaled, promoting as ``x * g`` does: torch's fused path needs
    equal dtypes (it would warn and fall back)."""

    def __init__(self, dim: int, *, eps: float = 1e-6, elementwise_affine: bool = True) -> None:
        super().__init__(dim, eps=eps, elementwise_affine=elementwise_affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is not None and self.weight.dtype != x.dtype:
            return F.rms_norm(x, self.normalized_shape, None, self.eps) * self.weight
        return super().forward(x)
