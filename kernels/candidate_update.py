"""The EBT candidate update ``y <- y - alpha * clamp(g, -c, c) + sigma * xi`` in one pass over memory.

Energy-Based Transformers (Gladstone et al., 2025, arXiv:2507.02092) predict by gradient descent on the energy
with respect to the candidate: ``y_{i+1} = y_i - alpha * dE/dy_i``, optionally with Langevin noise
``+ sigma * xi``, ``xi ~ N(0, I)`` (their "Langevin dynamics" regulariser), and with the step's gradient
optionally clipped.

Equations (``gc = clamp(g, -c, c)``, or ``g`` without a clamp; ``alpha`` a scalar or one value per row):

* forward:  ``out = y - alpha * gc + sigma * xi``
* backward: ``dL/dy = dL/dout``; ``dL/dg = -alpha * dL/dout * [-c <= g <= c]``;
  ``dL/dalpha = -rowsum(dL/dout * gc)`` (summed over rows for a scalar ``alpha``). ``sigma`` and ``xi`` get no
  gradient. The backward is plain torch ops, so it is itself differentiable (double backward works).

Triton kernel: one read of ``y`` and ``g``, one write of ``out``; ``xi`` is drawn in-kernel with Philox
(``tl.randn(seed, offset)``, offset = flat element index), so the noise is reproducible for a given seed and
independent of the tile size. Deviation: the reference (``torch`` backend) draws ``xi`` from a
``torch.Generator`` seeded with the same seed, which is a different stream: both are N(0, 1) and reproducible,
but the two backends give different noise for the same seed.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

from kernels.dispatch import resolve_backend

try:
    import triton
    import triton.language as tl
except ImportError:  # the package must import without triton; the torch reference still works
    triton = None
    tl = None

__all__ = ["candidate_update", "candidate_update_reference", "CandidateUpdateFn", "candidate_update_triton"]

_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_SEED_MAX = 2**31 - 1


def _check(y: Tensor, g: Tensor, noise_std: float, grad_clamp: float | None) -> None:
    if y.shape != g.shape:
        raise ValueError(f"candidate_update needs g with the shape of y; got y {tuple(y.shape)} and g {tuple(g.shape)}")
    if noise_std < 0:
        raise ValueError(f"candidate_update: noise_std must be >= 0, got {noise_std}")
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


def _resolve_seed(seed: int | None) -> int:
    """An explicit seed, or one drawn from torch's default generator (so ``torch.manual_seed`` governs it)."""
    if seed is None:
        return int(torch.randint(0, _SEED_MAX, (1,)).item())
    if not 0 <= int(seed) <= _SEED_MAX:
        raise ValueError(f"candidate_update: seed must be in [0, 2**31 - 1], got {seed}")
    return int(seed)


# ----------------------------------------------------------------------------------------------------------------
# Pure-torch reference
# ----------------------------------------------------------------------------------------------------------------
def candidate_update_reference(y: Tensor, g: Tensor, alpha: float | Tensor, *, noise_std: float = 0.0,
                               seed: int | None = None, grad_clamp: float | None = None) -> Tensor:
    """``y - alpha * clamp(g) + noise_std * xi`` in torch ops (autograd: any order); ``xi`` from ``torch.Generator``."""
    _check(y, g, noise_std, grad_clamp)
    a = _alpha_tensor(alpha, y)
    gc = g.clamp(-grad_clamp, grad_clamp) if grad_clamp is not None else g
    out = y - a * gc
    if noise_std > 0:
        if seed is None:
            xi = torch.randn(y.shape, device=y.device, dtype=out.dtype)
        else:
            gen = torch.Generator(device=y.device).manual_seed(_resolve_seed(seed))
            xi = torch.randn(y.shape, device=y.device, dtype=out.dtype, generator=gen)
        out = out + noise_std * xi
    return out.to(y.dtype)


