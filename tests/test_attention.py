"""The attention mixer and the Transformer++ stack: shapes, causality, gradients, two-stream equivalence."""

from functools import partial

import pytest
import torch

from alt_arch.backbones.stack import Stack
from alt_arch.mixers.attention import Attention


def make_stack(causal=True, dim=32, n_layers=2, dtype=torch.float32):
    torch.manual_seed(0)
    return Stack(dim, causal=causal, mixer=partial(Attention, n_heads=4), n_layers=n_layers).to(dtype)


def test_shape_and_no_nan():
    x = torch.randn(3, 11, 32)
    for causal in (True, False):
        y = make_stack(causal)(x)
        assert y.shape == x.shape and torch.isfinite(y).all()


def test_causal_attention_ignores_future_tokens():
    stack = make_stack(causal=True)
    x = torch.randn(2, 10, 32)
    x2 = x.clone()
    x2[:, 6] += torch.randn(32)
    y, y2 = stack(x), stack(x2)
    assert torch.allclose(y[:, :6], y2[:, :6], atol=1e-6)
    assert not torch.allclose(y[:, 6:], y2[:, 6:], atol=1e-3)


def test_bidirectional_attention_sees_future_tokens():
    stack = make_stack(causal=False)
    x = torch.randn(2, 10, 32)
    x2 = x.clone()
    x2[:, 6] += 1.0
    assert not torch.allclose(stack(x)[:, :6], stack(x2)[:, :6], atol=1e-4)


def test_gradients_reach_every_parameter():
    stack = make_stack()
    stack(torch.randn(2, 9, 32)).square().mean().backward()
    missing = [n for n, p in stack.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing}"


def test_unknown_mixer_option_is_rejected():
    with pytest.raises(TypeError, match="window"):
        Attention(32, causal=True, window=3)


@pytest.mark.parametrize("n", [1, 5, 12])
def test_two_stream_candidates_equal_naive_per_position_forward(n):
    """Candidate t through the two-stream path == a causal forward of [x_0..x_t, y_t] (last output)."""
    stack = make_stack(dtype=torch.float64)
    x = torch.randn(2, n, 32, dtype=torch.float64)
    y = torch.randn(2, n, 32, dtype=torch.float64)
    _, caches = stack.forward_context(x)
    fast = stack.forward_candidates(y, caches)
    for t in range(n):
        seq = torch.cat([x[:, : t + 1], y[:, t : t + 1]], dim=1)
        naive = stack(seq)[:, -1]
        torch.testing.assert_close(fast[:, t], naive, atol=1e-10, rtol=1e-10)
