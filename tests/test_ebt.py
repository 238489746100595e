"""EBT objective: second-order gradients, thinking semantics, context cache, divergence errors."""

import pytest
import torch

from ebt.errors import ConfigError, ThinkingDivergedError
from ebt.objectives.base import prediction_loss
from ebt.training.build import build_lit_model, build_task
from ebt_kernels import dispatch
from tests.utils import compose_config, declared_overrides, group_options, naive_ebt_energies, perturb_after

SMALL = ["model/objective=ebt", "model.dim=32", "kernels=torch"]


def make(tmp_path, *extra):
    cfg = compose_config([*SMALL, *extra], tmp_path)
    task = build_task(cfg)
    torch.manual_seed(0)
    return build_lit_model(cfg, task).objective, task.make_batch("train", 0, 4)


def test_energy_head_learns_only_through_second_order_gradients(tmp_path):
    ebt, batch = make(tmp_path)
    loss, logs = ebt.loss(batch)
    loss.backward()
    assert ebt.energy_head.weight.grad is not None and ebt.energy_head.weight.grad.abs().sum() > 0
    missing = [n for n, p in ebt.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing}"
    assert "energy_step0" in logs and "alpha" in logs


def test_zero_steps_return_the_initial_candidate_and_noise_off_is_deterministic(tmp_path):
    ebt, batch = make(tmp_path)
    init = torch.randn(*batch["targets"].shape, 13)
    assert torch.equal(ebt.think(batch, steps=0, init=init).candidates[-1], init)
    a = ebt.think(batch, steps=3, init=init).candidates[-1]
    b = ebt.think(batch, steps=3, init=init).candidates[-1]
    assert torch.equal(a, b) and not torch.equal(a, init)


def test_context_cache_gives_the_uncached_result(tmp_path):
    ebt, batch = make(tmp_path)
    init = torch.randn(*batch["targets"].shape, 13)
    cached = ebt.think(batch, steps=2, init=init).candidates[-1]
    ebt.config.speed.cache_context = False
    uncached = ebt.think(batch, steps=2, init=init).candidates[-1]
    torch.testing.assert_close(cached, uncached, atol=1e-6, rtol=1e-6)


def test_candidate_cannot_see_its_own_or_later_true_tokens(tmp_path):
    ebt, batch = make(tmp_path)
    y = torch.randn(*batch["targets"].shape, 13)
    energy = ebt.energy_function(batch)(y, 0)
    changed = {k: v.clone() for k, v in batch.items()}
    t = 5
    changed["input_ids"][:, t + 1 :] = (changed["input_ids"][:, t + 1 :] + 1) % 13
    energy2 = ebt.energy_function(changed)(y, 0)
    torch.testing.assert_close(energy[:, : t + 1], energy2[:, : t + 1])
    assert not torch.allclose(energy[:, t + 1 :], energy2[:, t + 1 :])


def test_non_finite_energy_names_the_step_and_the_knobs(tmp_path):
    ebt, batch = make(tmp_path)
    with torch.no_grad():
        ebt.energy_head.weight.fill_(float("nan"))
    with pytest.raises(ThinkingDivergedError, match="thinking step 0.*model.objective.alpha"):
        ebt.think(batch, steps=1)


def test_autoregressive_energies_equal_a_naive_per_position_forward(tmp_path):
    """Energy of candidate t == energy head on a causal forward of [x_0 .. x_t, candidate_t] (its last slot)."""
    ebt, batch = make(tmp_path)
    ebt.double()
    y = torch.randn(*batch["targets"].shape, 13, dtype=torch.float64)
    fast = ebt.energy_function(batch)(y, 0)  # (B, T)
    context = ebt.encoder(batch["input_ids"])
    candidate = ebt.read_candidate(y, 0)
    for t in range(y.shape[1]):
        seq = torch.cat([context[:, : t + 1], candidate[:, t : t + 1]], dim=1)
        naive = ebt.energy_head(ebt.backbone(seq)[:, -1]).squeeze(-1)
        torch.testing.assert_close(fast[:, t], naive, atol=1e-10, rtol=1e-10)


