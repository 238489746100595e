"""The PoolFormer pooling mixer: equality with naive loops, causality, capability errors, use in the stack."""

from functools import partial

import pytest
import torch

from alt_arch.backbones.stack import Stack
from alt_arch.errors import MixerCapabilityError
from alt_arch.mixers.pool import Pool
from tests.utils import naive_candidates


def naive_1d(x: torch.Tensor, k: int, causal: bool) -> torch.Tensor:
    """Mean over the in-range window positions minus the token, one position at a time."""
    n = x.shape[1]
    out = torch.empty_like(x)
    for t in range(n):
        lo, hi = (t - k + 1, t) if causal else (t - k // 2, t + k // 2)
        window = [x[:, s] for s in range(max(lo, 0), min(hi, n - 1) + 1)]
        out[:, t] = torch.stack(window).mean(0) - x[:, t]
    return out


def naive_2d(x: torch.Tensor, h: int, w: int, k: int) -> torch.Tensor:
    grid = x.reshape(x.shape[0], h, w, x.shape[-1])
    out = torch.empty_like(grid)
    r = k // 2
    for i in range(h):
        for j in range(w):
            window = grid[:, max(i - r, 0) : i + r + 1, max(j - r, 0) : j + r + 1]
            out[:, i, j] = window.mean(dim=(1, 2)) - grid[:, i, j]
    return out.reshape_as(x)


@pytest.mark.parametrize(("k", "n"), [(1, 4), (3, 7), (4, 9), (6, 3)])
def test_causal_1d_equals_naive(k, n):
    x = torch.randn(2, n, 5, dtype=torch.float64)
    torch.testing.assert_close(Pool(5, causal=True, pool_size=k)(x), naive_1d(x, k, causal=True))


@pytest.mark.parametrize(("k", "n"), [(1, 4), (3, 7), (5, 3), (7, 10)])
def test_centred_1d_equals_naive(k, n):
    x = torch.randn(2, n, 5, dtype=torch.float64)
    torch.testing.assert_close(Pool(5, causal=False, pool_size=k)(x), naive_1d(x, k, causal=False))


@pytest.mark.parametrize(("h", "w", "k"), [(4, 5, 3), (3, 3, 5), (2, 6, 1), (5, 4, 7)])
def test_2d_equals_naive(h, w, k):
    x = torch.randn(2, h * w, 3, dtype=torch.float64)
    pool = Pool(3, causal=False, spatial_shape=(h, w), pool_size=k)
    torch.testing.assert_close(pool(x), naive_2d(x, h, w, k))


def test_2d_is_not_a_1d_pool_over_flat_tokens():
    x = torch.randn(1, 12, 2, dtype=torch.float64)
    two_d = Pool(2, causal=False, spatial_shape=(3, 4))(x)
    assert not torch.allclose(two_d, Pool(2, causal=False)(x))


@pytest.mark.parametrize("k", [2, 3])
def test_causal_pool_ignores_future_tokens(k):
    pool = Pool(4, causal=True, pool_size=k)
    x = torch.randn(2, 8, 4)
    for t in range(7):
        x2 = x.clone()
        x2[:, t + 1] += torch.randn(4)
        y, y2 = pool(x), pool(x2)
        assert torch.equal(y[:, : t + 1], y2[:, : t + 1])
        assert not torch.allclose(y[:, t + 1], y2[:, t + 1])


def test_centred_pool_sees_the_next_token():
    pool = Pool(4, causal=False)
    x = torch.randn(1, 6, 4)
    x2 = x.clone()
    x2[:, 3] += 1.0
    assert not torch.allclose(pool(x)[:, 2], pool(x2)[:, 2])


def test_capability_and_option_errors():
    with pytest.raises(MixerCapabilityError, match="causal pooling over a 2-D grid"):
        Pool(8, causal=True, spatial_shape=(4, 4))
    with pytest.raises(MixerCapabilityError, match="3 axes"):
        Pool(8, causal=False, spatial_shape=(2, 2, 2))
    with pytest.raises(ValueError, match="odd pool_size"):
        Pool(8, causal=False, pool_size=4)
    with pytest.raises(TypeError, match="window"):
        Pool(8, causal=True, window=3)
    with pytest.raises(ValueError, match="spatial_shape"):
        Pool(8, causal=False, spatial_shape=(3, 3))(torch.randn(1, 8, 8))


def test_pool_has_no_parameters_and_ignores_linear():
    assert not list(Pool(8, causal=True, linear=None).parameters())


@pytest.mark.parametrize("causal", [True, False])
def test_stack_with_pool_trains_and_stays_causal(causal):
    torch.manual_seed(0)
    stack = Stack(16, causal=causal, mixer=partial(Pool, pool_size=3), n_layers=2)
    x = torch.randn(2, 9, 16)
    y = stack(x)
    y.square().mean().backward()
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert all(p.grad is not None for p in stack.parameters())
    if causal:
        x2 = x.clone()
        x2[:, 5] += 1.0
        assert torch.allclose(stack(x)[:, :5], stack(x2)[:, :5], atol=1e-6)


def test_pool_supports_double_backward():
    """The EBT objective differentiates twice through the mixer."""
    pools = [(Pool(3, causal=True), 5), (Pool(3, causal=False), 5), (Pool(3, causal=False, spatial_shape=(2, 3)), 6)]
    for pool, n in pools:
        x = torch.randn(1, n, 3, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradgradcheck(lambda v, pool=pool: pool(v).square(), (x,))


# ----- two-stream mode (autoregressive EBT) -------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 4])
def test_two_stream_candidates_equal_naive_per_position_forward(k):
    pool = Pool(8, causal=True, pool_size=k)
    x, y = torch.randn(2, 7, 8, dtype=torch.float64), torch.randn(2, 7, 8, dtype=torch.float64)
    out, cache = pool.forward_context(x)
    torch.testing.assert_close(out, pool(x), atol=1e-10, rtol=0)
    torch.testing.assert_close(pool.forward_candidates(y, cache), naive_candidates(pool, x, y), atol=1e-10, rtol=0)


@pytest.mark.parametrize("k", [3, 4])
def test_two_stream_candidate_ignores_later_context(k):
    pool = Pool(8, causal=True, pool_size=k)
    x, y = torch.randn(2, 7, 8, dtype=torch.float64), torch.randn(2, 7, 8, dtype=torch.float64)
    fast = pool.forward_candidates(y, pool.forward_context(x)[1])
    for t in range(6):
        x2 = x.clone()
        x2[:, t + 1 :] += torch.randn(2, 6 - t, 8, dtype=torch.float64)
        fast2 = pool.forward_candidates(y, pool.forward_context(x2)[1])
        torch.testing.assert_close(fast2[:, : t + 1], fast[:, : t + 1], atol=1e-12, rtol=0)
        assert not torch.allclose(fast2[:, t + 1], fast[:, t + 1])


def test_two_stream_second_order_gradients_reach_parameters():
    """The EBT objective: grad of the candidates' energy w.r.t. the candidates, then backward to the weights."""
    torch.manual_seed(0)
    stack = Stack(8, causal=True, mixer=partial(Pool, pool_size=3), n_layers=2).double()
    x = torch.randn(2, 7, 8, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 7, 8, dtype=torch.float64, requires_grad=True)
    _, caches = stack.forward_context(x)
    (g,) = torch.autograd.grad(stack.forward_candidates(y, caches).square().sum(), y, create_graph=True)
    g.square().sum().backward()
    missing = [n for n, p in stack.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing}"
    assert x.grad.abs().sum() > 0  # through the context stream's cache
    pool = Pool(3, causal=True, pool_size=3)
    xs, ys = (torch.randn(1, 4, 3, dtype=torch.float64, requires_grad=True) for _ in range(2))
    f = lambda a, b: pool.forward_candidates(b, pool.forward_context(a)[1]).square()
    assert torch.autograd.gradgradcheck(f, (xs, ys))


def test_two_stream_stack_equals_naive_per_position_forward():
    torch.manual_seed(0)
    stack = Stack(8, causal=True, mixer=partial(Pool, pool_size=3), n_layers=2).double()
    x, y = torch.randn(2, 7, 8, dtype=torch.float64), torch.randn(2, 7, 8, dtype=torch.float64)
    fast = stack.forward_candidates(y, stack.forward_context(x)[1])
    torch.testing.assert_close(fast, naive_candidates(stack, x, y), atol=1e-10, rtol=0)


@pytest.mark.parametrize("spatial", [None, (2, 3)])
def test_two_stream_needs_causal_1d(spatial):
    pool = Pool(8, causal=False, spatial_shape=spatial)
    x = torch.randn(1, 6, 8)
    with pytest.raises(MixerCapabilityError, match="causal 1-D"):
        pool.forward_context(x)
    with pytest.raises(MixerCapabilityError, match="causal 1-D"):
        pool.forward_candidates(x, x)
    with pytest.raises(MixerCapabilityError, match="causal 1-D"):
        Stack(8, causal=False, mixer=Pool, spatial_shape=spatial).forward_context(x)
