"""Thinking curves over seeds: ``scripts/think_seeds.py`` turns several ``think.py`` outputs into headline numbers,
e.g. ``python scripts/think_seeds.py 'runs=[RUN0,RUN1,RUN2]' out=OUT``.

Options (``key=value``; ``--help`` lists the defaults): ``runs`` (the inputs, one per seed: each the ``thinking/``
folder ``scripts/think.py`` wrote for one seed's EBT, with its ``thinking.csv`` and ``thinking.json``, or the run
folder holding it; all must share the task, metric and trained step count), ``out`` (the folder for the tables and
the plot; required), ``select_on`` (the split that selects the setting, default ``val``), ``metric`` and
``metric_mode`` (another column of ``thinking.csv`` than the task's metric, with its direction, e.g.
``metric=cell_acc metric_mode=max``).

Per seed, the **thinking setting is selected on the selection split** (``val``) and then read on every split, so a
held-out split (``ood``) never chooses its own setting (:mod:`ebt.analysis.thinking.selection`, the rule ``think.py``
and ``ood_curve.py`` use too): the EBT's best setting (best_of, steps; the adaptive stop rule where evaluated) on
``val``, and the looped predictor's best evaluation loops on ``val``. Reported per split, as mean ± std over seeds
(sample std, n - 1):

* ``trained``: the EBT at its training step count, best-of-1;
* ``selected``: the EBT at the setting chosen on the selection split; ``improvement`` = relative change from
  ``trained`` to ``selected`` (positive = better, whatever the metric's direction; on the selection split itself it
  is in-sample, >= 0 by construction);
* ``oracle``: the best setting of that split itself (an upper bound, not a result: it is tuned on the split);
* ``predictor`` (one forward pass) and ``looped`` (at the loops chosen on the selection split) when the think.py runs
  included ``baseline_ckpt=`` / ``looped_ckpt=``.

Writes ``seeds.csv`` (every setting: mean, std, n, and the mean final energy with its std where ``think.py``
recorded one), ``headline.csv`` / ``headline.md`` and ``thinking_seeds.png`` (metric vs forward passes, mean ± std)
into ``out``.
"""

import csv
import json
import math
import statistics
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ebt.analysis.plotting import markdown_table, pyplot, save_figure, write_csv, write_text
from ebt.analysis.thinking.selection import EBT_MODES, best_row, lookup, select, setting_label, thinking_improvement
from ebt.errors import ConfigError, DataError
from ebt.options import path_list

DEFAULTS = {"runs": None, "out": None, "select_on": "val", "metric": None, "metric_mode": None}  # the options
KEY = ("split", "mode", "best_of", "steps", "loops")
IN_SAMPLE = " (in-sample)"  # the improvement on the split that chose the setting
FIXED_COLUMNS = {*KEY, "steps_used", "forward_passes"}


def _float(value: str | None) -> float:
    return float(value) if value not in (None, "") else math.nan


