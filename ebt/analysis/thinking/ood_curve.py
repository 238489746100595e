"""Thinking improvement against distance from the training distribution (the EBT paper's Fig. 6), from the
``thinking.csv`` files of ``scripts/think.py``: the driver behind ``scripts/ood_curve.py``, e.g.
``python scripts/ood_curve.py 'csvs=[S0/thinking/thinking.csv,S1/thinking/thinking.csv]' out=DIR``.

Options (``key=value``; ``--help`` lists the defaults): ``csvs`` (the ``thinking.csv`` files, one per seed / run; one
file: ``csvs=PATH``), ``out`` (default: the first CSV's folder), ``metric`` (the column, default ``bpb``),
``metric_mode`` (``min`` or ``max``: its direction, default ``min``), ``train_steps`` (the thinking steps the EBT was
trained with; default: from the run, see below).

Per split of each CSV (one CSV per seed / run):

* **improvement**: :func:`ebt.analysis.thinking.selection.thinking_improvement` of the metric, in percent: from the
  training step count with best-of-1 to the setting (steps, best-of-N, adaptive stop) **chosen on ``val``** and read on
  every split. On ``val`` itself it is in-sample (>= 0 by construction: marked so in the table, and left out of the
  correlation); every other split is held out;
* **longer only**: the same with the choice on ``val`` restricted to settings with at least the trained steps
  (thinking longer, not less);
* **fixed steps** (no choice at all): the relative change from the trained steps to 2x and 4x the trained steps,
  best-of-1, and to the most steps evaluated, best-of-1 (negative: thinking that long makes the prediction worse);
* **OOD gap**: how far out of distribution the split is, ``metric(split) - metric(val)`` of the predictor's rows
  (``mode=predictor``, written with ``baseline_ckpt=``); without predictor rows, the EBT's own metric at its trained
  steps (best-of-1). For a metric to maximise the sign is flipped, so a larger gap is always further out.

Across CSVs: the mean per split and the half-width of its 95 % t-interval over the runs (``*_ci95`` columns). Writes
``ood_curve.csv`` (per split), ``ood_curve_runs.csv`` (per CSV and split), ``ood_curve.md`` (the table and the
correlation of improvement with gap over the held-out splits) and ``ood_curve.png`` (improvement and longer-only
improvement against gap, one point per split with its spread, the runs as small dots; ``val``, in-sample, labelled
so). The training step count comes from ``train_steps`` or, for a CSV in ``RUN/thinking/``, from the run's
``.hydra/config.yaml`` (``model.objective.steps``).
"""

import csv
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ebt.analysis.plotting import markdown_table, pyplot, save_figure, write_csv, write_text
from ebt.analysis.stats import mean_interval
from ebt.analysis.thinking.selection import SELECT_ON, fixed_step_change, thinking_improvement
from ebt.errors import ConfigError
from ebt.options import integer, path_list

DEFAULTS = {"csvs": None, "out": None, "metric": "bpb", "metric_mode": "min", "train_steps": None}  # the options
REQUIRED = ("split", "mode", "best_of", "steps")
REFERENCE = SELECT_ON  # the split the gap is measured from and the setting is chosen on
STEP_MULTIPLES = (2, 4)  # fixed-step columns: 2x and 4x the trained steps, best-of-1


def read_rows(path: Path, metric: str) -> list[dict[str, Any]]:
    """The rows of one ``thinking.csv`` with numeric fields parsed; a missing file or column is a ConfigError."""
    if not path.is_file():
        raise ConfigError(f"{path} is not a file; pass the thinking.csv written by scripts/think.py")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        missing = [c for c in (*REQUIRED, metric) if c not in columns]
        if missing:
            has = ", ".join(columns) or "none"
            raise ConfigError(f"{path} lacks the column(s) {', '.join(missing)} (it has: {has}); "
                              f"pass the thinking.csv of scripts/think.py (and metric= for a task whose metric is "
                              f"not {metric})")
        raw = list(reader)
    rows = []
    for i, r in enumerate(raw, start=2):
        try:
            rows.append({**r, "best_of": int(float(r["best_of"])), "steps": int(float(r["steps"])),
                         metric: float(r[metric])})
        except ValueError:
            raise ConfigError(f"{path} line {i}: best_of, steps and {metric} must be numbers, got "
                              f"{r['best_of']!r}, {r['steps']!r}, {r[metric]!r}") from None
    if not rows:
        raise ConfigError(f"{path} has no rows; run scripts/think.py first")
    return rows


