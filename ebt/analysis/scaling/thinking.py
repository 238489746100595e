"""Thinking against scale: does the val-chosen thinking gain of a grid's EBTs grow with their size? (the EBT paper's
"thinking helps more at larger scale"), ``scripts/scaling.py dirs=GRID x=params thinking=true``.

Each EBT job of the grid is first evaluated by ``scripts/think.py ckpt=JOB`` (its ``thinking/`` folder: the metric at
each thinking setting on every split). Per job (one size, one seed), :func:`ebt.analysis.thinking.selection.
thinking_improvement` gives, per split, the relative change of the metric from the trained setting (best-of-1 at the
training step count) to the setting chosen on ``select_on`` (``val``): positive = better. On ``val`` that gain is
in-sample (>= 0 by construction); on every other split it is held out, so only those are evidence.

Reported per split and size: the mean gain over seeds with its 95 % t-interval (:func:`ebt.analysis.stats.
mean_interval`), the seeds' chosen settings; per split the **trend**, the least-squares slope of the gain (in
percentage points) against ``log10 X`` over the size means, with a 95 % bootstrap interval over seeds (each draw
resamples every size's seeds with replacement: the draws and variance correction of :mod:`ebt.analysis.scaling.fit`,
without its floor at 0, since a gain may be negative). "Thinking helps more at scale" is a positive trend whose
interval excludes 0.

Jobs without a ``thinking/`` folder (predictors, EBTs not evaluated yet) are left out: the EBT ones with one stderr
line naming the command that evaluates them. A job whose gain on a split is undefined (that split lacks the chosen
setting, or its trained value is 0) is left out of that split, also with one stderr line, so the means, seed counts,
trends and draws of a split all use the same jobs.
"""

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ebt.analysis.plotting import cell, cell_float, markdown_table, pyplot, save_figure, write_csv, write_text
from ebt.analysis.scaling import fit as fits
from ebt.analysis.scaling.fit import Series, seed_means
from ebt.analysis.scaling.runs import Run, size_x
from ebt.analysis.stats import mean_interval
from ebt.analysis.thinking.selection import thinking_improvement, trained_row
from ebt.analysis.thinking.think_seeds import load_seed
from ebt.errors import DataError

THINK_COMMAND = "python scripts/think.py ckpt={job}"


def _has_thinking(run: Run) -> bool:
    return (run.job.path / "thinking" / "thinking.csv").is_file()


def thinking_runs(runs: list[Run]) -> list[Run]:
    """The runs evaluated by ``think.py``; the other EBT runs named on stderr, none at all a :class:`DataError`."""
    evaluated = [r for r in runs if _has_thinking(r)]
    thinking_objectives = {r.objective for r in evaluated}
    missing = [r for r in runs if r.objective in thinking_objectives and not _has_thinking(r)]
    if missing:
        print(f"left out: {len(missing)} {'/'.join(sorted(thinking_objectives))} jobs without thinking/ (e.g. "
              f"{THINK_COMMAND.format(job=missing[0].job.path)})", file=sys.stderr, flush=True)
    if not evaluated:
        example = next((r for r in runs if r.objective != "predict"), runs[0])
        raise DataError("thinking=true: no job of the grid has a thinking/ folder; evaluate each EBT first, e.g. "
                        + THINK_COMMAND.format(job=example.job.path))
    return evaluated


Settings = dict[tuple[str, str], list[str]]  # (split, size) -> the setting each seed chose


def gains(runs: list[Run], axis: str, params: str, select_on: str) -> tuple[str, dict[str, list[Series]], Settings]:
    """``(metric, {split: one Series per size of the gain in %}, chosen settings)``."""
    per_split: dict[str, dict[str, Series]] = {}
    settings: Settings = {}
    metric: str | None = None
    undefined = []
    for run in sorted(runs, key=lambda r: (r.size, r.seed)):
        folder = run.job.path / "thinking"
        meta, rows = load_seed(run.job.path)
        if metric not in (None, meta["metric"]):
            raise DataError(f"{folder}: its thinking table scores {meta['metric']}, another job's {metric}; pass one "
                            "grid of one task")
        metric, trained = meta["metric"], meta["trained_steps"]
        if trained_row(rows, select_on, trained) is None:
            raise DataError(f"{folder}: no {select_on} row at the trained setting (best-of-1, {trained} steps); rerun "
                            f"scripts/think.py on {select_on} with {trained} among steps=")
        found = thinking_improvement(rows, "value", meta["metric_mode"], trained, select_on=select_on)
        x = size_x(run, axis, params)
        for split, entry in found.items():
            if not math.isfinite(entry["improvement"]):
                undefined.append(f"{run.job.path.name} on {split}")
                continue
            series = per_split.setdefault(split, {}).setdefault(run.size, Series(run.size, {0: x}))
            if run.seed in series.values:
                raise DataError(f"two evaluated jobs of {run.size} seed {run.seed}: pass one grid")
            series.values[run.seed] = {0: 100.0 * entry["improvement"]}
            settings.setdefault((split, run.size), []).append(entry["setting"])
    if undefined:
        print(f"left out: no gain (the chosen setting missing, or a trained value of 0) for {', '.join(undefined)}",
              file=sys.stderr, flush=True)
    return str(metric), {split: list(sizes.values()) for split, sizes in per_split.items()}, settings


def trend(sizes: list[Series], draw: dict[str, list[int]] | None = None) -> float:
    """The least-squares slope of the mean gain against ``log10 X`` (percentage points per decade) over ``sizes``
    (``draw[label]``: the seeds to average, a bootstrap draw; default all); NaN with fewer than 2 sizes."""
    points = [p for s in sizes for p in seed_means(s, draw[s.label] if draw else None, positive=False)]
    x, y = np.array(points, dtype=float).T
    return float(np.polyfit(np.log10(x), y, 1)[0]) if len(set(x.tolist())) >= 2 else math.nan


