"""Hyena and Hyena-ND: the reference formulas (float64), FFT convolution == direct convolution, causality, direction
handling, shapes, gradients, the two-stream mode, the legacy filter of old checkpoints."""

import math
from functools import partial

import pytest
import torch
from omegaconf import OmegaConf

from alt_arch.backbones.stack import Stack
from alt_arch.errors import MixerCapabilityError
from alt_arch.mixers.hyena import Hyena
from alt_arch.mixers.hyena_filter import FilterLinear, Sin, fft_conv1d, fft_conv2d, positional_features, quadrant_kernel
from ebt.training.checkpoint import upgrade_config
from tests.utils import ROOT, naive_candidates


def direct_conv1d(u, k, k_future=None):
    """y[t] = sum_s K[t - s] u[s] by explicit loops (K two-sided when k_future is given)."""
    b, c, n = u.shape
    y = torch.zeros_like(u)
    for t in range(n):
        for s in range(n):
            if s <= t:
                y[..., t] += k[:, t - s] * u[..., s]
            elif k_future is not None:
                y[..., t] += k_future[:, s - t] * u[..., s]
    return y


def test_fft_conv1d_equals_direct_convolution():
    torch.manual_seed(0)
    u, k, kf = torch.randn(2, 3, 7, dtype=torch.float64), torch.randn(3, 7, dtype=torch.float64), torch.randn(
        3, 7, dtype=torch.float64)
    torch.testing.assert_close(fft_conv1d(u, k), direct_conv1d(u, k))
    torch.testing.assert_close(fft_conv1d(u, k, kf), direct_conv1d(u, k, kf))


def test_fft_conv2d_equals_direct_convolution_in_all_four_directions():
    """Exact linear 2-D convolution (no 1/(2L) factor as in the reference): each quadrant flip of k, weighted."""
    torch.manual_seed(0)
    b, c, s = 2, 3, 4
    u = torch.randn(b, c, s, s, dtype=torch.float64)
    k = torch.randn(c, s, s, dtype=torch.float64)
    w = torch.randn(4, c, dtype=torch.float64)
    y = fft_conv2d(u, quadrant_kernel(k, w))
    expected = torch.zeros_like(u)
    for i in range(s):
        for j in range(s):
            for a in range(s):
                for bb in range(s):
                    di, dj = i - a, j - bb  # lag from source (a, bb) to target (i, j)
                    for d, (up, left) in enumerate([(False, False), (True, False), (False, True), (True, True)]):
                        if (di <= 0 if up else di >= 0) and (dj <= 0 if left else dj >= 0):
                            expected[..., i, j] += w[d] * k[:, abs(di), abs(dj)] * u[..., a, bb]
    torch.testing.assert_close(y, expected)


def test_fft_conv2d_single_quadrant_matches_conv2d():
    """Down-right quadrant only == torch conv2d with the flipped kernel and top-left zero padding."""
    torch.manual_seed(1)
    u, k = torch.randn(1, 2, 5, 5, dtype=torch.float64), torch.randn(2, 5, 5, dtype=torch.float64)
    w = torch.tensor([1.0, 0, 0, 0], dtype=torch.float64)[:, None].expand(4, 2)
    padded = torch.nn.functional.pad(u, (4, 0, 4, 0))
    expected = torch.nn.functional.conv2d(padded, k.flip(-1, -2)[:, None], groups=2)
    torch.testing.assert_close(fft_conv2d(u, quadrant_kernel(k, w)), expected)


def make(causal=True, dim=16, **options):
    """A small Hyena; causal 1-D ones get ``l_max=12`` unless told otherwise."""
    torch.manual_seed(0)
    if causal and options.get("spatial_shape") is None:
        options.setdefault("l_max", 12)
    return Hyena(dim, causal=causal, filter_width=16, emb_dim=5, **options)


@pytest.mark.parametrize("order", [2, 3])
def test_causal_hyena_ignores_future_tokens(order):
    hyena = make(order=order)
    x = torch.randn(2, 12, 16)
    x2 = x.clone()
    x2[:, 7] += torch.randn(16)
    y, y2 = hyena(x), hyena(x2)
    torch.testing.assert_close(y[:, :7], y2[:, :7], atol=1e-6, rtol=0)
    assert not torch.allclose(y[:, 7:], y2[:, 7:], atol=1e-4)


