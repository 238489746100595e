"""``scripts/scaling.py``: scaling exponents of each objective of a grid, with bootstrap intervals over seeds, the
ratio of two objectives' exponents, tables and plots.

    python scripts/scaling.py dirs=outputs/grids/scaling_params/<time>_<id> x=params
    python scripts/scaling.py dirs=GRID x=flops metric=val/bpb out=OUT

``key=value`` options (``--help`` lists the defaults):

* ``dirs``: the grid folder(s) (a multirun folder or any folder above job folders);
* ``x``: ``params`` | ``depth`` (one point per size: the final val metric) | ``tokens`` | ``flops`` (every logged
  validation of every size, reduced to the frontier: the lowest loss reached at each budget);
* ``metric``: a validation metric of the jobs (default ``val/loss``: the loss of the prediction, comparable across
  objectives; ``val/bpb`` on text);
* ``params``: ``non_embedding`` (default: Kaplan et al.'s N, every parameter except the embedding tables) | ``all``;
* ``ratio``: ``A/B``, the objectives whose exponent ratio b_A / b_B is reported (default ``ebt/predict``); ``null``
  for none;
* ``draws`` (bootstrap draws, default 1000), ``boot_seed`` (their random seed, default 0): the intervals are
  reproducible;
* ``x_min`` / ``x_max``: fit only points with X in this range (all are plotted), e.g. to leave out warmup steps;
* ``out``: the output folder (default ``<first dir>/scaling/<x>``, with ``thinking=true``
  ``<first dir>/scaling/thinking_<x>``);
* ``thinking``: ``true`` fits no loss: it reports the val-chosen thinking gain of each size's EBTs and its trend with
  size, from the ``thinking/`` folder ``scripts/think.py`` wrote into each EBT job (x=params|depth;
  :mod:`ebt.analysis.scaling.thinking`); ``select_on``: the split that chooses the setting (default ``val``). The
  metric is the one think.py scored; ``metric``, ``ratio``, ``x_min`` and ``x_max`` are not used.

Writes into ``out`` (each file atomically): ``points.csv`` (every seed's point: objective, size, seed, step, X, L),
``fits.csv`` and ``table.md`` (per objective the power law ``L = a X^-b`` and, with >= 4 distinct X, ``L = a X^-b + c``,
each exponent with its 95 % bootstrap interval; the ratio with its interval from the paired draws), ``scaling.png``
(log-log: points, fits, 95 % bands) and, where the jobs logged val curves, ``frontier.csv`` / ``frontier.png`` (the
compute frontier over measured training FLOPs). A grid that cannot be fitted is refused in one line (exit 2): fewer
than 3 sizes (3 points) for an objective, a metric the jobs lack, one objective when a ratio is asked. Methods:
:mod:`ebt.analysis.scaling.fit` (fits, bootstrap) and :mod:`ebt.analysis.scaling.runs` (what is read from a job).
"""

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from ebt.analysis.plotting import cell, cell_float, markdown_table, pyplot, save_figure, write_csv, write_text
from ebt.analysis.scaling import fit as fits
from ebt.analysis.scaling import thinking
from ebt.analysis.scaling.fit import Fit, Fitted, fit_points
from ebt.analysis.scaling.runs import CURVE_AXES, SIZE_AXES, build_series, load_runs
from ebt.errors import ConfigError, DataError
from ebt.options import path_list, plain_options

DEFAULTS = {"dirs": None, "x": "params", "metric": "val/loss", "params": "non_embedding", "ratio": "ebt/predict",
            "draws": 1000, "boot_seed": 0, "x_min": None, "x_max": None, "out": None, "thinking": False,
            "select_on": "val"}
AXIS_LABELS = {"params": {"non_embedding": "non-embedding parameters", "all": "parameters"}, "depth": "layers",
               "tokens": "tokens seen", "flops": "training FLOPs (measured)"}
FORMS = {"power": "L = a X^-b", "saturating": "L = a X^-b + c"}


def _ratio(spec: str | None, objectives: list[str]) -> tuple[str, str] | None:
    if spec in (None, "", "null"):
        return None
    parts = str(spec).split("/")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"ratio={spec}: write two objectives as A/B (e.g. ratio=ebt/predict), or ratio=null")
    missing = [p for p in parts if p not in objectives]
    if missing:
        raise ConfigError(f"ratio={spec} needs both objectives; the grid's finished jobs have only "
                          f"{', '.join(objectives)} (write ratio=null to fit one objective)")
    return parts[0], parts[1]


