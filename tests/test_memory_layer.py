"""MemoryFormer memory layer: the hash, equality with a loop-over-chunks reference, sparse table gradients,
double backward (EBT), the Memory Block and the memoryformer experiment."""

import pytest
import torch

from alt_arch.errors import MixerCapabilityError
from alt_arch.linears.memory import MemoryLayer, MemoryMLP, weighted_bag
from alt_arch.mixers.attention import Attention
from ebt.training.build import build_lit_model, build_task
from tests.utils import compose_config


def naive(layer: MemoryLayer, x: torch.Tensor) -> torch.Tensor:
    """Loop over chunks: y = sum_k s_k T_k[c_k] + b, the paper's sum written out."""
    tables = layer.tables.reshape(layer.n_chunks, layer.table_rows, layer.d_out)
    out = torch.zeros(*x.shape[:-1], layer.d_out, dtype=x.dtype)
    for k in range(layer.n_chunks):
        z = x[..., k * layer.tau:(k + 1) * layer.tau]
        code = sum((z[..., j] >= 0).long() << (layer.tau - 1 - j) for j in range(layer.tau))
        s = z.abs().sum(-1) * torch.prod(1 / (1 + torch.exp(-2 * z.abs())), dim=-1)
        out = out + s[..., None] * tables[k][code]
    return out + layer.bias


def make(d_in=12, d_out=5, tau=4):
    torch.manual_seed(0)
    layer = MemoryLayer(d_in, d_out, tau=tau).double()
    torch.nn.init.normal_(layer.bias)
    return layer


def test_hash_codes_are_sign_bits():
    layer = make(d_in=8, tau=4)
    x = torch.tensor([[1.0, -2.0, 0.0, 3.0, -1.0, -1.0, -1.0, 0.5]], dtype=torch.float64)
    codes, weights = layer.hash(x)
    assert codes.tolist() == [[0b1011, 0b0001]]
    z = x.reshape(2, 4)
    expected = z.abs().sum(-1) * torch.sigmoid(2 * z.abs()).prod(-1)
    torch.testing.assert_close(weights[0], expected)


def test_equals_loop_over_chunks_reference():
    layer = make()
    x = torch.randn(3, 7, 12, dtype=torch.float64)
    torch.testing.assert_close(layer(x), naive(layer, x))


def test_gradients_reach_only_selected_rows_and_the_input():
    layer = make()
    x = torch.randn(4, 12, dtype=torch.float64, requires_grad=True)
    layer(x).square().sum().backward()
    codes, _ = layer.hash(x.detach())
    selected = set((codes + layer.offsets).flatten().tolist())
    touched = set(torch.nonzero(layer.tables.grad.abs().sum(-1)).flatten().tolist())
    assert touched == selected and len(selected) < layer.tables.shape[0]
    assert x.grad.abs().sum() > 0  # through the weights s_k

    ref = make()
    x2 = x.detach().clone().requires_grad_()
    naive(ref, x2).square().sum().backward()
    torch.testing.assert_close(layer.tables.grad, ref.tables.grad)
    torch.testing.assert_close(x.grad, x2.grad)


def test_weighted_bag_double_backward():
    torch.manual_seed(0)
    idx = torch.randint(0, 6, (3, 4))
    table = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, v: weighted_bag(idx, t, v), (table, w))
    assert torch.autograd.gradgradcheck(lambda t, v: weighted_bag(idx, t, v), (table, w))


def test_second_order_gradient_through_the_layer():
    """The EBT objective differentiates dE/dy again: that must work and match the loop reference."""
    layer, ref = make(), make()
    grads, y0 = [], torch.randn(2, 12, dtype=torch.float64)
    for fn, params in ((layer, layer.tables), (lambda v: naive(ref, v), ref.tables)):
        y = y0.clone().requires_grad_()
        (g,) = torch.autograd.grad(fn(y).sin().sum(), y, create_graph=True)
        g.square().sum().backward()
        grads.append(params.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_width_not_divisible_by_tau_is_a_clear_error():
    with pytest.raises(MixerCapabilityError, match="d_in=10 is not divisible by tau=8"):
        MemoryLayer(10, 4)
    with pytest.raises(MixerCapabilityError, match="model.mlp.tau"):
        MemoryMLP(12, tau=8)


def test_memory_block_layout():
    mlp = MemoryMLP(16, tau=4)
    assert (mlp.up.d_out, mlp.up.tau, mlp.down.d_in, mlp.down.tau) == (4 * 6, 4, 24, 6)
    assert mlp.down.tables.shape == (4 * 2**6, 16)
    assert mlp(torch.randn(2, 3, 16)).shape == (2, 3, 16)


def test_attention_without_output_projection():
    attn = Attention(16, causal=True, out_proj=False)
    assert isinstance(attn.out, torch.nn.Identity)
    assert not any(n.startswith("out.") for n, _ in attn.named_parameters())


def test_memoryformer_experiment_trains_one_step(tmp_path):
    cfg = compose_config(["experiment=memoryformer", "model.dim=16", "data.batch_size=4"], tmp_path)
    task = build_task(cfg)
    model = build_lit_model(cfg, task)
    mixer = model.objective.backbone.blocks[0].mixer
    assert isinstance(mixer.q, MemoryLayer) and isinstance(mixer.out, torch.nn.Identity)
    assert isinstance(model.objective.backbone.blocks[0].mlp, MemoryMLP)
    loss, _ = model.objective.loss(task.make_batch("train", 0, 4))
    loss.backward()
    assert torch.isfinite(loss) and mixer.q.tables.grad.abs().sum() > 0