# ----------------------------------------------------------------------------------------------------------------
# Triton kernel
# ----------------------------------------------------------------------------------------------------------------
if triton is not None:

    @triton.jit
    def _update_kernel(Y, G, ALPHA, OUT, N, V, stride_alpha, clamp, noise_std, seed,
                       HAS_CLAMP: tl.constexpr, HAS_NOISE: tl.constexpr, COMPUTE: tl.constexpr,
                       BLOCK: tl.constexpr):
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
        if HAS_NOISE:
            out += noise_std * tl.randn(seed, offs).to(COMPUTE)
        tl.store(OUT + offs, out.to(OUT.dtype.element_ty), mask=ok)


@torch.compiler.disable
def _update_triton(y: Tensor, g: Tensor, alpha_rows: Tensor, grad_clamp: float | None, noise_std: float,
                   seed: int) -> Tensor:
    """Launch on contiguous ``y``, ``g`` ``(M, V)`` and ``alpha_rows`` ``(M,)`` (any stride, e.g. 0)."""
    M, V = y.shape
    out = torch.empty_like(y)
    N = M * V
    if N == 0:
        return out
    block = 4096 if N >= 4096 else triton.next_power_of_2(N)
    compute = tl.float64 if y.dtype == torch.float64 else tl.float32
    _update_kernel[(triton.cdiv(N, block),)](
        y, g, alpha_rows, out, N, V, alpha_rows.stride(0), float(grad_clamp or 0.0), float(noise_std), seed,
        HAS_CLAMP=grad_clamp is not None, HAS_NOISE=noise_std > 0, COMPUTE=compute, BLOCK=block)
    return out


class CandidateUpdateFn(torch.autograd.Function):
    """``y - alpha_rows[:, None] * clamp(g) + noise_std * xi`` for 2-D ``y``, ``g`` ``(M, V)``; torch backward."""

    @staticmethod
    def forward(y: Tensor, g: Tensor, alpha_rows: Tensor, grad_clamp: float | None, noise_std: float,
                seed: int) -> Tensor:
        return _update_triton(y, g, alpha_rows, grad_clamp, noise_std, seed)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        _, g, alpha_rows, grad_clamp, _, _ = inputs
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
        return dy, dg, da, None, None, None


def candidate_update_triton(y: Tensor, g: Tensor, alpha: float | Tensor, noise_std: float, seed: int | None,
                             grad_clamp: float | None) -> Tensor:
    if y.dtype not in _KERNEL_DTYPES:
        raise TypeError(f"candidate_update backend 'triton' supports floating y, got {y.dtype}; use backend='torch'")
    a = _alpha_tensor(alpha, y).to(y.device)
    y2 = rearrange(y, "... v -> (...) v").contiguous()  # (M, V)
    g2 = rearrange(g, "... v -> (...) v").contiguous()  # (M, V)
    M = y2.shape[0]
    alpha_rows = a.reshape(1).expand(M) if a.dim() == 0 else rearrange(a, "... 1 -> (...)")  # (M,)
    out = CandidateUpdateFn.apply(y2, g2, alpha_rows, grad_clamp, float(noise_std), _resolve_seed(seed))
    return out.reshape(y.shape)


def candidate_update(y: Tensor, g: Tensor, alpha: float | Tensor, *, noise_std: float = 0.0,
                     seed: int | None = None, grad_clamp: float | None = None, backend: str = "torch") -> Tensor:
    """One thinking step ``y - alpha * clamp(g, -c, c) + noise_std * xi`` (c = grad_clamp), y and g (..., V).

    ``alpha``: a float, a scalar tensor (e.g. a learnable step size) or one value per row (shape ``y.shape[:-1]``
    or ``(*y.shape[:-1], 1)``). ``seed``: Langevin noise seed (pass a different one per step, e.g. ``base + step``);
    ``None`` draws one from torch's default generator. Differentiable w.r.t. ``y``, ``g`` and ``alpha`` to any
    order. ``backend``: ``torch``, ``triton`` or ``auto`` (see :mod:`kernels.dispatch`).
    """
    _check(y, g, noise_std, grad_clamp)
    if resolve_backend(backend, y.device) == "torch":
        return candidate_update_reference(y, g, alpha, noise_std=noise_std, seed=seed, grad_clamp=grad_clamp)
    return candidate_update_triton(y, g, alpha, noise_std, seed, grad_clamp)
