"""The per-step operations of thinking, routed through the kernel dispatch (``kernels=auto|torch|triton``).

``softmax_embed(y, W)``: what the model reads for candidate logits, ``softmax(y) @ W``.
``candidate_update(y, g, alpha)``: the step ``y - alpha * clamp(g)``.
Both are differentiable to second order on either backend (see kernels/ and docs/kernels.md).
"""

import torch

import kernels


def softmax_embed(y: torch.Tensor, weight: torch.Tensor, *, backend: str = "torch") -> torch.Tensor:
    """``softmax(y, -1) @ weight`` for logits (..., V) and a (V, D) weight."""
    return kernels.softmax_embed(y, weight, backend=backend)


def candidate_update(y: torch.Tensor, grad: torch.Tensor, alpha: torch.Tensor, *, grad_clamp: float | None = None,
                     backend: str = "torch") -> torch.Tensor:
    """``y - alpha * g`` with ``g`` optionally clamped to ``[-grad_clamp, grad_clamp]``."""
    return kernels.candidate_update(y, grad, alpha, grad_clamp=grad_clamp, backend=backend)
