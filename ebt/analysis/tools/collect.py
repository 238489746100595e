"""Collect an ablation grid: one row per job, mean ± std over seeds per configuration, CSV, markdown and plots.

A job is a folder holding ``.hydra/overrides.yaml`` (Hydra writes it when the job starts); its metrics come from
``summary.json`` (written by the trainer) or ``status.json`` (written by :mod:`ebt.training.grid`), its status from
``status.json`` (done / failed / interrupted / running; no status file and no summary means running, or killed).
Works on a grid that is still running: unfinished jobs appear with their status and no metrics. A job whose files
cannot be read (a truncated ``summary.json``, say) is skipped with one line on stderr; the others are collected.

Command line (``scripts/collect.py``, or ``ebt-collect`` once installed), ``key=value`` options (``--help`` lists
them with their defaults), e.g. ``python scripts/collect.py dirs=outputs/grids/mixers/<time>_<id>``:

* ``dirs``: a multirun folder (``hydra.sweep.dir``) or any folder above job folders, or a list of them
  (``'dirs=[DIR1,DIR2]'``); it may still be running;
* ``out``: the output folder (default: ``<first DIR>/collect``);
* ``metrics``: the metric columns, e.g. ``'metrics=[val/acc,val/tok_acc]'`` (default: the task's metric on every
  evaluated split); a name no job has is an error (exit 2);
* ``seed_key``: the override averaged over (default ``seed``).

Prints a markdown table per job and one per configuration (mean ± std over seeds), and writes into ``out``:
``jobs.csv``, ``groups.csv``, ``table.md``, ``bars.png`` (headline metric per configuration) and, when jobs log
``val/<metric>_step{k}`` (EBT thinking steps), ``thinking.png``.
"""

import json
import math
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ebt.analysis.plotting import cell, columns_of, markdown_table, pyplot, save_figure, write_csv, write_text
from ebt.errors import ConfigError, DataError
from ebt.options import listed, path_list
from ebt.training.grid import job_dirs, read_status, status_of
from ebt.training.summary import eval_splits

DEFAULTS = {"dirs": None, "out": None, "metrics": None, "seed_key": "seed"}  # the command's options
STEP_METRIC = re.compile(r"^val/(?P<name>.+)_step(?P<k>\d+)$")


@dataclass
class Job:
    path: Path
    overrides: dict[str, str]
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    metric: str | None = None  # the task's headline metric, e.g. "acc"
    seconds: float | None = None
    error: str | None = None


def _override_items(path: Path) -> dict[str, str]:
    items = OmegaConf.to_container(OmegaConf.load(path / ".hydra" / "overrides.yaml")) or []
    pairs = (str(item).lstrip("+~").split("=", 1) for item in items)
    return {key: value for key, value, *_ in (p + [""] for p in pairs) if key != "sweep"}


def load_job(path: Path) -> Job:
    """The job in ``path``; :class:`DataError` naming the file when one of its files cannot be read."""
    status = read_status(path) or {}
    summary_file = path / "summary.json"
    try:
        summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
        metrics = summary.get("metrics") or status.get("metrics") or {}
        metrics = {k: float(v) for k, v in metrics.items()}
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise DataError(f"{summary_file} cannot be read ({type(e).__name__}: {e})") from None
    try:
        overrides = _override_items(path)
    except Exception as e:  # noqa: BLE001  (YAML and OmegaConf raise many kinds)
        raise DataError(f"{path / '.hydra' / 'overrides.yaml'} cannot be read ({type(e).__name__})") from None
    return Job(path, overrides, status_of(path), metrics, summary.get("metric"),
               status.get("seconds", summary.get("seconds")), status.get("error"))


def load_jobs(roots: list[Path]) -> list[Job]:
    """Every readable job under ``roots``; an unreadable one is skipped with a line on stderr. No job folder at all,
    or only unreadable ones, is an error saying which (and how many were found)."""
    jobs, folders = [], [p for root in roots for p in job_dirs(root)]
    where = ", ".join(map(str, roots))
    if not folders:
        raise ConfigError(f"no job folders (with .hydra/) under {where}")
    for path in folders:
        try:
            jobs.append(load_job(path))
        except DataError as e:
            print(f"skipped: {e}", file=sys.stderr, flush=True)
    if not jobs:
        count = f"{len(folders)} job folder{'s' if len(folders) > 1 else ''} (with .hydra/)"
        raise DataError(f"{count} found under {where}, and none could be read (each is named on a 'skipped:' line "
                        "above); fix or remove them, or collect another grid")
    return jobs


