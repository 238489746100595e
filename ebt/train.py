"""The training entry point behind ``scripts/train.py``: build, fit, checkpoint, evaluate, summarise.

Reliability (docs/reliability.md): ``ckpt_path=last`` resumes the run in ``paths.output_dir`` (start fresh when it has
no checkpoint yet), SIGTERM / SIGINT save ``checkpoints/last.ckpt`` and exit with 143 / 130, the effective batch and
the learning rate are printed at the start and written to ``summary.json``, and under DDP the ranks' parameter
digests are compared at the end.
"""

import csv
import hashlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from alt_arch.utils import forward_flops_per_token, num_params
from ebt.build import build_datamodule, build_lit_model, build_task, instantiate
from ebt.callbacks import PreemptionCheckpoint
from ebt.checkpoint import AtomicCheckpointIO, atomic_write_text, check_compatible, load_checkpoint, resolve_ckpt_path
from ebt.errors import ConfigError

GPU_ACCELERATORS = {"gpu", "cuda"}


def check_accelerator(trainer_cfg: DictConfig) -> None:
    accelerator = str(trainer_cfg.get("accelerator", "auto")).lower()
    if accelerator in GPU_ACCELERATORS and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={accelerator} but this machine has no CUDA GPU; "
                          "use trainer.accelerator=auto (or cpu)")
    strategy = trainer_cfg.get("strategy")
    target = str(strategy.get("_target_", "")) if isinstance(strategy, DictConfig) else str(strategy or "")
    if "fsdp" in target.lower() and (accelerator == "cpu" or not torch.cuda.is_available()):
        raise ConfigError("trainer=fsdp (Lightning's FSDPStrategy) runs on CUDA GPUs only and this run has none; "
                          "use trainer=ddp on CPU")


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
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), out_dir)
    if ckpt_path:
        check_compatible(load_checkpoint(ckpt_path)["state_dict"], model, ckpt_path)

    last = out_dir / "checkpoints" / "last.ckpt"
    preemption = PreemptionCheckpoint(last)
    loggers = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers or False,
                                     callbacks=[*make_callbacks(cfg, task), preemption], plugins=[AtomicCheckpointIO()])
    aside = set_aside_metrics(trainer) if ckpt_path else None
    scale = batch_scale(cfg, trainer)
    _print(f"effective batch {scale['effective_batch']} = {scale['batch_per_device']} (data.batch_size) x "
           f"{scale['devices']} devices x {scale['num_nodes']} nodes x {scale['accumulate_grad_batches']} "
           f"(accumulate_grad_batches); lr {scale['lr']:g} (optim.lr, not scaled); strategy {scale['strategy']}")
    started = time.time()
    try:
        try:  # a signal during the final validation stops it too (Lightning handles it in every entry point)
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
            trainer.save_checkpoint(last)
            digests = rank_digests(trainer, model)
            results = trainer.validate(model, datamodule=datamodule, verbose=False)
        except SIGTERMException:
            where = f"{last}" if preemption.saved else "no checkpoint (interrupted before training started)"
            _print(f"interrupted by signal {preemption.exit_code - 128} at step {trainer.global_step}: {where}; "
                   f"resume with the same options plus ckpt_path=last hydra.run.dir={out_dir}")
            raise SystemExit(preemption.exit_code) from None
        metrics = {k: float(v) for r in results for k, v in r.items()}
        summary = _summary(cfg, task, model, trainer, metrics, last, time.time() - started)
        summary.update(scale, skipped_batches=model.skipped_batches, resumed_from=ckpt_path,
                       rank_param_digests=digests)
        if trainer.is_global_zero:
            atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2))
            print_summary(summary)
    finally:
        if aside is not None:
            merge_metrics(aside)
        if any(isinstance(lg, WandbLogger) for lg in loggers):
            import wandb

            wandb.finish()
    return metrics


def set_aside_metrics(trainer: L.Trainer) -> Path | None:
    """Lightning's CSV logger deletes ``metrics.csv`` when it starts: when a run resumes in its own folder, move the
    rows so far aside (``metrics.before_resume.csv``) for :func:`merge_metrics` to put back in front."""
    csv_logger = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
    if csv_logger is None or rank_zero_only.rank != 0:
        return None
    current, aside = Path(csv_logger.log_dir) / "metrics.csv", Path(csv_logger.log_dir) / "metrics.before_resume.csv"
    if current.is_file():
        if aside.is_file():  # an earlier resume that never got to merge
            merge_metrics(aside, keep_aside=True)
        else:
            os.replace(current, aside)
    return aside if aside.is_file() else None


def merge_metrics(aside: Path, keep_aside: bool = False) -> None:
    """``metrics.csv`` = the set-aside rows logged before the first step of the new rows, then the new rows."""
    current = aside.with_name("metrics.csv")
    old = list(csv.DictReader(aside.open(newline="")))
    new = list(csv.DictReader(current.open(newline=""))) if current.is_file() else []
    first = min((int(r["step"]) for r in new if r.get("step")), default=None)
    rows = [r for r in old if first is None or not r.get("step") or int(r["step"]) < first] + new
    fields = sorted(set().union(*(r.keys() for r in rows)))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(aside if keep_aside else current, out.getvalue())
    if keep_aside:
        current.unlink()
    else:
        aside.unlink()


@rank_zero_only
def _print(line: str) -> None:
    print(line, flush=True)


def batch_scale(cfg: DictConfig, trainer: L.Trainer) -> dict[str, Any]:
    """Effective batch = data.batch_size x devices x nodes x accumulate_grad_batches, and the (unscaled) lr."""
    num_nodes = int(getattr(trainer, "num_nodes", 1))
    devices = trainer.world_size // num_nodes
    accumulate = trainer.accumulate_grad_batches
    return {"batch_per_device": cfg.data.batch_size, "devices": devices, "num_nodes": num_nodes,
            "accumulate_grad_batches": accumulate, "world_size": trainer.world_size,
            "effective_batch": cfg.data.batch_size * trainer.world_size * accumulate, "lr": float(cfg.optim.lr),
            "strategy": type(trainer.strategy).__name__}


def rank_digests(trainer: L.Trainer, model: L.LightningModule) -> list[str] | None:
    """DDP: a SHA-256 of every rank's parameters, gathered on every rank (all equal when the ranks are in sync);
    None for one process or a sharded strategy. A mismatch is reported, not raised."""
    if trainer.world_size == 1 or not isinstance(trainer.strategy, DDPStrategy):
        return None
    sha = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        sha.update(name.encode())
        sha.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    digests: list[Any] = [None] * trainer.world_size
    torch.distributed.all_gather_object(digests, sha.hexdigest()[:16])
    if len(set(digests)) > 1:
        _print(f"warning: parameters differ between ranks at the end of training: {digests}")
    return digests


def _summary(cfg, task, model, trainer, metrics, last_ckpt, seconds) -> dict[str, Any]:
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
