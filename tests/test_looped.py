"""The looped (AlgoFormer) backbone: reduction to a plain stack, the recurrence, eval loops, truncation, causality."""

from functools import partial

import pytest
import torch

from alt_arch.backbones.looped import Looped
from alt_arch.backbones.stack import Stack
from alt_arch.mixers.attention import Attention
from alt_arch.utils import forward_flops_per_token

DIM = 16
MIXER = partial(Attention, n_heads=2)


def make_looped(dtype=torch.float32, causal=True, **kwargs):
    torch.manual_seed(0)
    return Looped(DIM, causal=causal, mixer=MIXER, **kwargs).to(dtype)


def copy_blocks(looped: Looped, stack: Stack) -> None:
    """Give ``looped`` the weights of ``stack`` (pre, loop, post blocks in order, then the final norm)."""
    blocks = [*looped.pre, *looped.loop, *looped.post]
    assert len(blocks) == len(stack.blocks)
    for mine, theirs in zip(blocks, stack.blocks, strict=True):
        mine.load_state_dict(theirs.state_dict())
    looped.norm.load_state_dict(stack.norm.state_dict())


def reference(looped: Looped, x: torch.Tensor, loops: int, detach_before: int = 0) -> torch.Tensor:
    """Norm(Post(h_T)), h_t = Loop(h_{t-1} + Pre(x)), h_0 = 0, written out step by step."""
    p = x
    for block in looped.pre:
        p = block(p)
    h = torch.zeros_like(p)
    for t in range(loops):
        if t == detach_before and t > 0:
            h = h.detach()
        z = h + p
        for block in looped.loop:
            z = block(z)
        h = z
    for block in looped.post:
        h = block(h)
    return looped.norm(h)


@pytest.mark.parametrize(("pre", "loop", "post"), [(1, 1, 1), (0, 2, 0), (2, 1, 0)])
def test_one_loop_equals_plain_stack(pre, loop, post):
    stack = Stack(DIM, causal=True, mixer=MIXER, n_layers=pre + loop + post)
    looped = make_looped(pre_depth=pre, loop_depth=loop, post_depth=post, loops=1)
    copy_blocks(looped, stack)
    x = torch.randn(2, 7, DIM)
    torch.testing.assert_close(looped(x), stack(x))
    looped.eval()
    torch.testing.assert_close(looped(x), stack(x))


def test_recurrence_with_input_injection():
    looped = make_looped(loops=3)
    x = torch.randn(2, 6, DIM)
    torch.testing.assert_close(looped(x), reference(looped, x, 3))
    assert not torch.allclose(looped(x), reference(looped, x, 2), atol=1e-4)


def test_eval_loops_differ_from_training_loops_and_are_settable():
    looped = make_looped(loops=2, eval_loops=5)
    x = torch.randn(2, 6, DIM)
    torch.testing.assert_close(looped.train()(x), reference(looped, x, 2))
    torch.testing.assert_close(looped.eval()(x), reference(looped, x, 5))
    looped.eval_loops = 7
    torch.testing.assert_close(looped(x), reference(looped, x, 7))
    looped.eval_loops = None
    assert looped.eval_loops == 2
    with pytest.raises(ValueError, match="eval_loops"):
        looped.eval_loops = 0


def test_causality():
    looped = make_looped(loops=3)
    x = torch.randn(2, 10, DIM)
    x2 = x.clone()
    x2[:, 6] += torch.randn(DIM)
    y, y2 = looped(x), looped(x2)
    torch.testing.assert_close(y[:, :6], y2[:, :6])
    assert not torch.allclose(y[:, 6:], y2[:, 6:], atol=1e-3)


def test_gradients_reach_every_parameter():
    looped = make_looped(loops=3, train_window=2)
    looped(torch.randn(2, 5, DIM)).square().mean().backward()
    missing = [n for n, p in looped.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing}"


