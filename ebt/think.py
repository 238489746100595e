"""The driver behind ``scripts/think.py``: evaluate, then write the CSV / markdown table / PNG plot."""

import csv
import io
import math
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, ListConfig

from ebt.checkpoint import atomic_write, atomic_write_text
from ebt.errors import ConfigError
from ebt.objectives.ebt import EBT
from ebt.system2 import Run, evaluate_baseline, evaluate_loops, evaluate_thinking, load_run, thinking_improvement


def _int_list(cfg: DictConfig, key: str) -> list[int]:
    value = cfg[key]
    values = list(value) if isinstance(value, ListConfig | list | tuple) else [value]
    if not values or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
        raise ConfigError(f"{key}={values} must be a non-empty list of integers >= 1, e.g. {key}=[1,2,4]")
    return sorted(set(values))


def _load_ebt(path: str) -> Run:
    run = load_run(path)
    if not isinstance(run.objective, EBT):
        raise ConfigError(f"ckpt={path} is a {type(run.objective).__name__} checkpoint; think.py needs an EBT "
                          "(trained with model/objective=ebt); pass a predictor as baseline_ckpt=")
    return run


def _load_baseline(path: str, run: Run) -> Run:
    baseline = load_run(path)
    if baseline.task.describe() != run.task.describe():
        raise ConfigError(f"baseline_ckpt={path} was trained on '{baseline.task.describe()}' but the EBT on "
                          f"'{run.task.describe()}'; the fair comparison needs the same task")
    return baseline


def _eval_plan(cfg: DictConfig, run: Run) -> tuple[list[str], int, int]:
    """Splits, number of batches and batch size of the evaluation."""
    splits = list(cfg.splits)
    unknown = [s for s in splits if s not in (*run.task.eval_splits, "test", "train")]
    if unknown:
        raise ConfigError(f"splits={splits}: {unknown} unknown for this task; use some of {run.task.eval_splits}")
    data = run.config.data
    return splits, cfg.eval_batches or data.eval_batches, cfg.eval_batch_size or data.get("eval_batch_size") \
        or data.batch_size


def _out_dir(cfg: DictConfig) -> Path:
    return Path(cfg.out_dir) if cfg.out_dir else Path(cfg.ckpt).resolve().parent.parent / "thinking"


def think(cfg: DictConfig) -> list[dict[str, Any]]:
    """Evaluate ``cfg.ckpt`` at every (split, best_of, steps) setting, or at every ``loops`` value of a looped
    backbone; returns the table's rows."""
    if cfg.get("loops"):
        return think_loops(cfg)
    steps, best_of = _int_list(cfg, "steps"), _int_list(cfg, "best_of")
    if cfg.energy_tol is not None and cfg.energy_tol <= 0:
        raise ConfigError(f"energy_tol={cfg.energy_tol} must be > 0 (or null to skip the adaptive rule)")
    run = _load_ebt(cfg.ckpt)
    baseline = _load_baseline(cfg.baseline_ckpt, run) if cfg.baseline_ckpt else None
    splits, batches, batch_size = _eval_plan(cfg, run)

    L.seed_everything(cfg.seed, verbose=False)
    rows = evaluate_thinking(run, steps=steps, best_of=best_of, splits=splits, batches=batches,
                             batch_size=batch_size, energy_tol=cfg.energy_tol, langevin_std=cfg.langevin_std)
    if baseline is not None:
        rows += evaluate_baseline(baseline, splits=splits, batches=batches, batch_size=batch_size)
    task = run.task
    improvements = {task.metric: thinking_improvement(rows, task.metric, task.metric_mode, run.objective.steps),
                     "loss": thinking_improvement(rows, "loss", "min", run.objective.steps)}

    out_dir = _out_dir(cfg)
    table = markdown_table(rows, task.metric)
    lines = [f"Thinking: {task.describe()}; trained with {run.objective.steps} steps", "", table, ""]
    lines += [f"thinking improvement ({split}, {name}): "
              + (f"{100 * value:+.1f}%" if math.isfinite(value) else f"n/a ({name} is 0)")
              + f" (from {run.objective.steps} steps, best-of-1, to the best setting)"
              for name, improvement in improvements.items() for split, value in improvement.items()]
    text = "\n".join(lines)
    print(text)
    atomic_write_text(out_dir / "thinking.md", text + "\n")
    atomic_write_text(out_dir / "thinking.csv", to_csv(rows))
    plot = out_dir / "thinking.png"
    plot_thinking(rows, task.metric, plot)
    print(f"\nwrote {out_dir / 'thinking.csv'}, {out_dir / 'thinking.md'}, {plot}")
    if cfg.wandb:
        _log_wandb(rows, plot, run)
    return rows


def think_loops(cfg: DictConfig) -> list[dict[str, Any]]:
    """A looped backbone (predictor or EBT) evaluated at each ``loops`` value: more loops = thinking longer."""
    loops = _int_list(cfg, "loops")
    run = load_run(cfg.ckpt)
    splits, batches, batch_size = _eval_plan(cfg, run)
    L.seed_everything(cfg.seed, verbose=False)
    rows = evaluate_loops(run, loops=loops, splits=splits, batches=batches, batch_size=batch_size)
    metric = run.task.metric
    table = ["| split | loops | " + metric + " | loss |", "|---|---|---|---|"]
    table += [f"| {r['split']} | {r['loops']} | {r[metric]:.4g} | {r['loss']:.4g} |" for r in rows]
    text = f"Loops: {run.task.describe()}; trained with {run.config.model.backbone.loops} loops\n\n" + "\n".join(table)
    print(text)
    out_dir = _out_dir(cfg)
    atomic_write_text(out_dir / "loops.md", text + "\n")
    atomic_write_text(out_dir / "loops.csv", to_csv(rows))
    _plot_lines(rows, "loops", metric, out_dir / "loops.png", "loops at evaluation", "Looping longer: metric vs loops")
    print(f"\nwrote {out_dir / 'loops.csv'}, {out_dir / 'loops.md'}, {out_dir / 'loops.png'}")
    return rows


def _plot_lines(rows: list[dict[str, Any]], x: str, metric: str, path: Path, xlabel: str, title: str) -> None:
    """One line of ``metric`` against ``x`` per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for split in dict.fromkeys(r["split"] for r in rows):
        line = [r for r in rows if r["split"] == split]
        ax.plot([r[x] for r in line], [r[metric] for r in line], marker="o", label=split)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)


def to_csv(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def markdown_table(rows: list[dict[str, Any]], metric: str) -> str:
    columns = ["split", "mode", "best_of", "steps", "steps_used", "forward_passes", metric, "loss", "energy"]
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        cells = [f"{r[c]:.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in columns]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def plot_thinking(rows: list[dict[str, Any]], metric: str, path: Path) -> None:
    """Metric vs forward passes (log x): one line per split and best-of-N, predictors as flat lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    ax.set_xscale("log", base=2)
    ax.set_xlabel("forward passes per prediction")
    ax.set_ylabel(metric)
    ax.set_title("Thinking longer: metric vs compute")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)


def _log_wandb(rows: list[dict[str, Any]], plot: Path, run: Run) -> None:
    import wandb

    columns = list(dict.fromkeys(k for r in rows for k in r))
    project = (run.config.get("logger") or {}).get("wandb", {}).get("project", "ebt-alt-arch")
    with wandb.init(project=project, job_type="think", config={"ckpt": str(run.path)}) as w:
        w.log({"thinking/table": wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows]),
               "thinking/plot": wandb.Image(str(plot))})