def _check_sizes(series: dict, fitted_points: dict[str, list], axis: str) -> None:
    for name, points in fitted_points.items():
        if fits.distinct_x(points) < fits.MIN_POINTS:
            what = "sizes" if axis in SIZE_AXES else "points on its frontier"
            found = ", ".join(f"{x:.4g}" for x in sorted({x for x, _ in points})) or "none"
            raise DataError(f"x={axis}: {name} has {fits.distinct_x(points)} {what} (X = {found}, from "
                            f"{len(series[name])} configurations); a power law needs at least {fits.MIN_POINTS}")


def _number(value: Any, key: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ConfigError(f"{key}={value} must be a number (or null)")
    return float(value)


def _interval(values: list[float | None], seeds: int) -> tuple[float, float]:
    """The bootstrap interval; none (NaN) with one seed per size, where every draw is the same fit."""
    return fits.interval(values) if seeds > 1 else (math.nan, math.nan)


def fit_rows(fitted: dict[str, Fitted], ratio: tuple[str, str] | None) -> list[dict[str, Any]]:
    """One row per objective and form, then the ratio's rows."""
    rows = []
    for name, f in fitted.items():
        for form, fit, draws in (("power", f.power, f.power_draws), ("saturating", f.saturating, f.saturating_draws)):
            if fit is None:
                continue
            low, high = _interval(fits.exponents(draws), f.max_seeds)
            c_low, c_high = (_interval([d.c if d else None for d in draws], f.max_seeds) if fit.c is not None
                             else (math.nan, math.nan))
            rows.append({"objective": name, "form": form, "b": fit.b, "b_low": low, "b_high": high, "a": fit.a,
                         "c": fit.c if fit.c is not None else math.nan, "c_low": c_low, "c_high": c_high,
                         "points": len(f.points), "seeds": f.max_seeds})
    if ratio:
        num, den = fitted[ratio[0]], fitted[ratio[1]]
        for form in ("power", "saturating"):
            top, bottom = getattr(num, form), getattr(den, form)
            if top is None or bottom is None:
                continue
            paired = fits.ratios(getattr(num, f"{form}_draws"), getattr(den, f"{form}_draws"))
            seeds = min(num.max_seeds, den.max_seeds)
            low, high = _interval(paired, seeds)
            rows.append({"objective": "/".join(ratio), "form": f"{form} (ratio of b)",
                         "b": top.b / bottom.b if bottom.b else math.nan, "b_low": low, "b_high": high,
                         "seeds": seeds})
    return rows


NUMBERS = ("b", "b_low", "b_high", "a", "c", "c_low", "c_high")


def fits_table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of :func:`fit_rows`' rows, or of the same rows read back from ``fits.csv`` (strings)."""
    parsed = [{k: cell_float(v) if k in NUMBERS else v for k, v in r.items() if v != ""} for r in rows]
    return markdown_table([_shown(r) for r in parsed], list(_shown(parsed[0])))


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    interval_text = f"[{cell(row['b_low'])}, {cell(row['b_high'])}]" if math.isfinite(row["b_low"]) else "n/a"
    c = row.get("c", math.nan)
    c_text = (f"{cell(c)} [{cell(row['c_low'])}, {cell(row['c_high'])}]" if math.isfinite(row.get("c_low", math.nan))
              else cell(c))
    form = FORMS.get(row["form"], row["form"])
    return {"objective": row["objective"], "form": form, "b": cell(row["b"]), "95 % interval": interval_text,
            "a": cell(row.get("a")), "c": c_text, "points": row.get("points", ""), "seeds": row["seeds"]}


def _band(draws: list[Fit | None], xs: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    curves = [d.predict(xs) for d in draws if d is not None]
    if len(curves) < 2:
        return None
    low, high = np.percentile(np.array(curves), [2.5, 97.5], axis=0)
    return low, high


def _log_axes(ax, xlabel: str, ylabel: str) -> None:
    """Log-log axes; the loss axis (often within a factor of 2) labelled in plain numbers, minor X labels off."""
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%.3g"))
    ax.tick_params(axis="y", which="minor", labelsize=7)


def plot_scaling(series: dict, fitted: dict[str, Fitted], axis: str, xlabel: str, metric: str, path: Path) -> None:
    """Log-log: every seed's points (small), the fitted points (large), fits and 95 % bootstrap bands."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    for i, (name, f) in enumerate(fitted.items()):
        color = f"C{i}"
        raw = [(s.x[k], v) for s in series[name] for values in s.values.values() for k, v in values.items()]
        ax.scatter(*zip(*raw, strict=True), s=8, alpha=0.3, color=color)
        ax.scatter(*zip(*f.points, strict=True), s=30, color=color, zorder=3)
        xs = np.geomspace(min(x for x, _ in f.points), max(x for x, _ in f.points), 60)
        for fit, draws, style in ((f.power, f.power_draws, "-"), (f.saturating, f.saturating_draws, "--")):
            if fit is None:
                continue
            label = f"{name}: b={fit.b:.3g}" + (f", c={fit.c:.3g}" if fit.c is not None else "")
            ax.plot(xs, fit.predict(xs), style, color=color, label=label)
            if f.max_seeds > 1 and (band := _band(draws, xs)) is not None:
                ax.fill_between(xs, *band, color=color, alpha=0.12 if style == "-" else 0.06, linewidth=0)
    _log_axes(ax, xlabel, metric)
    if axis in CURVE_AXES:
        ax.set_title("large points: the frontier (lowest loss at each X)", fontsize=9)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def frontier_outputs(series: dict, metric: str, out: Path) -> list[str]:
    """``frontier.csv`` and ``frontier.png``: every size's seed-mean val curve against measured training FLOPs and
    each objective's frontier over them."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    rows = []
    for i, (name, sizes) in enumerate(series.items()):
        for s in sizes:
            curve = fit_points([s])
            ax.plot(*zip(*curve, strict=True), color=f"C{i}", alpha=0.35, linewidth=1)
        front = fit_points(sizes, pooled=True)
        ax.plot(*zip(*front, strict=True), "o-", color=f"C{i}", linewidth=2, markersize=3, label=f"{name} frontier")
        rows += [{"objective": name, "flops": x, "value": y} for x, y in front]
    _log_axes(ax, AXIS_LABELS["flops"], f"{metric} (mean over seeds)")
    ax.legend(fontsize=8)
    save_figure(fig, out / "frontier.png")
    write_csv([{k: cell(v) if isinstance(v, float) else v for k, v in r.items()} for r in rows],
              out / "frontier.csv", lineterminator="\n")
    return ["frontier.csv", "frontier.png"]


def main(cfg: DictConfig) -> int:
    """The ``scripts/scaling.py`` command (options: the module docstring): 0 when the fits were written."""
    dirs = path_list(cfg, "dirs", "grid folders")
    opts = plain_options(cfg, choices={"x": (*SIZE_AXES, *CURVE_AXES), "params": ("non_embedding", "all")},
                         positive=["draws"], flags=["thinking"])
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise ConfigError(f"not a folder: {', '.join(missing)}")
    x_range = (_number(opts.x_min, "x_min"), _number(opts.x_max, "x_max"))
    runs = load_runs(dirs)
    xlabel = AXIS_LABELS[opts.x][opts.params] if opts.x == "params" else AXIS_LABELS[opts.x]
    if opts.thinking:
        if opts.x not in SIZE_AXES:
            raise ConfigError(f"thinking=true reads one gain per job: x=params or x=depth, not x={opts.x}")
        out = Path(str(opts.out)) if opts.out else dirs[0] / "scaling" / f"thinking_{opts.x}"
        return thinking.main(runs, opts, out, xlabel)
    series = build_series(runs, opts.x, opts.metric, opts.params)
    ratio = _ratio(opts.ratio, sorted(series))
    pooled = opts.x in CURVE_AXES
    points = {name: fit_points(sizes, pooled=pooled, x_range=x_range) for name, sizes in series.items()}
    _check_sizes(series, points, opts.x)
    fitted = fits.fit_objectives(series, points, pooled=pooled, x_range=x_range, draws=opts.draws,
                            seed=int(opts.boot_seed))
    out = Path(str(opts.out)) if opts.out else dirs[0] / "scaling" / opts.x
    rows = fit_rows(fitted, ratio)
    header = (f"{opts.metric} against {xlabel} (x={opts.x}): {len(runs)} finished jobs; 95 % bootstrap intervals "
              f"over seeds ({opts.draws} draws, boot_seed={opts.boot_seed}); seeds = most seeds at one size")
    table = header + "\n\n" + fits_table(rows)
    print(table)
    points = [{"objective": name, "size": s.label, "seed": seed, "step": k, "x": s.x[k], "value": v}
              for name, sizes in series.items() for s in sizes for seed, values in sorted(s.values.items())
              for k, v in sorted(values.items())]
    write_csv(points, out / "points.csv", lineterminator="\n")
    write_csv([{k: cell(v) if isinstance(v, float) else v for k, v in r.items()} for r in rows], out / "fits.csv",
              lineterminator="\n")
    write_text(out / "table.md", table + "\n")
    plot_scaling(series, fitted, opts.x, xlabel, opts.metric, out / "scaling.png")
    written = ["points.csv", "fits.csv", "table.md", "scaling.png"]
    try:
        flops = series if opts.x == "flops" else build_series(runs, "flops", opts.metric, opts.params)
        written += frontier_outputs(flops, opts.metric, out)
    except DataError as e:
        print(f"no compute frontier: {e}", file=sys.stderr)
    print(f"\nwrote {', '.join(written)} to {out}", file=sys.stderr)
    return 0
