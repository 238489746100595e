"""Softmax -> expected embedding, ``e = softmax(y) @ W``, for the EBT thinking step.

An energy-based transformer (Gladstone et al., 2025, "Energy-Based Transformers are Scalable Learners and
Thinkers", arXiv:2507.02092) feeds its candidate prediction ``y`` (logits over the vocabulary, ``(M, V)``) to the
model as the expected embedding ``e = softmax(y) @ W`` with ``W`` ``(V, D)`` (e.g. the token embedding).

Equations (``p = softmax(y)`` row-wise, ``G = dL/de``):

* forward:  ``e = p @ W``;  also ``lse = logsumexp(y)`` per row (saved for the backward).
* backward: ``dL/dy = p * (G @ W^T - delta)`` with ``delta = rowsum(p * (G @ W^T)) = rowsum(G * e)``;
  ``dL/dW = p^T @ G``.
* double backward (the EBT training path differentiates ``dE/dy``): for incoming ``U = dL'/d(dL/dy)`` and
  ``Z = dL'/d(dL/dW)``, with ``A = G W^T``, ``s = rowsum(U * p)``, ``R = p * (U - s)`` and
  ``H = U * (A - delta) + G Z^T - A * s``:
  ``dL'/dy = p * (H - rowsum(p * H))``, ``dL'/dG = R @ W + p @ Z``, ``dL'/dW = R^T @ G``.

Triton kernels (forward, ``dL/dy``, ``dL/dW``) never write the ``M x V`` probabilities to global memory: the
forward runs an online softmax over V tiles (running max and sum, fp32 accumulator rescaled per tile, one
``tl.dot`` per tile, as in FlashAttention); the backward kernels recompute ``p`` tile by tile from ``y`` and the
saved ``lse``. ``delta`` comes from the saved output (``rowsum(G * e)``, an ``M x D`` op) instead of a pass over V.

Deviation / design choice: the double backward (only reached when a caller differentiates the gradient, i.e.
``torch.autograd.grad(..., create_graph=True)`` and then backpropagates through it) runs in plain torch from the
formulas above and so materialises ``p`` (``M x V``) once per call. The first-order backward is itself an
``autograd.Function`` whose backward is made of differentiable torch ops, so second-order training is exact with
``backend="triton"``; eval-time thinking (first order only) never materialises ``p``.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

from ebt_kernels.dispatch import interpreter_on, resolve_backend

try:
    import triton
    import triton.language as tl
except ImportError:  # the package must import without triton; the torch reference still works
    triton = None
    tl = None

__all__ = ["softmax_embed", "softmax_embed_reference", "SoftmaxEmbedFn", "softmax_embed_triton"]

_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------------------------------------------
# Pure-torch reference (the "torch" backend; also the ground truth in tests)
# ----------------------------------------------------------------------------------------------------------------
def softmax_embed_reference(y: Tensor, W: Tensor) -> Tensor:
    """``softmax(y, -1) @ W``: ``y`` ``(..., V)``, ``W`` ``(V, D)`` -> ``(..., D)`` (autograd: any order)."""
    _check_shapes(y, W)
    dtype = torch.promote_types(y.dtype, W.dtype)  # (not result_type: it breaks torch.compile graphs)
    return torch.softmax(y.to(dtype), dim=-1) @ W.to(dtype)


def _check_shapes(y: Tensor, W: Tensor) -> None:
    if W.dim() != 2 or y.dim() < 1 or y.shape[-1] != W.shape[0]:
        raise ValueError(f"softmax_embed needs y (..., V) and W (V, D); got y {tuple(y.shape)} and W "
                         f"{tuple(W.shape)}: transpose W if it is (D, V) (e.g. pass head.weight.T)")


def _double_backward(y: Tensor, W: Tensor, G: Tensor, U: Tensor | None, Z: Tensor | None
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of ``<U, dL/dy> + <Z, dL/dW>`` w.r.t. ``(y, W, G)`` in torch ops (module docstring formulas)."""
    f32 = torch.promote_types(torch.promote_types(y.dtype, W.dtype), torch.float32)  # at least fp32
    y32, W32, G32 = y.to(f32), W.to(f32), G.to(f32)
    p = torch.softmax(y32, dim=-1)  # (M, V), materialised here only
    A = G32 @ W32.t()  # (M, V)
    delta = (p * A).sum(-1, keepdim=True)  # (M, 1)
    gy = torch.zeros_like(y32)
    gW = torch.zeros_like(W32)
    gG = torch.zeros_like(G32)
    H = torch.zeros_like(p)
    if U is not None:
        U32 = U.to(f32)
        s = (U32 * p).sum(-1, keepdim=True)  # (M, 1)
        R = p * (U32 - s)  # (M, V)
        H = H + U32 * (A - delta) - A * s
        gG = gG + R @ W32
        gW = gW + R.t() @ G32
    if Z is not None:
        Z32 = Z.to(f32)
        H = H + G32 @ Z32.t()
        gG = gG + p @ Z32
    gy = gy + p * (H - (p * H).sum(-1, keepdim=True))
    return gy.to(y.dtype), gW.to(W.dtype), gG.to(G.dtype)


