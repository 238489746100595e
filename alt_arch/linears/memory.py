"""MemoryFormer's hashed lookup layer (Ding et al., NeurIPS 2024, "MemoryFormer: Minimize Transformer
Computation by Removing Fully-Connected Layers").

Reference code ("the reference code" below): https://github.com/C0-Design/MemoryFormer at commit
59686737ec18f14277fc817041a004c0ecc58bd2 (``memory_module/memory.py``, classes ``Hashing`` and ``MemoryLayer``).

A fully-connected layer ``x W + b`` is replaced by table look-ups. The input ``x`` (d_in) is split into
``K = d_in / tau`` chunks ``z_k`` of ``tau`` numbers; each chunk is hashed by its sign bits, read as an integer
(``c_k = sum_j [z_kj >= 0] 2^(tau-1-j)``, the reference code's order), into one of ``2^tau`` rows of its own
table ``T_k`` (2^tau, d_out):

    y = sum_k s_k T_k[c_k] + b,     s_k = ||z_k||_1 * prod_j 1 / (1 + exp(-2 |z_kj|))

``prod_j 1/(1+exp(-2|z_kj|))`` is the paper's probability ``p(c_k | z_k)`` of the selected bucket (Eq. 7: a
softmax over the ``2^tau`` bucket codes in ``{-1,1}^tau`` with logits ``<z_k, h>``); the factor ``||z_k||_1`` is
from the authors' released code (``compute_code_score``), which keeps the output scale proportional to the
input, and is what we implement. Gradients reach the selected table rows and, through ``s_k``, the input
(the codes are discrete).

The sum over chunks is one ``F.embedding_bag`` with per-sample weights (no loop over chunks). PyTorch has no
double backward for its per-sample-weight gradient, which the EBT objective needs, so the look-up is wrapped in
an autograd Function: an ordinary backward re-uses the fused kernels, a ``create_graph`` backward switches to a
differentiable gather formulation (same numbers, more memory).

MemoryFormer's FFN (``MemoryMLP``, the "Memory Block"): ``MemoryLayer(d -> K (tau+2), tau) -> LayerNorm ->
MemoryLayer(K (tau+2) -> d, tau+2)``, no activation (the hashing is the non-linearity).

Deviations: the hash is recomputed by each of Q, K, V (the reference computes it once and shares the codes and
weights; results are identical, only the hash, ``O(d_in)`` per token, is repeated). Tables ~ N(0, 0.02) as in
the reference; the bias starts at zero (reference: N(0, 0.001)).
"""

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from alt_arch.errors import MixerCapabilityError, PartOptionError


