"""The driver behind ``scripts/think.py``: evaluate, then write the CSV / markdown table / PNG plots.

Outputs (in ``out_dir``): ``thinking.csv`` (every row, with the verifier columns on fixed-mode rows), ``thinking.md``
(the printed report: the settings table, the thinking improvement table, one trajectory sentence per split, the
verifier table), ``thinking.png`` (metric vs forward passes), ``thinking_energy.png`` (best-of-1: metric and mean
energy vs thinking steps, the trained step count marked) and ``verifier.csv`` (split, best_of, steps, samples, right,
energy_auroc, energy_error_rho, right_rule, note). Definitions: :mod:`ebt.analysis.thinking.thinking_eval` and
:mod:`ebt.analysis.thinking.verifier`.

Thinking improvement (:mod:`ebt.analysis.thinking.selection`): per metric (the task's and the loss) and split, the
relative change from the trained setting (best-of-1 at the training steps) to the setting chosen on ``val`` by that
metric, and, without any selection, to 2x and 4x the trained steps at best-of-1. On ``val`` the chosen setting's
improvement is in-sample (marked so: it is >= 0 by construction); every other split is held out.

Evaluation noise: each batch is seeded from ``(seed, split, batch index)``, every setting alike; ``seed=0`` (the
default) is validation's seed, so the trained setting reproduces the run's validation (``summary.json``) and
``scripts/eval.py`` on the same batches.
"""

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from omegaconf import DictConfig

from ebt.analysis import run_options as opts
from ebt.analysis.plotting import columns_of, markdown_table, pyplot, save_figure, write_csv, write_text
from ebt.analysis.thinking.selection import SELECT_ON, fixed_step_change, thinking_improvement
from ebt.analysis.thinking.thinking_eval import (
    evaluate_baseline,
    evaluate_loops,
    evaluate_thinking,
    trajectory_summary,
)
from ebt.errors import ConfigError
from ebt.options import int_list
from ebt.training.restore import Run, load_run


def _load_ebt(path: str, data_overrides: dict[str, Any] | None = None) -> Run:
    run = load_run(path, data_overrides)
    if not run.objective.thinks:
        raise ConfigError(f"ckpt={path} is a {type(run.objective).__name__} checkpoint; think.py needs an EBT "
                          "(trained with model/objective=ebt); pass a predictor as baseline_ckpt=")
    return run


def _load_baseline(path: str, run: Run, data_overrides: dict[str, Any] | None = None) -> Run:
    baseline = load_run(path, data_overrides)
    if not baseline.objective.one_pass:
        raise ConfigError(f"baseline_ckpt={path} is a {type(baseline.objective).__name__} checkpoint; the baseline "
                          "is a predictor (trained with model/objective=predict), drawn as a flat line at one "
                          "forward pass")
    if baseline.task.describe() != run.task.describe():
        raise ConfigError(f"baseline_ckpt={path} was trained on '{baseline.task.describe()}' but the EBT on "
                          f"'{run.task.describe()}'; the fair comparison needs the same task")
    return baseline


def _load_looped(path: str, run: Run, data_overrides: dict[str, Any] | None = None) -> Run:
    looped = load_run(path, data_overrides)
    if not looped.objective.one_pass or not hasattr(looped.objective.backbone, "eval_loops"):
        raise ConfigError(f"looped_ckpt={path} is not a looped predictor (model/objective=predict "
                          "model/backbone=looped); it is drawn as its own loops axis")
    if looped.task.describe() != run.task.describe():
        raise ConfigError(f"looped_ckpt={path} was trained on '{looped.task.describe()}' but the EBT on "
                          f"'{run.task.describe()}'; the fair comparison needs the same task")
    return looped


