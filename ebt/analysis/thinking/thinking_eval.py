"""System 2 evaluation of a trained EBT: metric versus thinking compute (behind ``scripts/think.py``).

For every split, number of thinking steps ``S`` and best-of-``N`` (:func:`ebt.objectives.search.think_best_of`):
the metrics of the chosen candidates. Compute is counted in forward passes of the model per prediction: ``N * S``
(each step is one forward + its backward to the candidate), plus ``N`` energy evaluations of the final candidates
when ``N > 1`` (needed to pick one). With the adaptive stop rule (``energy_tol``), ``S`` is the mean number of steps
actually taken.

Thinking improvement (the setting chosen on ``val``, read on every split): :mod:`ebt.analysis.thinking.selection`.

Every value of a row is a ratio of totals over the split's evaluated batches (:mod:`ebt.tasks.metrics`: bits per
byte = total bits / total bytes, never a mean of per-batch ratios), and every batch's noise (initial candidates,
Langevin noise) is seeded from ``(seed, split, batch index)`` (``seed`` default: validation's), so a setting's numbers
do not depend on which settings or splits were evaluated before it, every setting sees the same initial noise per
batch, and the trained setting (best-of-1 at the training step count, the run's ``eval_langevin_std``) equals
``scripts/eval.py`` and the run's final validation (``summary.json``) on the same batches (for an EBT without an
``energy_tol`` of its own, which validation applies and fixed-mode rows do not).

Verifier diagnostics (fixed mode only; :mod:`ebt.analysis.thinking.verifier` defines them): per setting, over every
evaluated sample (not batch means), ``right`` (fraction of right samples), ``energy_auroc`` (does a higher final energy
flag a wrong sample?), ``energy_error_rho`` (Spearman of energy and error), ``samples``, ``right_rule`` and
``verifier_note``; and ``energy_scored``: the mean per-sample final energy over scored positions
(:func:`ebt.objectives.search.sample_energy`; ``energy`` averages every energy element), the energy that
:func:`trajectory_summary` follows along the thinking steps. They reuse the energies thinking computed already (no
extra forward pass).

Trajectory (:func:`trajectory_summary`): per split, best-of-1, fixed mode: how ``energy_scored`` and the metric change
from the fewest to the most steps, in one sentence, e.g. energy falling while the metric worsens after the trained
step count (an over-optimised landscape), or a flat energy (the step size moves nothing).
"""

import math
from collections.abc import Callable
from typing import Any

import torch

from ebt.analysis.thinking.verifier import VerifierStats
from ebt.errors import ConfigError
from ebt.objectives.base import loss_sums
from ebt.objectives.frozen import frozen
from ebt.objectives.search import forward_passes, think_best_of
from ebt.tasks.metrics import EVAL_SEED, MetricSums, forked_rng, mean_sums, seed_batch
from ebt.training.restore import Run


def set_eval_loops(model: torch.nn.Module, loops: int | None) -> int:
    """Set ``eval_loops`` on every looped backbone inside ``model``; returns how many were changed."""
    changed = 0
    for module in model.modules():
        if loops is not None and hasattr(module, "eval_loops") and hasattr(module, "set_progress"):
            module.eval_loops = loops
            changed += 1
    return changed


