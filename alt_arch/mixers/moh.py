"""Mixture-of-Head attention (Jin, Zhu, Ning, Yuan, "MoH: Multi-Head Attention as Mixture-of-Head Attention", 2024).

Reference code ("the reference implementation" below): https://github.com/SkyworkAI/MoH at commit
2cefd57b78196dd0fabc34a858a7739235f55356 (``MoH-ViT/attention_native.py``, ``MoH-DiT/models.py``).

Heads are experts. With ``H`` heads, ``h_s`` shared heads are always active and the ``E = H - h_s`` routed heads are
chosen per token by a bias-free router (paper Eqs. 5-6, Sec. 3.2)::

    p      = softmax(W_r x)                                   (E,)   routed scores
    S      = top_k(p)                                          the k routed heads of this token
    g_r,i  = k * p_i / sum_{j in S} p_j  if i in S else 0      routed gates (normalised, scaled by k)
    g_s    = h_s * softmax(W_s x)                              shared gates
    [a1, a2] = 2 * softmax(W_h x)                              two-stage balance of the two groups
    MoH(x) = concat_i(a1 g_s,i head_i(x) | a2 g_r,i head_i(x)) W_O

``head_i`` is RoPE attention ``softmax(q_i k_i^T / sqrt(d_h) + mask) v_i`` exactly as in :mod:`attention`.
Load balance (paper Eq. 7): ``L_b = E * sum_i mean_t(p_i) * mean_t(1[i in S_t])`` over all tokens of the batch,
reported already weighted as ``{"moh_balance": balance_weight * L_b}`` through :func:`alt_arch.utils.record_aux`, with
the metrics ``moh_active_heads`` (fraction of heads with a non-zero gate) and ``moh_max_load`` (busiest routed head's
share times ``E``; 1 = perfectly balanced). Every routing call is one pass: in a training step that routes several
times (the EBT's context stream and each thinking step's candidate pass, a looped backbone's iterations) the loss
the objective adds is the mean over all of them.

**Scale.** With ``W_s = 0`` the shared gates are ``h_s * (1 / h_s) = 1`` and with ``W_h = 0`` the balance is
``a1 = a2 = 1``: every head is multiplied by exactly 1, so all-shared MoH with a zero router *is* standard multi-head
attention (tested), no rescaling.

**Compute.** ``routed_compute="dense"`` computes every routed head for every query and multiplies the unselected
ones by 0 (what the reference implementation does: no saving). ``"gather"`` computes a routed head only for the
queries that selected it: per (batch, head) the selected query rows are gathered (padded to the largest count in
the batch), attend to that head's full key/value sequence under the causal mask of their true positions, and are
scattered back. Keys and values are needed for every token (any later query may select the head), so only the
query-side ``O(N^2)`` work shrinks, by ``k / E``. Both paths agree to float rounding (tested). Measured on CPU
(docs/moh_hyena.md) gather does *not* pay off: the gathered queries need an explicit causal mask, so SDPA takes its
math path and materialises the (M, N) scores, while the dense path runs the fused causal kernel that already skips
the masked half. Dense is therefore the default; gather is there to measure on other hardware.

Deviations: routers are always plain ``nn.Linear`` without bias (the ``linear`` factory builds q, k, v and the output
projection, as in :class:`~alt_arch.mixers.attention.Attention`); the two-stage balance router exists only when both
groups are non-empty (with one group it would only rescale the output); the balance loss is also computed in eval
mode (cheap; objectives only add it during training).

Two-stream mode (autoregressive EBT): ``forward_context`` / ``forward_candidates`` have the semantics of
:class:`~alt_arch.mixers.attention.Attention`; a candidate's routing is computed from the candidate's own input, and
the candidate stream computes its heads densely (one query per row, nothing to save). The key/value cache of
generation (``forward_context(x, past)``, fewer candidate rows than context positions) works as there too; new rows
after a cache compute their routed heads densely (``routed_compute=gather`` applies to a pass without a cache).
"""

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from alt_arch.errors import PartOptionError
from alt_arch.linears.dense import dense
from alt_arch.mixers.attention import candidate_attention, check_past, context_attention, extend_cache
from alt_arch.rope import Rotary
from alt_arch.utils import record_aux

