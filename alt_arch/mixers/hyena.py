"""The Hyena operator (Poli et al., "Hyena Hierarchy: Towards Larger Convolutional Language Models", 2023) and its
N-D form (Zimerman & Wolf, "Multi-Dimensional Hyena for Spatial Inductive Bias", 2023).

Reference code ("the reference" below): https://github.com/HazyResearch/safari at commit
02220c69d247e5473616cd053a443ad99fd2559b (``src/models/sequence/hyena.py``); for Hyena-ND
https://github.com/Itamarzimm/HyenaND at commit e8b875ea852b8b255211f9562ddc242fe2f73ab1
(``pytorch-image-models/timm/models/layers/hyena2d.py``).

Order-``N`` operator (Hyena, Alg. 1-3), for ``x`` (B, L, C)::

    z            = in_proj(x)                               (B, L, (N+1) C)   via the ``linear`` factory
    z            = short_conv(z)                             depthwise, kernel 3 (causal in 1-D, centred otherwise)
    x_0..x_{N-1}, v = split(z)
    for i = N-1 .. 1:  v <- v * x_i;  v <- h_i * v + D_i * v  (long convolution with an implicit filter h_i)
    y            = out(v * x_0)

The implicit filters, positional features and FFT convolutions live in :mod:`hyena_filter`: one filter network per
operator whose ``(order - 1) C`` outputs are laid out channel-major (channel ``c`` of long convolution ``i`` at
``c (order - 1) + i``, the reference's ``'(v o)'``, so that each convolution gets decay rates from the whole range),
one ``Sin`` module shared by all its activations. In 1-D the long convolution is causal (lags ``0..L-1``) or, with
``causal=False``, two-sided: a second filter output covers the future lags ``-1..-(L-1)`` (safari's
``fftconv_ref`` takes such a reversed kernel, ``k_rev``, which its operator does not use at the pinned commit).
Positions are normalised by ``l_max`` (the paper's maximum/training length): time ``t = p / (l_max - 1)``, the
reference's ``linspace(0, 1, l_max)``, and bands ``2 pi f p / l_max``; the reference computes the filter for ``l_max``
positions and truncates it to ``L``. With a fixed ``l_max`` a filter tap depends only on its lag, so the output at
position ``t`` does not depend on how long the sequence is, and longer inputs see the same filter extended (length
extrapolation). A causal 1-D Hyena therefore needs ``l_max`` (``MixerCapabilityError`` otherwise; the builder sets
it to the task's longest sequence); a non-causal 1-D Hyena may leave ``l_max=None``: positions normalised by each
input's own length.

Hyena-ND (``dims=2``, needs ``spatial_shape=(S, S)``): tokens are laid out on the square grid, the short filter is a
depthwise 3x3 convolution and each long convolution is a 2-D FFT convolution zero-padded to ``(2S, 2S)`` with either
the product filter ``hX(x) hY(y)`` (default, the paper's choice) or a joint 2-D implicit filter; positions are
normalised by the grid side (as in the reference, ``l_max = S``). Direction handling: the reference's ``4dir`` mode
runs the operator on four flipped copies of the input and mixes the results; here the four flipped orientations of
each kernel are mixed with learnable per-channel weights *inside* each long convolution. For order 2 the two are the
same operator (the gates are pointwise, so flips commute with them) at a quarter of the cost. A 2-D Hyena cannot be
causal (``MixerCapabilityError``); non-square grids are refused (one positional encoding serves both axes).

Two-stream mode (autoregressive EBT, causal 1-D only; see :class:`~alt_arch.mixers.attention.Attention`): candidate
``y_t`` stands in for token ``t+1``. Its output equals the plain causal forward of the ``T+1`` tokens
``x_0 .. x_t, y_t, ...`` read at position ``t+1``: its short convolution sees the ``K-1`` context inputs
``x_{t-K+2} .. x_t`` and itself, and each long convolution is ``sum_{s<=t} h[t+1-s] v_ctx[s] + h[0] v_cand[t]`` (plus
``D v_cand[t]``), where ``v_ctx`` is the context's gated value of the same order. ``forward_context(x)`` returns the
ordinary causal output for ``x`` and, as the cache, the context's part of every candidate's short convolution and of
every long convolution (one FFT convolution with the filter shifted by one lag, for all ``t`` at once) plus ``h[0]``.
Both streams use filters for ``T+1`` positions; with the fixed ``l_max`` of a causal Hyena a tap depends on its
lag only, so ``forward_context(x)`` equals ``forward(x)``. Non-causal and 2-D Hyena raise
:class:`MixerCapabilityError` there.

Deviations from the references (``tests/test_hyena.py`` compares with their formulas, written out from the reference
code, in float64): the filters' decay rates are constants (the reference: parameters with learning rate 0) and the
positional features are computed (the reference: a parameter with learning rate 1e-5, ``l_max`` rows); inputs longer
than ``l_max`` extend the filter (the reference truncates it); the projections come from the ``linear`` factory
(``dense`` has no bias, the reference's ``nn.Linear`` has); filter dropout is not implemented; the 2-D convolution is
exact (the reference's is scaled by ``1/(2S)``); the four directions are mixed inside each long convolution (above);
the 2-D filter outputs are laid out channel-major as in safari's 1-D operator (HyenaND's are group-major; the same at
order 2).

``legacy_filter=True`` is the filter of checkpoints written before the module followed the references in three points
(time feature and decay ``t = p / l_max``; filter outputs group-major, so at order >= 3 the first long convolution
had only the slowest decays and the last only the fastest, and two-sided filters side-major; one sine frequency per
activation and per 2-D axis). :meth:`Hyena.upgrade_options` sets it when such a checkpoint is restored; new configs
have ``legacy_filter: false`` (so resuming such a run takes ``model.mixer.legacy_filter=true``).
"""

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from alt_arch.errors import MixerCapabilityError, PartOptionError
from alt_arch.linears.dense import dense
from alt_arch.mixers.hyena_filter import Filter1d, Filter2d, fft_conv1d, fft_conv2d


