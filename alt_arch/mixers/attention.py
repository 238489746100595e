"""Multi-head self-attention with rotary positions (Vaswani et al., 2017; Su et al., 2021).

Reference code: none is followed; this is standard pre-norm multi-head attention as in nanoGPT
(https://github.com/karpathy/nanoGPT) with RoPE as in Su et al. (RoFormer); no deviation is intended.

``softmax(Q K^T / sqrt(d_h) + mask) V`` per head, ``Q = rope(x W_q)``, ``K = rope(x W_k)``, ``V = x W_v``,
output ``concat_h(.) W_o``; causal or bidirectional. Projections come from the ``linear`` factory (so
TokenFormer / MemoryFormer layers can replace them), no biases (Transformer++).

The plain path uses ``F.scaled_dot_product_attention``. Its fused CPU kernels have no double backward;
callers that differentiate twice (the EBT objective) run inside ``sdpa_kernel(SDPBackend.MATH)``.

Two-stream mode (autoregressive EBT, Gladstone et al. 2025): ``forward_context`` runs the causal context
stream and returns its keys/values; ``forward_candidates`` lets candidate ``t`` (which stands in for token
``t+1`` and so sits at RoPE position ``t+1``) attend to context positions ``<= t`` and to itself only.
The context keys/values are computed once and reused across thinking steps.
"""

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from alt_arch.errors import PartOptionError
from alt_arch.linears.dense import dense
from alt_arch.rope import Rotary


def candidate_attention(q, k, v, k_ctx, v_ctx) -> torch.Tensor:
    """Two-stream attention: query ``t`` (B, H, T, Dh) attends to context keys ``<= t`` and to its own key."""
    n = q.shape[2]
    scale = q.shape[-1] ** -0.5
    scores_ctx = torch.einsum("bhtd,bhsd->bhts", q, k_ctx) * scale  # (B, H, T, T)
    allowed = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
    scores_ctx = scores_ctx.masked_fill(~allowed, float("-inf"))
    score_self = (q * k).sum(-1, keepdim=True) * scale  # (B, H, T, 1)
    probs = torch.cat([scores_ctx, score_self], dim=-1).softmax(dim=-1)
    return probs[..., :n] @ v_ctx + probs[..., n:] * v  # (B, H, T, Dh)


class Attention(nn.Module):
    def __init__(
        self,
        dim: int,
        *,
        causal: bool,
        linear=dense,
        n_heads: int = 4,
        rope: bool = True,
        rope_base: float = 10000.0,
        spatial_shape: tuple[int, ...] | None = None,  # tokens are flattened; RoPE runs over the flat index
        out_proj: bool = True,  # False: identity output projection (MemoryFormer removes W_o)
    ) -> None:
        super().__init__()
        if dim % n_heads:
            raise PartOptionError(f"attention: dim={dim} (model.dim) is not divisible by n_heads={n_heads} "
                                  "(model.mixer.n_heads); pick a width that is a multiple of the heads")
        self.causal = causal
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.q = linear(dim, dim)
        self.k = linear(dim, dim)
        self.v = linear(dim, dim)
        self.out = linear(dim, dim) if out_proj else nn.Identity()
        self.rotary = Rotary(self.head_dim, base=rope_base) if rope else None

    def _qkv(self, x: torch.Tensor, positions: torch.Tensor):
        q, k, v = (rearrange(p(x), "b n (h d) -> b h n d", h=self.n_heads) for p in (self.q, self.k, self.v))
        if self.rotary is not None:
            q, k = self.rotary(q, positions), self.rotary(k, positions)
        return q, k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.forward_context(x)
        return out

    def forward_context(self, x: torch.Tensor):
        """Plain attention over ``x`` (B, N, C); also returns the (post-RoPE) keys and values."""
        positions = torch.arange(x.shape[1], device=x.device)
        q, k, v = self._qkv(x, positions)  # (B, H, N, Dh)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.out(rearrange(y, "b h n d -> b n (h d)")), (k, v)

    def forward_candidates(self, y: torch.Tensor, context_kv) -> torch.Tensor:
        """Candidate stream: row ``t`` of ``y`` (B, T, C) attends to context keys ``<= t`` and to itself."""
        if not self.causal:
            raise ValueError("two-stream candidates need a causal attention mixer")
        k_ctx, v_ctx = context_kv  # (B, H, T, Dh)
        n = y.shape[1]
        q, k, v = self._qkv(y, torch.arange(1, n + 1, device=y.device))
        out = candidate_attention(q, k, v, k_ctx, v_ctx)  # (B, H, T, Dh)
        return self.out(rearrange(out, "b h n d -> b n (h d)"))

    def flops_per_token(self, seq_len: int) -> float:
        """Scores + weighted sum: ``4 * seq_len * dim`` (half of it under a causal mask, on average)."""
        full = 4 * seq_len * self.n_heads * self.head_dim
        return full / 2 if self.causal else full
