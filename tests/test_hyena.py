"""Hyena and Hyena-ND: FFT convolution == direct convolution, causality, direction handling, shapes, gradients."""

from functools import partial

import pytest
import torch

from alt_arch.backbones.stack import Stack
from alt_arch.errors import MixerCapabilityError
from alt_arch.mixers.hyena import Hyena
from alt_arch.mixers.hyena_filter import fft_conv1d, fft_conv2d, quadrant_kernel
from tests.utils import naive_candidates


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
