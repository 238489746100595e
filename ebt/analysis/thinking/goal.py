"""Does thinking longer help? The goal tests of docs/thinking_converges.md over seeds, with bootstrap intervals:
``scripts/thinking_goal.py 'runs=[RUN0,...,RUN4]' out=OUT``.

Options (``key=value``; ``--help`` lists the defaults): ``runs`` (one per seed: the ``thinking/`` folder that
``scripts/think.py`` wrote for that seed's EBT, or the run folder holding it; evaluated with ``baseline_ckpt=`` and
``looped_ckpt=`` for the comparisons with the predictor and the looped predictor), ``out`` (required), ``select_on``
(default ``val``), ``metric`` / ``metric_mode`` (another column than the task's metric), ``draws`` (bootstrap
resamples, default 10000), ``level`` (default 0.95), ``min_gain`` (default 0.10: the relative gain the held-out
split must reach at the chosen step count), ``seed`` (of the bootstrap, default 0).

Per seed, every quantity is a relative change ``sign * (value - base) / |base|`` (positive = better, whatever the
metric's direction; :func:`ebt.analysis.thinking.selection.relative_change`), and nothing is chosen on the split it
is read on except where a row says *in-sample*:

* ``longest``: best-of-1 at the most steps evaluated against the trained step count. The curve *does not get worse*
  when the interval's upper end is >= 0.
* ``chosen_steps``: best-of-1 at the step count chosen on ``select_on`` (among best-of-1 settings) against the
  trained count. Met when the mean is >= ``min_gain`` and the interval's lower end is > 0.
* ``best_of``: at that chosen step count, best-of-N (the largest N evaluated) against best-of-1. Met when the lower
  end is > 0.
* ``vs_predictor``, ``vs_looped``: the EBT at its chosen setting (any best-of-N and steps, chosen on ``select_on``)
  against the predictor (one pass) and against the looped predictor at the loops chosen on ``select_on`` among those
  with at most as many forward passes as the EBT's setting (equal compute or less). Met when the lower end is > 0.

Interval: the mean over seeds of the per-seed change, and the ``level`` percentile interval of the means of ``draws``
resamples of the seeds with replacement (with 5 seeds a resample has at most 126 distinct means: the interval is
coarse, and with fewer than 3 seeds it is not reported). Writes ``goal.csv`` (split, test, mean, low, high, seeds,
met, detail) and ``goal.md``.
"""

import math
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from ebt.analysis.plotting import markdown_table, write_csv, write_text
from ebt.analysis.thinking.selection import (
    fixed_step_change,
    lookup,
    relative_change,
    select,
    setting_label,
    thinking_improvement,
)
from ebt.analysis.thinking.think_seeds import load_seeds, metric_option
from ebt.errors import ConfigError, DataError
from ebt.options import path_list

DEFAULTS = {"runs": None, "out": None, "select_on": "val", "metric": None, "metric_mode": None, "draws": 10000,
            "level": 0.95, "min_gain": 0.10, "seed": 0}
MIN_SEEDS = 3  # fewer seeds: no interval
TESTS = ("longest", "chosen_steps", "best_of", "vs_predictor", "vs_looped")
COLUMNS = ["split", "test", "mean", "low", "high", "seeds", "met", "detail"]


def _value(row: dict[str, Any] | None) -> float:
    return row["value"] if row is not None else math.nan


def seed_changes(meta: dict[str, Any], rows: list[dict[str, Any]], select_on: str) -> dict[tuple[str, str], tuple]:
    """One seed's ``(change, detail)`` per ``(split, test)``; ``longest`` and ``chosen_steps`` are
    :func:`~ebt.analysis.thinking.selection.fixed_step_change` and ``thinking_improvement`` over best-of-1."""
    mode, trained_steps = meta["metric_mode"], meta["trained_steps"]
    fixed = [r for r in rows if r["mode"] == "fixed"]
    if not fixed:
        raise DataError(f"{meta['task']}: no fixed-step EBT rows in the thinking table")
    longest = max(int(r["steps"]) for r in fixed)
    widest = max(int(r["best_of"]) for r in fixed)
    steps_chosen = select(rows, "value", mode, select_on=select_on, modes=("fixed",), keep=lambda r: r["best_of"] == 1)
    improvement = thinking_improvement(rows, "value", mode, trained_steps, select_on=select_on,
                                       keep=lambda r: r["mode"] == "fixed" and r["best_of"] == 1)
    chosen = select(rows, "value", mode, select_on=select_on)
    passes = float(chosen["forward_passes"]) if chosen is not None else math.nan
    loops = select(rows, "value", mode, select_on=select_on, modes=("loops",),  # at most the EBT's compute
                   keep=lambda r: float(r["forward_passes"]) <= passes)
    out: dict[tuple[str, str], tuple] = {}
    for split, change in fixed_step_change(rows, "value", mode, trained_steps, longest).items():
        out[split, "longest"] = (change, f"{longest} vs {trained_steps} steps")
    for split, found in improvement.items():
        out[split, "chosen_steps"] = (found["improvement"], f"{found['setting']} vs {trained_steps} steps")
    for split in dict.fromkeys(r["split"] for r in fixed):
        if steps_chosen is not None and widest > 1:
            base = lookup(rows, split, steps_chosen)
            wide = lookup(rows, split, {"mode": "fixed", "best_of": widest, "steps": steps_chosen["steps"]})
            out[split, "best_of"] = (relative_change(_value(base), _value(wide), mode),
                                     f"best-of-{widest} vs best-of-1 at {steps_chosen['steps']} steps")
        ebt = lookup(rows, split, chosen)
        predictor = next((r for r in rows if r["split"] == split and r["mode"] == "predictor"), None)
        if predictor is not None:
            out[split, "vs_predictor"] = (relative_change(_value(predictor), _value(ebt), mode),
                                          f"EBT {setting_label(chosen)} vs 1 pass")
        if loops is not None:
            out[split, "vs_looped"] = (relative_change(_value(lookup(rows, split, loops)), _value(ebt), mode),
                                       f"EBT {setting_label(chosen)} vs {setting_label(loops)}")
    return out


