"""TokenFormer's token-parameter attention (Wang et al., 2024, "TokenFormer: Rethinking Transformer Scaling
with Tokenized Model Parameters", arXiv:2410.23168).

Reference code ("the reference" below): https://github.com/Haiyang-W/TokenFormer at commit
4d56c73f407635e62f6df16b97dc897b4477129e (``megatron/model/tokenformer.py``, class ``Pattention``).

A linear map ``X W`` is replaced by attention from the input tokens to ``n`` learnable parameter tokens,
keys ``K_P`` (n, d_in) and values ``V_P`` (n, d_out), no biases:

    S = X K_P^T                                  (..., n)
    Pattention(X) = Theta(S) V_P                 (..., d_out)

with the paper's modified softmax (Eq. 5, ``normalization="l2_gelu"``, the default)

    Theta(S)_ij = GELU(S_ij * tau / ||S_i||_2),  tau = sqrt(n)

and the two alternatives of the reference code: ``"gelu_l2"`` (``tau * GELU(S)_ij / ||GELU(S)_i||_2``) and
``"softmax"`` (``n * softmax(S)_ij``, i.e. ``exp`` then an L1 norm, scaled by ``n``). A small ``eps`` clamps the
norm. Initialisation (GPT-NeoX, as in the reference configs): keys ~ N(0, 0.02), values ~ N(0, 2 / (L sqrt(d_in)))
with ``L`` the number of layers ("wang init").

Progressive scaling (paper Sec. 3.5) appends parameter tokens: ``grow(n_new)`` adds zero keys and random values.
The factor ``tau`` (``sqrt(n)``, or ``n`` for softmax) lives in the persistent buffer ``scale`` fixed at
construction, so it stays pinned to the pre-growth ``n``. Why growth then preserves the function exactly for the
two GELU forms: a zero key gives a zero score; zero scores add nothing to ``||S_i||_2`` (nor, since
``GELU(0) = 0``, to ``||GELU(S)_i||_2``); and the new entries of ``Theta`` are ``GELU(0) = 0``, so the new values
are multiplied by zero. With ``softmax`` a zero score contributes ``exp(0) = 1`` to the L1 norm, so growth is not
function-preserving and ``grow`` refuses it.

Deviations: the paper also zero-initialises the new *values*; with zero keys and zero values every gradient of the
new tokens is zero (dL/dV_new = Theta_new^T g = 0, dL/dK_new is proportional to V_new = 0), so they would never
train. We draw new values from the value initialisation instead; the output is unchanged because Theta_new = 0.
``tau`` is a stored buffer (the reference recomputes ``sqrt(n)`` from the current shape, which changes on growth).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from alt_arch.errors import PartOptionError

NORMALIZATIONS = ("l2_gelu", "gelu_l2", "softmax")


class Pattention(nn.Module):
    """``(..., d_in) -> (..., d_out)`` through ``n`` key/value parameter tokens."""

    def __init__(self, d_in: int, d_out: int, *, slots: int, normalization: str = "l2_gelu",
                 key_std: float = 0.02, value_std: float | None = None, n_layers: int = 2,
                 eps: float = 1e-6) -> None:
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise PartOptionError(f"pattention: unknown normalization {normalization!r}; use one of {NORMALIZATIONS}")
        if slots < 1:
            raise PartOptionError(f"pattention: slots must be >= 1, got {slots}")
        if n_layers < 1:
            raise PartOptionError(f"pattention: n_layers must be >= 1 (it sets the value init), got {n_layers}")
        self.d_in, self.d_out, self.normalization, self.eps = d_in, d_out, normalization, eps
        self.value_std = value_std if value_std is not None else 2.0 / (n_layers * math.sqrt(d_in))
        self.keys = nn.Parameter(torch.randn(slots, d_in) * key_std)  # K_P (n, d_in)
        self.values = nn.Parameter(torch.randn(slots, d_out) * self.value_std)  # V_P (n, d_out)
        tau = float(slots) if normalization == "softmax" else math.sqrt(slots)
        self.register_buffer("scale", torch.tensor(tau))  # pinned at construction: growth keeps it

    @property
    def slots(self) -> int:
        return self.keys.shape[0]

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """``Theta(X K_P^T)``: (..., d_in) -> (..., n)."""
        s = x @ self.keys.t()  # (..., n)
        scale = self.scale.to(s.dtype)
        if self.normalization == "l2_gelu":
            return F.gelu(s * scale / s.norm(dim=-1, keepdim=True).clamp_min(self.eps))
        if self.normalization == "gelu_l2":
            g = F.gelu(s)
            return g * scale / g.norm(dim=-1, keepdim=True).clamp_min(self.eps)
        return s.softmax(dim=-1) * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weights(x) @ self.values  # (..., d_out)

    @torch.no_grad()
    def grow(self, n_new: int, *, generator: torch.Generator | None = None) -> None:
        """Append ``n_new`` parameter tokens (zero keys, values ~ N(0, value_std)) without changing the output."""
        if n_new < 1:
            raise PartOptionError(f"pattention: grow needs n_new >= 1, got {n_new}")
        if self.normalization == "softmax":
            raise PartOptionError("pattention: growth with normalization=softmax is not function-preserving "
                                  "(exp(0) = 1 enters the L1 norm); use l2_gelu or gelu_l2")
        keys = torch.zeros(n_new, self.d_in, dtype=self.keys.dtype, device=self.keys.device)
        values = torch.randn(n_new, self.d_out, generator=generator, dtype=self.values.dtype,
                             device="cpu" if generator is not None else self.values.device) * self.value_std
        self.keys = nn.Parameter(torch.cat([self.keys, keys]))
        self.values = nn.Parameter(torch.cat([self.values, values.to(self.values.device)]))

    def flops_per_token(self, seq_len: int) -> float:
        """Scores ``2 n d_in``, weighted sum ``2 n d_out``, normalisation about ``5 n`` (norm, scale, GELU)."""
        return 2 * self.slots * (self.d_in + self.d_out) + 5 * self.slots

    def extra_repr(self) -> str:
        return (f"{self.d_in} -> {self.d_out}, slots={self.slots}, normalization={self.normalization}, "
                f"scale={float(self.scale):.4g}")


def pattention(d_in: int, d_out: int, *, slots: int | None = None, extra_slots: int = 0,
               normalization: str = "l2_gelu", key_std: float = 0.02, value_std: float | None = None,
               n_layers: int = 2) -> Pattention:
    """The ``linear`` factory (``model/linear=pattention``): ``slots`` parameter tokens (``None``: ``d_in``),
    plus ``extra_slots`` (set by ``scripts/grow.py`` so a grown checkpoint fits the config)."""
    n = (slots if slots is not None else d_in) + extra_slots
    return Pattention(d_in, d_out, slots=n, normalization=normalization, key_std=key_std, value_std=value_std,
                      n_layers=n_layers)


class PattentionMLP(nn.Module):
    """TokenFormer's FFN (``model/mlp=pattention``): one Pattention ``dim -> dim`` with ``slot_ratio * dim``
    (+ ``extra_slots``) parameter tokens; no activation besides the modified softmax. The block's ``linear``
    factory is accepted (part contract) and not used: this FFN *is* a single token-parameter layer."""

    def __init__(self, dim: int, *, linear=None, slot_ratio: float = 4.0, extra_slots: int = 0,
                 normalization: str = "l2_gelu", key_std: float = 0.02, value_std: float | None = None,
                 n_layers: int = 2) -> None:
        super().__init__()
        del linear
        self.ffn = Pattention(dim, dim, slots=int(slot_ratio * dim) + extra_slots, normalization=normalization,
                              key_std=key_std, value_std=value_std, n_layers=n_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn(x)


def pattention_layers(module: nn.Module) -> list[tuple[str, Pattention]]:
    """Every Pattention inside ``module`` with its qualified name."""
    return [(name, m) for name, m in module.named_modules() if isinstance(m, Pattention)]
