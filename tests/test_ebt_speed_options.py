"""Speed options of the EBT equal its exact path: compile=model|thinking_step (vs eager, CPU, tiny sizes),
thinking_grad=func, the written-out candidate attention, the cached RoPE tables, fused SDPA for the two-stream
context stream, and one host sync per round of thinking."""

import os

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from alt_arch.rope import Rotary
from ebt.errors import ConfigError
from ebt.objectives import compiled as compiled_module
from ebt.training.build import build_lit_model, build_task
from ebt.training.validation import check_top_level
from tests.utils import compose_config

TINY = ["model.dim=16", "model.backbone.n_layers=1", "model.mixer.n_heads=2", "kernels=torch"]


@pytest.fixture(autouse=True)
def compile_backend(monkeypatch):
    """aot_eager: dynamo and aot_autograd (where double backward and ``torch.func.grad`` are traced) without
    inductor's code generation (a minute of C++ compiles on the CPU); ``EBT_TEST_COMPILE_BACKEND=inductor``
    tests inductor."""
    monkeypatch.setattr(compiled_module, "BACKEND", os.environ.get("EBT_TEST_COMPILE_BACKEND", "aot_eager"))
    monkeypatch.setattr(compiled_module, "_CACHE", {})
    torch._dynamo.reset()


def make(tmp_path, objective: str = "ebt", *extra: str):
    cfg = compose_config([f"model/objective={objective}", *TINY, *extra], tmp_path)
    task = build_task(cfg)
    torch.manual_seed(0)
    return build_lit_model(cfg, task).objective, task.make_batch("train", 0, 2)


def loss_and_grads(model, batch, seed: int = 1):
    torch.manual_seed(seed)
    loss, _ = model.loss(batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def assert_same(a, b, tol: float = 1e-5) -> None:
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    torch.testing.assert_close(loss_a, loss_b, rtol=tol, atol=tol)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=tol, atol=tol, msg=name)


def thought(model, batch):
    torch.manual_seed(2)
    return model.think(batch, steps=2, final_energy=True)


@pytest.mark.parametrize("mode, data, candidate", [
    ("model", "addition", "simplex"), ("thinking_step", "addition", "simplex"),
    ("thinking_step", "digits", "simplex"),  # two-stream tokens; whole-target classes
    ("thinking_step", "addition", "embedding"), ("model", "addition", "topk")])