def trained_steps(path: Path) -> int:
    """``model.objective.steps`` of the run whose ``thinking/`` folder holds ``path``."""
    config = path.resolve().parent.parent / ".hydra" / "config.yaml"
    steps = OmegaConf.select(OmegaConf.load(config), "model.objective.steps") if config.is_file() else None
    if not isinstance(steps, int):
        raise ConfigError(f"cannot tell the trained thinking steps of {path} (no model.objective.steps in {config}); "
                          "pass train_steps=N")
    return steps


def curve_points(rows: list[dict[str, Any]], metric: str, mode: str, train_steps: int,
                 source: str = "csv") -> list[dict[str, Any]]:
    """One point per EBT split of one CSV: metric at the trained steps and at the setting chosen on ``val``,
    improvement (%, ``in_sample`` on ``val``), fixed-step changes (%), predictor metric and OOD gap (see the module
    docstring)."""
    if mode not in ("min", "max"):
        raise ConfigError(f"metric_mode={mode}: must be min or max (the direction of {metric})")
    sign = 1.0 if mode == "max" else -1.0
    improvements = thinking_improvement(rows, metric, mode, train_steps)
    ebt = [r for r in rows if r["mode"] != "predictor"]
    if not improvements:
        settings = sorted({(r["best_of"], r["steps"]) for r in ebt if r["mode"] == "fixed"})
        raise ConfigError(f"{source}: no fixed best-of-1 row at the trained {train_steps} steps (settings (best_of, "
                          f"steps): {settings}); run think.py with {train_steps} in steps=, or pass train_steps=")
    trained = {split: found["trained"] for split, found in improvements.items()}
    predictor = {r["split"]: r[metric] for r in rows if r["mode"] == "predictor"}
    reference = predictor if REFERENCE in predictor else trained
    if REFERENCE not in reference or REFERENCE not in trained:
        raise ConfigError(f"{source}: no {REFERENCE} rows at the trained steps; the setting is chosen on and the OOD "
                          f"gap measured from the {REFERENCE} split (run think.py with {REFERENCE} among the splits)")
    longer = thinking_improvement(rows, metric, mode, train_steps, keep=lambda r: int(r["steps"]) >= train_steps)
    longest = max(r["steps"] for r in ebt if r["mode"] == "fixed")
    changes = {f"steps{k}x_pct": fixed_step_change(rows, metric, mode, train_steps, k * train_steps)
               for k in STEP_MULTIPLES}
    at_longest = fixed_step_change(rows, metric, mode, train_steps, longest)
    points = []
    for split, found in improvements.items():
        gap_from = predictor if split in predictor and reference is predictor else trained
        points.append({
            "split": split, "source": source, "trained": found["trained"], "selected": found["selected"],
            "selected_setting": found["setting"], "in_sample": found["in_sample"],
            "improvement_pct": 100 * found["improvement"] + 0.0,
            "longer_pct": 100 * longer[split]["improvement"] + 0.0,
            **{key: 100 * change.get(split, math.nan) + 0.0 for key, change in changes.items()},
            "longest_steps": longest, "longest_pct": 100 * at_longest.get(split, math.nan) + 0.0,
            "predictor": predictor.get(split, math.nan),
            "gap": -sign * (gap_from[split] - gap_from[REFERENCE]) + 0.0,
            "gap_from": "predictor" if gap_from is predictor else "ebt"})
    return points