def load_seed(path: Path, metric: tuple[str, str] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(meta, rows)`` of one think.py output (a ``thinking/`` folder or the run folder above it); ``metric`` =
    ``(name, "max" | "min")`` reads another column of the table than the task's headline metric."""
    folder = path if (path / "thinking.csv").is_file() else path / "thinking"
    csv_path, meta_path = folder / "thinking.csv", folder / "thinking.json"
    if not csv_path.is_file() or not meta_path.is_file():
        raise DataError(f"{path}: no thinking.csv + thinking.json here or in {path / 'thinking'}; run "
                        f"scripts/think.py ckpt={path} first")
    meta = json.loads(meta_path.read_text())
    if metric is not None:
        meta = {**meta, "metric": metric[0], "metric_mode": metric[1]}
    rows = []
    with csv_path.open() as f:
        reader = csv.DictReader(f)
        if meta["metric"] not in (reader.fieldnames or []):
            raise DataError(f"{csv_path} has no column {meta['metric']!r}; its metrics: "
                            f"{', '.join(c for c in reader.fieldnames or [] if c not in FIXED_COLUMNS)}")
        for r in reader:
            rows.append({"split": r["split"], "mode": r["mode"], "best_of": _int(r.get("best_of"), 1),
                         "steps": _int(r.get("steps"), 0), "loops": _int(r.get("loops"), 0),
                         "forward_passes": _float(r.get("forward_passes")), "value": _float(r.get(meta["metric"])),
                         "energy": _float(r.get("energy"))})
    return meta, rows


def _int(value: str | None, default: int) -> int:
    """An integer cell (written as ``2`` or ``2.0``), or ``default`` when empty."""
    return int(float(value)) if value not in (None, "") else default


def _value_of(row: dict[str, Any] | None) -> float:
    return row["value"] if row is not None else math.nan


def seed_headline(meta: dict[str, Any], rows: list[dict[str, Any]], select_on: str) -> list[dict[str, Any]]:
    """One seed's headline values per split (settings selected on ``select_on``:
    :mod:`ebt.analysis.thinking.selection`)."""
    mode = meta["metric_mode"]
    chosen = select(rows, "value", mode, select_on=select_on)
    chosen_loops = select(rows, "value", mode, select_on=select_on, modes=("loops",))
    improvements = thinking_improvement(rows, "value", mode, meta["trained_steps"], select_on=select_on)
    out = []
    for split in dict.fromkeys(r["split"] for r in rows):
        found = improvements.get(split, {})
        oracle = best_row([r for r in rows if r["split"] == split and r["mode"] in EBT_MODES], "value", mode)
        predictor = [r["value"] for r in rows if r["split"] == split and r["mode"] == "predictor"]
        out.append({"split": split, "trained": found.get("trained", math.nan),
                    "selected": _value_of(lookup(rows, split, chosen)), "selected_setting": setting_label(chosen),
                    "improvement": found.get("improvement", math.nan),
                    "oracle": _value_of(oracle),
                    "predictor": predictor[0] if predictor else math.nan,
                    "looped": _value_of(lookup(rows, split, chosen_loops)),
                    "looped_loops": chosen_loops["loops"] if chosen_loops else 0})
    return out


def _mean_std(values: list[float]) -> tuple[float, float, int]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan, 0
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else math.nan), len(values)


def _pm(values: list[float], percent: bool = False) -> str:
    mean, std, n = _mean_std(values)
    if not n:
        return ""
    scale, unit = (100.0, "%") if percent else (1.0, "")
    spread = f" ± {scale * std:.3g}{unit}" if not math.isnan(std) else ""
    return f"{scale * mean:+.3g}{unit}{spread}" if percent else f"{mean:.4g}{spread}"


def load_seeds(paths: list[Path], select_on: str = "val",
               metric: tuple[str, str] | None = None) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """:func:`load_seed` of each path, checked to be seeds of one experiment that evaluated ``select_on``."""
    seeds = [load_seed(p, metric) for p in paths]
    meta = seeds[0][0]
    for path, (other, _) in zip(paths[1:], seeds[1:], strict=True):
        if (other["task"], other["metric"], other["trained_steps"]) != (meta["task"], meta["metric"],
                                                                         meta["trained_steps"]):
            raise DataError(f"{path} is another experiment ({other['task']}, {other['trained_steps']} steps) than "
                            f"{paths[0]} ({meta['task']}, {meta['trained_steps']} steps); pass seeds of one")
    if not any(r["split"] == select_on for _, rows in seeds for r in rows):
        raise DataError(f"select_on={select_on}: no such split in the thinking tables; pass one they evaluated")
    return seeds


def summarise(paths: list[Path], select_on: str = "val",
              metric: tuple[str, str] | None = None) -> tuple[dict[str, Any], list[dict], list[dict], str]:
    """``(meta, per-setting rows, headline rows, markdown)`` over the seeds in ``paths`` (``metric``: another column
    than the task's headline metric, with its direction, e.g. ``("cell_acc", "max")``)."""
    seeds = load_seeds(paths, select_on, metric)
    meta = seeds[0][0]
    settings: dict[tuple, list[dict[str, Any]]] = {}
    for _, rows in seeds:
        for r in rows:
            settings.setdefault(tuple(r[k] for k in KEY), []).append(r)
    per_setting = []
    for key, rows in settings.items():
        mean, std, n = _mean_std([r["value"] for r in rows])
        energy, energy_std, _ = _mean_std([r["energy"] for r in rows])
        per_setting.append({**dict(zip(KEY, key, strict=True)), "forward_passes": rows[0]["forward_passes"],
                            f"{meta['metric']}_mean": mean, f"{meta['metric']}_std": std, "seeds": n,
                            "energy_mean": energy, "energy_std": energy_std})
    heads = [seed_headline(m, rows, select_on) for m, rows in seeds]
    headline = []
    for split in dict.fromkeys(h["split"] for seed in heads for h in seed):
        per = [h for seed in heads for h in seed if h["split"] == split]
        column = {name: [h[name] for h in per] for name in per[0]}
        headline.append({"split": split, "seeds": len(per), "trained": _pm(column["trained"]),
                         "selected": _pm(column["selected"]),
                         "improvement": _pm(column["improvement"], True) + (IN_SAMPLE if split == select_on else ""),
                         "oracle": _pm(column["oracle"]), "predictor": _pm(column["predictor"]),
                         "looped": _pm(column["looped"]),
                         "selected settings": "; ".join(dict.fromkeys(column["selected_setting"])),
                         "looped loops": ", ".join(str(v) for v in dict.fromkeys(column["looped_loops"]) if v)})
    columns = ["split", "seeds", "trained", "selected", "improvement", "oracle", "predictor", "looped",
               "selected settings", "looped loops"]
    text = (f"{meta['task']}: {meta['metric']} ({meta['metric_mode']}imise), EBT trained with {meta['trained_steps']} "
            f"steps; mean ± std over seeds; settings selected on {select_on} (its improvement is in-sample: >= 0 by "
            "construction; the other splits are held out)\n\n" + markdown_table(headline, columns))
    return meta, per_setting, headline, text