def summarise(series: dict[str, list[Series]], settings: Settings, select_on: str, draws: int,
              seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(per split and size rows, per split trend rows)``."""
    rows = []
    for split, sizes in series.items():
        for s in sorted(sizes, key=lambda s: s.x[0]):
            values = [v[0] for v in s.values.values()]
            mean, half = mean_interval(values)
            rows.append({"split": split, "held_out": split != select_on, "size": s.label, "x": s.x[0],
                         "seeds": len(values), "gain_pct": mean, "gain_low": mean - half, "gain_high": mean + half,
                         "settings": "; ".join(dict.fromkeys(settings[(split, s.label)]))})
    drawn: dict[str, list[float]] = {split: [] for split in series}
    for draw in fits.paired_draws(series, draws, seed):
        for split, sizes in series.items():
            drawn[split].append(trend(sizes, draw[split]))
    trends = []
    for split, sizes in series.items():
        low, high = fits.interval(drawn[split]) if max(len(s.values) for s in sizes) > 1 else (math.nan, math.nan)
        trends.append({"split": split, "held_out": split != select_on, "sizes": len(sizes),
                       "trend_pp_per_decade": trend(sizes), "trend_low": low, "trend_high": high})
    return rows, trends


def _shown(row: dict[str, Any], keys: tuple[str, str, str]) -> str:
    value, low, high = (cell_float(row[k]) for k in keys)
    return f"{value:+.3g} [{low:+.3g}, {high:+.3g}]" if math.isfinite(low) else f"{value:+.3g}"


def _held_out(row: dict[str, Any]) -> bool:
    """A row's ``held_out`` (a bool, or its CSV string)."""
    return str(row["held_out"]) == "True"


def _split_label(row: dict[str, Any]) -> str:
    return row["split"] + ("" if _held_out(row) else " (in-sample)")


def thinking_tables(rows: list[dict[str, Any]], trends: list[dict[str, Any]]) -> str:
    """The gain and trend tables of :func:`summarise`'s rows, or of the same rows read back from ``thinking.csv`` and
    ``thinking_trend.csv`` (strings)."""
    gain_rows = [{"split": _split_label(r), "size": r["size"], "X": cell(cell_float(r["x"])), "seeds": r["seeds"],
                  "gain % [95 % CI]": _shown(r, ("gain_pct", "gain_low", "gain_high")),
                  "chosen settings": r["settings"]} for r in rows]
    trend_rows = [{"split": _split_label(r), "sizes": r["sizes"],
                   "trend (points per decade) [95 % CI]": _shown(r, ("trend_pp_per_decade", "trend_low",
                                                                    "trend_high"))} for r in trends]
    return (markdown_table(gain_rows, list(gain_rows[0])) + "\n\nTrend: the least-squares slope of the gain against "
            "log10 X (percentage points per decade), 95 % bootstrap interval over seeds\n\n"
            + markdown_table(trend_rows, list(trend_rows[0])))


def plot(rows: list[dict[str, Any]], xlabel: str, metric: str, path: Path) -> None:
    """The gain of each size per split, with its interval (held-out splits solid, the selection split dotted)."""
    from matplotlib.ticker import NullFormatter

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    for i, split in enumerate(dict.fromkeys(r["split"] for r in rows)):
        of_split = [r for r in rows if r["split"] == split]
        mine = [{k: cell_float(r[k]) for k in ("x", "gain_pct", "gain_low", "gain_high")} for r in of_split]
        x = np.array([r["x"] for r in mine]) * (1 + 0.02 * i)  # a small offset keeps the error bars apart
        y = np.array([r["gain_pct"] for r in mine])
        err = np.nan_to_num(np.array([[r["gain_pct"] - r["gain_low"], r["gain_high"] - r["gain_pct"]]
                                      for r in mine]).T)
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, linestyle="-" if _held_out(of_split[0]) else ":",
                    label=_split_label(of_split[0]))
    ax.axhline(0.0, color="gray", linewidth=0.8)
    ax.set(xscale="log", xlabel=xlabel, ylabel=f"thinking gain, % of {metric} (+ = better)")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_title("val-chosen setting vs trained setting; mean and 95 % CI over seeds", fontsize=9)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def main(runs: list[Run], opts: Any, out: Path, xlabel: str) -> int:
    """``scaling.py ... thinking=true``: writes ``thinking.csv``, ``thinking_trend.csv``, ``thinking.md`` and
    ``thinking.png`` into ``out``."""
    evaluated = thinking_runs(runs)
    metric, series, settings = gains(evaluated, opts.x, opts.params, str(opts.select_on))
    rows, trends = summarise(series, settings, str(opts.select_on), opts.draws, int(opts.boot_seed))
    # the tables are rendered from the values as written, so docs/ can render them again from the CSVs
    rows, trends = ([{k: cell(v) if isinstance(v, float) else v for k, v in r.items()} for r in table]
                    for table in (rows, trends))
    text = (f"Thinking gain against {xlabel}: the relative {metric} change (%) from the trained setting to the one "
            f"chosen on {opts.select_on} (positive = better), mean over seeds with its 95 % t-interval\n\n"
            + thinking_tables(rows, trends))
    print(text)
    write_csv(rows, out / "thinking.csv", lineterminator="\n")
    write_csv(trends, out / "thinking_trend.csv", lineterminator="\n")
    write_text(out / "thinking.md", text + "\n")
    plot(rows, xlabel, metric, out / "thinking.png")
    print(f"\nwrote thinking.csv, thinking_trend.csv, thinking.md, thinking.png to {out}", file=sys.stderr)
    return 0
