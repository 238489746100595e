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

Incremental context (generation with a key/value cache): ``forward_context(x, past)`` runs new rows ``x`` at the
positions after the ``P`` cached ones (RoPE positions ``P ..``), attending to the cached keys/values and causally
to each other, and returns the extended keys/values. ``forward_candidates`` accepts fewer candidate rows than context
positions: they are the last rows (``n`` rows against ``T`` context keys stand for positions ``T - n .. T - 1``), so
one new position thinks against the whole cache.
"""

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from alt_arch.errors import PartOptionError
from alt_arch.linears.dense import dense
from alt_arch.rope import Rotary

_CAUSAL_BIAS: dict[tuple, torch.Tensor] = {}  # (n, keys, device, dtype) -> (n, keys) additive mask, 0 / -inf


def causal_bias(n: int, device: torch.device, dtype: torch.dtype, keys: int | None = None) -> torch.Tensor:
    """(n, keys) additive mask for ``n`` query rows that are the last ``n`` of ``keys`` positions (default
    ``keys = n``): 0 where key ``s <= keys - n + i`` (row i), ``-inf`` elsewhere (cached per shape, device, dtype)."""
    keys = n if keys is None else keys
    key = (n, keys, device, dtype)
    if key in _CAUSAL_BIAS and not torch.compiler.is_compiling():
        return _CAUSAL_BIAS[key]
    allowed = torch.ones(n, keys, dtype=torch.bool, device=device).tril(diagonal=keys - n)
    bias = torch.zeros(n, keys, device=device, dtype=dtype).masked_fill(~allowed, float("-inf"))
    if not torch.compiler.is_compiling():
        if len(_CAUSAL_BIAS) >= 16:
            _CAUSAL_BIAS.clear()
        _CAUSAL_BIAS[key] = bias
    return bias


def context_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """SDPA of queries (B, H, n, Dh) that are the last ``n`` of the ``N`` key positions (B, H, N, Dh): the fused causal
    kernel when ``n = N`` (no cache), no mask for one new row, an explicit mask for several."""
    n, keys = q.shape[2], k.shape[2]
    if n == keys or not causal:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    mask = None if n == 1 else causal_bias(n, q.device, q.dtype, keys)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def extend_cache(past: tuple[torch.Tensor, torch.Tensor] | None, k: torch.Tensor, v: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The cached keys/values ``past`` (None: none) followed by the new rows' ``k`` / ``v`` (B, H, n, Dh)."""
    if past is None:
        return k, v
    return torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)


def check_past(past: tuple[torch.Tensor, torch.Tensor] | None, causal: bool, name: str) -> int:
    """The number of cached positions (0 without a cache); a cache needs a causal mixer."""
    if past is None:
        return 0
    if not causal:
        raise ValueError(f"a key/value cache needs a causal {name} mixer (new rows attend to earlier ones only)")
    return past[0].shape[2]


def candidate_attention(q, k, v, k_ctx, v_ctx) -> torch.Tensor:
    """Two-stream attention: query ``t`` (B, H, T, Dh) attends to context keys ``<= t`` and to its own key (with
    ``n < T`` query rows: they are the last ``n`` positions).

    The softmax over the T context scores and the one self score is written out, ``exp(s - m) / Z``, with the
    shift ``m`` (the row's largest score) detached: the result does not depend on ``m``, so its gradient (and the
    EBT's second-order terms) are exact, and autograd skips the concatenation, slicing and mask ops of a
    ``cat -> softmax -> split`` form (about 2x less time for this op's forward, backward and double backward)."""
    q = q * q.shape[-1] ** -0.5  # the scale on q (B, H, T, Dh), not on the (B, H, T, T) scores
    scores_ctx = q @ k_ctx.transpose(-1, -2)  # (B, H, n, T)
    if q.shape[2] > 1:  # one row is the last position: it sees every context key
        scores_ctx = scores_ctx + causal_bias(q.shape[2], q.device, q.dtype, k_ctx.shape[2])
    score_self = (q * k).sum(-1, keepdim=True)  # (B, H, T, 1)
    shift = torch.maximum(scores_ctx.amax(-1, keepdim=True), score_self).detach()
    weights_ctx, weight_self = (scores_ctx - shift).exp(), (score_self - shift).exp()
    total = weights_ctx.sum(-1, keepdim=True) + weight_self
    return (weights_ctx @ v_ctx + weight_self * v) / total  # (B, H, T, Dh)


class Attention(nn.Module):
    extends_context = True  # forward_context(x, past): a key/value cache (module docstring)

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

    def _qkv(self, x: torch.Tensor, offset: int):
        """Heads of ``x`` (B, N, C) at positions ``offset .. offset + N - 1`` (RoPE tables cached per length)."""
        q, k, v = (rearrange(p(x), "b n (h d) -> b h n d", h=self.n_heads) for p in (self.q, self.k, self.v))
        if self.rotary is not None:
            cos, sin = self.rotary.tables(x.shape[1], offset, x.device, q.dtype)
            q, k = self.rotary.rotate(q, cos, sin), self.rotary.rotate(k, cos, sin)
        return q, k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.forward_context(x)
        return out

    def forward_context(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None):
        """Plain attention over ``x`` (B, N, C) after the cached keys/values ``past`` (None: none); also returns the
        (post-RoPE) keys and values, the cached ones included."""
        q, k, v = self._qkv(x, check_past(past, self.causal, "attention"))  # (B, H, N, Dh)
        k, v = extend_cache(past, k, v)
        y = context_attention(q, k, v, self.causal)
        return self.out(rearrange(y, "b h n d -> b n (h d)")), (k, v)

    def forward_candidates(self, y: torch.Tensor, context_kv) -> torch.Tensor:
        """Candidate stream: row ``t`` of ``y`` (B, T, C) attends to context keys ``<= t`` and to itself (fewer rows
        than context positions: the last ones)."""
        if not self.causal:
            raise ValueError("two-stream candidates need a causal attention mixer")
        k_ctx, v_ctx = context_kv  # (B, H, T, Dh)
        q, k, v = self._qkv(y, k_ctx.shape[2] - y.shape[1] + 1)
        out = candidate_attention(q, k, v, k_ctx, v_ctx)  # (B, H, T, Dh)
        return self.out(rearrange(out, "b h n d -> b n (h d)"))

    def flops_per_token(self, seq_len: int) -> float:
        """Scores + weighted sum: ``4 * seq_len * dim`` (half of it under a causal mask, on average)."""
        full = 4 * seq_len * self.n_heads * self.head_dim
        return full / 2 if self.causal else full