def _train(ebt, task, steps: int, lr: float = 3e-3) -> None:
    optimizer = torch.optim.AdamW(ebt.parameters(), lr=lr)
    for i in range(steps):
        loss, _ = ebt.loss(task.make_batch("train", i, 32))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_energy_falls_along_the_thinking_steps_of_a_briefly_trained_model(tmp_path):
    cfg = compose_config([*SMALL], tmp_path)
    task = build_task(cfg)
    torch.manual_seed(0)
    ebt = build_lit_model(cfg, task).objective
    _train(ebt, task, 40)
    thought = ebt.think(task.make_batch("val", 0, 64), steps=4, final_energy=True)
    energies = [float(e.detach().mean()) for e in thought.energies]
    assert all(b < a for a, b in zip(energies, energies[1:], strict=False)), energies


def _param_grads(ebt, loss):
    ebt.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in ebt.named_parameters() if p.grad is not None}


def test_truncation_gives_exactly_the_gradient_of_one_second_order_step_after_plain_steps(tmp_path):
    """truncate=true: steps 0..S-2 are plain (first-order) descent, only the last step's loss and its
    second-order terms reach the parameters."""
    ebt, batch = make(tmp_path, "model.objective.truncate=true", "model.objective.steps=3",
                      "model.objective.learn_alpha=false")
    torch.manual_seed(1)
    truncated = _param_grads(ebt, ebt.loss(batch)[0])
    torch.manual_seed(1)
    init = ebt.initial_candidate(batch)
    warm = ebt.think(batch, steps=2, init=init).candidates[-1].detach()
    last = ebt.think(batch, steps=1, training=True, init=warm).candidates[-1]
    manual = _param_grads(ebt, prediction_loss(ebt.task, last, batch))
    assert truncated.keys() == manual.keys()
    for name in manual:
        torch.testing.assert_close(truncated[name], manual[name], atol=1e-5, rtol=1e-4, msg=name)
    torch.manual_seed(1)
    ebt.config.backprop.truncate = False
    full = _param_grads(ebt, ebt.loss(batch)[0])
    assert not torch.allclose(full["energy_head.weight"], truncated["energy_head.weight"])


@pytest.mark.parametrize("detach", [True, False])
def test_detach_steps_decides_whether_gradients_flow_back_through_earlier_steps(detach, tmp_path):
    ebt, batch = make(tmp_path, f"model.objective.detach_steps={str(detach).lower()}")
    init = torch.randn(*batch["targets"].shape, 13, requires_grad=True)
    final = ebt.think(batch, steps=2, training=True, init=init).candidates[-1]
    (grad,) = torch.autograd.grad(final.square().sum(), init, allow_unused=True)
    if detach:  # each step starts from a detached copy: nothing reaches the initial candidate
        assert grad is None
    else:  # full unrolled graph: the initial candidate influences the final one
        assert grad is not None and grad.abs().sum() > 0


DATA_FOR_MODE = {"autoregressive": ["data=addition"], "whole_target": ["data=digits_denoise",
                                                                       "model.objective.init=input"]}


@pytest.mark.parametrize("mode", sorted(DATA_FOR_MODE))
@pytest.mark.parametrize("mixer", group_options("model/mixer"))
def test_ebt_trains_with_every_mixer(mixer, mode, tmp_path):
    ebt, _ = make(tmp_path, f"model/mixer={mixer}", *DATA_FOR_MODE[mode])
    batch = ebt.task.make_batch("train", 0, 2)
    loss, logs = ebt.loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    missing = [n for n, p in ebt.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing}"


# ------------------------------------------------------------------------- causal tasks, defaults, step bounds
def test_a_continuous_causal_task_runs_two_stream_and_equals_a_naive_per_position_forward(tmp_path):
    """In-context regression under the EBT: candidate t's energy == energy head on a causal forward of
    [x_0 .. x_t, candidate_t] (its last slot); the x-token can no longer read its answer from the next token."""
    ebt, _ = make(tmp_path, "data=icl_regression")
    assert ebt.autoregressive
    ebt.double()
    batch = {k: v.double() if v.is_floating_point() else v for k, v in ebt.task.make_batch("train", 0, 3).items()}
    y = torch.randn(batch["targets"].shape, dtype=torch.float64)
    fast = ebt.energy_function(batch)(y, 0)  # (B, T)
    torch.testing.assert_close(fast, naive_ebt_energies(ebt, batch["inputs"], y), atol=1e-10, rtol=1e-10)


def _causal_data() -> list[str]:
    options = []
    for option in group_options("data"):
        if "SKIP" in declared_overrides("data", option):
            continue
        task = build_task(compose_config([f"data={option}", *declared_overrides("data", option)], "/tmp/unused"))
        if task.causal:
            options.append(option)
    return options


