"""EBT objective: second-order gradients, thinking semantics, context cache, divergence errors."""

import pytest
import torch

from ebt.build import build_lit_model, build_task
from ebt.errors import ThinkingDivergedError
from tests.utils import compose_config

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
    ebt.cache_context = False
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