def test_truncated_backprop_keeps_only_the_last_window():
    """train_window=1 of 3 loops: same output, gradient of a model whose h_2 is detached."""
    x = torch.randn(2, 5, DIM)
    truncated = make_looped(loops=3, train_window=1)
    truncated(x).sum().backward()
    manual = make_looped(loops=3)
    reference(manual, x, 3, detach_before=2).sum().backward()
    full = make_looped(loops=3)
    full(x).sum().backward()
    for (name, p), q in zip(truncated.named_parameters(), manual.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    loop_grads = [(p.grad, r.grad) for (n, p), r in zip(truncated.named_parameters(), full.parameters(), strict=True)
                  if n.startswith("loop.")]
    assert any(not torch.allclose(a, b) for a, b in loop_grads), "truncation changed no loop gradient"
    torch.testing.assert_close(truncated.eval()(x), full.eval()(x))


def test_loop_curriculum_follows_progress():
    looped = make_looped(loops=5, curriculum_start=1, curriculum_steps=8)
    assert [looped.set_progress(s) or looped.train_loops() for s in (0, 2, 4, 8, 100)] == [1, 2, 3, 5, 5]
    looped.set_progress(0)
    x = torch.randn(1, 4, DIM)
    torch.testing.assert_close(looped(x), reference(looped, x, 1))  # step 0 -> 1 loop, counter -> 1
    assert int(looped.progress) == 1
    looped.set_progress(4)
    torch.testing.assert_close(looped(x), reference(looped, x, 3))
    assert looped.eval().current_loops() == 5  # evaluation uses eval_loops (= loops)
    with pytest.raises(ValueError, match="curriculum"):
        make_looped(loops=3, curriculum_start=4, curriculum_steps=10)


def test_two_stream_candidates_equal_naive_per_position_forward():
    looped = make_looped(dtype=torch.float64, loops=2)
    n = 5
    x = torch.randn(2, n, DIM, dtype=torch.float64)
    y = torch.randn(2, n, DIM, dtype=torch.float64)
    _, caches = looped.forward_context(x)
    fast = looped.forward_candidates(y, caches)
    for t in range(n):
        naive = looped(torch.cat([x[:, : t + 1], y[:, t : t + 1]], dim=1))[:, -1]
        torch.testing.assert_close(fast[:, t], naive, atol=1e-10, rtol=1e-10)


def test_flops_grow_with_loops():
    # the backbone inside an objective-like container (the root module's own hook is not counted)
    flops = [forward_flops_per_token(torch.nn.Sequential(make_looped(loops=t).eval()), seq_len=8) for t in (1, 2, 3)]
    assert flops[2] - flops[1] == flops[1] - flops[0] > 0


def test_bad_depths_are_rejected():
    with pytest.raises(ValueError, match="loop_depth"):
        make_looped(loop_depth=0)
    with pytest.raises(ValueError, match="loops"):
        make_looped(loops=0)


@pytest.mark.parametrize("data", ["addition", "digits_denoise"])  # two-stream and whole-target
def test_ebt_training_step_with_a_train_window_is_the_exact_gradient_step(data, tmp_path):
    """loops=3, train_window=1: a training-mode thinking step equals y - alpha * dE/dy with dE/dy computed directly
    (the frozen iterations stop only the loop parameters' gradient, not the candidate's)."""
    from ebt.training.build import build_lit_model, build_task
    from tests.utils import compose_config

    extra = ["model.objective.init=input"] if data == "digits_denoise" else []
    cfg = compose_config(["model/objective=ebt", f"data={data}", "model/backbone=looped", "model.dim=16",
                          "model.backbone.loops=3", "model.backbone.train_window=1", "kernels=torch", *extra], tmp_path)
    task = build_task(cfg)
    torch.manual_seed(0)
    ebt = build_lit_model(cfg, task).objective.double().train()
    batch = {k: v.double() if v.is_floating_point() else v for k, v in task.make_batch("train", 0, 3).items()}
    y0 = ebt.initial_candidate(batch).detach()
    step = ebt.think(batch, steps=1, training=True, init=y0).candidates[-1]
    ebt.backbone.train_window = None  # the same function, differentiated through every iteration
    y = y0.clone().requires_grad_()
    (grad,) = torch.autograd.grad(ebt.energy_function(batch)(y, 0).sum(), y)
    alpha = ebt.alpha.detach()
    torch.testing.assert_close(step.detach(), y0 - alpha * grad, atol=1e-9, rtol=1e-9)
    ebt.backbone.train_window = 1  # and the loop's parameters still learn only from the last iteration
    loss, _ = ebt.loss(batch)
    loss.backward()
    assert all(p.grad is not None for p in ebt.backbone.loop.parameters())