OBJECTIVE_KINDS = {"diffusion": {"continuous"}}  # objectives that refuse other kinds of task (with a ConfigError)


@pytest.mark.parametrize("objective", group_options("model/objective"))
@pytest.mark.parametrize("data", _causal_data())
def test_changing_later_inputs_or_targets_changes_nothing_at_earlier_positions(objective, data, tmp_path):
    cfg = compose_config([f"model/objective={objective}", f"data={data}", "model.dim=32", "kernels=torch",
                          *declared_overrides("data", data)], tmp_path)
    task = build_task(cfg)
    torch.manual_seed(0)
    try:
        model = build_lit_model(cfg, task).objective.eval()
    except ConfigError as error:  # an objective for some kinds of task only (diffusion: continuous targets)
        if task.kind in OBJECTIVE_KINDS.get(objective, {task.kind}):
            raise
        pytest.skip(f"{objective} refuses data={data}: {error}")
    batch = task.make_batch("val", 0, 3)
    t = batch["targets"].shape[1] // 2
    changed = perturb_after(batch, t)
    torch.manual_seed(1)  # the same initial candidate for both
    before = model.predict(batch)
    torch.manual_seed(1)
    after = model.predict(changed)
    torch.testing.assert_close(after[:, : t + 1], before[:, : t + 1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(after[:, t + 1 :], before[:, t + 1 :])


def test_eval_thinking_uses_the_eval_noise_and_the_model_dtype(tmp_path):
    ebt, batch = make(tmp_path, "model.objective.langevin_std=0.5", "model.objective.eval_langevin_std=0")
    init = torch.randn(*batch["targets"].shape, 13)
    first = ebt.think(batch, steps=2, init=init).candidates[-1]
    torch.testing.assert_close(ebt.think(batch, steps=2, init=init).candidates[-1], first, atol=0, rtol=0)
    noisy = ebt.think(batch, steps=2, init=init, training=True).candidates[-1]
    assert not torch.allclose(noisy, first)  # training thinks with the training noise
    ebt.double()
    assert ebt.initial_candidate(batch).dtype == torch.float64
    denoise, batch = make(tmp_path, "data=digits_denoise", "model.objective.init=input")
    denoise.double()
    assert denoise.initial_candidate(batch).dtype == torch.float64
    assert ebt.think(ebt.task.make_batch("val", 0, 2), steps=1).candidates[-1].dtype == torch.float64


def test_max_change_bounds_each_step_like_the_reference(tmp_path):
    ebt, batch = make(tmp_path, "model.objective.max_change=0.01", "model.objective.alpha=1000")
    init = torch.randn(*batch["targets"].shape, 13)
    step = ebt.think(batch, steps=1, init=init).candidates[-1] - init
    assert step.abs().max() <= 0.01 + 1e-6
    assert torch.isclose(step.abs().max(), torch.tensor(0.01))  # alpha 1000 saturates the bound somewhere
    ebt.config.step_rule.max_change = None
    free = ebt.think(batch, steps=1, init=init).candidates[-1] - init
    assert free.abs().max() > 0.01
    with pytest.raises(ConfigError, match="grad_clamp and model.objective.max_change"):
        make(tmp_path, "model.objective.max_change=0.01", "model.objective.grad_clamp=1")


def test_kernels_on_the_command_line_beat_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EBT_KERNELS", "triton")
    cfg = compose_config(["model/objective=ebt", "model.dim=32", "kernels=torch"], tmp_path)
    ebt = build_lit_model(cfg, build_task(cfg)).objective
    assert ebt.config.speed.kernels == "torch" and ebt.backend(torch.device("cpu")) == "torch"
    assert compose_config(["model/objective=ebt"], tmp_path).kernels == "triton"  # the default reads it


def test_triton_kernels_that_cannot_run_are_refused_when_the_model_is_built(monkeypatch, tmp_path):
    monkeypatch.setattr(dispatch, "interpreter_on", lambda: False)
    monkeypatch.setattr(dispatch, "gpu_driver_status", lambda: (False, "no CUDA device is available"))
    with pytest.raises(ConfigError, match="kernels=triton: kernels backend 'triton' cannot run here: no CUDA"):
        make(tmp_path, "kernels=triton")