def evaluate_thinking(run: Run, *, steps: list[int], best_of: list[int], splits: list[str], batches: int,
                      batch_size: int, energy_tol: float | None = None, langevin_std: float | None = None,
                      seed: int = EVAL_SEED,
                      progress: Callable[[int, int, int, int], None] | None = None) -> list[dict[str, Any]]:
    """One row per (split, best_of, steps) setting (+ adaptive rows when ``energy_tol`` is set); fixed-mode rows also
    hold the verifier diagnostics (see the module docstring). Each batch's noise is seeded from ``(seed, split, batch
    index)`` (default: validation's seed); the caller's random stream is left as it was.

    ``progress(settings_done, settings_total, batches_done, batches)`` is called after every batch."""
    ebt, task = run.objective, run.task
    langevin = ebt.eval_langevin_std if langevin_std is None else langevin_std
    modes: list[tuple[str, float | None]] = [("fixed", None)] + ([("adaptive", energy_tol)] if energy_tol else [])
    total = len(splits) * len(best_of) * (len(steps) + (1 if energy_tol else 0))
    rows: list[dict[str, Any]] = []
    with frozen(ebt), forked_rng():
        for split in splits:
            for n in best_of:
                for mode, tol in modes:
                    step_list = steps if mode == "fixed" else [max(steps)]
                    acc = {s: MetricSums() for s in step_list}
                    verifier = {s: VerifierStats(task) for s in step_list} if mode == "fixed" else {}
                    for i in range(batches):
                        batch = task.make_batch(split, i, batch_size)
                        seed_batch(seed, split, i)
                        for s, out in think_best_of(ebt, batch, step_list, n, tol, langevin).items():
                            prediction, b = out["prediction"], out["sample_energy"].shape[0]
                            acc[s].add({**task.metric_sums(prediction, batch),
                                        "loss": loss_sums(task, prediction, batch, ebt.continuous_loss),
                                        "energy": mean_sums(out["energies"].float()),
                                        "steps_used": (out["steps_used"] * b, torch.tensor(b))})
                            if s in verifier:
                                verifier[s].add(out["sample_energy"], prediction, batch)
                        if progress is not None:
                            done = len(rows) + (len(step_list) if i + 1 == batches else 0)
                            progress(done, total, i + 1, batches)
                    for s in step_list:
                        means = acc[s].compute()
                        used = means.pop("steps_used")
                        rows.append({"split": split, "mode": mode, "best_of": n, "steps": s, "steps_used": used,
                                     "forward_passes": forward_passes(used, n),
                                     task.metric: means.pop(task.metric), **means,
                                     **(verifier[s].summary() if s in verifier else {})})
    return rows


def evaluate_split(run: Run, split: str, batches: int, batch_size: int, seed: int = EVAL_SEED) -> dict[str, float]:
    """``objective.evaluate_sums`` over the split's first ``batches`` batches: total sum / total count per metric,
    exactly what the run's validation logs for the same batches. Each batch's noise is seeded from ``(seed, split,
    batch index)`` (default: validation's seed); the caller's random stream is untouched."""
    sums = MetricSums()
    with torch.no_grad(), forked_rng():
        for i in range(batches):
            batch = run.task.make_batch(split, i, batch_size)
            seed_batch(seed, split, i)
            sums.add(run.objective.evaluate_sums(batch))
    return sums.compute()


def evaluate_baseline(run: Run, *, splits: list[str], batches: int, batch_size: int,
                      seed: int = EVAL_SEED) -> list[dict[str, Any]]:
    """The predictor's metric per split at its one forward pass."""
    rows = []
    for split in splits:
        means = evaluate_split(run, split, batches, batch_size, seed)
        rows.append({"split": split, "mode": "predictor", "best_of": 1, "steps": 0, "steps_used": 0.0,
                     "forward_passes": 1.0, run.task.metric: means.pop(run.task.metric), **means})
    return rows


def loop_passes(backbone: torch.nn.Module, loops: int) -> float:
    """Compute of a looped backbone at ``loops`` iterations in forward passes of the same-parameter stack: block
    evaluations ``pre + loops * loop + post`` over its distinct blocks ``pre + loop + post`` (1.0 at one loop)."""
    parts = [getattr(backbone, part, None) for part in ("pre", "loop", "post")]
    if any(part is None for part in parts):
        return math.nan
    pre, loop, post = (len(part) for part in parts)
    return (pre + loops * loop + post) / (pre + loop + post)


