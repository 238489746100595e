"""Hyena's implicit long filters and FFT convolutions (Poli et al., 2023, Sec. 3.3; Zimerman & Wolf, 2023, Sec. 3).

Reference code: as :mod:`alt_arch.mixers.hyena` (safari at 02220c69d247e5473616cd053a443ad99fd2559b,
``src/models/sequence/hyena.py``: ``PositionalEmbedding``, ``Sin``, ``ExponentialModulation``, ``HyenaFilter``;
HyenaND at e8b875ea852b8b255211f9562ddc242fe2f73ab1, ``hyena2d.py``: ``HyenaFilter2d``).

Implicit 1-D filter (Hyena, Eq. 7), for positions ``p = 0, 1, ...`` and the position scale ``L`` (``l_max``)::

    h(p)  = FFN(PE(p)) * (exp(-|alpha_c| t_p) + shift)
    t_p   = p / (L - 1)                 the reference's linspace(0, 1, L): 0 at the first tap, 1 at tap L - 1
    PE(p) = [t_p, cos(2 pi f_b p / L), -sin(2 pi f_b p / L)]_b,   f_b = linspace(1e-4, bands - 1, bands)
    FFN   = Linear(emb_dim, width) -> Sin -> (Linear(width, width) -> Sin) x depth -> Linear(width, C, no bias)
    Sin(z) = sin(omega * z), omega (width,) learnable (init ``sine_freq``), ONE module for every activation

Note the two scales, as in the reference: the time feature and the decay use ``p / (L - 1)``, the bands ``p / L``.
Taps beyond ``L - 1`` (inputs longer than ``l_max``) continue the same formulas (the reference has no such taps: it
truncates to ``l_max``).

``alpha = linspace(log(target) / slow_pct, log(target) / fast_pct, G * C)`` is fixed (the reference gives it
learning rate 0), so the fastest channel has decayed to ``target`` at ``t = fast_pct`` and the slowest at
``t = slow_pct``. One filter network serves the ``G = order - 1`` long convolutions of an operator (and, two-sided,
both sides); its ``G * C`` outputs are laid out channel-major, ``(c, g)`` at ``c * G + g`` (the reference's
``'(v o)'``), so every long convolution gets decays spread over the whole range (with the group-major ``(g, c)``
layout the first convolution would get only the slowest decays and the last only the fastest).

2-D filters (Hyena-ND): ``product`` is ``h(x, y) = hX(x) * hY(y)`` per channel with two 1-D filter networks (each
modulated by the decays above; the two share one ``Sin`` module, as in HyenaND), ``joint`` is one FFN over
``[PE(x), PE(y)]`` modulated by ``exp(-|alpha_c| t_x) exp(-|alpha_c| t_y)``; ``L`` is the grid side.

Deviations from the references (each also listed in :mod:`alt_arch.mixers.hyena`):

* ``PE`` is computed, not stored: the reference registers it as a parameter trained with learning rate 1e-5. A
  stored table would tie the filter to ``l_max`` rows (no taps for longer inputs) for a feature that barely moves.
* HyenaND (like safari's ``standalone_hyena.py``) lays the 2-D outputs out group-major (``'(o d)'``); we use the
  channel-major layout of safari's main module in 2-D too. The two agree at order 2 (one group: HyenaND's setting).

``legacy=True`` rebuilds the filter of checkpoints written before this module followed the references in these three
points (``t = p / L``; outputs laid out group-major ``(g, c)``, two-sided ones side-major ``(side, g, c)``; one
``Sin`` module per activation and per 2-D axis); :meth:`alt_arch.mixers.hyena.Hyena.upgrade_options` sets it for
those checkpoints, whose weights were trained with it.

FFT convolutions are linear, not circular: inputs and kernels are zero-padded to ``2L`` (``(2H, 2W)`` in 2-D). A
causal 1-D kernel covers lags ``0..L-1``; a two-sided kernel adds lags ``-1..-(L-1)`` (the future) at FFT indices
``2L-1..L+1``. In 2-D the four quadrant orientations of one kernel are mixed with learnable per-channel weights,
so information flows from every direction. The result equals a direct convolution (tested); the Hyena-ND reference
divides its 2-D kernel spectrum by ``2L`` and then uses an inverse FFT that already divides by ``(2L)^2``, which scales
its convolution by an extra ``1 / (2L)``; we do not.

Layers are built from raw parameters (not ``nn.Linear``) so that backbones that re-initialise every ``nn.Linear``
(e.g. ``Stack``'s N(0, 0.02)) leave the filter's sine network at its own initialisation (PyTorch's default
uniform(+-1/sqrt(fan_in)), as in the reference); with a 0.02 init the filter would start out almost constant. The
shared ``Sin`` module sits at every activation slot of the ``nn.Sequential``, so the state dict names its one tensor
under each slot (``ffn.1.freq``, ``ffn.3.freq``, ...: the key names of the legacy layout); parameter lists and
optimisers see it once, exports store it once (tied).
"""

