"""The EBT candidate update ``y <- y - alpha * clamp(g, -c, c)`` in one pass over memory.

Energy-Based Transformers (Gladstone et al., 2025, arXiv:2507.02092) predict by gradient descent on the energy
with respect to the candidate: ``y_{i+1} = y_i - alpha * dE/dy_i``, with the step's gradient optionally clipped.
The step is deterministic: the Langevin noise of the paper (``y + sigma * xi``, ``xi ~ N(0, I)``) is added by the
EBT's thinking loop (:mod:`ebt.objectives.thinking`) to the candidate *before* the energy is computed, as in the
reference implementation; there is one noise implementation and it is not here.

Equations (``gc = clamp(g, -c, c)``, or ``g`` without a clamp; ``alpha`` a scalar or one value per row):

* forward:  ``out = y - alpha * gc``
* backward: ``dL/dy = dL/dout``; ``dL/dg = -alpha * dL/dout * [-c <= g <= c]``;
  ``dL/dalpha = -rowsum(dL/dout * gc)`` (summed over rows for a scalar ``alpha``). The backward is plain torch
  ops, so it is itself differentiable (double backward works).

Triton kernel: one read of ``y`` and ``g``, one write of ``out``.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

from ebt_kernels.dispatch import resolve_backend

try:
    import triton
    import triton.language as tl
except ImportError:  # the package must import without triton; the torch reference still works
    triton = None
    tl = None

__all__ = ["candidate_update", "candidate_update_reference", "CandidateUpdateFn", "candidate_update_triton"]

_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _check(y: Tensor, g: Tensor, grad_clamp: float | None) -> None:
    if y.shape != g.shape:
        raise ValueError(f"candidate_update needs g with the shape of y; got y {tuple(y.shape)} and g {tuple(g.shape)}")
    if grad_clamp is not None and not grad_clamp > 0:
        raise ValueError(f"candidate_update: grad_clamp must be > 0 or None (no clamp), got {grad_clamp}")


def _alpha_tensor(alpha: float | Tensor, y: Tensor) -> Tensor:
    """``alpha`` as a tensor broadcastable to ``y``: shape ``()`` (scalar) or ``(..., 1)`` (one value per row)."""
    if not isinstance(alpha, Tensor):
        return torch.tensor(float(alpha), device=y.device, dtype=torch.float32)
    lead = tuple(y.shape[:-1])
    if alpha.numel() == 1:  # a scalar, whatever its shape (e.g. (1, 1, 1) from broadcasting helpers)
        return alpha.reshape(())
    if tuple(alpha.shape) == lead:
        return alpha.unsqueeze(-1)
    if tuple(alpha.shape) == (*lead, 1):
        return alpha
    raise ValueError(f"candidate_update: alpha must be a scalar or have shape {lead} or {(*lead, 1)} (one step "
                     f"size per row of y {tuple(y.shape)}); got {tuple(alpha.shape)}")


# ----------------------------------------------------------------------------------------------------------------
# Pure-torch reference
# ----------------------------------------------------------------------------------------------------------------
def candidate_update_reference(y: Tensor, g: Tensor, alpha: float | Tensor, *,
                               grad_clamp: float | None = None) -> Tensor:
    """``y - alpha * clamp(g)`` in torch ops (autograd: any order)."""
    _check(y, g, grad_clamp)
    a = _alpha_tensor(alpha, y)
    gc = g.clamp(-grad_clamp, grad_clamp) if grad_clamp is not None else g
    return (y - a * gc).to(y.dtype)


# ----------------------------------------------------------------------------------------------------------------
# Triton kernel
# ----------------------------------------------------------------------------------------------------------------
if triton is not None:

    @triton.jit
    def _update_kernel(Y, G, ALPHA, OUT, N, V, stride_alpha, clamp,
                       HAS_CLAMP: tl.constexpr, COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
        # Flat view of contiguous (M, V) tensors; int64 offsets (M * V may exceed 2**31).
        pid = tl.program_id(0).to(tl.int64)
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        ok = offs < N
        rows = offs // V
        y = tl.load(Y + offs, mask=ok, other=0.0).to(COMPUTE)
        g = tl.load(G + offs, mask=ok, other=0.0).to(COMPUTE)
        a = tl.load(ALPHA + rows * stride_alpha, mask=ok, other=0.0).to(COMPUTE)
        if HAS_CLAMP:
            g = tl.minimum(tl.maximum(g, -clamp), clamp)
        out = y - a * g
        tl.store(OUT + offs, out.to(OUT.dtype.element_ty), mask=ok)


@torch.compiler.disable
def _update_triton(y: Tensor, g: Tensor, alpha_rows: Tensor, grad_clamp: float | None) -> Tensor:
    """Launch on contiguous ``y``, ``g`` ``(M, V)`` and ``alpha_rows`` ``(M,)`` (any stride, e.g. 0)."""
    M, V = y.shape
    out = torch.empty_like(y)
    N = M * V
    if N == 0:
        return out
    block = 4096 if N >= 4096 else triton.next_power_of_2(N)
    compute = tl.float64 if y.dtype == torch.float64 else tl.float32
    _update_kernel[(triton.cdiv(N, block),)](
        y, g, alpha_rows, out, N, V, alpha_rows.stride(0), float(grad_clamp or 0.0),
        HAS_CLAMP=grad_clamp is not None, COMPUTE=compute, BLOCK=block)
    return out


class CandidateUpdateFn(torch.autograd.Function):
    """``y - alpha_rows[:, None] * clamp(g)`` for 2-D ``y``, ``g`` ``(M, V)``; torch backward."""

    @staticmethod
    def forward(y: Tensor, g: Tensor, alpha_rows: Tensor, grad_clamp: float | None) -> Tensor:
        return _update_triton(y, g, alpha_rows, grad_clamp)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        _, g, alpha_rows, grad_clamp = inputs
        ctx.save_for_backward(g, alpha_rows)
        ctx.grad_clamp = grad_clamp

    @staticmethod
    def backward(ctx, grad: Tensor):
        g, alpha_rows = ctx.saved_tensors
        c = ctx.grad_clamp
        need_y, need_g, need_alpha = ctx.needs_input_grad[:3]
        gc = g.clamp(-c, c) if c is not None else g
        dy = grad if need_y else None
        dg = da = None
        if need_g:
            dg = -alpha_rows.unsqueeze(-1) * grad
            if c is not None:
                dg = dg * ((g >= -c) & (g <= c)).to(dg.dtype)
            dg = dg.to(g.dtype)
        if need_alpha:
            da = -(grad * gc).sum(-1).to(alpha_rows.dtype)  # (M,); expand's backward sums it for a scalar alpha
        return dy, dg, da, None


def candidate_update_triton(y: Tensor, g: Tensor, alpha: float | Tensor, grad_clamp: float | None) -> Tensor:
    if y.dtype not in _KERNEL_DTYPES:
        raise TypeError(f"candidate_update backend 'triton' supports floating y, got {y.dtype}; use backend='torch'")
    a = _alpha_tensor(alpha, y).to(y.device)
    y2 = rearrange(y, "... v -> (...) v").contiguous()  # (M, V)
    g2 = rearrange(g, "... v -> (...) v").contiguous()  # (M, V)
    M = y2.shape[0]
    alpha_rows = a.reshape(1).expand(M) if a.dim() == 0 else rearrange(a, "... 1 -> (...)")  # (M,)
    out = CandidateUpdateFn.apply(y2, g2, alpha_rows, grad_clamp)
    return out.reshape(y.shape)


def candidate_update(y: Tensor, g: Tensor, alpha: float | Tensor, *, grad_clamp: float | None = None,
                     backend: str = "torch") -> Tensor:
    """One deterministic thinking step ``y - alpha * clamp(g, -c, c)`` (c = grad_clamp), y and g (..., V).

    ``alpha``: a float, a scalar tensor (e.g. a learnable step size) or one value per row (shape ``y.shape[:-1]``
    or ``(*y.shape[:-1], 1)``). Differentiable w.r.t. ``y``, ``g`` and ``alpha`` to any order. ``backend``:
    ``torch``, ``triton`` or ``auto`` (see :mod:`ebt_kernels.dispatch`). Langevin noise is not part of the step: the EBT
    adds it to the candidate before the energy (reference semantics).
    """
    _check(y, g, grad_clamp)
    if resolve_backend(backend, y.device) == "torch":
        return candidate_update_reference(y, g, alpha, grad_clamp=grad_clamp)
    return candidate_update_triton(y, g, alpha, grad_clamp)
