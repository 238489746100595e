"""System 2 evaluation of a trained EBT: metric versus thinking compute (behind ``scripts/think.py``).

For every split, number of thinking steps ``S`` and best-of-``N``, the EBT thinks from ``N`` independent initial
candidates (fresh noise; the same batch repeated ``N`` times), and keeps, per energy element (each position of
the autoregressive model, each sample otherwise), the candidate with the lowest energy after its ``S`` steps.

Compute is counted in forward passes of the model per prediction: ``N * S`` (each step is one forward + its
backward to the candidate), plus ``N`` energy evaluations of the final candidates when ``N > 1`` (needed to pick
one). With the adaptive stop rule (``energy_tol``), ``S`` is the mean number of steps actually taken.

Thinking improvement (as in the paper's Sec. 5: how much better the prediction gets from thinking longer):
``(best - trained) / |trained|`` for a metric to maximise (``(trained - best) / |trained|`` to minimise), where
``trained`` is the metric at the training step count with ``N = 1`` and ``best`` the best value over all settings.
"""

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from ebt.build import build_lit_model, build_task
from ebt.checkpoint import check_compatible, load_checkpoint
from ebt.errors import CheckpointError, ConfigError
from ebt.lit_module import LitModel
from ebt.objectives.base import Objective, prediction_loss
from ebt.objectives.ebt import EBT
from ebt.tasks.base import Task


@dataclass
class Run:
    """A trained model restored from its checkpoint (config, task, objective in eval mode)."""

    path: Path
    config: Any
    task: Task
    objective: Objective


def restore_lit_model(checkpoint: dict[str, Any], path: str | Path,
                      data_overrides: Any = None) -> tuple[Any, Task, LitModel]:
    """The config, task and trained ``LitModel`` a ``scripts/train.py`` checkpoint (already loaded) was written from.

    ``data_overrides`` (a mapping) is merged into the stored ``data`` config before the task is built, e.g.
    ``{"task": {"path": "<the corpus' new place>"}}``; unknown keys are refused like on the training command line."""
    config = (checkpoint.get("hyper_parameters") or {}).get("config")
    if not config:
        raise CheckpointError(f"checkpoint {path} stores no training config (hyper_parameters.config); "
                              "it was not written by scripts/train.py")
    cfg = OmegaConf.create(config)
    if data_overrides:
        cfg.data = OmegaConf.merge(cfg.data, OmegaConf.create(data_overrides))
    task = build_task(cfg)
    model = build_lit_model(cfg, task)
    check_compatible(checkpoint["state_dict"], model, path)
    model.load_state_dict(checkpoint["state_dict"])
    return cfg, task, model


def load_run(path: str | Path, data_overrides: Any = None) -> Run:
    """Rebuild the model a checkpoint of ``scripts/train.py`` was written from, with its weights (eval mode)."""
    cfg, task, model = restore_lit_model(load_checkpoint(path), path, data_overrides)
    model.eval()
    return Run(Path(path), cfg, task, model.objective)


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


def _evaluate_split(run: Run, split: str, batches: int, batch_size: int) -> dict[str, float]:
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
        means = _evaluate_split(run, split, batches, batch_size)
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
            means = _evaluate_split(run, split, batches, batch_size)
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
