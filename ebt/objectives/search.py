"""Best-of-N thinking (System 2 search): think from N initial candidates, keep the lowest final energy.

For each step count, the EBT thinks from ``N`` independent initial candidates (fresh noise; the same batch repeated
``N`` times) and keeps, per energy element (each position of the autoregressive model, each sample otherwise), the
candidate with the lowest energy after its ``S`` steps. Compute per prediction: ``N * S`` forward passes (each step
is one forward + its backward to the candidate), plus ``N`` energy evaluations of the final candidates when ``N > 1``.
"""

import torch

from ebt.objectives.ebt import EBT


def forward_passes(steps: float, best_of: int) -> float:
    return best_of * steps + (best_of if best_of > 1 else 0)


def _repeat(batch: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    return {k: v.repeat(n, *([1] * (v.dim() - 1))) for k, v in batch.items()}


def think_best_of(ebt: EBT, batch: dict[str, torch.Tensor], steps: list[int], best_of: int,
                  energy_tol: float | None = None, langevin_std: float = 0.0) -> dict[int, dict[str, torch.Tensor]]:
    """For each step count in ``steps``: the best-of-``best_of`` candidate, its energy and steps used."""
    b = next(iter(batch.values())).shape[0]
    horizon = max(steps)
    thought = ebt.think(_repeat(batch, best_of), steps=horizon, langevin_std=langevin_std, energy_tol=energy_tol,
                        final_energy=True, keep=set(steps))
    results = {}
    for s in steps:
        candidates = thought.candidates[s].detach().unflatten(0, (best_of, b))  # (N, B, ...)
        energy = thought.energies[s].unflatten(0, (best_of, b))  # (N, B) or (N, B, T)
        best = energy.argmin(dim=0)  # (B,) or (B, T)
        index = best.reshape(1, *best.shape, *([1] * (candidates.dim() - best.dim() - 1)))
        chosen = candidates.gather(0, index.expand(1, *candidates.shape[1:]))[0]
        used = thought.steps_used.unflatten(0, (best_of, b)).float().mean() if thought.steps_used is not None \
            else torch.tensor(float(s))
        results[s] = {"prediction": chosen, "energy": energy.gather(0, best[None])[0].mean(),
                      "steps_used": used if energy_tol is not None else torch.tensor(float(s))}
    return results
