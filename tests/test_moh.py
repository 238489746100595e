"""Mixture-of-Head attention: reduction to MHA, routing, causality, gradients, gather == dense, two-stream."""

from functools import partial

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from alt_arch.backbones.stack import Stack
from alt_arch.mixers.attention import Attention
from alt_arch.mixers.moh import MoHAttention
from alt_arch.utils import collect_aux


def make_moh(causal=True, dim=32, **options):
    torch.manual_seed(0)
    options = {"n_heads": 8, "shared_heads": 2, "top_k": 3} | options
    return MoHAttention(dim, causal=causal, **options)


def randomize(module, std=0.3):
    torch.manual_seed(1)
    for p in module.parameters():
        torch.nn.init.normal_(p, std=std)
    return module


def test_all_shared_heads_with_uniform_router_is_multi_head_attention():
    """h_s = H and W_s = 0: every gate is h_s * (1/h_s) = 1, so MoH == standard MHA with the same weights."""
    for causal in (True, False):
        moh = make_moh(causal, n_heads=4, shared_heads=4)
        torch.nn.init.zeros_(moh.router_shared.weight)
        mha = Attention(32, causal=causal, n_heads=4)
        mha.load_state_dict({k: v for k, v in moh.state_dict().items() if not k.startswith("router")})
        x = torch.randn(2, 9, 32)
        torch.testing.assert_close(moh(x), mha(x))
        assert moh.aux_losses == {}


def test_routing_gates_follow_the_paper():
    moh = randomize(make_moh())
    x = torch.randn(2, 7, 32)
    gates, selected = moh.route(x)
    assert gates.shape == (2, 7, 8) and selected.shape == (2, 7, 6)
    assert (selected.sum(-1) == 3).all()  # exactly top_k routed heads per token
    routed = gates[..., 2:]
    assert ((routed != 0) == selected).all()
    a = 2 * moh.router_groups(x).softmax(-1)
    torch.testing.assert_close(routed.sum(-1), 3 * a[..., 1])  # routed gates sum to k * a2
    torch.testing.assert_close(gates[..., :2].sum(-1), 2 * a[..., 0])  # shared gates sum to h_s * a1
    probs = moh.router_routed(x).softmax(-1)
    expected = 6 * (probs.flatten(0, 1).mean(0) * selected.flatten(0, 1).float().mean(0)).sum()
    torch.testing.assert_close(moh.aux_losses["moh_balance"], 0.01 * expected)
    assert moh.aux_metrics["moh_active_heads"] == pytest.approx(5 / 8)


@pytest.mark.parametrize("causal", [True, False])
def test_gather_path_equals_dense_path(causal):
    dense = randomize(make_moh(causal, routed_compute="dense")).double()
    gather = randomize(make_moh(causal, routed_compute="gather")).double()
    x = torch.randn(3, 13, 32, dtype=torch.float64, requires_grad=True)
    y_dense, y_gather = dense(x), gather(x)
    torch.testing.assert_close(y_gather, y_dense, atol=1e-12, rtol=1e-10)
    g_dense, = torch.autograd.grad(y_dense.square().sum(), x)
    g_gather, = torch.autograd.grad(y_gather.square().sum(), x)
    torch.testing.assert_close(g_gather, g_dense, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("compute", ["dense", "gather"])
def test_causal_moh_ignores_future_tokens(compute):
    moh = randomize(make_moh(routed_compute=compute))
    x = torch.randn(2, 10, 32)
    x2 = x.clone()
    x2[:, 6] += torch.randn(32)
    y, y2 = moh(x), moh(x2)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[:, :6], y2[:, :6], atol=1e-6, rtol=0)
    assert not torch.allclose(y[:, 6:], y2[:, 6:], atol=1e-3)


def test_gradients_reach_every_parameter_including_routers():
    stack = Stack(32, causal=True, mixer=partial(MoHAttention, n_heads=8, shared_heads=2, top_k=3), n_layers=2)
    out = stack(torch.randn(2, 9, 32))
    aux, metrics = collect_aux(stack)
    (out.square().mean() + sum(aux.values())).backward()
    missing = [n for n, p in stack.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing}"
    assert set(aux) == {"moh_balance"} and "moh_active_heads" in metrics


def test_double_backward_works_under_math_sdpa():
    moh = randomize(make_moh(routed_compute="gather")).double()
    x = torch.randn(2, 6, 32, dtype=torch.float64, requires_grad=True)
    with sdpa_kernel(SDPBackend.MATH):
        (g,) = torch.autograd.grad(moh(x).square().sum(), x, create_graph=True)
        g.square().sum().backward()
    assert all(p.grad is not None for p in (moh.q.weight, moh.k.weight, moh.router_routed.weight))


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="top_k"):
        MoHAttention(32, causal=True, n_heads=8, shared_heads=2, top_k=7)
    with pytest.raises(ValueError, match="n_heads"):
        MoHAttention(30, causal=True, n_heads=8)
    with pytest.raises(TypeError, match="window"):
        MoHAttention(32, causal=True, window=3)


@pytest.mark.parametrize("n", [1, 6])
def test_two_stream_candidates_equal_naive_per_position_forward(n):
    """Candidate t through the two-stream path == a causal forward of [x_0..x_t, y_t] (last output)."""
    torch.manual_seed(0)
    mixer = partial(MoHAttention, n_heads=8, shared_heads=2, top_k=3, routed_compute="gather")
    stack = Stack(32, causal=True, mixer=mixer, n_layers=2).double()
    x = torch.randn(2, n, 32, dtype=torch.float64)
    y = torch.randn(2, n, 32, dtype=torch.float64)
    _, caches = stack.forward_context(x)
    fast = stack.forward_candidates(y, caches)
    for t in range(n):
        naive = stack(torch.cat([x[:, : t + 1], y[:, t : t + 1]], dim=1))[:, -1]
        torch.testing.assert_close(fast[:, t], naive, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("cache_context", [True, False])
def test_ebt_balance_loss_is_the_mean_over_every_pass_of_the_step(cache_context, monkeypatch, tmp_path):
    """Under the EBT each MoH layer routes the context stream and every thinking step's candidates; the balance
    loss added to the training loss is, per layer, the mean over all of those passes (summed over layers)."""
    from ebt.training.build import build_lit_model, build_task
    from tests.utils import compose_config

    cfg = compose_config(["model/objective=ebt", "model/mixer=moh", "model.dim=32", "kernels=torch",
                          "model.objective.steps=3", f"model.objective.cache_context={cache_context}"], tmp_path)
    torch.manual_seed(0)
    ebt = build_lit_model(cfg, build_task(cfg)).objective
    calls: dict[int, list[torch.Tensor]] = {}
    route = MoHAttention.route

    def recording_route(self, x):
        out = route(self, x)
        calls.setdefault(id(self), []).append(self.aux_losses["moh_balance"].detach())
        return out

    monkeypatch.setattr(MoHAttention, "route", recording_route)
    _, logs = ebt.loss(ebt.task.make_batch("train", 0, 4))
    passes = 1 + 3 if cache_context else 2 * 3  # the context once (or once per step) + one candidate pass per step
    assert [len(c) for c in calls.values()] == [passes] * 2  # two layers
    expected = sum(torch.stack(c).mean() for c in calls.values())
    torch.testing.assert_close(logs["moh_balance"], expected)
    assert "moh_active_heads" in logs