class HyenaContext(NamedTuple):
    """Per-layer cache of the two-stream mode: what every candidate takes from the context."""

    short: torch.Tensor  # (B, (order+1) C, T): bias + short-conv taps over the K-1 context inputs before slot t+1
    long: list[torch.Tensor]  # order-1 of (B, C, T): sum_{s<=t} h_i[t+1-s] v_ctx_i[s]
    h0: torch.Tensor  # (order-1, C): lag-0 taps of the long filters


class Hyena(nn.Module):
    def __init__(
        self,
        dim: int,
        *,
        causal: bool,
        linear=dense,
        spatial_shape: tuple[int, ...] | None = None,
        order: int = 2,
        dims: int | None = None,
        filter_2d: str = "product",
        filter_width: int = 64,
        filter_depth: int = 2,
        emb_dim: int = 33,
        sine_freq: float = 1.0,
        l_max: int | None = None,
        short_kernel: int = 3,
        fast_decay_pct: float = 0.3,
        slow_decay_pct: float = 1.5,
        decay_target: float = 1e-2,
        decay_shift: float = 0.0,
        legacy_filter: bool = False,
    ) -> None:
        super().__init__()
        if order < 2:
            raise PartOptionError(f"hyena: order must be >= 2 (one long convolution per extra gate), got {order}")
        if dims is None:
            dims = 2 if spatial_shape is not None and len(spatial_shape) == 2 else 1
        if dims not in (1, 2):
            raise MixerCapabilityError(f"hyena: dims={dims} is not supported; use dims=1 (sequences) or dims=2")
        if dims == 2:
            _check_grid(spatial_shape, causal)
        elif causal and l_max is None:
            raise MixerCapabilityError(
                "hyena: a causal 1-D Hyena needs l_max (the longest sequence, e.g. model.mixer.l_max=256; the "
                "builder sets it to the task's max_len) so that outputs at position t do not depend on the sequence "
                "length")
        self.dim, self.order, self.dims, self.causal = dim, order, dims, causal
        self.side = spatial_shape[0] if dims == 2 else None
        self.short_kernel = short_kernel
        inner = (order + 1) * dim
        self.in_proj = linear(dim, inner)
        self.out = linear(dim, dim)
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        self.short_conv = conv(inner, inner, short_kernel, groups=inner, padding=0)
        filter_options = dict(width=filter_width, depth=filter_depth, sine_freq=sine_freq,
                              fast_decay_pct=fast_decay_pct, slow_decay_pct=slow_decay_pct,
                              decay_target=decay_target, decay_shift=decay_shift, legacy=legacy_filter)
        if dims == 1:
            self.filter = Filter1d(dim, order - 1, two_sided=not causal, emb_dim=emb_dim, scale=l_max,
                                   **filter_options)
        else:
            self.filter = Filter2d(dim, order - 1, kind=filter_2d, emb_dim=emb_dim, **filter_options)
        self.D = nn.Parameter(torch.randn(order - 1, dim))  # the filter's skip term ("bias" in the reference)

    @staticmethod
    def upgrade_options(options: dict) -> dict:
        """The stored options of a checkpoint written before ``legacy_filter`` existed: its filter is the one it was
        trained with (``legacy_filter=True``: time ``p / l_max``, group-major decays, one sine per activation)."""
        return {"legacy_filter": True, **options}

    def _short_conv(self, z: torch.Tensor) -> torch.Tensor:
        """Depthwise short convolution: causal (left padding) in 1-D causal mode, centred otherwise."""
        k = self.short_kernel
        if self.dims == 1:
            pad = (k - 1, 0) if self.causal else ((k - 1) // 2, k // 2)
        else:
            pad = ((k - 1) // 2, k // 2, (k - 1) // 2, k // 2)
        return self.short_conv(F.pad(z, pad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        z = self.in_proj(x)  # (B, N, (order+1) C)
        if self.dims == 1:
            z = rearrange(z, "b n c -> b c n")
            filters = self.filter(n)  # (G, C, L), (G, C, L) | None
        else:
            if n != self.side**2:
                raise MixerCapabilityError(f"hyena: got {n} tokens but spatial_shape is {self.side}x{self.side}")
            z = rearrange(z, "b (h w) c -> b c h w", h=self.side)
            filters = self.filter(self.side)  # (G, C, 2S, 2S)
        *gates, v = self._short_conv(z).split(c, dim=1)  # order + 1 tensors of (B, C, ...)
        for i, x_i in enumerate(reversed(gates[1:])):
            v = v * x_i
            d = self.D[i].view(c, *([1] * self.dims))
            if self.dims == 1:
                conv = fft_conv1d(v, filters[0][i], None if filters[1] is None else filters[1][i])
            else:
                conv = fft_conv2d(v, filters[i])
            v = conv + d * v
        y = v * gates[0]
        pattern = "b c n -> b n c" if self.dims == 1 else "b c h w -> b (h w) c"
        return self.out(rearrange(y, pattern))

    def _check_two_stream(self) -> None:
        if self.dims != 1 or not self.causal:
            raise MixerCapabilityError(
                "hyena: two-stream candidates need a causal 1-D Hyena (a two-sided or 2-D convolution has no slot for "
                "a candidate); use a causal sequence task or a whole-target EBT task"
            )

    def forward_context(self, x: torch.Tensor) -> tuple[torch.Tensor, HyenaContext]:
        """Causal Hyena over the context ``x`` (B, T, C), filters for ``T+1`` positions; also the candidates' cache."""
        self._check_two_stream()
        n, c = x.shape[1], self.dim
        z = rearrange(self.in_proj(x), "b n c -> b c n")  # (B, (order+1) C, T)
        h = self.filter(n + 1)[0]  # (G, C, T+1): lags 0..T
        # candidate t's short conv minus its own tap: the full conv with the last tap zeroed, read at slot t+1
        w = F.pad(self.short_conv.weight[..., :-1], (0, 1))  # (inner, 1, K)
        short = F.conv1d(F.pad(z, (self.short_kernel - 1, 1)), w, self.short_conv.bias, groups=w.shape[0])[..., 1:]
        *gates, v = self._short_conv(z).split(c, dim=1)
        long = []
        for i, x_i in enumerate(reversed(gates[1:])):
            v = v * x_i
            long.append(fft_conv1d(v, h[i, :, 1:]))  # filter shifted by one lag: sum_{s<=t} h[t+1-s] v[s]
            v = fft_conv1d(v, h[i, :, :n]) + self.D[i, :, None] * v
        y = self.out(rearrange(v * gates[0], "b c n -> b n c"))
        return y, HyenaContext(short, long, h[..., 0])

    def forward_candidates(self, y: torch.Tensor, cache: HyenaContext) -> torch.Tensor:
        """Candidate ``t`` of ``y`` (B, T, C) as token ``t+1`` after the context tokens ``0..t`` (see the docstring)."""
        self._check_two_stream()
        z = rearrange(self.in_proj(y), "b n c -> b c n")  # (B, (order+1) C, T)
        z = cache.short + self.short_conv.weight[:, :, -1] * z  # + the candidate's own (last) short-conv tap
        *gates, v = z.split(self.dim, dim=1)
        for i, x_i in enumerate(reversed(gates[1:])):
            v = v * x_i
            v = cache.long[i] + (cache.h0[i] + self.D[i])[:, None] * v
        return self.out(rearrange(v * gates[0], "b c n -> b n c"))

    def flops_per_token(self, seq_len: int) -> float:
        """Estimate of the non-matmul work: per long convolution and channel, two real FFTs of size ``2L``
        (``~2.5 n log2 n`` flops each) plus the spectral product, spread over ``L`` tokens."""
        n = 2 * seq_len
        per_channel = (2 * 2.5 * n * math.log2(n) + 3 * n) / seq_len
        return (self.order - 1) * self.dim * per_channel


def _check_grid(spatial_shape: tuple[int, ...] | None, causal: bool) -> None:
    if spatial_shape is None or len(spatial_shape) != 2:
        raise MixerCapabilityError(
            f"hyena: dims=2 needs a 2-D spatial_shape (an image task), got {spatial_shape}; use dims=1 for sequences")
    if causal:
        raise MixerCapabilityError("hyena: a 2-D Hyena cannot be causal; use dims=1 or a non-causal (image) task")
    if spatial_shape[0] != spatial_shape[1]:
        raise MixerCapabilityError(
            f"hyena: Hyena-ND needs a square grid, got {tuple(spatial_shape)}; pad or resize the images to a square")