RoutedCompute = Literal["dense", "gather"]


class MoHAttention(nn.Module):
    extends_context = True  # forward_context(x, past): a key/value cache (module docstring)

    def __init__(
        self,
        dim: int,
        *,
        causal: bool,
        linear=dense,
        spatial_shape: tuple[int, ...] | None = None,  # tokens are flattened; RoPE runs over the flat index
        n_heads: int = 8,
        shared_heads: int = 2,
        top_k: int = 4,
        balance_weight: float = 0.01,
        rope: bool = True,
        rope_base: float = 10000.0,
        routed_compute: RoutedCompute = "dense",
    ) -> None:
        super().__init__()
        if dim % n_heads:
            raise PartOptionError(f"moh: dim={dim} (model.dim) is not divisible by n_heads={n_heads} "
                                  "(model.mixer.n_heads); pick a width that is a multiple of the heads")
        if not 0 <= shared_heads <= n_heads:
            raise PartOptionError(f"moh: shared_heads={shared_heads} must lie in [0, n_heads={n_heads}]")
        routed = n_heads - shared_heads
        if routed and not 1 <= top_k <= routed:
            raise PartOptionError(f"moh: top_k={top_k} must lie in [1, n_heads - shared_heads = {routed}]")
        if routed_compute not in ("dense", "gather"):
            raise PartOptionError(f"moh: routed_compute={routed_compute!r}; use 'dense' or 'gather'")
        self.causal = causal
        self.n_heads, self.shared_heads, self.routed_heads = n_heads, shared_heads, routed
        self.top_k = top_k if routed else 0
        self.head_dim = dim // n_heads
        self.balance_weight = balance_weight
        self.routed_compute = routed_compute
        self.q = linear(dim, dim)
        self.k = linear(dim, dim)
        self.v = linear(dim, dim)
        self.out = linear(dim, dim)
        self.router_shared = nn.Linear(dim, shared_heads, bias=False) if shared_heads else None
        self.router_routed = nn.Linear(dim, routed, bias=False) if routed else None
        self.router_groups = nn.Linear(dim, 2, bias=False) if shared_heads and routed else None
        self.rotary = Rotary(self.head_dim, base=rope_base) if rope else None
        self.aux_losses: dict[str, torch.Tensor] = {}
        self.aux_metrics: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ routing
    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Gates (B, N, H) (shared heads first) and the routed selection mask (B, N, E) or None.

        Also stores the weighted balance loss and the routing metrics of this call.
        """
        parts = []
        if self.router_shared is not None:
            parts.append(self.shared_heads * self.router_shared(x).softmax(dim=-1))  # (B, N, h_s)
        selected = None
        balance = x.new_zeros(())
        if self.router_routed is not None:
            probs = self.router_routed(x).softmax(dim=-1)  # (B, N, E)
            top = probs.topk(self.top_k, dim=-1).indices  # (B, N, k)
            selected = torch.zeros_like(probs, dtype=torch.bool).scatter_(-1, top, True)
            kept = probs * selected
            denom = kept.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(probs.dtype).eps)
            parts.append(self.top_k * kept / denom)  # (B, N, E)
            load = selected.flatten(0, 1).float().mean(dim=0)  # (E,) share of tokens choosing each head
            balance = self.routed_heads * (probs.flatten(0, 1).mean(dim=0) * load).sum()
            metrics = {"moh_max_load": (load.max() * self.routed_heads / self.top_k).detach()}
        else:
            metrics = {}
        if self.router_groups is not None:
            a = 2 * self.router_groups(x).softmax(dim=-1)  # (B, N, 2)
            parts = [parts[0] * a[..., :1], parts[1] * a[..., 1:]]
        gates = torch.cat(parts, dim=-1)  # (B, N, H)
        metrics["moh_active_heads"] = (gates != 0).float().mean().detach()
        losses = {"moh_balance": self.balance_weight * balance} if selected is not None else {}
        record_aux(self, losses, metrics)
        return gates, selected

    # ------------------------------------------------------------------ attention
    def _qkv(self, x: torch.Tensor, positions: torch.Tensor):
        q, k, v = (rearrange(p(x), "b n (h d) -> b h n d", h=self.n_heads) for p in (self.q, self.k, self.v))
        if self.rotary is not None:
            q, k = self.rotary(q, positions), self.rotary(k, positions)
        return q, k, v

    def _use_gather(self) -> bool:
        return self.routed_compute == "gather" and 0 < self.top_k < self.routed_heads

    def _routed_gathered(self, q, k, v, gates_r, selected) -> torch.Tensor:
        """Routed heads computed only for the queries that selected them. q, k, v: (B, E, N, D)."""
        b, e, n, d = q.shape
        sel = rearrange(selected, "b n e -> b e n")
        counts = sel.sum(dim=-1)  # (B, E)
        m = int(counts.max())
        pos = torch.arange(n, device=q.device)
        # selected positions first (ascending), then the rest: a permutation per (b, e)
        order = torch.where(sel, pos, pos + n).sort(dim=-1).values[..., :m] % n  # (B, E, M)
        valid = torch.arange(m, device=q.device) < counts[..., None]  # (B, E, M)
        q_sel = q.gather(2, order[..., None].expand(b, e, m, d))  # (B, E, M, D)
        mask = order[..., :, None] >= pos if self.causal else None  # (B, E, M, N); row always sees itself
        o_sel = F.scaled_dot_product_attention(q_sel, k, v, attn_mask=mask)  # (B, E, M, D)
        g = rearrange(gates_r, "b n e -> b e n").gather(2, order) * valid  # (B, E, M)
        return q.new_zeros(b, e, n, d).scatter_add(2, order[..., None].expand(b, e, m, d), o_sel * g[..., None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.forward_context(x)
        return out

    def forward_context(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None):
        """MoH attention over ``x`` (B, N, C) after the cached keys/values ``past`` (None: none); also returns the
        (post-RoPE) keys and values of every head, the cached ones included."""
        n, start = x.shape[1], check_past(past, self.causal, "MoH")
        gates, selected = self.route(x)
        q, k, v = self._qkv(x, torch.arange(start, start + n, device=x.device))  # (B, H, N, D)
        k, v = extend_cache(past, k, v)
        if self._use_gather() and past is None:
            s = self.shared_heads
            shared = F.scaled_dot_product_attention(q[:, :s], k[:, :s], v[:, :s], is_causal=self.causal)
            shared = shared * rearrange(gates[..., :s], "b n h -> b h n 1")
            routed = self._routed_gathered(q[:, s:], k[:, s:], v[:, s:], gates[..., s:], selected)
            y = torch.cat([shared, routed], dim=1)  # (B, H, N, D)
        else:
            y = context_attention(q, k, v, self.causal)
            y = y * rearrange(gates, "b n h -> b h n 1")
        return self.out(rearrange(y, "b h n d -> b n (h d)")), (k, v)

    def forward_candidates(self, y: torch.Tensor, context_kv) -> torch.Tensor:
        """Candidate stream: row ``t`` of ``y`` (B, T, C) sits at RoPE position ``t+1``, attends to context
        keys ``<= t`` and to itself, and is routed by its own input (fewer rows than context positions: the last
        ones)."""
        if not self.causal:
            raise ValueError("two-stream candidates need a causal MoH mixer")
        k_ctx, v_ctx = context_kv  # (B, H, T, D)
        n, first = y.shape[1], k_ctx.shape[2] - y.shape[1] + 1
        gates, _ = self.route(y)
        q, k, v = self._qkv(y, torch.arange(first, first + n, device=y.device))
        out = candidate_attention(q, k, v, k_ctx, v_ctx)  # (B, H, T, D)
        out = out * rearrange(gates, "b n h -> b h n 1")
        return self.out(rearrange(out, "b h n d -> b n (h d)"))

    def active_heads(self) -> int:
        return self.shared_heads + self.top_k

    def flops_per_token(self, seq_len: int) -> float:
        """Scores + weighted sum of the *active* heads (what the gather path computes): ``4 N d_h (h_s + k)``,
        halved under a causal mask. The dense path costs ``4 N d_h H`` instead."""
        full = 4 * seq_len * self.head_dim * self.active_heads()
        return full / 2 if self.causal else full