def bootstrap_interval(values: list[float], *, draws: int, level: float, seed: int) -> tuple[float, float]:
    """The ``level`` percentile interval of the mean over resamples of ``values`` (NaN with < MIN_SEEDS)."""
    if len(values) < MIN_SEEDS:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.asarray(values)[rng.integers(0, len(values), size=(draws, len(values)))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def met(test: str, mean: float, low: float, high: float, min_gain: float) -> str:
    """``yes`` / ``no`` by the test's rule (``n/a`` without an interval)."""
    if math.isnan(low):
        return "n/a"
    if test == "longest":
        return "yes" if high >= 0 else "no"
    if test == "chosen_steps":
        return "yes" if mean >= min_gain and low > 0 else "no"
    return "yes" if low > 0 else "no"


def goal_rows(paths: list[Path], *, select_on: str = "val", metric: tuple[str, str] | None = None, draws: int = 10000,
              level: float = 0.95, min_gain: float = 0.10, seed: int = 0) -> tuple[dict[str, Any], list[dict]]:
    """``(meta, rows of goal.csv)`` over the seeds in ``paths``."""
    seeds = load_seeds(paths, select_on, metric)
    meta = seeds[0][0]
    changes = [seed_changes(m, rows, select_on) for m, rows in seeds]
    keys = sorted({k for c in changes for k in c}, key=lambda k: (k[0] != select_on, k[0], TESTS.index(k[1])))
    out = []
    for split, test in keys:
        values = [c[split, test][0] for c in changes if (split, test) in c and not math.isnan(c[split, test][0])]
        if not values:
            continue
        mean = float(np.mean(values))
        low, high = bootstrap_interval(values, draws=draws, level=level, seed=seed)
        in_sample = split == select_on and test in ("chosen_steps", "vs_predictor", "vs_looped")
        details = "; ".join(dict.fromkeys(c[split, test][1] for c in changes if (split, test) in c))
        out.append({"split": split, "test": test, "mean": mean, "low": low, "high": high, "seeds": len(values),
                    "met": met(test, mean, low, high, min_gain) + (" (in-sample)" if in_sample else ""),
                    "detail": details})
    return meta, out


def change_cell(mean: float, low: float, high: float) -> str:
    """``+27.1% [+22.0%, +31.9%]`` (the interval left out where undefined; empty without a mean)."""
    if math.isnan(mean):
        return ""
    interval = f" [{100 * low:+.1f}%, {100 * high:+.1f}%]" if not math.isnan(low) else ""
    return f"{100 * mean:+.1f}%{interval}"


def _change(row: dict[str, Any]) -> str:
    return change_cell(*(float(row[k]) for k in ("mean", "low", "high")))


def goal_table(rows: list[dict[str, Any]]) -> str:
    """The goal rows as a markdown table (values as floats or as the CSV's strings)."""
    shown = [{"split": r["split"], "test": r["test"], "change": _change(r), "seeds": r["seeds"], "met": r["met"],
              "detail": r["detail"]} for r in rows]
    return markdown_table(shown, ["split", "test", "change", "seeds", "met", "detail"])


def ablation_table(*goals: list[dict[str, Any]], labels: tuple[str, ...], split: str = "ood") -> str:
    """One row per variant (``labels``, in the order of ``goals``: the goal rows of each), one column per test on
    ``split``: the change with its interval and whether it is met."""
    table = []
    for label, rows in zip(labels, goals, strict=True):
        found = {r["test"]: r for r in rows if r["split"] == split}
        table.append({"variant": label, **{t: f"{_change(found[t])} ({found[t]['met']})" if t in found else ""
                                           for t in TESTS}})
    return markdown_table(table, ["variant", *TESTS])


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]], level: float, select_on: str) -> str:
    return (f"{meta['task']}: {meta['metric']} ({meta['metric_mode']}imise), EBT trained with {meta['trained_steps']} "
            f"steps; relative change per seed (positive = better), mean [{100 * level:g} % bootstrap interval] over "
            f"seeds; settings chosen on {select_on}\n\n" + goal_table(rows))


def main(cfg: DictConfig) -> int:
    """The ``scripts/thinking_goal.py`` command (options: the module docstring): 0 when written."""
    runs = path_list(cfg, "runs", "think.py output folders (or the run folders above them), one per seed")
    if not cfg.out:
        raise ConfigError("out= is required: the folder for goal.csv and goal.md")
    if not 0 < float(cfg.level) < 1 or int(cfg.draws) < 100:
        raise ConfigError(f"level={cfg.level} must be in (0, 1) and draws={cfg.draws} >= 100")
    meta, rows = goal_rows(runs, select_on=str(cfg.select_on), metric=metric_option(cfg), draws=int(cfg.draws),
                           level=float(cfg.level), min_gain=float(cfg.min_gain), seed=int(cfg.seed))
    out = Path(str(cfg.out))
    write_csv(rows, out / "goal.csv", COLUMNS)
    text = markdown(meta, rows, float(cfg.level), str(cfg.select_on))
    write_text(out / "goal.md", text + "\n")
    print(text)
    print(f"wrote {out / 'goal.csv'}, {out / 'goal.md'}")
    return 0
