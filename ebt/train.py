"""The training entry point behind ``scripts/train.py``: build, fit, checkpoint, evaluate, summarise."""

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from alt_arch.utils import forward_flops_per_token, num_params
from ebt.build import build_datamodule, build_lit_model, build_task, instantiate
from ebt.checkpoint import AtomicCheckpointIO, atomic_write_text, check_compatible, load_checkpoint
from ebt.errors import ConfigError

GPU_ACCELERATORS = {"gpu", "cuda"}


def check_accelerator(trainer_cfg: DictConfig) -> None:
    accelerator = str(trainer_cfg.get("accelerator", "auto")).lower()
    if accelerator in GPU_ACCELERATORS and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={accelerator} but this machine has no CUDA GPU; "
                          "use trainer.accelerator=auto (or cpu)")


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a dict-of-configs group (loggers, callbacks)."""
    if not group:
        return []
    return [instantiate(c) for c in group.values() if c is not None and "_target_" in c]


def make_callbacks(cfg: DictConfig, task) -> list[L.Callback]:
    callbacks = []
    for name, c in (cfg.get("callbacks") or {}).items():
        if c is None:
            continue
        if name == "model_checkpoint" and c.get("monitor") == "task":  # monitor the task's headline metric
            callbacks.append(instantiate(c, monitor=f"val/{task.metric}", mode=task.metric_mode))
        else:
            callbacks.append(instantiate(c))
    return callbacks


def train(cfg: DictConfig) -> dict[str, float]:
    """Train as configured; returns the final evaluation metrics (also written to ``summary.json``)."""
    check_accelerator(cfg.trainer)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    out_dir = Path(cfg.paths.output_dir)
    task = build_task(cfg)
    model = build_lit_model(cfg, task)
    datamodule = build_datamodule(cfg, task)
    if cfg.get("ckpt_path"):
        check_compatible(load_checkpoint(cfg.ckpt_path)["state_dict"], model, cfg.ckpt_path)

    loggers = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=make_callbacks(cfg, task),
                                     plugins=[AtomicCheckpointIO()])
    started = time.time()
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        last = out_dir / "checkpoints" / "last.ckpt"
        trainer.save_checkpoint(last)
        results = trainer.validate(model, datamodule=datamodule, verbose=False)
        metrics = {k: float(v) for r in results for k, v in r.items()}
        summary = _summary(cfg, task, model, trainer, metrics, last, time.time() - started)
        if trainer.is_global_zero:
            atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2))
            print_summary(summary)
    finally:
        if any(isinstance(lg, WandbLogger) for lg in loggers):
            import wandb

            wandb.finish()
    return metrics


def _summary(cfg, task, model, trainer, metrics, last_ckpt, seconds) -> dict[str, Any]:
    csv = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
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
        "metrics_csv": str(Path(csv.log_dir) / "metrics.csv") if csv else None,
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
