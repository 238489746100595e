"""The end-of-run summary: ``summary.json`` contents and the tables printed to the terminal."""

from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from rich.console import Console
from rich.table import Table

from alt_arch.utils import forward_flops_per_token, num_params


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
        "steps": trainer.global_step,
        "seconds": round(seconds, 1),
        "metrics": metrics,
        "checkpoint": str(last_ckpt),
        "metrics_csv": str(Path(csv_logger.log_dir) / "metrics.csv") if csv_logger else None,
        "output_dir": str(cfg.paths.output_dir),
    }


def print_summary(summary: dict[str, Any]) -> None:
    table = Table(title=f"Summary: {summary['task']} ({summary['objective']})")
    table.add_column("split")
    table.add_column(summary["metric"], justify="right")
    table.add_column("loss", justify="right")
    metrics, metric = summary["metrics"], summary["metric"]
    for split in ("val", "ood"):
        if f"{split}/{metric}" in metrics:
            loss = metrics.get(f"{split}/loss", float("nan"))
            table.add_row(split, f"{metrics[f'{split}/{metric}']:.4f}", f"{loss:.4f}")
    console = Console()
    console.print(table)
    console.print(f"params {summary['params']:,} (non-embedding {summary['params_non_embedding']:,}), "
                  f"{summary['steps']} steps in {summary['seconds']} s")
    thinking = thinking_table(summary)
    if thinking is not None:
        console.print(thinking)
    console.print(f"checkpoint: {summary['checkpoint']}\nmetrics:    {summary['metrics_csv']}")


def thinking_curve(metrics: dict[str, float], name: str) -> dict[int, float]:
    """``{k: metrics[f"{name}_step{k}"]}`` for every logged thinking step k, in order."""
    prefix = f"{name}_step"
    steps = {int(key[len(prefix):]): value for key, value in metrics.items()
             if key.startswith(prefix) and key[len(prefix):].isdigit()}
    return dict(sorted(steps.items()))


def thinking_table(summary: dict[str, Any]) -> Table | None:
    """The metric and mean energy after each thinking step k (EBT runs), one column per split."""
    metrics, metric = summary["metrics"], summary["metric"]
    splits = [s for s in ("val", "ood") if thinking_curve(metrics, f"{s}/{metric}")]
    if not splits:
        return None
    table = Table(title="Thinking: metric after k steps (k=0: the initial candidate)")
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
