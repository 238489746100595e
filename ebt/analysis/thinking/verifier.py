"""Is the energy a verifier? Rank statistics of per-sample final energies against per-sample errors.

Over every evaluated sample of one (split, best-of-N, steps) setting (not batch means):

* ``energy_auroc``: the AUROC of the energy as a score for "this sample is wrong": the probability that a random
  wrong sample has a higher energy than a random right one, ties counting 1/2 (Mann-Whitney U over average ranks).
  1 = the energy separates wrong from right perfectly, 0.5 = no better than chance, 0 = perfectly reversed. NaN (with
  a note) when every sample is right or every sample is wrong.
* ``energy_error_rho``: the Spearman rank correlation of energy and error (Pearson correlation of average ranks);
  > 0: higher energy, larger error. NaN (with a note) when energies or errors are all equal or fewer than 2 samples.
* ``right``: the fraction of samples that are right.

Per-sample energy: :func:`ebt.objectives.search.sample_energy` (the (B,) energy, or the mean of per-position energies
over the sample's scored positions). Per-sample error and correctness: the task's own ``task.sample_error(prediction,
batch) -> (B,)`` and ``task.sample_correct(prediction, batch) -> (B,) bool`` when it defines them, else:

* tokens: error = mean cross-entropy over the sample's scored positions; right = every scored token's argmax right;
* classes: error = cross-entropy; right = argmax right;
* continuous: error = the sample's MSE (over ``target_mask`` positions where present); right = error below the median
  error of that (split, setting), so ``right`` is about 0.5 by construction: a relative split, not a threshold.
"""

import math
from typing import Any

import torch
import torch.nn.functional as F

from ebt.objectives.base import scored_positions
from ebt.objectives.search import sample_energy
from ebt.tasks.base import IGNORE_INDEX, Task

__all__ = ["VerifierStats", "auroc", "rankdata", "right_rule", "sample_correct", "sample_energy", "sample_error",
           "spearman"]

MEDIAN_RULE = "right = below-median error"


def rankdata(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a 1-D tensor, tied values sharing their average rank (float64)."""
    x = x.detach().double().flatten().cpu()
    n = x.numel()
    if n == 0:
        return x
    values, order = torch.sort(x, stable=True)
    new = torch.ones(n, dtype=torch.bool)
    new[1:] = values[1:] != values[:-1]
    group = torch.cumsum(new, 0) - 1
    counts = torch.bincount(group).double()
    starts = torch.cumsum(counts, 0) - counts  # 0-based first index of each group of ties
    ranks = torch.empty(n, dtype=torch.float64)
    ranks[order] = (starts + (counts + 1) / 2)[group]
    return ranks


def auroc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """P(score of a random positive > score of a random negative), ties 1/2; NaN without both classes."""
    positive = positive.detach().bool().flatten().cpu()
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(scores)
    u = float(ranks[positive].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman rank correlation of two 1-D tensors; NaN when either is constant or has fewer than 2 values."""
    if x.numel() != y.numel():
        raise ValueError(f"spearman needs equal lengths, got {x.numel()} and {y.numel()}")
    if x.numel() < 2:
        return math.nan
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = float(rx.norm() * ry.norm())
    return float((rx * ry).sum()) / denom if denom > 0 else math.nan


def sample_error(task: Task, prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-sample error (B,): ``task.sample_error`` if defined, else CE (tokens: mean over scored positions) or
    MSE (continuous, over ``target_mask`` positions where present)."""
    if callable(getattr(task, "sample_error", None)):
        return task.sample_error(prediction, batch).detach().float().flatten()
    targets = batch["targets"]
    if task.kind == "tokens":
        ce = F.cross_entropy(prediction.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX,
                             reduction="none").view(targets.shape)
        scored = targets != IGNORE_INDEX
        return (ce * scored).sum(dim=-1) / scored.sum(dim=-1).clamp_min(1)
    if task.kind == "classes":
        return F.cross_entropy(prediction.float(), targets, reduction="none")
    squared = (prediction.float() - targets.float()).square()
    squared = squared.flatten(2).mean(dim=-1) if squared.dim() > 2 else squared  # (B, N): mean over features
    mask = scored_positions(task, batch)
    if mask is None:
        return squared.flatten(1).mean(dim=-1)
    mask = mask.to(squared.device)
    return (squared * mask).sum(dim=-1) / mask.sum(dim=-1).clamp_min(1)


def sample_correct(task: Task, prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """Per-sample correctness (B,) bool: ``task.sample_correct`` if defined, else argmax right (tokens: every scored
    token); ``None`` for a continuous task without it (then: below the median error, see :class:`VerifierStats`)."""
    if callable(getattr(task, "sample_correct", None)):
        return task.sample_correct(prediction, batch).detach().bool().flatten()
    targets = batch["targets"]
    if task.kind == "tokens":
        scored = targets != IGNORE_INDEX
        return ((prediction.argmax(-1) == targets) | ~scored).all(dim=-1)
    if task.kind == "classes":
        return prediction.argmax(-1) == targets
    return None


def right_rule(task: Task) -> str:
    """What ``right`` means for this task (printed with the verifier table)."""
    if callable(getattr(task, "sample_correct", None)):
        return f"right = {type(task).__name__}.sample_correct"
    if task.kind == "tokens":
        return "right = every scored token's argmax right"
    if task.kind == "classes":
        return "right = argmax right"
    return MEDIAN_RULE


class VerifierStats:
    """Collects per-sample energies, errors and correctness of one setting over batches; :meth:`summary` ranks them."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.energies: list[torch.Tensor] = []
        self.errors: list[torch.Tensor] = []
        self.correct: list[torch.Tensor] = []

    def add(self, energy: torch.Tensor, prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        """One batch: per-sample ``energy`` (B,) of ``prediction``."""
        error = sample_error(self.task, prediction, batch)
        if error.shape != energy.shape:
            raise ValueError(f"per-sample error {tuple(error.shape)} does not match energy {tuple(energy.shape)}")
        self.energies.append(energy.detach().float().cpu())
        self.errors.append(error.cpu())
        correct = sample_correct(self.task, prediction, batch)
        if correct is not None:
            self.correct.append(correct.cpu())

    def summary(self) -> dict[str, Any]:
        """``samples``, ``right``, ``energy_auroc``, ``energy_error_rho``, ``energy_scored`` (mean per-sample energy),
        ``right_rule`` and ``verifier_note`` (why a value is NaN; empty otherwise)."""
        energy, error = torch.cat(self.energies), torch.cat(self.errors)
        # a continuous task without its own rule: the better half of this setting's samples
        correct = torch.cat(self.correct) if self.correct else error < torch.quantile(error.double(), 0.5).float()
        notes = []
        if bool(correct.all()) or not bool(correct.any()):
            notes.append(f"all {'right' if bool(correct.all()) else 'wrong'}: AUROC undefined")
        rho = spearman(energy, error)
        if math.isnan(rho):
            constant = "energies" if bool((energy == energy[0]).all()) else "errors"
            notes.append(f"{constant} all equal: rho undefined" if energy.numel() > 1 else "one sample: rho undefined")
        return {"samples": energy.numel(), "right": float(correct.float().mean()),
                "energy_auroc": auroc(energy, ~correct), "energy_error_rho": rho,
                "energy_scored": float(energy.mean()), "right_rule": right_rule(self.task),
                "verifier_note": "; ".join(notes)}