# ----------------------------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------------------------
if triton is not None:

    @triton.jit
    def _fwd_kernel(Y, W, E, LSE, M, V, D,
                    stride_ym, stride_yv, stride_wv, stride_wd, stride_em, stride_ed,
                    BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
                    DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr):
        # 1-D grid, D-blocks fastest so programs sharing a y row-block run together (L2 reuse, as in a GEMM).
        pid = tl.program_id(0)
        num_d = tl.cdiv(D, BLOCK_D)
        pid_m = pid // num_d
        pid_d = pid % num_d
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,)
        cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # (BD,)
        row_ok = rows < M
        col_ok = cols < D
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running max
        l_i = tl.zeros([BLOCK_M], tl.float32)  # running sum of exp(y - m_i)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)  # running sum of exp(y - m_i) @ W
        for v0 in range(0, V, BLOCK_V):
            vs = v0 + tl.arange(0, BLOCK_V)
            v_ok = vs < V
            y = tl.load(Y + rows[:, None] * stride_ym + vs[None, :] * stride_yv,
                        mask=row_ok[:, None] & v_ok[None, :], other=float("-inf")).to(tl.float32)  # (BM, BV)
            m_new = tl.maximum(m_i, tl.max(y, axis=1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows that are all -inf so far
            p = tl.exp(y - m_safe[:, None])  # (BM, BV); masked entries -> 0
            scale = tl.exp(m_i - m_safe)
            w = tl.load(W + vs[:, None] * stride_wv + cols[None, :] * stride_wd,
                        mask=v_ok[:, None] & col_ok[None, :], other=0.0)  # (BV, BD)
            acc = acc * scale[:, None] + tl.dot(p.to(DOT_DTYPE), w.to(DOT_DTYPE), input_precision=PRECISION)
            l_i = l_i * scale + tl.sum(p, axis=1)
            m_i = m_new
        l_i = tl.where(row_ok, l_i, 1.0)  # rows past M: avoid 0/0 (never stored); an all -inf row stays NaN
        e = acc / l_i[:, None]
        tl.store(E + rows[:, None] * stride_em + cols[None, :] * stride_ed, e.to(E.dtype.element_ty),
                 mask=row_ok[:, None] & col_ok[None, :])
        m_safe = tl.where(m_i == float("-inf"), 0.0, m_i)
        tl.store(LSE + rows, m_safe + tl.log(l_i), mask=row_ok & (pid_d == 0))

    @triton.jit
    def _bwd_dy_kernel(Y, W, G, LSE, DELTA, DY, M, V, D,
                       stride_ym, stride_yv, stride_wv, stride_wd, stride_gm, stride_gd, stride_dm, stride_dv,
                       BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
                       DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr):
        # dy = p * (G @ W^T - delta), p recomputed from y and lse; V-blocks fastest (G row-block reuse).
        pid = tl.program_id(0)
        num_v = tl.cdiv(V, BLOCK_V)
        pid_m = pid // num_v
        pid_v = pid % num_v
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        vs = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
        row_ok = rows < M
        v_ok = vs < V
        tile_ok = row_ok[:, None] & v_ok[None, :]
        a = tl.zeros([BLOCK_M, BLOCK_V], tl.float32)  # (G @ W^T) tile
        for d0 in range(0, D, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D)
            d_ok = ds < D
            g = tl.load(G + rows[:, None] * stride_gm + ds[None, :] * stride_gd,
                        mask=row_ok[:, None] & d_ok[None, :], other=0.0)  # (BM, BD)
            wt = tl.load(W + vs[None, :] * stride_wv + ds[:, None] * stride_wd,
                         mask=d_ok[:, None] & v_ok[None, :], other=0.0)  # (BD, BV) = W^T tile
            a += tl.dot(g.to(DOT_DTYPE), wt.to(DOT_DTYPE), input_precision=PRECISION)
        y = tl.load(Y + rows[:, None] * stride_ym + vs[None, :] * stride_yv, mask=tile_ok,
                    other=float("-inf")).to(tl.float32)
        lse = tl.load(LSE + rows, mask=row_ok, other=0.0)
        delta = tl.load(DELTA + rows, mask=row_ok, other=0.0)
        p = tl.exp(y - lse[:, None])
        dy = p * (a - delta[:, None])
        tl.store(DY + rows[:, None] * stride_dm + vs[None, :] * stride_dv, dy.to(DY.dtype.element_ty), mask=tile_ok)

    @triton.jit
    def _bwd_dw_kernel(Y, G, LSE, DW, M, V, D,
                       stride_ym, stride_yv, stride_gm, stride_gd, stride_wv, stride_wd,
                       BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
                       DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr):
        # dW = p^T @ G, looping over rows; p recomputed tile-wise. D-blocks fastest (y tile reuse).
        pid = tl.program_id(0)
        num_d = tl.cdiv(D, BLOCK_D)
        pid_v = pid // num_d
        pid_d = pid % num_d
        vs = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
        ds = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        v_ok = vs < V
        d_ok = ds < D
        acc = tl.zeros([BLOCK_V, BLOCK_D], tl.float32)
        for m0 in range(0, M, BLOCK_M):
            rows = m0 + tl.arange(0, BLOCK_M)
            row_ok = rows < M
            y = tl.load(Y + rows[:, None] * stride_ym + vs[None, :] * stride_yv,
                        mask=row_ok[:, None] & v_ok[None, :], other=float("-inf")).to(tl.float32)  # (BM, BV)
            lse = tl.load(LSE + rows, mask=row_ok, other=0.0)
            p = tl.exp(y - lse[:, None])  # masked rows / columns -> 0
            g = tl.load(G + rows[:, None] * stride_gm + ds[None, :] * stride_gd,
                        mask=row_ok[:, None] & d_ok[None, :], other=0.0)  # (BM, BD)
            acc += tl.dot(tl.trans(p.to(DOT_DTYPE)), g.to(DOT_DTYPE), input_precision=PRECISION)
        tl.store(DW + vs[:, None] * stride_wv + ds[None, :] * stride_wd, acc.to(DW.dtype.element_ty),
                 mask=v_ok[:, None] & d_ok[None, :])


def _pow2(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(1, n))))