def summarize(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and 95 % t-interval half-width over runs, per split (in first-seen order)."""
    out = []
    for split in dict.fromkeys(p["split"] for p in points):
        mine = [p for p in points if p["split"] == split]
        row: dict[str, Any] = {"split": split, "runs": len(mine)}
        for key in ("gap", "predictor", "trained", "selected", "improvement_pct", "longer_pct",
                    *(f"steps{k}x_pct" for k in STEP_MULTIPLES), "longest_pct"):
            row[key], row[f"{key}_ci95"] = mean_interval([p[key] for p in mine])
        row["selected_settings"] = "; ".join(dict.fromkeys(p["selected_setting"] for p in mine))
        row["in_sample"] = any(p["in_sample"] for p in mine)
        row["gap_from"], row["longest_steps"] = mine[0]["gap_from"], mine[0]["longest_steps"]
        out.append(row)
    return out


def correlation(summary: list[dict[str, Any]]) -> tuple[float, float]:
    """Pearson and Spearman correlation of mean improvement with mean gap over the held-out splits (not the in-sample
    ``val``; NaN when undefined)."""
    pairs = [(r["gap"], r["improvement_pct"]) for r in summary
             if not r["in_sample"] and math.isfinite(r["gap"]) and math.isfinite(r["improvement_pct"])]
    if len(pairs) < 3:
        return math.nan, math.nan
    xs, ys = zip(*pairs, strict=True)

    def ranks(v: tuple[float, ...]) -> list[float]:
        order = sorted(range(len(v)), key=v.__getitem__)
        r = [0.0] * len(v)
        for rank, i in enumerate(order):
            r[i] = float(rank)
        return r

    try:
        return statistics.correlation(xs, ys), statistics.correlation(ranks(xs), ranks(ys))
    except statistics.StatisticsError:  # a constant series
        return math.nan, math.nan


def _pm(mean: float, half: float, digits: int, suffix: str = "") -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f}{suffix}" + (f" ± {half:.{digits}f}" if math.isfinite(half) else "")


def markdown(summary: list[dict[str, Any]], metric: str, train_steps: int) -> str:
    """The per-split table (mean ± 95 % interval over runs) and the correlation line."""
    in_sample = " (in-sample)"
    rows = []
    for r in sorted(summary, key=lambda r: (r["gap"] if math.isfinite(r["gap"]) else math.inf)):
        tag = in_sample if r["in_sample"] else ""
        fixed = {f"{k * train_steps} steps ({k}x), best-of-1": _pm(r[f"steps{k}x_pct"], r[f"steps{k}x_pct_ci95"], 2,
                                                                      "%") for k in STEP_MULTIPLES}
        if r["longest_steps"] not in {k * train_steps for k in STEP_MULTIPLES}:
            fixed[f"{r['longest_steps']} steps (longest), best-of-1"] = _pm(r["longest_pct"], r["longest_pct_ci95"], 2,
                                                                             "%")
        rows.append({"split": r["split"], "runs": r["runs"],
                     f"OOD gap ({metric}, {r['gap_from']})": _pm(r["gap"], r["gap_ci95"], 3),
                     f"predictor {metric}": _pm(r["predictor"], r["predictor_ci95"], 3),
                     f"EBT {metric}, {train_steps} steps (trained)": _pm(r["trained"], r["trained_ci95"], 3),
                     f"EBT {metric}, setting chosen on {REFERENCE}": _pm(r["selected"], r["selected_ci95"], 3),
                     f"setting (chosen on {REFERENCE}, per run)": r["selected_settings"],
                     "thinking improvement": _pm(r["improvement_pct"], r["improvement_pct_ci95"], 2, "%") + tag,
                     f"longer only (>= {train_steps} steps)": _pm(r["longer_pct"], r["longer_pct_ci95"], 2, "%") + tag,
                     **fixed})
    pearson, spearman = correlation(summary)
    held_out = sum(not r["in_sample"] for r in summary)
    line = (f"correlation of thinking improvement with OOD gap over the {held_out} held-out splits ({REFERENCE}, "
            f"where the setting is chosen, left out): Pearson {pearson:+.2f}, Spearman {spearman:+.2f}"
            if math.isfinite(pearson) else
            "correlation: n/a (fewer than 3 held-out splits, or a constant column)")
    columns = list(dict.fromkeys(c for row in rows for c in row))
    return markdown_table(rows, columns) + "\n\n" + line


def plot(summary: list[dict[str, Any]], points: list[dict[str, Any]], metric: str, path: Path) -> None:
    """Improvement (%) against OOD gap: mean ± 95 % interval per split (filled: any setting; hollow: longer only),
    runs as small dots."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.scatter([p["gap"] for p in points], [p["improvement_pct"] for p in points], s=12, color="gray", alpha=0.5,
               label="one run (any setting)")
    span = max((r["gap"] for r in summary), default=1.0) - min((r["gap"] for r in summary), default=0.0)
    for key, shift, style, label in (
            ("improvement_pct", 0.0, {"color": "C0"}, "thinking improvement (mean ± 95 % interval)"),
            ("longer_pct", 0.015 * (span or 1.0), {"color": "C1", "mfc": "none"}, "longer only (>= trained steps)")):
        for i, r in enumerate(summary):  # the hollow points a little to the right, so equal values stay visible
            ax.errorbar([r["gap"] + shift], [r[key]], xerr=[[_or0(r["gap_ci95"])], [_or0(r["gap_ci95"])]],
                        yerr=[[_or0(r[f"{key}_ci95"])], [_or0(r[f"{key}_ci95"])]], marker="o", capsize=3,
                        label=label if i == 0 else None, **style)
    for i, r in enumerate(sorted(summary, key=lambda r: r["gap"])):  # labels alternate above / below
        label = r["split"] + (" (in-sample)" if r["in_sample"] else "")
        ax.annotate(label, (r["gap"], r["improvement_pct"]), textcoords="offset points",
                    xytext=(6, 5 if i % 2 == 0 else -12), fontsize=8)
    ax.axhline(0, color="black", linewidth=0.6)
    source = summary[0]["gap_from"] if summary else "predictor"
    ax.set_xlabel(f"OOD gap: {source} {metric}(split) - {metric}(val)")
    ax.set_ylabel(f"thinking improvement of {metric} (%), setting chosen on {REFERENCE}")
    ax.set_title("Thinking improvement vs distance from the training data")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def _or0(v: float) -> float:
    return v if math.isfinite(v) else 0.0