def plot_seeds(per_setting: list[dict[str, Any]], metric: str, path: Path) -> None:
    """Mean ± std of the metric against forward passes: EBT best-of-N lines, predictor flat, looped axis."""
    plt = pyplot()
    splits = list(dict.fromkeys(r["split"] for r in per_setting))
    fig, axes = plt.subplots(1, len(splits), figsize=(5.2 * len(splits), 4.0), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        rows = [r for r in per_setting if r["split"] == split]
        lines = {(r["mode"], r["best_of"]) for r in rows if r["mode"] in ("fixed", "loops")}
        for mode, n in sorted(lines):
            line = sorted((r for r in rows if (r["mode"], r["best_of"]) == (mode, n)),
                          key=lambda r: r["forward_passes"])
            label = f"EBT best-of-{n}" if mode == "fixed" else "looped predictor (loops)"
            ax.errorbar([r["forward_passes"] for r in line], [r[f"{metric}_mean"] for r in line],
                        yerr=[0 if math.isnan(r[f"{metric}_std"]) else r[f"{metric}_std"] for r in line],
                        marker="o" if mode == "fixed" else "^", capsize=3, label=label)
        for r in rows:
            if r["mode"] == "predictor":
                ax.axhline(r[f"{metric}_mean"], linestyle="--", color="gray", label="predictor")
        ax.set_xscale("log", base=2)
        values = [r[f"{metric}_mean"] for r in rows if r[f"{metric}_mean"] > 0]
        if values and max(values) > 20 * min(values):  # a curve spanning decades: log scale keeps the best visible
            ax.set_yscale("log")
        ax.set_xlabel("forward passes per prediction")
        ax.set_ylabel(metric)
        ax.set_title(f"{split} (mean ± std over seeds)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path)


def metric_option(cfg: DictConfig) -> tuple[str, str] | None:
    """``(metric, metric_mode)`` from the options ``metric=`` / ``metric_mode=`` (None: the task's own metric)."""
    if cfg.metric is None and cfg.metric_mode is None:
        return None
    if cfg.metric is None or cfg.metric_mode not in ("max", "min"):
        raise ConfigError("metric= and metric_mode= go together: a column of thinking.csv and its direction, "
                          "max or min (e.g. metric=cell_acc metric_mode=max)")
    return str(cfg.metric), str(cfg.metric_mode)


def main(cfg: DictConfig) -> int:
    """The ``scripts/think_seeds.py`` command (options: the module docstring): 0 when written."""
    runs = path_list(cfg, "runs", "think.py output folders (or the run folders above them), one per seed")
    if not cfg.out:
        raise ConfigError("out= is required: the folder for the tables and the plot")
    out = Path(str(cfg.out))
    meta, per_setting, headline, text = summarise(runs, str(cfg.select_on), metric_option(cfg))
    print(text)
    write_csv(per_setting, out / "seeds.csv")
    write_csv(headline, out / "headline.csv")
    write_text(out / "headline.md", text + "\n")
    plot_seeds(per_setting, meta["metric"], out / "thinking_seeds.png")
    print(f"\nwrote {out / 'seeds.csv'}, {out / 'headline.csv'}, {out / 'headline.md'}, "
          f"{out / 'thinking_seeds.png'}")
    return 0