class Progress:
    """``thinking: settings 4/24, batch 2/3, 0:41 elapsed`` on stderr: one line rewritten in place on a terminal,
    else a line each time a group of settings is finished."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.started = time.time()
        self.tty = self.stream.isatty()

    def __call__(self, done: int, total: int, batch: int, batches: int) -> None:
        elapsed = int(time.time() - self.started)
        line = f"thinking: settings {done}/{total}, batch {batch}/{batches}, {elapsed // 60}:{elapsed % 60:02d} elapsed"
        if self.tty:
            self.stream.write("\r" + line + ("\n" if done == total and batch == batches else ""))
        elif batch == batches:
            self.stream.write(line + "\n")
        self.stream.flush()


def think(cfg: DictConfig) -> list[dict[str, Any]]:
    """Evaluate ``cfg.ckpt`` at every (split, best_of, steps) setting, or at every ``loops`` value of a looped
    backbone; returns the table's rows."""
    if cfg.get("loops"):
        return think_loops(cfg)
    steps, best_of = _sorted_int_list(cfg, "steps"), _sorted_int_list(cfg, "best_of")
    if cfg.energy_tol is not None and cfg.energy_tol <= 0:
        raise ConfigError(f"energy_tol={cfg.energy_tol} must be > 0 (or null to skip the adaptive rule)")
    ckpt, data_overrides = opts.checkpoint_option(cfg, "ckpt"), opts.data_overrides(cfg)
    run = _load_ebt(ckpt, data_overrides)
    if cfg.get("backtrack") is not None:  # an evaluation-only safeguard: ablated on the same checkpoint
        if not isinstance(cfg.backtrack, bool):
            raise ConfigError(f"backtrack={cfg.backtrack!r} must be true, false or null (the run's setting)")
        run.objective.config.step_rule.backtrack = cfg.backtrack
    baseline = None
    if cfg.baseline_ckpt:
        baseline = _load_baseline(opts.checkpoint_option(cfg, "baseline_ckpt"), run, data_overrides)
    splits, batches, batch_size = opts.eval_plan(cfg, run)
    seed = int(cfg.seed)

    rows = evaluate_thinking(run, steps=steps, best_of=best_of, splits=splits, batches=batches,
                             batch_size=batch_size, energy_tol=cfg.energy_tol, langevin_std=cfg.langevin_std,
                             seed=seed, progress=Progress())
    if baseline is not None:
        rows += evaluate_baseline(baseline, splits=splits, batches=batches, batch_size=batch_size, seed=seed)
    if cfg.get("looped_ckpt"):
        looped = _load_looped(opts.checkpoint_option(cfg, "looped_ckpt"), run, data_overrides)
        rows += evaluate_loops(looped, loops=_sorted_int_list(cfg, "looped_loops"), splits=splits, batches=batches,
                               batch_size=batch_size, seed=seed)
    task = run.task

    out_dir = opts.out_dir(cfg, ckpt, "thinking")
    table = markdown_table(rows, [*THINKING_COLUMNS, task.metric, "loss", "energy"])
    lines = [f"Thinking: {task.describe()}; trained with {run.objective.steps} steps; evaluation seed {seed}", "",
             table, ""]
    lines += [improvement_report(rows, {task.metric: task.metric_mode, "loss": "min"}, run.objective.steps)]
    lines += ["", "Energy along the thinking steps (best-of-1):"]
    lines += trajectory_summary(rows, task.metric, task.metric_mode, run.objective.steps).values()
    verifier = verifier_rows(rows)
    lines += ["", verifier_report(verifier)]
    text = "\n".join(lines)
    print(text)
    write_text(out_dir / "thinking.md", text + "\n")
    write_csv(rows, out_dir / "thinking.csv")
    write_text(out_dir / "thinking.json", json.dumps({
        "metric": task.metric, "metric_mode": task.metric_mode, "trained_steps": run.objective.steps,
        "task": task.describe(), "ckpt": str(ckpt), "seed": run.config.get("seed"), "eval_seed": seed},
        indent=2) + "\n")
    write_csv(verifier, out_dir / "verifier.csv", VERIFIER_CSV_COLUMNS)
    plot, energy_plot = out_dir / "thinking.png", out_dir / "thinking_energy.png"
    plot_thinking(rows, task.metric, plot)
    plot_energy(rows, task.metric, run.objective.steps, energy_plot)
    print(f"\nwrote {out_dir / 'thinking.csv'}, {out_dir / 'thinking.md'}, {out_dir / 'verifier.csv'}, {plot}, "
          f"{energy_plot}")
    if cfg.wandb:
        _log_wandb(rows, plot, run, energy_plot)
    return rows


STEP_MULTIPLES = (2, 4)  # fixed-step columns: 2x and 4x the trained steps, best-of-1
IN_SAMPLE = " (in-sample)"


def _percent(value: float) -> str:
    return f"{100 * value:+.1f}%" if math.isfinite(value) else "n/a"