def ood_curve(csvs: list[Path], out: Path, *, metric: str = "bpb", mode: str = "min",
              train_steps: int | None = None) -> list[dict[str, Any]]:
    """Read the CSVs, write the curve's CSVs, table and plot to ``out``; returns the per-split summary."""
    if not csvs:
        raise ConfigError("no thinking.csv given")
    points = []
    for path in csvs:
        steps = train_steps if train_steps is not None else trained_steps(path)
        points += curve_points(read_rows(path, metric), metric, mode, steps, source=str(path))
    summary = summarize(points)
    steps_shown = train_steps if train_steps is not None else trained_steps(csvs[0])
    text = (f"Thinking improvement vs OOD gap ({metric}; {len(csvs)} run(s): "
            f"{', '.join(str(c) for c in csvs)})\n\n" + markdown(summary, metric, steps_shown))
    print(text)
    write_text(out / "ood_curve.md", text + "\n")
    write_csv(summary, out / "ood_curve.csv", lineterminator="\n")
    write_csv(points, out / "ood_curve_runs.csv", lineterminator="\n")
    plot(summary, points, metric, out / "ood_curve.png")
    print(f"\nwrote ood_curve.csv, ood_curve_runs.csv, ood_curve.md, ood_curve.png to {out}", file=sys.stderr)
    return summary


def main(cfg: DictConfig) -> int:
    """The ``scripts/ood_curve.py`` command (options: the module docstring): 0 when written."""
    csvs = path_list(cfg, "csvs", "thinking.csv files of scripts/think.py")
    ood_curve(csvs, Path(str(cfg.out)) if cfg.out else csvs[0].parent, metric=str(cfg.metric),
              mode=str(cfg.metric_mode), train_steps=integer(cfg, "train_steps", 1, allow_none=True))
    return 0
