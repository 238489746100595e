"""RMSNorm is torch's ``nn.RMSNorm`` with the repository's constructor: the old hand-written formula's numbers, any
order of gradients, the same state-dict key, and weights saved by the old class load."""

import pytest
import torch
from torch import nn

from alt_arch.backbones.stack import Stack
from alt_arch.mixers.attention import Attention
from alt_arch.norms import RMSNorm


class OldRMSNorm(nn.Module):
    """The hand-written class this replaced (kept here as the reference)."""

    def __init__(self, dim: int, *, eps: float = 1e-6, elementwise_affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if elementwise_affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return y * self.weight if self.weight is not None else y


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("affine", [True, False])
def test_new_equals_the_old_formula(dtype, affine):
    torch.manual_seed(0)
    old, new = OldRMSNorm(24, elementwise_affine=affine), RMSNorm(24, elementwise_affine=affine)
    if affine:
        new.load_state_dict(old.state_dict())  # old -> new: the same key
        with torch.no_grad():
            old.weight.normal_()
            new.weight.copy_(old.weight)
    old, new = old.to(dtype), new.to(dtype)
    x = torch.randn(3, 5, 24, dtype=dtype) * 3
    torch.testing.assert_close(new(x), old(x), rtol=1e-6, atol=1e-6)
    assert new.eps == old.eps == 1e-6
    x.requires_grad_()
    (new(x) ** 2).sum().backward()
    grad_new = x.grad.clone()
    x.grad = None
    (old(x) ** 2).sum().backward()
    torch.testing.assert_close(grad_new, x.grad, rtol=1e-5, atol=1e-6)


def test_eps_is_the_one_given():
    x = torch.full((1, 4), 1e-3)
    for eps in (1e-6, 1.0):
        torch.testing.assert_close(RMSNorm(4, eps=eps)(x), OldRMSNorm(4, eps=eps)(x))


def test_second_order_gradients():
    torch.manual_seed(0)
    norm = RMSNorm(6).double()
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x, w: torch.func.functional_call(norm, {"weight": w}, (x,)),
                                        (x, norm.weight.detach().clone().requires_grad_()))


def test_state_dict_keys_and_old_weights_load(tmp_path):
    assert list(RMSNorm(8).state_dict()) == list(OldRMSNorm(8).state_dict()) == ["weight"]
    assert list(RMSNorm(8, elementwise_affine=False).state_dict()) == []

    def stack(norm) -> Stack:
        torch.manual_seed(0)
        return Stack(16, causal=True, mixer=lambda d, **kw: Attention(d, n_heads=2, **kw), norm=norm)

    old = stack(OldRMSNorm)
    with torch.no_grad():
        for name, p in old.named_parameters():
            if name.endswith("norm.weight") or ".norm1." in name or ".norm2." in name:
                p.normal_()
    torch.save(old.state_dict(), tmp_path / "old.pt")  # a checkpoint written with the old class
    new = stack(RMSNorm)
    new.load_state_dict(torch.load(tmp_path / "old.pt"), strict=True)
    x = torch.randn(2, 7, 16)
    torch.testing.assert_close(new(x), old(x), rtol=1e-5, atol=1e-6)


def test_a_bf16_stream_with_float32_weights_promotes_like_the_old_class():
    torch.manual_seed(0)
    new, old = RMSNorm(8), OldRMSNorm(8)
    x = torch.randn(4, 8).bfloat16()
    out = new(x)
    assert out.dtype == old(x).dtype == torch.float32
    torch.testing.assert_close(out, new(x.float()), rtol=1e-2, atol=1e-2)