class _WeightedBag(torch.autograd.Function):
    """``out[m] = sum_k w[m, k] * table[idx[m, k]]`` for idx, w (M, K) and table (R, D); twice differentiable."""

    @staticmethod
    def forward(ctx, idx: torch.Tensor, table: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(idx, table, w)
        return F.embedding_bag(idx, table, per_sample_weights=w, mode="sum")  # (M, D)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        idx, table, w = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: differentiable ops, so the gradient has a gradient
            rows = F.embedding(idx, table)  # (M, K, D)
            grad_w = torch.einsum("mkd,md->mk", rows, grad_out)
            contrib = rearrange(w[..., None] * grad_out[:, None, :], "m k d -> (m k) d")
            grad_table = torch.zeros_like(table).index_add(0, idx.flatten(), contrib)
            return None, grad_table, grad_w
        with torch.enable_grad():  # first-order backward: PyTorch's fused embedding_bag kernels
            t = table.detach().requires_grad_()
            v = w.detach().requires_grad_()
            out = F.embedding_bag(idx, t, per_sample_weights=v, mode="sum")
            grad_table, grad_w = torch.autograd.grad(out, (t, v), grad_out)
        return None, grad_table, grad_w


def weighted_bag(idx: torch.Tensor, table: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Weighted sum of table rows per bag: idx, w (M, K), table (R, D) -> (M, D)."""
    return _WeightedBag.apply(idx, table, w.to(table.dtype))


class MemoryLayer(nn.Module):
    """``(..., d_in) -> (..., d_out)`` by hashing ``d_in / tau`` chunks into ``2^tau``-row tables."""

    def __init__(self, d_in: int, d_out: int, *, tau: int = 8, bias: bool = True, table_std: float = 0.02) -> None:
        super().__init__()
        if not 1 <= tau <= 20:
            raise PartOptionError(f"memory layer: tau={tau} gives 2^tau table rows; use 1 <= tau <= 20 (paper: 8)")
        if d_in % tau:
            raise MixerCapabilityError(f"memory layer: d_in={d_in} is not divisible by tau={tau}; choose a tau "
                                       "that divides the width (model.linear.tau) or a model.dim that is a "
                                       "multiple of it")
        self.d_in, self.d_out, self.tau = d_in, d_out, tau
        self.n_chunks = d_in // tau
        self.table_rows = 2**tau
        self.tables = nn.Parameter(torch.randn(self.n_chunks * self.table_rows, d_out) * table_std)  # (K 2^tau, d_out)
        self.bias = nn.Parameter(torch.zeros(d_out)) if bias else None
        self.register_buffer("bit_values", 2 ** torch.arange(tau - 1, -1, -1), persistent=False)  # (tau,)
        self.register_buffer("offsets", torch.arange(self.n_chunks) * self.table_rows, persistent=False)  # (K,)

    def hash(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bucket codes (..., K) in ``[0, 2^tau)`` and weights ``s_k`` (..., K) of the chunks of ``x``."""
        z = rearrange(x, "... (k t) -> ... k t", t=self.tau)  # (..., K, tau)
        codes = ((z >= 0).long() * self.bit_values).sum(-1)  # (..., K)
        a = z.abs()
        weights = a.sum(-1) * torch.sigmoid(2 * a).prod(-1)  # ||z_k||_1 * prod_j 1/(1+exp(-2|z_kj|))
        return codes, weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.d_in:
            raise ValueError(f"memory layer: expected input width {self.d_in}, got {x.shape[-1]}")
        codes, weights = self.hash(x)
        idx = rearrange(codes + self.offsets, "... k -> (...) k")  # (M, K) rows of the stacked tables
        out = weighted_bag(idx, self.tables, rearrange(weights, "... k -> (...) k"))  # (M, d_out)
        out = out.reshape(*x.shape[:-1], self.d_out)
        return out + self.bias if self.bias is not None else out

    def flops_per_token(self, seq_len: int) -> float:
        """Hash about ``5 d_in`` (abs, exp, sum, product, sign bits), weighted sum of K rows ``2 K d_out``."""
        return 5 * self.d_in + 2 * self.n_chunks * self.d_out + (self.d_out if self.bias is not None else 0)

    def table_bytes(self) -> int:
        return self.tables.numel() * self.tables.element_size()

    def extra_repr(self) -> str:
        return f"{self.d_in} -> {self.d_out}, tau={self.tau}, tables={self.n_chunks} x {self.table_rows}"


def memory(d_in: int, d_out: int, *, tau: int = 8, bias: bool = True, table_std: float = 0.02) -> MemoryLayer:
    """The ``linear`` factory (``model/linear=memory``)."""
    return MemoryLayer(d_in, d_out, tau=tau, bias=bias, table_std=table_std)


class MemoryMLP(nn.Module):
    """MemoryFormer's Memory Block: ``M2(LayerNorm(M1(x)))`` with ``M1: d -> K (tau+2)`` (code length ``tau``)
    and ``M2: K (tau+2) -> d`` (code length ``tau + 2``), ``K = d / tau``. The block's ``linear`` factory is
    accepted (part contract) and not used: the FFN is defined by memory layers."""

    def __init__(self, dim: int, *, linear=None, tau: int = 8, bias: bool = True, table_std: float = 0.02) -> None:
        super().__init__()
        del linear
        if dim % tau:
            raise MixerCapabilityError(f"memory mlp: dim={dim} is not divisible by tau={tau}; set model.mlp.tau "
                                       "to a divisor of model.dim")
        hidden = (dim // tau) * (tau + 2)
        self.up = MemoryLayer(dim, hidden, tau=tau, bias=bias, table_std=table_std)
        self.norm = nn.LayerNorm(hidden)
        self.down = MemoryLayer(hidden, dim, tau=tau + 2, bias=bias, table_std=table_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.norm(self.up(x)))