def improvement_rows(rows: list[dict[str, Any]], metrics: dict[str, str], train_steps: int,
                     select_on: str = SELECT_ON) -> list[dict[str, Any]]:
    """The thinking improvement table (module docstring): one row per metric (name -> direction) and split."""
    out = []
    for name, mode in metrics.items():
        found = thinking_improvement(rows, name, mode, train_steps, select_on=select_on)
        fixed = {k: fixed_step_change(rows, name, mode, train_steps, k * train_steps) for k in STEP_MULTIPLES}
        for split, r in found.items():
            improvement = _percent(r["improvement"])
            out.append({"split": split, "metric": name, f"trained ({train_steps} steps, best-of-1)": r["trained"],
                        f"selected on {select_on}": r["selected"], "setting": r["setting"] or "n/a",
                        "improvement": improvement + (IN_SAMPLE if r["in_sample"] and improvement != "n/a" else ""),
                        **{f"{k * train_steps} steps ({k}x), best-of-1": _percent(fixed[k].get(split, math.nan))
                           for k in STEP_MULTIPLES}})
    return out


def improvement_report(rows: list[dict[str, Any]], metrics: dict[str, str], train_steps: int,
                       select_on: str = SELECT_ON) -> str:
    """The thinking improvement table in markdown, with what it means."""
    table = improvement_rows(rows, metrics, train_steps, select_on)
    head = (f"Thinking improvement: relative change from {train_steps} steps, best-of-1 (trained), to the setting "
            f"chosen on {select_on} by each metric (positive = better); on {select_on} itself it is in-sample (>= 0 by "
            f"construction), the other splits are held out. The fixed-step columns need no choice: best-of-1 at 2x "
            f"and 4x the trained steps.")
    if not any(r["split"] == select_on for r in rows):
        head += f" No {select_on} rows were evaluated, so no setting is chosen: add {select_on} to splits=."
    return head + "\n\n" + (markdown_table(table, list(table[0])) if table else
                             f"(no best-of-1 row at the trained {train_steps} steps: add {train_steps} to steps=)")


VERIFIER_COLUMNS = ["split", "best_of", "steps", "samples", "right", "energy_auroc", "energy_error_rho"]
VERIFIER_CSV_COLUMNS = [*VERIFIER_COLUMNS, "right_rule", "note"]


def verifier_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The verifier table: one row per fixed-mode setting."""
    return [{**{c: r[c] for c in VERIFIER_COLUMNS}, "right_rule": r["right_rule"], "note": r["verifier_note"]}
            for r in rows if r["mode"] == "fixed" and "energy_auroc" in r]


def verifier_report(verifier: list[dict[str, Any]]) -> str:
    """The verifier table in markdown, with what ``right`` means and why a cell is empty (NaN)."""
    rules = " / ".join(dict.fromkeys(r["right_rule"] for r in verifier))
    head = ("Is the energy a verifier? Per sample over all evaluated batches: energy_auroc = P(a wrong sample has "
            "a higher final energy than a right one) (0.5: chance), energy_error_rho = Spearman(energy, error); "
            f"{rules}")
    columns = VERIFIER_COLUMNS + (["note"] if any(r["note"] for r in verifier) else [])
    return head + "\n\n" + markdown_table(verifier, columns)


def think_loops(cfg: DictConfig) -> list[dict[str, Any]]:
    """A looped backbone (predictor or EBT) evaluated at each ``loops`` value: more loops = thinking longer."""
    loops = _sorted_int_list(cfg, "loops")
    ckpt = opts.checkpoint_option(cfg, "ckpt")
    run = load_run(ckpt, opts.data_overrides(cfg))
    splits, batches, batch_size = opts.eval_plan(cfg, run)
    rows = evaluate_loops(run, loops=loops, splits=splits, batches=batches, batch_size=batch_size,
                          seed=int(cfg.seed))
    metric = run.task.metric
    table = markdown_table(rows, ["split", "loops", metric, "loss"])
    text = f"Loops: {run.task.describe()}; trained with {run.config.model.backbone.loops} loops\n\n" + table
    print(text)
    out_dir = opts.out_dir(cfg, ckpt, "thinking")
    write_text(out_dir / "loops.md", text + "\n")
    write_csv(rows, out_dir / "loops.csv")
    _plot_lines(rows, "loops", metric, out_dir / "loops.png", "loops at evaluation", "Looping longer: metric vs loops")
    print(f"\nwrote {out_dir / 'loops.csv'}, {out_dir / 'loops.md'}, {out_dir / 'loops.png'}")
    return rows


def _plot_lines(rows: list[dict[str, Any]], x: str, metric: str, path: Path, xlabel: str, title: str) -> None:
    """One line of ``metric`` against ``x`` per split."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for split in dict.fromkeys(r["split"] for r in rows):
        line = [r for r in rows if r["split"] == split]
        ax.plot([r[x] for r in line], [r[metric] for r in line], marker="o", label=split)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


