"""TokenFormer Pattention: shapes, gradients, the three normalisations, initialisation, growth of one layer."""

import math

import pytest
import torch
import torch.nn.functional as F

from alt_arch.linears.pattention import Pattention, PattentionMLP, pattention
from alt_arch.utils import forward_flops_per_token

NORMS = ["l2_gelu", "gelu_l2", "softmax"]


def layer(norm="l2_gelu", d_in=12, d_out=7, slots=10, dtype=torch.float64):
    torch.manual_seed(0)
    return Pattention(d_in, d_out, slots=slots, normalization=norm, key_std=0.3).to(dtype)


@pytest.mark.parametrize("norm", NORMS)
def test_shapes_and_gradients(norm):
    m = layer(norm)
    x = torch.randn(2, 5, 12, dtype=torch.float64, requires_grad=True)
    y = m(x)
    assert y.shape == (2, 5, 7) and torch.isfinite(y).all()
    y.square().sum().backward()
    assert m.keys.grad.abs().sum() > 0 and m.values.grad.abs().sum() > 0 and x.grad.abs().sum() > 0


@pytest.mark.parametrize("norm", NORMS)
def test_normalisation_matches_equations(norm):
    m = layer(norm)
    x = torch.randn(3, 12, dtype=torch.float64)
    s = x @ m.keys.t()
    n = m.slots
    if norm == "l2_gelu":  # paper Eq. 5: GELU(S * sqrt(n) / ||S||_2)
        expected = F.gelu(s * math.sqrt(n) / s.norm(dim=-1, keepdim=True))
    elif norm == "gelu_l2":
        g = F.gelu(s)
        expected = g * math.sqrt(n) / g.norm(dim=-1, keepdim=True)
        torch.testing.assert_close(m.weights(x).norm(dim=-1), torch.full((3,), math.sqrt(n), dtype=torch.float64))
    else:  # exp then L1 norm, times n
        expected = s.exp() / s.exp().sum(-1, keepdim=True) * n
        torch.testing.assert_close(m.weights(x).sum(-1), torch.full((3,), float(n), dtype=torch.float64))
    torch.testing.assert_close(m.weights(x), expected)
    torch.testing.assert_close(m(x), expected @ m.values)


def test_zero_input_gives_finite_output():
    m = layer()
    y = m(torch.zeros(2, 12, dtype=torch.float64))
    assert torch.isfinite(y).all()


def test_initialisation_scales():
    torch.manual_seed(0)
    m = Pattention(256, 256, slots=512, n_layers=4)
    assert abs(m.keys.std().item() - 0.02) < 0.002
    assert abs(m.values.std().item() - 2 / (4 * math.sqrt(256))) < 0.005
    assert not any(n.endswith("bias") for n, _ in m.named_parameters())


def test_factory_and_mlp_slot_counts():
    assert pattention(16, 24).slots == 16
    assert pattention(16, 24, slots=5, extra_slots=3).slots == 8
    assert PattentionMLP(16).ffn.slots == 64
    assert PattentionMLP(16, extra_slots=2).ffn.slots == 66
    with pytest.raises(ValueError, match="normalization"):
        pattention(8, 8, normalization="relu")


@pytest.mark.parametrize("norm", ["l2_gelu", "gelu_l2"])
def test_growth_preserves_output_and_new_tokens_learn(norm):
    m = layer(norm)
    x = torch.randn(4, 12, dtype=torch.float64)
    before = m(x)
    scale = m.scale.clone()
    m.grow(6, generator=torch.Generator().manual_seed(1))
    assert m.slots == 16 and torch.equal(m.scale, scale)  # tau pinned to sqrt(10)
    assert torch.count_nonzero(m.keys[10:]) == 0 and m.values[10:].abs().sum() > 0
    torch.testing.assert_close(m(x), before, atol=1e-12, rtol=0)
    m(x).square().sum().backward()
    assert m.keys.grad[10:].abs().sum() > 0, "new keys receive no gradient: growth would be a dead end"


def test_softmax_growth_is_refused():
    with pytest.raises(ValueError, match="softmax"):
        layer("softmax").grow(2)


def test_flops_are_counted_in_the_model_total():
    m = Pattention(8, 4, slots=6)
    assert forward_flops_per_token(torch.nn.Sequential(m), seq_len=3) == 2 * 6 * (8 + 4) + 5 * 6
