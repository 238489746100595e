"""The EBT's thinking loop: gradient descent on the energy of one batch (:func:`think`, what :meth:`EBT.think` runs).

    y_{i+1} = y_i - alpha_i * bound(dE/dy (y_i + sigma xi_i)),   i = 0 .. S-1

Under Langevin noise the step differentiates the perturbed point ``y_i + sigma xi_i`` (the gradient is taken
there and the step starts from there), but outside training ``Thought.energies[i]`` is ``E(y_i)``, the energy of the
candidate ``Thought.candidates[i]`` that is returned (one extra forward per step): best-of-N and ``energy_tol``
choose and stop by the energy of what they return, so an s-step result does not depend on how long the call runs.
In training the energies are those of the perturbed points (they are only logged). With ``energy_tol`` an element
that has stopped stays exactly where it stopped (neither the step nor the noise moves it).

The loop uses the model's public energy interface only (:mod:`ebt.objectives.energy`:
``energy_function(batch)`` gives ``energy(y, step)`` and ``value_and_grad`` of one batch, with the context stream
computed once and ``dE/dy`` by autograd, ``torch.func.grad`` or one compiled step) and the step rule (``alpha``,
``step_sizes``). Speed (docs/ebt_speed.md): no device value is read per step (finiteness is flagged on the device and
checked once after the loop), fused SDPA is used wherever the candidate's gradient does not cross it (only
whole-target training runs the math backend).
"""

from collections.abc import Collection
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from alt_arch.utils import clear_aux, collect_aux, exact_input_gradients
from ebt.errors import ThinkingDivergedError
from ebt_kernels import candidate_update

if TYPE_CHECKING:
    from ebt.objectives.ebt import EBT
    from ebt.objectives.energy import BatchEnergy


@dataclass
class Thought:
    """The trajectory of one round of thinking (candidates in the candidate space: :meth:`EBT.decode` turns one into
    the task's prediction)."""

    candidates: list[torch.Tensor]  # y_0 .. y_S (y_0 is the initial candidate)
    energies: list[torch.Tensor]  # E(y_0) .. E(y_{S-1}) (+ E(y_S) when requested); (B, T) or (B,)
    steps_used: torch.Tensor | None = None  # per energy element, with energy_tol
    aux: dict[str, torch.Tensor] = field(default_factory=dict)  # training: auxiliary losses (mean over passes)
    aux_metrics: dict[str, torch.Tensor] = field(default_factory=dict)