THINKING_COLUMNS = ["split", "mode", "best_of", "steps", "loops", "steps_used", "forward_passes"]


def plot_thinking(rows: list[dict[str, Any]], metric: str, path: Path) -> None:
    """Metric vs forward passes (log x): one line per split and best-of-N, predictors as flat lines."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colors = {}
    for split, n in dict.fromkeys((r["split"], r["best_of"]) for r in rows if r["mode"] == "fixed"):
        line = [r for r in rows if (r["split"], r["best_of"], r["mode"]) == (split, n, "fixed")]
        (handle,) = ax.plot([r["forward_passes"] for r in line], [r[metric] for r in line], marker="o",
                            label=f"EBT {split}, best-of-{n}")
        colors[split, n] = handle.get_color()
    for r in rows:
        if r["mode"] == "adaptive":
            ax.scatter([r["forward_passes"]], [r[metric]], marker="*", s=140, zorder=3,
                       color=colors.get((r["split"], r["best_of"])),
                       label=f"EBT {r['split']}, best-of-{r['best_of']}, adaptive stop")
        if r["mode"] == "predictor":
            ax.axhline(r[metric], linestyle="--", color="gray", linewidth=1)
            ax.annotate(f"predictor {r['split']}", (1.0, r[metric]), textcoords="offset points", xytext=(2, 3),
                        fontsize=8, color="gray")
    for split in dict.fromkeys(r["split"] for r in rows if r["mode"] == "loops"):
        line = [r for r in rows if (r["split"], r["mode"]) == (split, "loops")]
        ax.plot([r["forward_passes"] for r in line], [r[metric] for r in line], marker="^", linestyle="-.",
                label=f"looped predictor {split} (loops {line[0]['loops']}..{line[-1]['loops']})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("forward passes per prediction")
    ax.set_ylabel(metric)
    ax.set_title("Thinking longer: metric vs compute")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def plot_energy(rows: list[dict[str, Any]], metric: str, train_steps: int, path: Path) -> None:
    """Best-of-1, fixed mode, one panel per split: the metric (left axis) and the mean energy over scored positions
    (right axis, dashed) against thinking steps; a vertical line at the trained step count."""
    plt = pyplot()
    splits = list(dict.fromkeys(r["split"] for r in rows if r["mode"] == "fixed" and r["best_of"] == 1))
    fig, axes = plt.subplots(1, max(len(splits), 1), figsize=(5.0 * max(len(splits), 1), 3.8), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=False):
        line = sorted((r for r in rows if (r["split"], r["mode"], r["best_of"]) == (split, "fixed", 1)),
                      key=lambda r: r["steps"])
        x = [r["steps"] for r in line]
        ax.plot(x, [r[metric] for r in line], marker="o", color="C0", label=metric)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("thinking steps")
        ax.set_ylabel(metric, color="C0")
        ax.axvline(train_steps, color="gray", linestyle=":", linewidth=1.2, label=f"trained ({train_steps} steps)")
        twin = ax.twinx()
        twin.plot(x, [r.get("energy_scored", r["energy"]) for r in line], marker="s", linestyle="--", color="C3",
                  label="mean energy")
        twin.set_ylabel("mean energy (scored positions)", color="C3")
        ax.set_title(f"{split}: {metric} and energy vs thinking steps", fontsize=9)
        ax.grid(alpha=0.3)
        handles = ax.get_legend_handles_labels()
        twin_handles = twin.get_legend_handles_labels()
        ax.legend(handles[0] + twin_handles[0], handles[1] + twin_handles[1], fontsize=7)
    save_figure(fig, path)


def _log_wandb(rows: list[dict[str, Any]], plot: Path, run: Run, energy_plot: Path | None = None) -> None:
    import wandb

    columns = columns_of(rows)
    project = (run.config.get("logger") or {}).get("wandb", {}).get("project", "ebt-alt-arch")
    with wandb.init(project=project, job_type="think", config={"ckpt": str(run.path)}) as w:
        w.log({"thinking/table": wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows]),
               "thinking/plot": wandb.Image(str(plot)),
               **({"thinking/energy_plot": wandb.Image(str(energy_plot))} if energy_plot else {})})


def _sorted_int_list(cfg: DictConfig, key: str) -> list[int]:
    """``cfg[key]`` as sorted distinct integers >= 1 (:func:`ebt.options.int_list`)."""
    return sorted(set(int_list(cfg, key)))
