"""Thinking under Langevin noise: what the loop returns is what it scored.

* ``energy_tol``: an element that has stopped stays where it stopped (the noise does not move it either);
* outside training ``Thought.energies[i]`` is the energy of ``Thought.candidates[i]`` (not of the perturbed point the
  step differentiated), so best-of-N reads the same s-step result from a call of any length.
"""

import torch

from ebt.objectives.search import think_best_of
from tests.test_ebt import make


def test_stopped_predictions_do_not_move_under_noise(tmp_path):
    ebt, batch = make(tmp_path)
    ebt.eval()
    torch.manual_seed(0)
    thought = ebt.think(batch, steps=6, langevin_std=0.3, energy_tol=1e9)  # everything stops after step 0
    assert torch.equal(thought.steps_used, torch.ones_like(thought.steps_used))
    assert (thought.candidates[1] - thought.candidates[0]).abs().max() > 0  # the one step taken moved it
    for before, after in zip(thought.candidates[1:], thought.candidates[2:], strict=False):
        assert torch.equal(before, after)


def test_an_element_stops_where_it_stopped_while_others_keep_moving(tmp_path):
    ebt, batch = make(tmp_path)
    ebt.eval()
    torch.manual_seed(0)
    tol = 1e-3
    thought = ebt.think(batch, steps=8, langevin_std=0.05, energy_tol=tol)
    used = thought.steps_used.long()
    assert used.min() < used.max() or used.max() < 8  # some element stopped early
    for (b, t), n in ((idx, int(used[idx])) for idx in map(tuple, torch.nonzero(used < 8).tolist())):
        stopped = thought.candidates[n][b, t]
        for later in thought.candidates[n + 1:]:
            assert torch.equal(later[b, t], stopped)


def test_recorded_energies_are_the_clean_energies_of_the_returned_candidates(tmp_path):
    ebt, batch = make(tmp_path)
    ebt.eval()
    torch.manual_seed(0)
    thought = ebt.think(batch, steps=3, langevin_std=0.5, final_energy=True)
    energy = ebt.energy_function(batch)
    for i, (y, recorded) in enumerate(zip(thought.candidates, thought.energies, strict=True)):
        with torch.no_grad():
            torch.testing.assert_close(recorded, energy(y, i))


def test_best_of_n_at_s_steps_does_not_depend_on_how_long_the_call_runs(tmp_path):
    ebt, batch = make(tmp_path)
    ebt.eval()
    results = []
    for steps in ([1], [1, 3]):
        torch.manual_seed(5)
        results.append(think_best_of(ebt, batch, steps, best_of=4, langevin_std=0.5)[1])
    short, long = results
    torch.testing.assert_close(short["energies"], long["energies"])
    assert torch.equal(short["prediction"], long["prediction"])
