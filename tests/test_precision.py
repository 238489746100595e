"""Mixed precision: under bf16 autocast the EBT's energies (and its candidate's ``softmax(y) @ W``) are float32, so
``energy_tol`` and best-of-N decide on float32 energies, not on values a few bf16 rounding steps apart."""

import pytest
import torch

from ebt.objectives.search import think_best_of
from ebt.training.build import build_lit_model, build_task
from ebt_kernels import softmax_embed_reference
from tests.utils import compose_config

MODES = {"autoregressive": ["model.objective.tie_candidate_projection=true"],
         "whole_target": ["data=matrix_inverse", "data.task.n=4"]}


def make(tmp_path, mode):
    cfg = compose_config(["model/objective=ebt", "model.dim=16", "model.backbone.n_layers=1", "kernels=torch",
                          *MODES[mode]], tmp_path)
    task = build_task(cfg)
    torch.manual_seed(0)
    return build_lit_model(cfg, task).objective.eval(), task.make_batch("val", 0, 3)


def autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_the_energy_head_runs_in_float32(mode, tmp_path):
    ebt, batch = make(tmp_path, mode)
    outputs = []

    def recorded(fn):
        def call(*args):
            outputs.append(fn(*args))
            return outputs[-1]
        return call

    ebt.backbone.forward = recorded(ebt.backbone.forward)  # whole target
    ebt.backbone.forward_candidates = recorded(ebt.backbone.forward_candidates)  # autoregressive
    y = ebt.initial_candidate(batch)
    with autocast():
        energy = ebt.energy_function(batch)(y, 0)
    h = outputs[-1]  # the backbone's output under autocast
    expected = (h.float() @ ebt.energy_head.weight.float().t()).squeeze(-1)  # float32 arithmetic
    expected = expected if ebt.autoregressive else expected.mean(dim=1)
    assert energy.dtype == torch.float32
    torch.testing.assert_close(energy, expected, rtol=1e-6, atol=1e-7)


def test_the_candidate_embedding_is_a_float32_reduction(tmp_path):
    ebt, batch = make(tmp_path, "autoregressive")
    y = torch.randn(*batch["targets"].shape, ebt.output_size)
    with autocast():
        e = ebt.read_candidate(y, 0)
    assert e.dtype == torch.float32
    torch.testing.assert_close(e, softmax_embed_reference(y, ebt.encoder.weight), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_thinking_training_and_best_of_see_float32_energies(mode, tmp_path):
    ebt, batch = make(tmp_path, mode)
    tol = 1e-3
    with autocast():
        thought = ebt.think(batch, steps=3, energy_tol=tol, final_energy=True)
        best = think_best_of(ebt, batch, [1, 2], best_of=3, energy_tol=tol)
        ebt.train()
        loss, logs = ebt.loss(batch)
    assert all(e.dtype == torch.float32 for e in thought.energies)
    # energy_tol decided on these float32 energies: a position stays active while every change so far is >= tol
    energies = torch.stack(thought.energies[:3])
    changes = (energies[1:] - energies[:-1]).abs() >= tol
    active = torch.cat([torch.ones_like(changes[:1]), torch.cumprod(changes, dim=0).bool()])
    torch.testing.assert_close(thought.steps_used, active.sum(dim=0).to(thought.steps_used.dtype))
    for result in best.values():
        assert result["energies"].dtype == torch.float32 and result["sample_energy"].dtype == torch.float32
    assert logs["energy_step0"].dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert ebt.energy_head.weight.grad is not None and ebt.energy_head.weight.grad.dtype == torch.float32
