"""What a run reports at the end: ``summary.json`` (:func:`make_summary`) and the tables printed after training
(:func:`print_summary`).

``summary.json`` says what was run and what it cost: ``forward_flops_per_token`` is the analytic forward count of the
model's matrix multiplies (the same for a predictor and an EBT of one backbone); ``train_step_flops`` and
``thinking_step_flops`` are *measured* (:func:`ebt.training.flops.measured_flops`: one training step, forward and
backward, second-order terms included; one evaluation-time thinking step of an EBT), ``git`` the commit of the code
and whether tracked files differed from it, ``versions`` the libraries, ``seed`` the run's seed
(:mod:`ebt.training.provenance`). The progress bar and model summary printed during training are
:mod:`ebt.training.progress`'s.
"""

from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from rich.console import Console
from rich.table import Table

from alt_arch.utils import forward_flops_per_token, num_params
from ebt.training.flops import measured_flops
from ebt.training.provenance import provenance


def make_summary(cfg, task, model, trainer, metrics, last_ckpt, seconds) -> dict[str, Any]:
    csv_logger = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
    seq_len = next(iter(task.make_batch("train", 0, 1).values())).shape[1]
    return {
        "task": task.describe(),
        "objective": type(model.objective).__name__,
        "metric": task.metric,
        "params": num_params(model.objective),
        "params_non_embedding": num_params(model.objective, exclude_embeddings=True),
        "forward_flops_per_token": forward_flops_per_token(model.objective, seq_len=seq_len),
        **measured_flops(model.objective, task),
        **provenance(cfg.seed),
        "steps": trainer.global_step,
        "seconds": round(seconds, 1),
        "metrics": metrics,
        "checkpoint": str(last_ckpt),
        "metrics_csv": str(Path(csv_logger.log_dir) / "metrics.csv") if csv_logger else None,
        "output_dir": str(cfg.paths.output_dir),
    }


def print_summary(summary: dict[str, Any]) -> None:
    print(f"Summary: {summary['task']} ({summary['objective']})", flush=True)  # not a table title: those wrap
    table = Table()
    table.add_column("split")
    table.add_column(summary["metric"], justify="right")
    table.add_column("loss", justify="right")
    metrics, metric = summary["metrics"], summary["metric"]
    for split in eval_splits(metrics, metric):
        loss = metrics.get(f"{split}/loss", float("nan"))
        table.add_row(split, f"{metrics[f'{split}/{metric}']:.4f}", f"{loss:.4f}")
    console = Console()
    console.print(table)
    print(f"params {summary['params']:,} (non-embedding {summary['params_non_embedding']:,}), "
          f"{summary['steps']} steps in {summary['seconds']} s", flush=True)
    thinking = thinking_table(summary)
    if thinking is not None:
        print("Thinking: metric after k steps (k=0: the initial candidate)", flush=True)
        console.print(thinking)
    # paths with plain print: a rich console hard-wraps them at the terminal width, and they must stay copyable
    output_dir = Path(summary["output_dir"])
    lines = [f"checkpoint: {summary['checkpoint']}"]
    if summary.get("metrics_csv"):
        lines.append(f"metrics:    {summary['metrics_csv']}")
    lines += [f"summary:    {output_dir / 'summary.json'}", f"run folder: {output_dir}"]
    print("\n".join(lines), flush=True)


def eval_splits(metrics: dict[str, float], metric: str) -> list[str]:
    """The evaluated splits with a ``<split>/<metric>`` value: ``val``, ``ood``, then any other (e.g. the text task's
    ``ood_<name>`` corpora) in the order logged; ``train`` is left out."""
    logged = [key.rsplit("/", 1)[0] for key in metrics if key.endswith(f"/{metric}") and key.count("/") == 1]
    rest = [s for s in dict.fromkeys(logged) if s not in ("train", "val", "ood")]
    return [s for s in ("val", "ood") if s in logged] + rest


def thinking_curve(metrics: dict[str, float], name: str) -> dict[int, float]:
    """``{k: metrics[f"{name}_step{k}"]}`` for every logged thinking step k, in order."""
    prefix = f"{name}_step"
    steps = {int(key[len(prefix):]): value for key, value in metrics.items()
             if key.startswith(prefix) and key[len(prefix):].isdigit()}
    return dict(sorted(steps.items()))


def thinking_table(summary: dict[str, Any]) -> Table | None:
    """The metric and mean energy after each thinking step k (EBT runs), one column per split."""
    metrics, metric = summary["metrics"], summary["metric"]
    splits = [s for s in ("val", "ood") if thinking_curve(metrics, f"{s}/{metric}")]  # more would not fit 80 columns
    if not splits:
        return None
    table = Table()
    table.add_column("k", justify="right")
    for split in splits:
        table.add_column(f"{split}/{metric}", justify="right")
        table.add_column(f"{split}/energy", justify="right")
    curves = {s: (thinking_curve(metrics, f"{s}/{metric}"), thinking_curve(metrics, f"{s}/energy")) for s in splits}
    for k in curves[splits[0]][0]:
        row = [str(k)]
        for split in splits:
            values, energies = curves[split]
            row += [f"{values.get(k, float('nan')):.4f}", f"{energies.get(k, float('nan')):.4f}"]
        table.add_row(*row)
    return table