import math

import torch
from einops import rearrange
from torch import nn

from alt_arch.errors import PartOptionError


class Sin(nn.Module):
    """``sin(omega * z)`` with a learnable frequency per unit."""

    def __init__(self, width: int, freq: float) -> None:
        super().__init__()
        self.freq = nn.Parameter(torch.full((width,), float(freq)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.freq * z)


class FilterLinear(nn.Module):
    """An affine map with PyTorch's default init, deliberately not an ``nn.Linear`` (see the module docstring)."""

    def __init__(self, d_in: int, d_out: int, *, bias: bool = True) -> None:
        super().__init__()
        bound = 1 / math.sqrt(d_in)
        self.weight = nn.Parameter(torch.empty(d_out, d_in).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(d_out).uniform_(-bound, bound)) if bias else None
        for p in self.parameters():
            p.no_weight_decay = True  # the reference trains filter parameters without weight decay

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(z, self.weight, self.bias)


def positional_features(n: int, *, emb_dim: int, scale: float, legacy: bool = False, device=None,
                        dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """``PE(p)`` for ``p = 0..n-1``: features (n, emb_dim) and normalised time ``t`` (n, 1).

    ``t = p / (scale - 1)``, the reference's ``linspace(0, 1, scale)`` (the denominator is at least 1: for a scale
    of 1 the reference has only ``t_0 = 0``), or ``p / scale`` with ``legacy``. The bands use ``p / scale``."""
    if emb_dim < 3 or emb_dim % 2 == 0:
        raise PartOptionError(f"hyena: emb_dim must be odd and >= 3 (time, cos, sin), got {emb_dim}")
    bands = (emb_dim - 1) // 2
    p = torch.arange(n, device=device, dtype=dtype)[:, None]  # (n, 1)
    t = p / scale if legacy else p / max(scale - 1, 1)
    f = torch.linspace(1e-4, bands - 1, bands, device=device, dtype=dtype)[None, :]  # (1, bands)
    angle = 2 * math.pi * f * p / scale  # (n, bands)
    return torch.cat([t, angle.cos(), -angle.sin()], dim=-1), t


def decay_rates(channels: int, *, fast_pct: float, slow_pct: float, target: float, device=None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Per-channel ``alpha_c`` (channels,): from slow to fast decay, computed in ``dtype`` (at least float32)."""
    work = torch.promote_types(dtype, torch.float32)
    return torch.linspace(math.log(target) / slow_pct, math.log(target) / fast_pct, channels, device=device,
                          dtype=work).to(dtype)


class ImplicitFilter(nn.Module):
    """``h(t) = FFN(PE(t)) * (exp(-|alpha_c| t) + shift)`` for ``channels`` output channels.

    One ``Sin`` module (``sine``, or a new one) serves every activation of the FFN, as in the reference; with
    ``legacy``, each activation has its own (checkpoints written before)."""

    def __init__(self, channels: int, *, in_dim: int, width: int = 64, depth: int = 2, sine_freq: float = 1.0,
                 fast_decay_pct: float = 0.3, slow_decay_pct: float = 1.5, decay_target: float = 1e-2,
                 decay_shift: float = 0.0, sine: Sin | None = None, legacy: bool = False) -> None:
        super().__init__()
        if legacy:
            acts = [Sin(width, sine_freq) for _ in range(depth + 1)]
        else:
            acts = [Sin(width, sine_freq) if sine is None else sine] * (depth + 1)
        layers: list[nn.Module] = [FilterLinear(in_dim, width), acts[0]]
        for act in acts[1:]:
            layers += [FilterLinear(width, width), act]
        layers.append(FilterLinear(width, channels, bias=False))
        self.ffn = nn.Sequential(*layers)
        self.channels, self.shift = channels, decay_shift
        self.decay = dict(fast_pct=fast_decay_pct, slow_pct=slow_decay_pct, target=decay_target)

    @property
    def sine(self) -> Sin:
        """The ``Sin`` module of the first activation (of every activation unless ``legacy``)."""
        return self.ffn[1]

    def rates(self, like: torch.Tensor) -> torch.Tensor:
        """``alpha`` (C,) on ``like``'s device and in its dtype (fixed: not a parameter; computed in that dtype, so a
        float64 filter has float64-exact rates)."""
        return decay_rates(self.channels, **self.decay, device=like.device, dtype=like.dtype)

    def forward(self, features: torch.Tensor, times: list[torch.Tensor]) -> torch.Tensor:
        """``features`` (..., in_dim); ``times[a]`` broadcastable to (..., 1) along axis ``a``; returns (..., C)
        modulated by ``prod_a exp(-|alpha_c| times[a])`` (the same rates on every axis)."""
        alpha = self.rates(features).abs()
        decay = sum(-t * alpha for t in times)
        return self.ffn(features) * (torch.exp(decay) + self.shift)


def _fft_dtype(u: torch.Tensor) -> torch.dtype:
    """FFTs run in float32 at least (half-precision FFTs are restricted to powers of two and lose accuracy)."""
    return torch.promote_types(u.dtype, torch.float32)


def fft_conv1d(u: torch.Tensor, k: torch.Tensor, k_future: torch.Tensor | None = None) -> torch.Tensor:
    """Linear convolution ``y[t] = sum_{s<=t} k[t-s] u[s] + sum_{s>t} k_future[s-t] u[s]``.

    ``u`` (B, C, L); ``k`` (C, L) covers lags ``0..L-1``; ``k_future`` (C, L) covers lags ``-1..-(L-1)`` through its
    entries ``1..L-1`` (entry 0 is unused). Zero-padded to ``2L``, so nothing wraps around.
    """
    n = u.shape[-1]
    future = torch.zeros_like(k[:, 1:]) if k_future is None else k_future[:, 1:].flip(-1)  # lags -(L-1)..-1
    kernel = torch.cat([k, torch.zeros_like(k[:, :1]), future], dim=-1)  # (C, 2L): lag s at index s mod 2L
    dtype = _fft_dtype(u)
    spectrum = torch.fft.rfft(u.to(dtype), n=2 * n) * torch.fft.rfft(kernel.to(dtype), n=2 * n)
    return torch.fft.irfft(spectrum, n=2 * n)[..., :n].to(u.dtype)


def quadrant_kernel(k: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Two-sided 2-D kernel on the ``(2H, 2W)`` FFT grid: ``sum_d weights[d] * flip_d(k)``.

    ``k`` (C, H, W) covers lags ``(0..H-1, 0..W-1)``; ``weights`` (4, C) weigh the orientations
    (down-right, up-right, down-left, up-left). Lag ``-s`` sits at index ``2L - s``.
    """

    def place(kk: torch.Tensor, dim: int, backward: bool) -> torch.Tensor:
        n = kk.shape[dim]
        zeros = torch.zeros_like(kk.narrow(dim, 0, 1)).repeat_interleave(n, dim=dim)
        if not backward:
            return torch.cat([kk, zeros], dim=dim)
        rest = kk.narrow(dim, 1, n - 1).flip(dim)
        return torch.cat([kk.narrow(dim, 0, 1), zeros, rest], dim=dim)

    out = 0
    for d, (up, left) in enumerate([(False, False), (True, False), (False, True), (True, True)]):
        out = out + weights[d][:, None, None] * place(place(k, 1, up), 2, left)
    return out  # (C, 2H, 2W)


def fft_conv2d(u: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Linear 2-D convolution of ``u`` (B, C, H, W) with a kernel on the ``(2H, 2W)`` lag grid (C, 2H, 2W)
    (lag ``(i, j)`` at index ``(i mod 2H, j mod 2W)``, e.g. from :func:`quadrant_kernel`)."""
    h, w = u.shape[-2:]
    dtype = _fft_dtype(u)
    spectrum = torch.fft.rfft2(u.to(dtype), s=(2 * h, 2 * w)) * torch.fft.rfft2(kernel.to(dtype), s=(2 * h, 2 * w))
    return torch.fft.irfft2(spectrum, s=(2 * h, 2 * w))[..., :h, :w].to(u.dtype)


class Filter1d(nn.Module):
    """Implicit 1-D filters for ``groups`` convolutions of ``channels`` each; optionally two-sided.

    ``scale`` normalises positions (``t = p / (scale - 1)``, bands ``p / scale``): fixed, a tap depends on its lag
    only and the filter for ``n`` positions is the first ``n`` taps of any longer one; ``None`` uses each input's
    length ``n``. The network's outputs are laid out ``(c, g, side)`` (side innermost), so every convolution and both
    sides get decays over the whole range; ``legacy``: ``(side, g, c)``.
    """

    def __init__(self, channels: int, groups: int, *, two_sided: bool, emb_dim: int, scale: float | None,
                 legacy: bool = False, **filter_options) -> None:
        super().__init__()
        self.channels, self.groups, self.two_sided = channels, groups, two_sided
        self.emb_dim, self.scale, self.legacy = emb_dim, scale, legacy
        sides = 2 if two_sided else 1
        self.filter = ImplicitFilter(channels * groups * sides, in_dim=emb_dim, legacy=legacy, **filter_options)

    def forward(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Kernels (G, C, L) for lags ``0..L-1`` and, if two-sided, (G, C, L) for lags ``0..-(L-1)``."""
        ref = self.filter.ffn[0].weight  # device and dtype
        scale = n if self.scale is None else self.scale  # None (non-causal only): each input's own length
        z, t = positional_features(n, emb_dim=self.emb_dim, scale=scale, legacy=self.legacy, device=ref.device,
                                   dtype=ref.dtype)
        layout = "l (s g c) -> s g c l" if self.legacy else "l (c g s) -> s g c l"
        h = rearrange(self.filter(z, [t]), layout, s=2 if self.two_sided else 1, g=self.groups)
        return h[0], (h[1] if self.two_sided else None)


class Filter2d(nn.Module):
    """Implicit 2-D filters for ``groups`` convolutions: ``product`` (hX(x) hY(y)) or ``joint`` (FFN of both).

    Outputs laid out ``(c, g)``; ``legacy``: ``(g, c)``, and ``product``'s two networks with their own ``Sin``s."""

    def __init__(self, channels: int, groups: int, *, kind: str, emb_dim: int, legacy: bool = False,
                 **filter_options) -> None:
        super().__init__()
        if kind not in ("product", "joint"):
            raise PartOptionError(f"hyena: filter_2d={kind!r}; use 'product' or 'joint'")
        self.kind, self.groups, self.emb_dim, self.legacy = kind, groups, emb_dim, legacy
        width = channels * groups
        if kind == "product":
            self.fx = ImplicitFilter(width, in_dim=emb_dim, legacy=legacy, **filter_options)
            sine = None if legacy else self.fx.sine  # HyenaND: one Sin module for both axes
            self.fy = ImplicitFilter(width, in_dim=emb_dim, sine=sine, legacy=legacy, **filter_options)
        else:
            self.fxy = ImplicitFilter(width, in_dim=2 * emb_dim, legacy=legacy, **filter_options)
        # orientation weights (G, 4, C): all four quadrants equally at init
        self.directions = nn.Parameter(torch.full((groups, 4, channels), 0.25))

    def forward(self, side: int) -> torch.Tensor:
        """Kernels (G, C, 2H, 2W) on the FFT lag grid of an ``side x side`` image."""
        ref = self.directions
        z, t = positional_features(side, emb_dim=self.emb_dim, scale=side, legacy=self.legacy, device=ref.device,
                                   dtype=ref.dtype)
        if self.kind == "product":
            hx, hy = self.fx(z, [t]), self.fy(z, [t])  # (S, G*C)
            h = torch.einsum("xc,yc->cxy", hx, hy)  # (G*C, S, S)
        else:
            zx = rearrange(z, "x e -> x 1 e").expand(side, side, -1)
            zy = rearrange(z, "y e -> 1 y e").expand(side, side, -1)
            h = self.fxy(torch.cat([zx, zy], dim=-1), [t[:, None], t[None, :]])  # (S, S, G*C)
            h = rearrange(h, "x y c -> c x y")
        h = rearrange(h, "(g c) x y -> g c x y" if self.legacy else "(c g) x y -> g c x y", g=self.groups)
        return torch.stack([quadrant_kernel(h[g], self.directions[g]) for g in range(self.groups)])
