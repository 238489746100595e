"""Supervising the energy landscape itself: a contrastive term that puts the right answer below a wrong one.

The EBT's training loss scores where thinking *ends* (the task loss of each step's prediction); nothing asks the
energy of the right answer to be lower than the energy of a wrong one, so the final energy need not rank candidates,
and best-of-N by lowest energy (or thinking past the trained step count) has nothing to go on. IRED (Du, Mao,
Tenenbaum, "Learning Iterative Reasoning through Energy Diffusion", ICML 2024; reference code
https://github.com/yilundu/ired_code_release at commit 9c3538d1, ``diffusion_lib/denoising_diffusion_pytorch_1d.py``,
``supervise_energy_landscape``) adds a noise-contrastive term for exactly this:

    L_contrast = -log( exp(-E(x, y+)) / (exp(-E(x, y+)) + exp(-E(x, y-))) ) = softplus(E(x, y+) - E(x, y-))

per energy element (each position of an autoregressive model, each sample otherwise), averaged, and added to the
loss times ``weight`` (IRED: 0.05 for Sudoku, 0.5 for its continuous tasks). With ``count = N > 1`` negatives it is
the InfoNCE loss of Implicit BC (Florence et al., "Implicit Behavioral Cloning", CoRL 2021): the cross-entropy of
picking the target among it and N counter-examples by lowest energy,

    L_contrast = -log( exp(-E(x, y+)) / (exp(-E(x, y+)) + sum_j exp(-E(x, y-_j))) )

(N = 1 is the softplus above, computed as such).

* ``y+`` is the target as a candidate: the target vector (continuous), or logits ``positive_logit * one_hot(target)``
  (discrete; softmax of that puts ``e^c / (e^c + V - 1)`` on the right token). Positions the task does not score
  (``IGNORE_INDEX``, masked continuous positions) take the negative's values, so only scored positions differ.
* ``y-`` (``negatives``): ``corrupt`` is IRED's choice for discrete tasks: the target with a random ``corrupt``
  fraction of scored positions replaced by uniformly drawn tokens (at least one per row), or, for continuous tasks,
  the target plus Gaussian noise of standard deviation ``corrupt``; ``prediction`` is the classic contrastive
  divergence negative: the step's own final candidate (detached), the wrong answers the model actually produces;
  with ``prediction_steps = n`` it is the candidate after ``n`` steps of evaluation-time thinking instead (e.g. 8-32:
  the over-optimised answers that best-of-N and long thinking must reject; no gradient flows through them).

Deviations from IRED: one landscape (IRED trains one per noise level of its diffusion schedule and evaluates the
energies of noised samples ``q_sample(y, t)``; here candidates are compared clean, at the training step count's
time index), and the ``prediction`` negative is offered next to IRED's corruptions.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ebt.errors import ConfigError
from ebt.objectives.base import scored_positions
from ebt.tasks.base import Task

NEGATIVES = ("corrupt", "prediction")


@dataclass
class Contrastive:
    """The contrastive energy term's options (``model.objective.contrastive_*``)."""

    weight: float = 0.0  # 0: off
    negatives: str = "corrupt"  # corrupt | prediction
    corrupt: float = 0.05  # discrete: fraction of scored positions replaced; continuous: noise std
    positive_logit: float = 5.0  # discrete: the target's logit in y+ (others 0)
    count: int = 1  # negatives per sample: 1 (IRED's softplus) or N > 1 (InfoNCE over N corruptions)
    prediction_steps: int | None = None  # negatives=prediction: think this many steps for the negative (null: the
    # training step's own final candidate)

    def __post_init__(self) -> None:
        if not self.weight >= 0:
            raise ConfigError(f"model.objective.contrastive_weight must be >= 0 (0: off), got {self.weight}")
        if self.negatives not in NEGATIVES:
            raise ConfigError(f"model.objective.contrastive_negatives={self.negatives!r} is not one of "
                              f"{', '.join(NEGATIVES)}")
        if not self.corrupt > 0:
            raise ConfigError(f"model.objective.contrastive_corrupt must be > 0, got {self.corrupt}")
        if not self.positive_logit > 0:
            raise ConfigError(f"model.objective.contrastive_positive_logit must be > 0, got {self.positive_logit}")
        if self.count < 1:
            raise ConfigError(f"model.objective.contrastive_count must be >= 1, got {self.count}")
        if self.prediction_steps is not None and (self.negatives != "prediction" or self.prediction_steps < 1):
            raise ConfigError("model.objective.contrastive_prediction_steps is the thinking steps of the prediction "
                              "negative: an integer >= 1 with contrastive_negatives=prediction (or null)")
        if self.count > 1 and self.negatives == "prediction":
            raise ConfigError("model.objective.contrastive_negatives=prediction gives one negative per sample (its "
                              "final candidate); contrastive_count > 1 needs contrastive_negatives=corrupt")