def evaluate_loops(run: Run, *, loops: list[int], splits: list[str], batches: int, batch_size: int,
                   seed: int = EVAL_SEED) -> list[dict[str, Any]]:
    """A looped backbone's metric per split at each number of evaluation loops (its kind of thinking longer), with
    its compute in forward passes of the same-parameter stack (:func:`loop_passes`).

    The objective evaluates as it would in validation (an EBT thinks its training steps at every loop count)."""
    rows = []
    for n in loops:
        if not set_eval_loops(run.objective, n):
            raise ConfigError(f"loops={loops} needs a looped backbone (model/backbone=looped); "
                              f"{run.path} has {type(run.objective.backbone).__name__}")
        for split in splits:
            means = evaluate_split(run, split, batches, batch_size, seed)
            rows.append({"split": split, "mode": "loops", "loops": n, "best_of": 1, "steps": 0,
                         "forward_passes": loop_passes(run.objective.backbone, n),
                         run.task.metric: means.pop(run.task.metric), "loss": means.pop("loss", math.nan), **means})
    return rows


def _better(a: float, b: float, sign: float) -> bool:
    """``a`` better than ``b`` by more than rounding (``sign`` +1: larger is better, -1: smaller)."""
    return sign * (a - b) > 1e-6 * max(1.0, abs(a), abs(b))


def trajectory_summary(rows: list[dict[str, Any]], metric: str, mode: str, train_steps: int) -> dict[str, str]:
    """Per split, one sentence on energy vs metric along the thinking steps (best-of-1, fixed mode), e.g.
    ``val: energy falls 1->8 steps (-0.42) while acc worsens after 2 steps (0.91 -> 0.85) (over-optimised ...)``.

    The energy is ``energy_scored`` (``energy`` where absent); it counts as flat when it changes by at most 0.1% of its
    magnitude (or 1e-6)."""
    sign = 1.0 if mode == "max" else -1.0
    out = {}
    for split in dict.fromkeys(r["split"] for r in rows if r["mode"] == "fixed"):
        line = sorted((r for r in rows if (r["split"], r["mode"], r["best_of"]) == (split, "fixed", 1)),
                      key=lambda r: r["steps"])
        if len(line) < 2:
            if line:
                out[split] = f"{split}: one step count ({line[0]['steps']}) evaluated, no trajectory"
            continue
        first, last = line[0], line[-1]
        s0, s1 = first["steps"], last["steps"]
        e0, e1 = (r.get("energy_scored", r["energy"]) for r in (first, last))
        delta = e1 - e0
        trend = "flat" if abs(delta) <= max(1e-3 * max(abs(e0), abs(e1)), 1e-6) else "falls" if delta < 0 else "rises"
        energy_text = f"energy {trend} {s0}->{s1} steps ({delta:+.3g})"
        values = [r[metric] for r in line]
        best = max(range(len(line)), key=lambda i: sign * values[i])  # the first best step count
        s_best = line[best]["steps"]
        if _better(values[best], values[-1], sign):
            verdict = "worsens"
            metric_text = (f"{metric} worsens after {s_best} step{'s' * (s_best != 1)} "
                           f"({values[best]:.4g} -> {values[-1]:.4g} at {s1})")
        elif _better(values[-1], values[0], sign):
            verdict = "improves"
            metric_text = f"{metric} improves ({values[0]:.4g} -> {values[-1]:.4g})"
        else:
            verdict = "flat"
            metric_text = f"{metric} unchanged ({values[0]:.4g} -> {values[-1]:.4g})"
        if trend == "flat":
            note = "energy flat: step size problem?"
        elif trend == "rises":
            note = "energy rises: steps overshoot? step size too large?"
        elif verdict == "worsens":
            past = " past the trained step count" if s_best == train_steps else f" past {s_best} steps"
            note = f"over-optimised landscape: lower energy, worse answers{past}"
        elif verdict == "improves":
            note = "lower energy, better answers"
        else:
            note = "energy moves, answers do not change"
        joint = " while " if trend == "falls" and verdict == "worsens" else ", "
        out[split] = f"{split}: {energy_text}{joint}{metric_text} ({note})"
    return out