def check_metrics(jobs: list[Job], metrics: list[str]) -> None:
    """:class:`ConfigError` for a requested metric that no job logged (once some job has metrics at all: in a grid
    where nothing has finished yet every column is empty)."""
    available = sorted({k for j in jobs for k in j.metrics})
    unknown = [m for m in metrics if m not in available]
    if available and unknown:
        shown = ", ".join(available[:30]) + (f", ... ({len(available) - 30} more)" if len(available) > 30 else "")
        what = "this metric" if len(unknown) == 1 else "these metrics"
        raise ConfigError(f"metrics=[{','.join(unknown)}]: no job has {what}; available: {shown}")


def headline(jobs: list[Job]) -> list[str]:
    """The metric columns worth a table: the task's metric on every evaluated split (``val``, ``ood``, then any other,
    e.g. the text task's ``ood_<name>`` corpora; :func:`ebt.training.summary.eval_splits`), else every val/*."""
    names = {j.metric for j in jobs if j.metric} or {"acc"}
    present = dict.fromkeys(k for j in jobs for k in j.metrics)
    cols = [f"{split}/{m}" for m in sorted(names) for split in eval_splits(present, m)]
    return cols or sorted(k for k in present if k.startswith("val/") and not STEP_METRIC.match(k))


def split_keys(jobs: list[Job], seed_key: str) -> tuple[list[str], dict[str, str]]:
    """Override keys that vary across jobs (in order of first appearance) and the ones shared by all."""
    keys = list(dict.fromkeys(k for j in jobs for k in j.overrides))
    values = {k: {j.overrides.get(k) for j in jobs} for k in keys}
    varying = [k for k in keys if len(values[k]) > 1 or k == seed_key]
    common = {k: next(iter(values[k])) for k in keys if k not in varying}
    return varying, common


def config_label(job: Job, keys: list[str]) -> str:
    """``steps=2 alpha=0.5``: each key's last component (the full key where that would be ambiguous)."""
    short = {k: re.split(r"[./]", k)[-1] for k in keys}
    names = {k: v if list(short.values()).count(v) == 1 else k for k, v in short.items()}
    return " ".join(f"{names[k]}={job.overrides.get(k, '-')}" for k in keys) or "all"


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan  # sample std


def group(jobs: list[Job], keys: list[str], metrics: list[str]) -> list[dict[str, Any]]:
    """One row per configuration (the varying overrides minus the seed): status counts, mean and std of each metric
    over the finished seeds."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(config_label(job, keys), []).append(job)
    rows = []
    for label, members in groups.items():
        done = [j for j in members if j.status == "done" and j.metrics]
        row: dict[str, Any] = {"config": label, **{k: members[0].overrides.get(k, "") for k in keys},
                               "done": len(done), "failed": sum(j.status == "failed" for j in members),
                               "running": sum(j.status == "running" for j in members),
                               "interrupted": sum(j.status == "interrupted" for j in members)}
        for m in metrics:
            row[f"{m} mean"], row[f"{m} std"] = mean_std([j.metrics[m] for j in done if m in j.metrics])
        rows.append(row)
    return rows


def thinking_curves(jobs: list[Job], keys: list[str]) -> dict[str, dict[str, list[tuple[int, float, float]]]]:
    """``{metric: {config: [(k, mean, std), ...]}}`` from ``val/<metric>_step{k}`` of the finished jobs."""
    values: dict[str, dict[str, dict[int, list[float]]]] = {}
    for job in jobs:
        for name, value in job.metrics.items():
            if (match := STEP_METRIC.match(name)) and job.status == "done":
                per_k = values.setdefault(match["name"], {}).setdefault(config_label(job, keys), {})
                per_k.setdefault(int(match["k"]), []).append(value)
    return {m: {c: [(k, *mean_std(v)) for k, v in sorted(per_k.items())] for c, per_k in by_config.items()}
            for m, by_config in values.items()}


def job_rows(jobs: list[Job], keys: list[str], metrics: list[str], base: Path) -> list[dict[str, Any]]:
    rows = []
    for job in jobs:
        try:
            name = str(job.path.relative_to(base))
        except ValueError:
            name = str(job.path)
        rows.append({"job": name, "status": job.status, **{k: job.overrides.get(k, "") for k in keys},
                     **{m: job.metrics.get(m, math.nan) for m in metrics}, "seconds": job.seconds,
                     "error": (job.error or "")[:200]})
    return rows


def formatted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with floats as in the tables (NaN empty), for the CSV files."""
    return [{k: cell(v) if isinstance(v, float) else v for k, v in r.items()} for r in rows]


