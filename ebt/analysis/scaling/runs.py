"""A grid's finished jobs as scaling-law series: one :class:`~ebt.analysis.scaling.fit.Series` per objective and size.

Jobs are found as :mod:`ebt.analysis.tools.collect` finds them (folders with ``.hydra/``; only ``done`` ones count).
Per job:

* **objective**: its ``model/objective`` override (``predict``, ``ebt``, ``ebt_s2``, ...), else the objective class
  named in ``summary.json``, lower-cased; **seed**: its ``seed`` override, else ``summary.json``'s;
* **size**: the overrides that vary across the grid, minus the seed and the objective (``model.dim=64``);
* **X** of a size: ``params`` = ``summary.json``'s ``params_non_embedding`` (every parameter except the
  ``nn.Embedding`` tables, Kaplan et al.'s N) or ``params`` (all, with ``params=all``); ``depth`` =
  ``model.backbone.n_layers`` of ``.hydra/config.yaml``;
* **X along a val curve** (the rows of the CSV logger's ``csv/metrics.csv`` that hold the metric): ``tokens`` = steps x
  ``effective_batch`` x ``data.task.seq_len`` (tokens seen), ``flops`` = steps x ``train_step_flops`` /
  ``flops_batch_size`` x ``effective_batch`` (the *measured* FLOPs of a training step in ``summary.json``, second-order
  terms of the EBT included; not 6ND). Lightning logs a validation inside ``fit`` at the index of the last
  training step (``k - 1`` after ``k`` steps) and the final validation at ``k``: the steps done are
  ``min(step + 1, summary steps)``, the last row of a step wins.
* **L**: the metric of the final validation (``summary.json``) for ``params`` / ``depth``; the val curve for
  ``tokens`` / ``flops``.
"""

import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ebt.analysis.scaling.fit import Series
from ebt.analysis.tools.collect import Job, config_label, load_jobs, split_keys
from ebt.errors import DataError

OBJECTIVE_KEY = "model/objective"
SIZE_AXES = ("params", "depth")  # one point per run: the final metric
CURVE_AXES = ("tokens", "flops")  # one point per logged validation
PARAM_COUNTS = {"non_embedding": "params_non_embedding", "all": "params"}


@dataclass
class Run:
    job: Job
    summary: dict[str, Any]
    objective: str
    size: str
    seed: int


def load_runs(dirs: list[Path], seed_key: str = "seed") -> list[Run]:
    """The finished jobs under ``dirs`` (the others named in one line on stderr); :class:`DataError` when none is."""
    jobs = load_jobs(dirs)
    done = [j for j in jobs if j.status == "done" and (j.path / "summary.json").is_file()]
    if len(done) < len(jobs):
        print(f"left out: {len(jobs) - len(done)} of {len(jobs)} jobs are not done (running, failed or interrupted)",
              file=sys.stderr, flush=True)
    if not done:
        raise DataError(f"no finished job under {', '.join(map(str, dirs))}: a scaling fit needs done jobs")
    keys, _ = split_keys(done, seed_key)
    size_keys = [k for k in keys if k not in (seed_key, OBJECTIVE_KEY)]
    runs = []
    for job in done:
        summary = json.loads((job.path / "summary.json").read_text())
        objective = job.overrides.get(OBJECTIVE_KEY) or str(summary.get("objective", "?")).lower()
        seed = job.overrides.get(seed_key, summary.get("seed"))
        runs.append(Run(job, summary, objective, config_label(job, size_keys), int(seed or 0)))
    return runs


def _config_value(run: Run, key: str, axis: str) -> float:
    try:
        value = OmegaConf.select(OmegaConf.load(run.job.path / ".hydra" / "config.yaml"), key)
    except Exception as e:  # noqa: BLE001  (YAML and OmegaConf raise many kinds)
        raise DataError(f"{run.job.path / '.hydra' / 'config.yaml'} cannot be read ({type(e).__name__})") from None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise DataError(f"x={axis} needs {key} in {run.job.path / '.hydra' / 'config.yaml'}; it has {value!r}")
    return float(value)