def test_bidirectional_hyena_sees_far_future_tokens():
    hyena = make(causal=False)
    x = torch.randn(2, 12, 16)
    x2 = x.clone()
    x2[:, 11] += torch.randn(16)  # beyond the short convolution's reach of position 0..5
    assert not torch.allclose(hyena(x)[:, :6], hyena(x2)[:, :6], atol=1e-5)


def test_hyena_nd_sees_every_direction():
    hyena = make(causal=False, spatial_shape=(4, 4)).double()
    assert hyena.dims == 2
    x = torch.randn(1, 16, 16, dtype=torch.float64)
    y = hyena(x)
    for source in (0, 3, 12, 15):  # the four corners
        x2 = x.clone()
        x2[:, source] += 1.0
        changed = (hyena(x2) - y).abs().amax(dim=-1)[0]  # (16,)
        assert (changed > 1e-12).all(), f"corner {source} does not reach every token"


def test_hyena_nd_joint_filter_and_order_3():
    hyena = make(causal=False, spatial_shape=(3, 3), filter_2d="joint", order=3)
    y = hyena(torch.randn(2, 9, 16))
    assert y.shape == (2, 9, 16) and torch.isfinite(y).all()


def test_capability_errors():
    with pytest.raises(MixerCapabilityError, match="cannot be causal"):
        Hyena(16, causal=True, spatial_shape=(4, 4))
    with pytest.raises(MixerCapabilityError, match="square"):
        Hyena(16, causal=False, spatial_shape=(4, 5))
    with pytest.raises(MixerCapabilityError, match="spatial_shape"):
        Hyena(16, causal=False, dims=2)
    with pytest.raises(MixerCapabilityError, match="tokens"):
        make(causal=False, spatial_shape=(4, 4))(torch.randn(1, 15, 16))
    with pytest.raises(TypeError, match="window"):
        Hyena(16, causal=True, l_max=8, window=3)
    with pytest.raises(MixerCapabilityError, match="causal 1-D Hyena needs l_max"):
        Hyena(16, causal=True)
    Hyena(16, causal=False)  # non-causal: l_max=None normalises by each input's own length