def _config(M: int, V: int, D: int, W: Tensor) -> dict:
    """Tile sizes and dot dtype. Interpreter: big tiles (fewer, vectorised programs) and fp32 dots (bf16 tl.dot
    is wrong there). GPU: untuned defaults (no GPU was available when this was written; see docs/kernels.md)."""
    interp = interpreter_on()
    if interp or W.dtype == torch.float32:
        dot_dtype = tl.float32
    else:
        dot_dtype = tl.bfloat16 if W.dtype == torch.bfloat16 else tl.float16
    precision = "tf32" if (not interp and torch.backends.cuda.matmul.allow_tf32) else "ieee"
    if interp:
        return dict(BLOCK_M=_pow2(M, 16, 64), BLOCK_V=_pow2(V, 16, 128), BLOCK_D=_pow2(D, 16, 64),
                    DOT_DTYPE=dot_dtype, PRECISION=precision)
    return dict(BLOCK_M=64, BLOCK_V=64, BLOCK_D=_pow2(D, 16, 128), DOT_DTYPE=dot_dtype, PRECISION=precision,
                num_warps=4, num_stages=3)


@torch.compiler.disable
def _forward_triton(y: Tensor, W: Tensor) -> tuple[Tensor, Tensor]:
    """``(e, lse)`` for ``y`` ``(M, V)``, ``W`` ``(V, D)``."""
    M, V = y.shape
    D = W.shape[1]
    e = torch.empty(M, D, device=y.device, dtype=torch.result_type(y, W))
    lse = torch.empty(M, device=y.device, dtype=torch.float32)
    if M == 0 or D == 0:
        return e.zero_(), lse.fill_(float("-inf"))
    cfg = _config(M, V, D, W)
    grid = (triton.cdiv(M, cfg["BLOCK_M"]) * triton.cdiv(D, cfg["BLOCK_D"]),)
    _fwd_kernel[grid](y, W, e, lse, M, V, D, y.stride(0), y.stride(1), W.stride(0), W.stride(1),
                      e.stride(0), e.stride(1), **cfg)
    return e, lse


