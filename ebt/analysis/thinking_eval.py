"""System 2 evaluation of a trained EBT: metric versus thinking compute (behind ``scripts/think.py``).

For every split, number of thinking steps ``S`` and best-of-``N`` (:func:`ebt.objectives.search.think_best_of`):
the metrics of the chosen candidates. Compute is counted in forward passes of the model per prediction: ``N * S``
(each step is one forward + its backward to the candidate), plus ``N`` energy evaluations of the final candidates
when ``N > 1`` (needed to pick one). With the adaptive stop rule (``energy_tol``), ``S`` is the mean number of steps
actually taken.

Thinking improvement (as in the paper's Sec. 5: how much better the prediction gets from thinking longer):
``(best - trained) / |trained|`` for a metric to maximise (``(trained - best) / |trained|`` to minimise), where
``trained`` is the metric at the training step count with ``N = 1`` and ``best`` the best value over all settings.
"""

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ebt.errors import ConfigError
from ebt.objectives.base import prediction_loss
from ebt.objectives.search import forward_passes, think_best_of
from ebt.training.restore import Run


@contextlib.contextmanager
def frozen(module: torch.nn.Module) -> Iterator[None]:
    """Parameters without gradients (evaluation thinks w.r.t. the candidate only); restored afterwards."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def set_eval_loops(model: torch.nn.Module, loops: int | None) -> int:
    """Set ``eval_loops`` on every looped backbone inside ``model``; returns how many were changed."""
    changed = 0
    for module in model.modules():
        if loops is not None and hasattr(module, "eval_loops") and hasattr(module, "set_progress"):
            module.eval_loops = loops
            changed += 1
    return changed


def _mean(values: list[torch.Tensor]) -> float:
    return float(torch.stack([v.float() for v in values]).mean())


def evaluate_thinking(run: Run, *, steps: list[int], best_of: list[int], splits: list[str], batches: int,
                      batch_size: int, energy_tol: float | None = None, langevin_std: float | None = None,
                      progress: Callable[[int, int, int, int], None] | None = None) -> list[dict[str, Any]]:
    """One row per (split, best_of, steps) setting (+ adaptive rows when ``energy_tol`` is set).

    ``progress(settings_done, settings_total, batches_done, batches)`` is called after every batch."""
    ebt, task = run.objective, run.task
    langevin = ebt.eval_langevin_std if langevin_std is None else langevin_std
    modes: list[tuple[str, float | None]] = [("fixed", None)] + ([("adaptive", energy_tol)] if energy_tol else [])
    total = len(splits) * len(best_of) * (len(steps) + (1 if energy_tol else 0))
    rows: list[dict[str, Any]] = []
    with frozen(ebt):
        for split in splits:
            for n in best_of:
                for mode, tol in modes:
                    step_list = steps if mode == "fixed" else [max(steps)]
                    acc: dict[int, dict[str, list[torch.Tensor]]] = {s: {} for s in step_list}
                    for i in range(batches):
                        batch = task.make_batch(split, i, batch_size)
                        for s, out in think_best_of(ebt, batch, step_list, n, tol, langevin).items():
                            values = dict(task.metrics(out["prediction"], batch))
                            values["loss"] = prediction_loss(task, out["prediction"], batch, ebt.continuous_loss)
                            values |= {"energy": out["energy"], "steps_used": out["steps_used"]}
                            for name, value in values.items():
                                acc[s].setdefault(name, []).append(value)
                        if progress is not None:
                            done = len(rows) + (len(step_list) if i + 1 == batches else 0)
                            progress(done, total, i + 1, batches)
                    for s in step_list:
                        means = {name: _mean(v) for name, v in acc[s].items()}
                        used = means.pop("steps_used")
                        rows.append({"split": split, "mode": mode, "best_of": n, "steps": s, "steps_used": used,
                                     "forward_passes": forward_passes(used, n),
                                     task.metric: means.pop(task.metric), **means})
    return rows


def evaluate_split(run: Run, split: str, batches: int, batch_size: int) -> dict[str, float]:
    """Mean of ``objective.evaluate`` over the split's first ``batches`` batches."""
    values: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for i in range(batches):
            for name, value in run.objective.evaluate(run.task.make_batch(split, i, batch_size)).items():
                values.setdefault(name, []).append(value)
    return {name: _mean(v) for name, v in values.items()}


def evaluate_baseline(run: Run, *, splits: list[str], batches: int, batch_size: int) -> list[dict[str, Any]]:
    """The predictor's metric per split at its one forward pass."""
    rows = []
    for split in splits:
        means = evaluate_split(run, split, batches, batch_size)
        rows.append({"split": split, "mode": "predictor", "best_of": 1, "steps": 0, "steps_used": 0.0,
                     "forward_passes": 1.0, run.task.metric: means.pop(run.task.metric), **means})
    return rows


def evaluate_loops(run: Run, *, loops: list[int], splits: list[str], batches: int,
                   batch_size: int) -> list[dict[str, Any]]:
    """A looped backbone's metric per split at each number of evaluation loops (its kind of thinking longer).

    The objective evaluates as it would in validation (an EBT thinks its training steps at every loop count)."""
    rows = []
    for n in loops:
        if not set_eval_loops(run.objective, n):
            raise ConfigError(f"loops={loops} needs a looped backbone (model/backbone=looped); "
                              f"{run.path} has {type(run.objective.backbone).__name__}")
        for split in splits:
            means = evaluate_split(run, split, batches, batch_size)
            rows.append({"split": split, "mode": "loops", "loops": n, run.task.metric: means.pop(run.task.metric),
                         "loss": means.pop("loss", math.nan)})
    return rows


def thinking_improvement(rows: list[dict[str, Any]], metric: str, mode: str, train_steps: int) -> dict[str, float]:
    """Per split: relative improvement from the training step count (N = 1) to the best setting."""
    sign = 1.0 if mode == "max" else -1.0
    out = {}
    for split in dict.fromkeys(r["split"] for r in rows if r["mode"] != "predictor"):
        ebt_rows = [r for r in rows if r["split"] == split and r["mode"] != "predictor"]
        trained = [r[metric] for r in ebt_rows if r["mode"] == "fixed" and r["best_of"] == 1
                   and r["steps"] == train_steps]
        if not trained:
            continue
        best = max(sign * r[metric] for r in ebt_rows) * sign
        out[split] = sign * (best - trained[0]) / abs(trained[0]) if trained[0] else math.nan
    return out