def size_x(run: Run, axis: str, params: str = "non_embedding") -> float:
    """X of a run's size for ``axis`` in :data:`SIZE_AXES`."""
    if axis == "depth":
        return _config_value(run, "model.backbone.n_layers", axis)
    key = PARAM_COUNTS[params]
    if not isinstance(run.summary.get(key), int | float):
        raise DataError(f"{run.job.path / 'summary.json'} has no {key!r} (params={params})")
    return float(run.summary[key])


def x_per_step(run: Run, axis: str) -> float:
    """Tokens or measured FLOPs of one optimizer step (``axis`` in :data:`CURVE_AXES`)."""
    batch = run.summary.get("effective_batch")
    if not isinstance(batch, int):
        raise DataError(f"{run.job.path / 'summary.json'} has no effective_batch: x={axis} cannot count a step")
    if axis == "tokens":
        return batch * _config_value(run, "data.task.seq_len", axis)
    flops, per = run.summary.get("train_step_flops"), run.summary.get("flops_batch_size") or 1
    if not isinstance(flops, int | float):
        raise DataError(f"{run.job.path / 'summary.json'} has no measured train_step_flops: x=flops cannot count a "
                        "step (the measurement diverged?); use x=tokens")
    return flops / per * batch


def metrics_file(run: Run) -> Path:
    """The CSV logger's file of a run: ``<job>/csv/metrics.csv`` (the grid may have moved since the summary named
    it), else the summary's ``metrics_csv``."""
    local = run.job.path / "csv" / "metrics.csv"
    named = run.summary.get("metrics_csv")
    return local if local.is_file() or not named else Path(named)


def val_curve(run: Run, metric: str) -> dict[int, float]:
    """``{steps done: value}`` of ``metric`` over training (module docstring)."""
    path = metrics_file(run)
    if not path.is_file():
        raise DataError(f"{run.job.path}: no csv/metrics.csv (the csv logger's file), which a val curve is read from; "
                        "train with logger=csv")
    steps_done, curve = int(run.summary.get("steps") or 0), {}
    with path.open() as f:
        rows = list(csv.DictReader(f))
    if rows and metric not in rows[0]:
        names = ", ".join(k for k in rows[0] if k.startswith("val/"))
        raise DataError(f"metric={metric}: {path} has no such column; its val columns: {names}")
    for row in rows:
        if row.get(metric) not in (None, "") and row.get("step") not in (None, ""):
            step = int(float(row["step"])) + 1
            curve[min(step, steps_done) if steps_done else step] = float(row[metric])
    return curve


def final_value(run: Run, metric: str) -> float:
    metrics = run.summary.get("metrics") or {}
    if metric not in metrics:
        names = ", ".join(sorted(metrics)[:30])
        raise DataError(f"metric={metric}: {run.job.path / 'summary.json'} has no such metric; it has: {names}")
    return float(metrics[metric])


def build_series(runs: list[Run], axis: str, metric: str, params: str = "non_embedding") -> dict[str, list[Series]]:
    """``{objective: [one Series per size]}`` (module docstring); two finished jobs of one size and seed are an
    error (two grids of the same configurations: pass one)."""
    out: dict[str, dict[str, Series]] = {}
    where: dict[tuple[str, str, int], Path] = {}
    for run in sorted(runs, key=lambda r: (r.objective, r.size, r.seed)):
        if (key := (run.objective, run.size, run.seed)) in where:
            raise DataError(f"two finished jobs of {run.objective} {run.size} seed {run.seed}: {where[key]} and "
                            f"{run.job.path}; pass one grid of each configuration")
        where[key] = run.job.path
        series = out.setdefault(run.objective, {})
        if axis in SIZE_AXES:
            value = final_value(run, metric)
            series.setdefault(run.size, Series(run.size, {0: size_x(run, axis, params)})).values[run.seed] = {0: value}
        else:
            curve, per_step = val_curve(run, metric), x_per_step(run, axis)
            entry = series.setdefault(run.size, Series(run.size, {}))
            entry.x.update({step: step * per_step for step in curve if step not in entry.x})
            entry.values[run.seed] = curve
    for objective, sizes in out.items():
        bad = [s.label for s in sizes.values() for v in s.values.values() for y in v.values()
               if not (math.isfinite(y) and y > 0)]
        if bad:
            raise DataError(f"metric={metric}: {objective} {bad[0]} has a value <= 0 or not finite; a log-log fit "
                            "needs positive values (a loss)")
    return {objective: list(sizes.values()) for objective, sizes in out.items()}