def _keep_unscored(candidate: torch.Tensor, reference: torch.Tensor, scored: torch.Tensor | None) -> torch.Tensor:
    """``candidate`` at scored positions, ``reference`` elsewhere."""
    if scored is None:
        return candidate
    return torch.where(scored[..., None], candidate, reference)


def positive_candidate(task: Task, batch: dict[str, torch.Tensor], like: torch.Tensor,
                       options: Contrastive) -> torch.Tensor:
    """The target as a candidate shaped like ``like`` (a candidate the model produced), unscored positions copied."""
    targets, scored = batch["targets"], scored_positions(task, batch)
    if task.kind == "continuous":
        return _keep_unscored(targets.to(like.dtype), like, scored)
    if task.kind == "classes":
        return F.one_hot(targets, like.shape[-1]).to(like.dtype) * options.positive_logit
    one_hot = F.one_hot(targets.clamp_min(0), like.shape[-1]).to(like.dtype) * options.positive_logit
    return _keep_unscored(one_hot, like, scored)


def corrupted_candidate(task: Task, batch: dict[str, torch.Tensor], positive: torch.Tensor,
                        options: Contrastive) -> torch.Tensor:
    """IRED's negative: the positive with a fraction of scored positions set to random tokens (at least one per row),
    or with Gaussian noise (continuous)."""
    scored = scored_positions(task, batch)
    if task.kind == "continuous":
        return _keep_unscored(positive + options.corrupt * torch.randn_like(positive), positive, scored)
    size = positive.shape[-1]
    targets = batch["targets"]
    if task.kind == "classes":  # one label per sample: always replaced by a different class
        shift = torch.randint(1, size, targets.shape, device=targets.device)
        return F.one_hot((targets + shift) % size, size).to(positive.dtype) * options.positive_logit
    scored = scored if scored is not None else torch.ones_like(targets, dtype=torch.bool)
    draw = torch.rand(targets.shape, device=targets.device)
    flip = (draw < options.corrupt) & scored
    # at least one corrupted position per row that has any: the scored position with the smallest draw
    first = torch.where(scored, draw, torch.full_like(draw, 2.0)).argmin(dim=-1, keepdim=True)
    flip = flip | (torch.zeros_like(flip).scatter_(-1, first, True) & scored)
    shift = torch.randint(1, size, targets.shape, device=targets.device)  # a different token, never the target
    wrong = (targets.clamp_min(0) + shift) % size
    tokens = torch.where(flip, wrong, targets.clamp_min(0))
    return _keep_unscored(F.one_hot(tokens, size).to(positive.dtype) * options.positive_logit, positive, scored)


def contrastive_loss(energy_positive: torch.Tensor, energy_negatives: list[torch.Tensor],
                     weights: torch.Tensor | None) -> torch.Tensor:
    """``softplus(E+ - E-)`` (one negative) or InfoNCE ``logsumexp(-E+, -E-_1, ..) + E+`` (several), averaged over
    energy elements (per-position elements weighted by ``weights``)."""
    positive = energy_positive.float()
    if len(energy_negatives) == 1:
        loss = F.softplus(positive - energy_negatives[0].float())
    else:
        logits = -torch.stack([positive, *(e.float() for e in energy_negatives)])
        loss = torch.logsumexp(logits, dim=0) - logits[0]
    if weights is None:
        return loss.mean()
    weights = weights.to(loss.dtype)
    return (loss * weights).sum() / weights.sum().clamp_min(1)