@torch.compiler.disable
def _backward_triton(y: Tensor, W: Tensor, G: Tensor, e: Tensor, lse: Tensor, need_dy: bool, need_dw: bool
                     ) -> tuple[Tensor | None, Tensor | None]:
    """First-order ``(dL/dy, dL/dW)`` for ``G = dL/de`` (each ``None`` when not needed)."""
    M, V = y.shape
    D = W.shape[1]
    cfg = _config(M, V, D, W)
    dy = dw = None
    if need_dy:
        dy = torch.empty_like(y)
        delta = (G.float() * e.float()).sum(-1).contiguous()  # (M,) = rowsum(p * (G @ W^T))
        grid = (triton.cdiv(M, cfg["BLOCK_M"]) * triton.cdiv(V, cfg["BLOCK_V"]),)
        if M > 0:
            _bwd_dy_kernel[grid](y, W, G, lse, delta, dy, M, V, D, y.stride(0), y.stride(1), W.stride(0),
                                 W.stride(1), G.stride(0), G.stride(1), dy.stride(0), dy.stride(1), **cfg)
    if need_dw:
        dw = torch.empty_like(W)
        grid = (triton.cdiv(V, cfg["BLOCK_V"]) * triton.cdiv(D, cfg["BLOCK_D"]),)
        if M == 0:
            dw.zero_()
        elif D > 0:
            _bwd_dw_kernel[grid](y, G, lse, dw, M, V, D, y.stride(0), y.stride(1), G.stride(0), G.stride(1),
                                 dw.stride(0), dw.stride(1), **cfg)
    return dy, dw


# ----------------------------------------------------------------------------------------------------------------
# autograd
# ----------------------------------------------------------------------------------------------------------------
class _SoftmaxEmbedBackwardFn(torch.autograd.Function):
    """First-order backward as its own op: Triton forward, torch (differentiable) backward = double backward."""

    @staticmethod
    def forward(y: Tensor, W: Tensor, G: Tensor, e: Tensor, lse: Tensor, need_dy: bool, need_dw: bool):
        return _backward_triton(y, W, G, e, lse, need_dy, need_dw)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        y, W, G, _, _, _, _ = inputs
        ctx.save_for_backward(y, W, G)
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, U: Tensor | None, Z: Tensor | None):
        y, W, G = ctx.saved_tensors
        gy, gW, gG = _double_backward(y, W, G, U, Z)
        return gy, gW, gG, None, None, None, None


class SoftmaxEmbedFn(torch.autograd.Function):
    """``e = softmax(y) @ W`` for 2-D ``y`` ``(M, V)`` with Triton forward and first-order backward."""

    @staticmethod
    def forward(y: Tensor, W: Tensor) -> tuple[Tensor, Tensor]:
        return _forward_triton(y, W)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        y, W = inputs
        e, lse = output
        ctx.save_for_backward(y, W, e, lse)
        ctx.mark_non_differentiable(lse)

    @staticmethod
    def backward(ctx, G: Tensor, _grad_lse: Tensor | None):
        y, W, e, lse = ctx.saved_tensors
        need_dy, need_dw = ctx.needs_input_grad
        return _SoftmaxEmbedBackwardFn.apply(y, W, G.contiguous(), e.detach(), lse, need_dy, need_dw)


def softmax_embed_triton(y: Tensor, W: Tensor) -> Tensor:
    if y.dtype not in _KERNEL_DTYPES or W.dtype not in _KERNEL_DTYPES:
        raise TypeError(f"softmax_embed backend 'triton' supports float32/float16/bfloat16, got y {y.dtype} and W "
                        f"{W.dtype}; cast the inputs or use backend='torch'")
    if y.device != W.device:
        raise ValueError(f"softmax_embed: y is on {y.device} but W is on {W.device}; move them to one device")
    lead = y.shape[:-1]
    y2 = rearrange(y, "... v -> (...) v")  # (M, V)
    if y2.stride(-1) != 1:
        y2 = y2.contiguous()
    e, _ = SoftmaxEmbedFn.apply(y2, W)  # (M, D)
    return e.reshape(*lead, W.shape[1])


def softmax_embed(y: Tensor, W: Tensor, *, backend: str = "torch") -> Tensor:
    """``softmax(y, -1) @ W``: ``y`` ``(..., V)`` logits, ``W`` ``(V, D)`` -> ``(..., D)`` expected embedding.

    ``backend``: ``torch`` (reference), ``triton`` or ``auto`` (see :mod:`ebt_kernels.dispatch`).
    Both backends support first- and second-order autograd.
    """
    _check_shapes(y, W)
    if resolve_backend(backend, y.device) == "torch":
        return softmax_embed_reference(y, W)
    return softmax_embed_triton(y, W)
