"""Best-of-N thinking (System 2 search): think from N initial candidates, keep the lowest final energy.

For each step count, the EBT thinks from ``N`` independent initial candidates (fresh noise; the same batch repeated
``N`` times) and keeps, per energy element (each position of the autoregressive model, each sample otherwise), the
candidate with the lowest energy after its ``S`` steps. Compute per prediction: ``N * S`` forward passes (each step
is one forward + its backward to the candidate), plus ``N`` energy evaluations of the final candidates when ``N > 1``.

Per-sample energy (:func:`sample_energy`, what the verifier diagnostics of ``scripts/think.py`` rank samples by): the
(B,) energy itself, or for per-position energies (B, T) the mean over the sample's scored positions
(:func:`scored_positions`: ``targets != IGNORE_INDEX`` for tokens tasks, ``batch["target_mask"]`` where a continuous
task has one, every position otherwise; a row without any scored position falls back to all positions).
"""

import torch

from ebt.objectives.base import scored_positions
from ebt.objectives.ebt import EBT
from ebt.tasks.base import Task


def forward_passes(steps: float, best_of: int) -> float:
    return best_of * steps + (best_of if best_of > 1 else 0)


def _repeat(batch: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    return {k: v.repeat(n, *([1] * (v.dim() - 1))) for k, v in batch.items()}


def sample_energy(energy: torch.Tensor, task: Task, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-sample energy (B,): ``energy`` itself if (B,), else the mean of (B, T) over each row's scored positions."""
    if energy.dim() == 1:
        return energy.float()
    energy = energy.float()
    mask = scored_positions(task, batch)
    if mask is None:
        return energy.mean(dim=-1)
    if mask.shape != energy.shape:
        raise ValueError(f"scored positions {tuple(mask.shape)} do not match the energies {tuple(energy.shape)}")
    mask = mask.to(energy.device)
    count = mask.sum(dim=-1)
    masked = (energy * mask).sum(dim=-1) / count.clamp_min(1)
    return torch.where(count > 0, masked, energy.mean(dim=-1))  # no scored position: all of them


def think_best_of(ebt: EBT, batch: dict[str, torch.Tensor], steps: list[int], best_of: int,
                  energy_tol: float | None = None, langevin_std: float = 0.0) -> dict[int, dict[str, torch.Tensor]]:
    """For each step count in ``steps``: the best-of-``best_of`` candidate (``prediction``), the mean energy of the
    chosen candidates (``energy``), their energies per element (``energies``: (B, T) or (B,)) and per sample
    (``sample_energy``: (B,), see :func:`sample_energy`), and the steps used (``steps_used``)."""
    b = next(iter(batch.values())).shape[0]
    horizon = max(steps)
    thought = ebt.think(_repeat(batch, best_of), steps=horizon, langevin_std=langevin_std, energy_tol=energy_tol,
                        final_energy=True, keep=set(steps))
    results = {}
    for s in steps:
        candidates = thought.candidates[s].detach().unflatten(0, (best_of, b))  # (N, B, ...), candidate space
        energy = thought.energies[s].unflatten(0, (best_of, b))  # (N, B) or (N, B, T)
        best = energy.argmin(dim=0)  # (B,) or (B, T)
        index = best.reshape(1, *best.shape, *([1] * (candidates.dim() - best.dim() - 1)))
        chosen = ebt.decode(candidates.gather(0, index.expand(1, *candidates.shape[1:]))[0])  # decode the best only
        chosen_energy = energy.gather(0, best[None])[0]  # (B,) or (B, T)
        used = thought.steps_used.unflatten(0, (best_of, b)).float().mean() if thought.steps_used is not None \
            else torch.tensor(float(s))
        results[s] = {"prediction": chosen, "energy": chosen_energy.mean(), "energies": chosen_energy,
                      "sample_energy": sample_energy(chosen_energy, ebt.task, batch),
                      "steps_used": used if energy_tol is not None else torch.tensor(float(s))}
    return results