@pytest.mark.parametrize("spatial", [None, (3, 3)])
def test_stack_shapes_gradients_and_double_backward(spatial):
    causal = spatial is None
    mixer = partial(Hyena, filter_width=16, emb_dim=5, l_max=9)
    torch.manual_seed(0)
    stack = Stack(16, causal=causal, mixer=mixer, n_layers=2, spatial_shape=spatial)
    x = torch.randn(2, 9, 16, requires_grad=True)
    y = stack(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    (g,) = torch.autograd.grad(y.square().mean(), x, create_graph=True)
    (y.square().mean() + g.square().sum()).backward()
    missing = [n for n, p in stack.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing}"


def test_fixed_l_max_filter_depends_on_lag_only():
    """With l_max set, the first L taps of the filter for a longer input equal the filter for length L."""
    hyena = make(l_max=8)
    short, _ = hyena.filter(8)
    long, _ = hyena.filter(20)
    torch.testing.assert_close(long[..., :8], short)


# ----- two-stream mode (autoregressive EBT) -------------------------------------------------------------------------


def make64(order: int, l_max: int, **options) -> Hyena:
    return make(dim=8, order=order, l_max=l_max, **options).double()


TWO_STREAM = [(2, 5), (3, 5), (2, 12), (3, 12)]  # l_max below (extrapolating) and above the length 7


@pytest.mark.parametrize(("order", "l_max"), TWO_STREAM)
def test_two_stream_candidates_equal_naive_per_position_forward(order, l_max):
    hyena = make64(order, l_max)
    x, y = torch.randn(2, 7, 8, dtype=torch.float64), torch.randn(2, 7, 8, dtype=torch.float64)
    out, cache = hyena.forward_context(x)
    torch.testing.assert_close(hyena.forward_candidates(y, cache), naive_candidates(hyena, x, y), atol=1e-10, rtol=0)
    # the context stream uses filters for T+1 positions: == forward(x) since a tap depends on its lag only
    torch.testing.assert_close(out, hyena(x), atol=1e-10, rtol=0)


@pytest.mark.parametrize("short_kernel", [1, 4])
def test_two_stream_other_short_kernels(short_kernel):
    hyena = make64(2, 12, short_kernel=short_kernel)
    x, y = torch.randn(2, 7, 8, dtype=torch.float64), torch.randn(2, 7, 8, dtype=torch.float64)
    fast = hyena.forward_candidates(y, hyena.forward_context(x)[1])
    torch.testing.assert_close(fast, naive_candidates(hyena, x, y), atol=1e-10, rtol=0)


@pytest.mark.parametrize(("order", "l_max"), TWO_STREAM)
def test_two_stream_candidate_ignores_later_context(order, l_max):
    hyena = make64(order, l_max)
    x, y = torch.randn(2, 7, 8, dtype=torch.float64), torch.randn(2, 7, 8, dtype=torch.float64)
    fast = hyena.forward_candidates(y, hyena.forward_context(x)[1])
    for t in range(6):
        x2 = x.clone()
        x2[:, t + 1 :] += torch.randn(2, 6 - t, 8, dtype=torch.float64)
        fast2 = hyena.forward_candidates(y, hyena.forward_context(x2)[1])
        torch.testing.assert_close(fast2[:, : t + 1], fast[:, : t + 1], atol=1e-12, rtol=0)
        assert not torch.allclose(fast2[:, t + 1], fast[:, t + 1])


@pytest.mark.parametrize(("order", "l_max"), [(2, 5), (3, 12)])
def test_two_stream_stack_second_order_gradients(order, l_max):
    """Stack-level naive equality, then grad w.r.t. the candidates (create_graph) and backward to every weight."""
    torch.manual_seed(0)
    mixer = partial(Hyena, filter_width=16, emb_dim=5, order=order, l_max=l_max)
    stack = Stack(8, causal=True, mixer=mixer, n_layers=2).double()
    x = torch.randn(2, 7, 8, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 7, 8, dtype=torch.float64, requires_grad=True)
    fast = stack.forward_candidates(y, stack.forward_context(x)[1])
    torch.testing.assert_close(fast, naive_candidates(stack, x.detach(), y.detach()), atol=1e-10, rtol=0)
    (g,) = torch.autograd.grad(fast.square().sum(), y, create_graph=True)
    g.square().sum().backward()
    missing = [n for n, p in stack.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing}"
    assert x.grad.abs().sum() > 0  # through the context stream's cache


def test_two_stream_gradgradcheck():
    hyena = make(dim=3, order=3, l_max=4).double()
    x = torch.randn(1, 4, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(1, 4, 3, dtype=torch.float64, requires_grad=True)
    f = lambda a, b: hyena.forward_candidates(b, hyena.forward_context(a)[1]).square()
    assert torch.autograd.gradgradcheck(f, (x, y))


@pytest.mark.parametrize("spatial", [None, (3, 3)])
def test_two_stream_needs_causal_1d(spatial):
    hyena = make(causal=False, spatial_shape=spatial)
    x = torch.randn(1, 9, 16)
    with pytest.raises(MixerCapabilityError, match="causal 1-D"):
        hyena.forward_context(x)
    with pytest.raises(MixerCapabilityError, match="causal 1-D"):
        hyena.forward_candidates(x, None)


# ----- against the reference formulas ------------------------------------------------------------------------------
# Written out here from the reference code, independently of alt_arch/mixers/hyena*.py: safari @02220c6
# (src/models/sequence/hyena.py: PositionalEmbedding, Sin, ExponentialModulation, HyenaFilter, HyenaOperator) and
# HyenaND @e8b875e (hyena2d.py: HyenaFilter2d, HyenaOperator2d, fftconv2d). Options: one head, one block, no dropout,
# identity activation, standard (one-direction) 2-D mode. The weights are read from our module.

F64 = torch.float64


def ref_positions(l_max, emb_dim, *, legacy=False):
    """PositionalEmbedding(emb_dim, l_max): t = linspace(0, 1, l_max) and [t, Re, Im of exp(-i f w)] with
    w = 2 pi linspace(0, l_max - 1, l_max) / l_max. ``legacy``: our old t = p / l_max instead."""
    bands = (emb_dim - 1) // 2
    t = torch.linspace(0, 1, l_max, dtype=F64)[:, None]
    if legacy:
        t = torch.arange(l_max, dtype=F64)[:, None] / l_max
    w = 2 * math.pi * torch.linspace(0, l_max - 1, l_max, dtype=F64)[:, None] / l_max
    f = torch.linspace(1e-4, bands - 1, bands, dtype=F64)[None, :]
    e = torch.exp(-1j * (f * w))
    return torch.cat([t, e.real, e.imag], dim=-1), t


def ref_ffn(net, z, freqs):
    """The implicit filter MLP: Linear -> Sin -> (Linear -> Sin) x depth -> Linear (no bias); Sin(x) = sin(w x) with
    ``freqs[i]`` at activation i (the reference builds ONE Sin module and appends it at every activation)."""
    linears = [m for m in net if isinstance(m, FilterLinear)]
    h = z
    for lin, freq in zip(linears[:-1], freqs, strict=True):
        h = torch.sin(freq * (h @ lin.weight.T + lin.bias))
    return h @ linears[-1].weight.T


def ref_sines(net, shared=True):
    """The frequencies at each activation: the first module's everywhere (the reference), or each its own."""
    sines = [m for m in net if isinstance(m, Sin)]
    return [sines[0].freq] * len(sines) if shared else [m.freq for m in sines]


def ref_decays(n, *, fast=0.3, slow=1.5, target=1e-2):
    """ExponentialModulation's deltas: linspace(log(target) / slow, log(target) / fast, n)."""
    return torch.linspace(math.log(target) / slow, math.log(target) / fast, n, dtype=F64)


def ref_hyena_1d(hyena, u, *, legacy=False):
    """HyenaOperator.forward (causal) for u (B, L, D), L <= l_max. ``legacy``: our old choices (t = p / l_max,
    filter outputs '(o v)', a sine frequency per activation)."""
    b, n, d = u.shape
    order, l_max, k_short = hyena.order, hyena.filter.scale, hyena.short_kernel
    z = (u @ hyena.in_proj.weight.T + hyena.in_proj.bias).transpose(1, 2)  # (B, (order+1) D, L)
    # short filter: Conv1d(padding=K-1) then [..., :L]: output t = sum_j w_j z[t - (K-1) + j]
    w = hyena.short_conv.weight[:, 0]  # (channels, K)
    uc = hyena.short_conv.bias[:, None].expand_as(z).clone()
    for t in range(n):
        for j in range(k_short):
            if t - (k_short - 1) + j >= 0:
                uc[..., t] += w[:, j] * z[..., t - (k_short - 1) + j]
    *x, v = uc.split(d, dim=1)
    net = hyena.filter.filter.ffn
    pe, t = ref_positions(l_max, hyena.filter.emb_dim, legacy=legacy)
    h = ref_ffn(net, pe, ref_sines(net, shared=not legacy)) * torch.exp(-t * ref_decays(d * (order - 1)).abs())
    h = h[:n]  # l_filter = min(L, l_max)
    # 'l (v o) -> o v l' (legacy: '(o v)')
    k = h.reshape(n, order - 1, d).permute(1, 2, 0) if legacy else h.reshape(n, d, order - 1).permute(2, 1, 0)
    bias = hyena.D  # (o, v): the reference's filter bias, a randn vector laid out '(v o)'
    for o, x_i in enumerate(reversed(x[1:])):
        v = v * x_i
        v = direct_conv1d(v, k[o]) + v * bias[o][:, None]  # fftconv_ref: exact linear convolution + D u
    y = (v * x[0]).transpose(1, 2)
    return y @ hyena.out.weight.T + hyena.out.bias


def ref_hyena_2d(hyena, u):
    """HyenaOperator2d.forward (directional_mode 'standard') for u (B, S*S, D), with two documented changes:
    the exact convolution (HyenaND's fftconv2d is ours divided by 2S) and filter outputs laid out '(v o)' as in
    safari (HyenaND: '(o d)'; the same at order 2)."""
    b, n, d = u.shape
    s, order = hyena.side, hyena.order
    z = u.reshape(b, s, s, d) @ hyena.in_proj.weight.T + hyena.in_proj.bias
    z = z.permute(0, 3, 1, 2)  # 'b l1 l2 d -> b d l1 l2'
    uc = torch.nn.functional.conv2d(z, hyena.short_conv.weight, hyena.short_conv.bias, padding=1,
                                    groups=z.shape[1])  # Conv2d(3, padding=1, groups=channels)
    *x, v = uc.split(d, dim=1)
    pe, t = ref_positions(s, hyena.filter.emb_dim)
    decay = torch.exp(-t * ref_decays(d * (order - 1)).abs())  # (S, C): X and Y deltas are the same linspace
    f = hyena.filter
    if f.kind == "product":  # hX from Ximplicit_filter, hY from Yimplicit_filter, one Sin module for both
        freqs = ref_sines(f.fx.ffn)
        h = torch.einsum("jk,mk->jmk", ref_ffn(f.fx.ffn, pe, freqs) * decay, ref_ffn(f.fy.ffn, pe, freqs) * decay)
    else:  # z.repeat(1, L, 1, 1); cat((z.transpose(-2, -3), z)): [PE(row), PE(column)]
        pair = torch.cat([pe[:, None].expand(s, s, -1), pe[None, :].expand(s, s, -1)], dim=-1)
        h = ref_ffn(f.fxy.ffn, pair, ref_sines(f.fxy.ffn)) * torch.einsum("jk,mk->jmk", decay, decay)
    k = h.reshape(s, s, d, order - 1).permute(3, 2, 0, 1)  # (o, v, l1, l2)
    for o, x_i in enumerate(reversed(x[1:])):
        v = v * x_i
        conv = torch.zeros_like(v)  # rfft2 / irfft2 at (2S, 2S), cropped: lags (0..S-1, 0..S-1)
        for i in range(s):
            for j in range(s):
                for a in range(i + 1):
                    for c in range(j + 1):
                        conv[..., i, j] += k[o, :, i - a, j - c] * v[..., a, c]
        v = conv + v * hyena.D[o][:, None, None]
    y = (v * x[0]).permute(0, 2, 3, 1).reshape(b, n, d)
    return y @ hyena.out.weight.T + hyena.out.bias


def reference_ready(hyena):
    """Float64, biased projections, random sine frequencies (so that sharing them matters)."""
    hyena = hyena.double()
    with torch.no_grad():
        for m in hyena.modules():
            if isinstance(m, Sin):
                m.freq.uniform_(0.5, 2.0)
    return hyena


def biased(d_in, d_out):
    return torch.nn.Linear(d_in, d_out)  # the reference's in_proj / out_proj have biases


@pytest.mark.parametrize(("order", "n"), [(2, 12), (3, 12), (3, 7), (4, 9)])
def test_causal_hyena_equals_the_reference_formula(order, n):
    """safari's operator: t = linspace(0, 1, l_max), one Sin module, decays interleaved '(v o)' over the groups."""
    torch.manual_seed(0)
    hyena = reference_ready(Hyena(8, causal=True, linear=biased, filter_width=16, emb_dim=5, l_max=12, order=order))
    u = torch.randn(2, n, 8, dtype=F64)
    torch.testing.assert_close(hyena(u), ref_hyena_1d(hyena, u), atol=1e-12, rtol=0)


@pytest.mark.parametrize(("kind", "order"), [("product", 2), ("joint", 2), ("product", 3), ("joint", 3)])
def test_hyena_nd_equals_the_reference_formula(kind, order):
    """HyenaND's operator with one direction (the down-right quadrant) and the exact convolution."""
    torch.manual_seed(0)
    hyena = reference_ready(Hyena(4, causal=False, linear=biased, filter_width=8, emb_dim=5, spatial_shape=(3, 3),
                                  filter_2d=kind, order=order))
    with torch.no_grad():
        hyena.filter.directions.copy_(torch.tensor([1.0, 0, 0, 0], dtype=F64)[None, :, None].expand_as(
            hyena.filter.directions))
    u = torch.randn(2, 9, 4, dtype=F64)
    torch.testing.assert_close(hyena(u), ref_hyena_2d(hyena, u), atol=1e-12, rtol=0)


def test_one_sine_module_per_filter():
    """safari appends one Sin module at every activation; HyenaND also shares it between the X and Y networks."""
    causal = make(order=3)
    sines = {id(m) for m in causal.filter.filter.ffn if isinstance(m, Sin)}
    assert len(sines) == 1
    product = make(causal=False, spatial_shape=(3, 3))
    sines = {id(m) for f in (product.filter.fx, product.filter.fy) for m in f.ffn if isinstance(m, Sin)}
    assert len(sines) == 1
    assert [n for n, _ in product.filter.named_parameters() if n.endswith("freq")] == ["fx.ffn.1.freq"]


def decay_rates_seen(hyena, n=4):
    """alpha of every (side, convolution, channel) (S, G, C), read off a filter whose network output is constant
    in the position (zero weights, so h(p) / h(0) = exp(-alpha t_p))."""
    with torch.no_grad():
        for m in hyena.filter.filter.ffn:
            if isinstance(m, FilterLinear):
                m.weight.zero_()
                if m.bias is not None:
                    m.bias.fill_(1.0)
        hyena.filter.filter.ffn[-1].weight.fill_(1.0)
    past, future = hyena.filter(n)
    h = torch.stack([past] if future is None else [past, future])  # (S, G, C, n)
    _, t = positional_features(n, emb_dim=hyena.filter.emb_dim, scale=hyena.filter.scale or n, dtype=h.dtype)
    return -torch.log(h[..., 1] / h[..., 0]) / t[1]


@pytest.mark.parametrize(("causal", "order"), [(True, 3), (True, 4), (False, 2), (False, 3)])
def test_every_long_convolution_gets_the_whole_range_of_decays(causal, order):
    """'(v o)': each convolution (and each side of a two-sided filter) spans slow to fast decays, not one band."""
    hyena = make(causal=causal, order=order, l_max=12).double()
    alpha = decay_rates_seen(hyena)  # (S, G, C)
    full = ref_decays(alpha.numel()).abs()
    torch.testing.assert_close(alpha.flatten().sort().values, full.sort().values)
    spread = full.max() - full.min()
    per_conv = alpha.amax(-1) - alpha.amin(-1)  # (S, G)
    assert (per_conv > 0.9 * spread).all(), per_conv


def test_legacy_filter_is_the_old_formula():
    """Checkpoints written before keep their filter: t = p / l_max, '(o v)', a sine frequency per activation."""
    torch.manual_seed(0)
    hyena = reference_ready(Hyena(8, causal=True, linear=biased, filter_width=16, emb_dim=5, l_max=12, order=3,
                                  legacy_filter=True))
    u = torch.randn(2, 12, 8, dtype=F64)
    torch.testing.assert_close(hyena(u), ref_hyena_1d(hyena, u, legacy=True), atol=1e-12, rtol=0)
    assert (hyena(u) - ref_hyena_1d(hyena, u)).abs().max() > 1e-2


def test_old_checkpoints_get_the_legacy_filter():
    """A stored config without ``legacy_filter`` (written before it existed) restores the filter it trained with;
    a new config (configs/model/mixer/hyena.yaml: false) keeps the reference filter."""
    old = {"model": {"mixer": {"_target_": "alt_arch.mixers.hyena.Hyena", "_partial_": True, "order": 2}}}
    assert upgrade_config(old)["model"]["mixer"]["legacy_filter"] is True
    new = {"model": {"mixer": {**old["model"]["mixer"], "legacy_filter": False}}}
    assert upgrade_config(new)["model"]["mixer"]["legacy_filter"] is False
    assert OmegaConf.load(ROOT / "configs" / "model" / "mixer" / "hyena.yaml").legacy_filter is False