def test_compiled_ebt_matches_eager_in_training_and_thinking(tmp_path, mode, data, candidate):
    options = [f"data={data}", f"model.objective.candidate={candidate}", "model.objective.candidate_k=4"]
    eager, batch = make(tmp_path, "ebt", *options)
    compiled, _ = make(tmp_path, "ebt", *options, f"compile={mode}")
    compiled.load_state_dict(eager.state_dict())
    assert_same(loss_and_grads(eager, batch), loss_and_grads(compiled, batch))
    a, b = thought(eager, batch), thought(compiled, batch)
    torch.testing.assert_close(a.candidates[-1], b.candidates[-1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.energies[-1], b.energies[-1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("extra", [[], ["model.objective.detach_steps=false"], ["model.objective.truncate=true"],
                                   ["model.objective.langevin_std=0.01", "model.objective.learn_langevin_after=0",
                                    "model.objective.alpha_jitter=2", "model.objective.time_embedding=true"]])
def test_functional_thinking_gradient_equals_autograd(tmp_path, extra):
    """thinking_grad=func: torch.func.grad instead of autograd.grad(create_graph=True), the same loss and gradients."""
    exact, batch = make(tmp_path, "ebt", *extra)
    functional, _ = make(tmp_path, "ebt", "model.objective.thinking_grad=func", *extra)
    functional.load_state_dict(exact.state_dict())
    assert_same(loss_and_grads(exact, batch), loss_and_grads(functional, batch), tol=1e-6)
    a, b = thought(exact, batch), thought(functional, batch)
    torch.testing.assert_close(a.candidates[-1], b.candidates[-1], rtol=1e-6, atol=1e-6)


def test_compiled_predictor_matches_eager_and_keeps_its_state_dict_keys(tmp_path):
    eager, batch = make(tmp_path, "predict")
    compiled, _ = make(tmp_path, "predict", "compile=model")
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    compiled.load_state_dict(eager.state_dict())
    assert_same(loss_and_grads(eager, batch), loss_and_grads(compiled, batch))


def test_compile_values_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="compile must be one of none, model, thinking_step, got .fast."):
        check_top_level(compose_config(["compile=fast"], tmp_path))
    with pytest.raises(ConfigError, match="compile='thinking_step' is not one of none, model"):
        make(tmp_path, "predict", "compile=thinking_step")
    with pytest.raises(ConfigError, match="activation checkpointing"):
        make(tmp_path, "ebt", "compile=thinking_step", "model.backbone.checkpoint=true")
    with pytest.raises(ConfigError, match="thinking_grad=func does not combine with activation checkpointing"):
        make(tmp_path, "ebt", "model.objective.thinking_grad=func", "model.backbone.checkpoint=true")
    with pytest.raises(ConfigError, match="thinking_grad='fast' is not one of autograd, func"):
        make(tmp_path, "ebt", "model.objective.thinking_grad=fast")


def test_cached_rope_tables_equal_the_uncached_rotation():
    rotary = Rotary(8)
    x = torch.randn(2, 3, 5, 8)
    for offset in (0, 1):
        cos, sin = rotary.tables(5, offset, x.device, x.dtype)
        assert rotary.tables(5, offset, x.device, x.dtype)[0] is cos  # cached
        torch.testing.assert_close(Rotary.rotate(x, cos, sin), rotary(x, torch.arange(offset, offset + 5)),
                                   rtol=0, atol=0)


def test_two_stream_training_with_fused_context_attention_equals_the_math_backend(tmp_path):
    """The context stream is differentiated once, so it may use fused SDPA kernels in second-order training."""
    model, batch = make(tmp_path)
    fused = loss_and_grads(model, batch)
    with sdpa_kernel(SDPBackend.MATH):
        math = loss_and_grads(model, batch)
    assert_same(fused, math)


def test_thinking_syncs_with_the_host_a_fixed_number_of_times_whatever_the_steps(tmp_path, monkeypatch):
    """The finiteness checks and the noise decision do not read device values per step (one check per round)."""
    model, batch = make(tmp_path, "ebt", "model.objective.langevin_std=0.01")
    calls = []
    for name in ("__bool__", "__float__", "__int__", "item", "tolist"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    counts = []
    for steps in (1, 4):
        calls.clear()
        model.think(batch, steps=steps, training=True)
        counts.append(len(calls))
    assert counts[0] == counts[1], counts


def test_candidate_attention_equals_the_concatenated_softmax_to_second_order():
    """The written-out softmax with a detached shift (fewer autograd ops) against ``cat -> softmax -> split``."""
    from alt_arch.mixers.attention import candidate_attention

    def reference(q, k, v, k_ctx, v_ctx):
        n, scale = q.shape[2], q.shape[-1] ** -0.5
        scores = (q @ k_ctx.transpose(-1, -2) * scale).masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(),
                                                                     float("-inf"))
        probs = torch.cat([scores, (q * k).sum(-1, keepdim=True) * scale], dim=-1).softmax(dim=-1)
        return probs[..., :n] @ v_ctx + probs[..., n:] * v

    torch.manual_seed(0)
    inputs = [torch.randn(2, 2, 5, 4, dtype=torch.float64, requires_grad=True) for _ in range(5)]
    results = []
    for fn in (reference, candidate_attention):
        out = fn(*inputs)
        grad = torch.autograd.grad(out.square().sum(), inputs[0], create_graph=True)[0]
        second = torch.autograd.grad(grad.square().sum(), inputs)
        results.append((out, grad, *second))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b)