def _mean_std_text(row: dict[str, Any], metric: str) -> str:
    mean, std = cell(row[f"{metric} mean"]), cell(row[f"{metric} std"])
    return f"{mean} ± {std}" if row["done"] > 1 and mean else mean


def group_markdown(rows: list[dict[str, Any]], keys: list[str], metrics: list[str]) -> str:
    shown = [{**({k: r[k] for k in keys} if keys else {"config": r["config"]}), "n": r["done"],
              **{m: _mean_std_text(r, m) for m in metrics},
              **{k: r[k] for k in ("failed", "running", "interrupted") if r[k]}}
             for r in rows]
    return markdown_table(shown, columns_of(shown))


def _or0(x: float) -> float:
    return 0.0 if math.isnan(x) else x


def plot_bars(rows: list[dict[str, Any]], metrics: list[str], path: Path) -> None:
    """Bars of each headline metric per configuration, std over seeds as error bars."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(rows) * max(1, len(metrics))), 3.5))
    width = 0.8 / max(1, len(metrics))
    for i, m in enumerate(metrics):
        xs = [x + (i - (len(metrics) - 1) / 2) * width for x in range(len(rows))]
        ax.bar(xs, [r[f"{m} mean"] for r in rows], width, yerr=[_or0(r[f"{m} std"]) for r in rows], capsize=3, label=m)
    ax.set_xticks(range(len(rows)), [f"{r['config']}\n(n={r['done']})" for r in rows], fontsize=8)
    ax.set_ylabel("mean ± std over seeds")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_thinking(curves: dict[str, dict[str, list[tuple[int, float, float]]]], path: Path) -> None:
    """One panel per step metric (``val/acc_step{k}``, ...): mean ± std over seeds against thinking step k."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3.5), squeeze=False)
    for ax, (metric, by_config) in zip(axes[0], sorted(curves.items()), strict=True):
        for label, points in sorted(by_config.items()):
            ks, means, stds = zip(*points, strict=True)
            ax.errorbar(ks, means, yerr=[_or0(s) for s in stds], marker="o", capsize=3, label=label)
        ax.set_xlabel("thinking step k")
        ax.set_ylabel(f"val/{metric}")
        ax.legend(fontsize=7)
    save_figure(fig, path)


def main(cfg: DictConfig) -> int:
    """The ``scripts/collect.py`` command (options: the module docstring): 0 when the tables were written."""
    dirs = path_list(cfg, "dirs", "multirun folders")
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise ConfigError(f"not a folder: {', '.join(missing)}")
    jobs = load_jobs(dirs)
    metrics = [str(m) for m in listed(cfg, "metrics")] or headline(jobs)
    check_metrics(jobs, metrics)
    out = Path(str(cfg.out)) if cfg.out else dirs[0] / "collect"
    seed_key = str(cfg.seed_key)
    keys, common = split_keys(jobs, seed_key)
    config_keys = [k for k in keys if k != seed_key]
    rows = job_rows(jobs, keys, metrics, dirs[0])
    groups = group(jobs, config_keys, metrics)
    failed = any(j.status == "failed" for j in jobs)
    common_line = " ".join(f"{k}={v}" for k, v in common.items()) or "(none)"
    table = "\n\n".join([f"Common overrides: {common_line}",
                          markdown_table(rows, ["status", *keys, *metrics, "seconds", *(["error"] if failed else [])]),
                          group_markdown(groups, config_keys, metrics)])
    print(table)
    write_text(out / "table.md", table + "\n")
    write_csv(formatted(rows), out / "jobs.csv", lineterminator="\n")
    write_csv(formatted(groups), out / "groups.csv", lineterminator="\n")
    written = ["jobs.csv", "groups.csv", "table.md"]
    if any(g["done"] for g in groups) and metrics:
        plot_bars([g for g in groups if g["done"]], metrics, out / "bars.png")
        written.append("bars.png")
    if curves := thinking_curves(jobs, config_keys):
        plot_thinking(curves, out / "thinking.png")
        written.append("thinking.png")
    print(f"\nwrote {', '.join(written)} to {out}", file=sys.stderr)
    return 0
