"""The thinking optimiser's safeguards (``model.objective.alpha_decay``, ``backtrack``, ``clamp_candidates``): each
does what it says, and is off by default."""

import pytest
import torch

from ebt.errors import ConfigError
from tests.test_ebt import make


def step_independent(tmp_path, *extra):
    """An EBT whose energy does not depend on the step index (no time or landscape embedding), in evaluation."""
    ebt, batch = make(tmp_path, *extra)
    assert ebt.time_embedding is None and ebt.landscape_embedding is None
    return ebt.eval(), batch


def test_alpha_decay_divides_step_i_by_one_plus_i_to_the_power(tmp_path):
    ebt, batch = step_independent(tmp_path, "model.objective.alpha_decay=1.0")
    torch.manual_seed(0)
    thought = ebt.think(batch, steps=3)
    energy = ebt.energy_function(batch, first_order=True)
    alpha = float(ebt.alpha.detach())
    for i in range(3):
        y = thought.candidates[i].detach().requires_grad_()
        _, grad = energy.value_and_grad(y, i, create_graph=False)
        torch.testing.assert_close(thought.candidates[i + 1], y.detach() - alpha / (1 + i) * grad)
    with pytest.raises(ConfigError, match="alpha_decay must be >= 0"):
        make(tmp_path, "model.objective.alpha_decay=-1")


def test_backtracking_never_lets_an_elements_energy_rise(tmp_path):
    """With a step size far too large, plain steps raise some positions' energies; backtracking undoes those steps
    (and halves the step there), so each position's energy only falls or stays."""
    overshooting = ("model.objective.alpha=30000", "model.objective.learn_alpha=false")
    plain, batch = step_independent(tmp_path, *overshooting)
    torch.manual_seed(0)
    rises = torch.stack(plain.think(batch, steps=6, final_energy=True).energies).diff(dim=0)
    assert (rises > 1e-6).any()  # the safeguard has something to do

    guarded, _ = step_independent(tmp_path, *overshooting, "model.objective.backtrack=true")
    torch.manual_seed(0)
    thought = guarded.think(batch, steps=6, final_energy=True)
    assert (torch.stack(thought.energies).diff(dim=0) <= 1e-6).all()
    moved = [not torch.equal(a, b) for a, b in zip(thought.candidates, thought.candidates[1:], strict=False)]
    assert any(moved)  # it still thinks: not every step is undone
    torch.manual_seed(0)
    trained = guarded.train().think(batch, steps=2, training=True)  # training: no backtracking, same as plain
    torch.manual_seed(0)
    unguarded = plain.train().think(batch, steps=2, training=True)
    torch.testing.assert_close(trained.candidates[-1], unguarded.candidates[-1])


def test_clamped_candidates_stay_in_the_tasks_valid_range(tmp_path):
    denoise = ("data=digits_denoise", "model.objective.init=input", "model.objective.alpha=1000",
               "model.objective.learn_alpha=false")
    free, batch = step_independent(tmp_path, *denoise)
    outside = [((y < 0) | (y > 1)).any() for y in free.think(batch, steps=3).candidates[1:]]
    assert any(outside)  # unclamped, a large step leaves the pixel range
    clamped, _ = step_independent(tmp_path, *denoise, "model.objective.clamp_candidates=true")
    for y in clamped.think(batch, steps=3).candidates:  # y_0 included
        assert y.min() >= 0 and y.max() <= 1
    with pytest.raises(ConfigError, match="clamp_candidates=true needs a task with a valid range"):
        make(tmp_path, "model.objective.clamp_candidates=true")  # addition: logits have no range