def think(
    model: "EBT",
    batch: dict[str, torch.Tensor],
    *,
    steps: int,
    training: bool = False,
    langevin_std: float | None = None,
    energy_tol: float | None = None,
    final_energy: bool = False,
    init: torch.Tensor | None = None,
    keep: Collection[int] | None = None,
    start: int = 0,
    energy_function: "BatchEnergy | None" = None,
) -> Thought:
    """Run ``steps`` of gradient descent on the energy from ``init`` (default: the initial candidate); the EBT's
    ``think`` method (``model.think(batch, steps=...)``).

    ``langevin_std``: noise added before each step; default the training noise (``langevin_std``) when
    ``training`` and ``eval_langevin_std`` otherwise. ``keep``: candidate indices to keep (others become ``None``
    in ``Thought.candidates``, so evaluation memory does not grow with the number of steps); default all.
    ``start``: the step index of the first step (what the step and landscape embeddings read).
    ``energy_function``: the energy to descend (default: ``model.energy_function(batch)``; generation passes one
    against its cached context stream, :meth:`BatchEnergy.of_stream`, with ``init``).
    In training, ``Thought.aux`` holds the backbone's auxiliary losses: per part, the mean over every forward
    pass of this call (the context stream and each step's candidate pass; see :func:`alt_arch.utils.record_aux`).
    """
    if langevin_std is None:
        std = model.config.randomisation.langevin_std if training else model.eval_langevin_std
        sigma = model.training_noise() if training else torch.tensor(std)
    else:
        std, sigma = langevin_std, torch.tensor(langevin_std)
    noisy = sigma.requires_grad or std > 0  # a trainable sigma is always applied (it gets a gradient)
    rule, backprop = model.config.step_rule, model.config.backprop
    y = model.initial_candidate(batch) if init is None else init
    if rule.clamp_candidates:
        y = y.clamp(*model.task.valid_range)
    candidates, energies = [y], []
    steps_used, active = None, None
    backtracking = rule.backtrack and not training
    scale, rejected = None, None  # backtracking: per-element step-size factors; the elements whose last step was undone
    # fused SDPA kernels have no double backward: the math backend where the candidate's gradient crosses SDPA
    # (whole-target mode); the two-stream candidate pass has its own attention, and the context stream is
    # differentiated once (the candidate's gradient never flows through it)
    backend = sdpa_kernel(SDPBackend.MATH) if training and not model.autoregressive else nullcontext()
    if training:
        clear_aux(model.backbone)
    kernels = model.backend(y.device)  # resolved (and logged) before the loop
    diverged: list[torch.Tensor] = []  # per step, on the device: checked once after the loop (no host sync)
    with torch.enable_grad(), backend, exact_input_gradients():
        energy_fn = model.energy_function(batch, first_order=not training) \
            if energy_function is None else energy_function
        for i in range(steps):
            if backprop.detach_steps or not y.requires_grad:
                # torch.func.grad needs no leaf: a detached y_i then is no input of the training graph, so its
                # backward skips the (unused) gradient to y_i
                y = y.detach() if model.config.speed.functional_grad else y.detach().requires_grad_()
            if i == 1 and model.config.candidate.sparse:
                y = energy_fn.restrict(y)  # the first step was exact: its largest logits keep moving, alone
            clean = y  # y_i: what candidates[i] holds
            if noisy:
                y = y + sigma * torch.randn_like(y)
            create_graph = training and (not backprop.truncate or i == steps - 1)
            energy, grad = energy_fn.value_and_grad(y, start + i, create_graph)
            diverged.append(non_finite(energy, grad))
            if noisy and not training:  # evaluation records E(y_i) of the returned candidate, not of y_i + sigma xi
                energy = clean_energy(energy_fn, clean, start + i)
            if rule.max_change is not None:  # the reference's bound: |alpha * g| <= max_change per element
                bound = rule.max_change / model.alpha
                grad = grad.clamp(-bound, bound)
            alpha = model.step_sizes(energy, training, start + i)
            if backtracking:
                scale = torch.ones_like(energy) if scale is None else scale
                alpha = alpha * scale
            if energy_tol is not None:
                if active is None:
                    active = torch.ones_like(energy, dtype=torch.bool)
                    steps_used = torch.zeros_like(energy)
                elif i > 0:  # an undone step is no sign of convergence: it retries with half the step
                    moved = (energies[-1] - energy).abs() >= energy_tol
                    active = active & (moved if rejected is None else moved | rejected)
                alpha = alpha * active
                steps_used = steps_used + active
            y = candidate_update(y, grad, expand_like(alpha, y), grad_clamp=rule.grad_clamp, backend=kernels)
            if rule.clamp_candidates:
                y = y.clamp(*model.task.valid_range)
            if backtracking:
                y, scale, rejected = backtrack(energy_fn, clean, y, energy, scale, start + i)
            if active is not None and noisy:  # a stopped element stays where it stopped: no noise-only moves
                y = torch.where(expand_like(active, y).unsqueeze(-1), y, clean)
            if keep is not None and i not in keep:
                candidates[-1] = None  # y_i is no longer needed: the loop holds y_{i+1}
            kept = keep is None or i + 1 in keep or i + 1 == steps
            candidates.append(energy_fn.full(y) if kept else None)  # (topk: a full candidate only where kept)
            energies.append(energy if training else energy.detach())
        if final_energy:
            energies.append(energy_fn(y.detach().requires_grad_(), start + steps).detach())
    raise_if_diverged(diverged, model.alpha)
    aux, aux_metrics = collect_aux(model.backbone) if training else ({}, {})
    return Thought(candidates, energies, steps_used, aux=aux, aux_metrics=aux_metrics)


def backtrack(energy_fn: "BatchEnergy", before: torch.Tensor, after: torch.Tensor, energy_before: torch.Tensor,
              scale: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``step_rule.backtrack``: where the step raised an element's energy (at the same step index), undo it and halve
    that element's step size. Returns the candidate, the new step-size factors and the undone elements."""
    with torch.no_grad():
        rejected = energy_fn(after.detach(), step) > energy_before
    undone = expand_like(rejected, after).unsqueeze(-1)
    return torch.where(undone, before, after), torch.where(rejected, scale / 2, scale), rejected


def clean_energy(energy_fn: "BatchEnergy", y: torch.Tensor, step: int) -> torch.Tensor:
    """``E(y, step)`` without a graph: the energy of the candidate itself (the step differentiated a noisy copy)."""
    with torch.no_grad():
        return energy_fn(y.detach(), step)


def expand_like(alpha: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-energy-element step sizes (B, T) or (B,) as one step size per row of ``y`` (shape ``y.shape[:-1]``)."""
    return alpha.reshape(*alpha.shape, *([1] * (y.dim() - 1 - alpha.dim()))).expand(y.shape[:-1])


def non_finite(energy: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """(2,) bool on the device: whether ``energy`` / ``grad`` hold a non-finite value (no host sync)."""
    return torch.stack([~torch.isfinite(energy).all(), ~torch.isfinite(grad).all()])


def raise_if_diverged(flags: list[torch.Tensor], alpha: torch.Tensor) -> None:
    """One host sync per :meth:`EBT.think`: raise for the first step whose energy or gradient was non-finite."""
    if not flags:
        return
    flags_cpu = torch.stack(flags).cpu()  # (steps, 2)
    if not flags_cpu.any():
        return
    step = int(flags_cpu.any(dim=1).nonzero()[0])
    what = "energy" if flags_cpu[step, 0] else "energy gradient"
    raise ThinkingDivergedError(
        f"non-finite {what} at thinking step {step} (alpha={float(alpha.detach()):.4g}); "
        "lower model.objective.alpha or set model.objective.grad_clamp"
    )
