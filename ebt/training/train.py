"""The training entry point behind ``scripts/train.py``: build, fit, checkpoint, evaluate, summarise.

Reliability (docs/reliability.md): ``ckpt_path=last`` resumes the run in ``paths.output_dir`` (start fresh when it has
no checkpoint yet), SIGTERM / SIGINT save ``checkpoints/last.ckpt`` and exit with 143 / 130, the effective batch and
the learning rate are printed at the start and written to ``summary.json``, and under DDP the ranks' parameter
digests are compared at the end.

The run folder is protected: it must be writable (checked first), one run holds its lock (``<run>/.lock``) at a time,
a fresh start (no ``ckpt_path``) in a folder with results is refused unless ``overwrite=true``, stale temporary
checkpoint files of a killed write are removed, and a resume must keep the checkpoint's model options.

``init_from=`` (an exported folder, a ``.ckpt`` or a run folder) loads weights only before training starts (a fresh
optimizer, schedule and step count: fine-tuning); every tensor must match the model's by name and shape. A resume
(``ckpt_path``) restores its own weights, so ``init_from`` is then ignored (a requeued job may keep both options).
Both read a ``.ckpt`` without running code from it (:func:`ebt.training.checkpoint.load_checkpoint`; Lightning's own
load goes through :class:`~ebt.training.checkpoint.AtomicCheckpointIO`), unless ``trust_checkpoint=true``.
"""

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from ebt.errors import CheckpointError, ConfigError
from ebt.training.build import build_datamodule, build_lit_model, build_task, instantiate
from ebt.training.callbacks import PreemptionCheckpoint
from ebt.training.checkpoint import (
    AtomicCheckpointIO,
    atomic_write_text,
    check_compatible,
    load_checkpoint,
    resolve_ckpt_path,
)
from ebt.training.preflight import check_environment
from ebt.training.ranks import batch_scale, describe_scale, print_rank_zero, rank_digests
from ebt.training.restore import load_source, resolve_source
from ebt.training.resume import check_resume_config, merge_metrics, set_aside_metrics
from ebt.training.run_folder import claim_run_folder
from ebt.training.summary import make_summary, print_summary
from ebt.training.validation import check_entry_options

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


def init_weights(model: L.LightningModule, init_from: str) -> str:
    """Load the weights of ``init_from`` (exported folder, ``.ckpt`` or run folder) into ``model``; a missing,
    unexpected or mis-shaped tensor is a :class:`CheckpointError` naming them. Returns the resolved source."""
    source = resolve_source(init_from, "init_from")
    state_dict = load_source(source)["state_dict"]
    try:
        check_compatible(state_dict, model, source)
    except CheckpointError as e:
        raise CheckpointError(f"init_from={init_from}: {e}") from None
    model.load_state_dict(state_dict)
    print_rank_zero(f"init_from: weights loaded from {source}")
    return source


def train(cfg: DictConfig) -> dict[str, float]:
    """Train as configured; returns the final evaluation metrics (also written to ``summary.json``)."""
    check_entry_options(cfg)  # seed and trust_checkpoint: before anything uses them
    check_environment(cfg)
    check_accelerator(cfg.trainer)
    out_dir = Path(cfg.paths.output_dir)
    lock = claim_run_folder(out_dir, resuming=bool(cfg.get("ckpt_path")), overwrite=bool(cfg.get("overwrite")))
    try:
        return _train(cfg, out_dir)
    finally:
        if lock is not None:
            lock.release()


def _train(cfg: DictConfig, out_dir: Path) -> dict[str, float]:
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    task = build_task(cfg)
    model = build_lit_model(cfg, task)
    datamodule = build_datamodule(cfg, task)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), out_dir)
    if ckpt_path:
        checkpoint = load_checkpoint(ckpt_path)
        check_compatible(checkpoint["state_dict"], model, ckpt_path)
        check_resume_config(checkpoint, OmegaConf.to_container(cfg, resolve=True), ckpt_path)
        del checkpoint
        if cfg.get("init_from"):
            print_rank_zero(f"init_from={cfg.init_from} ignored: resuming from {ckpt_path} (its own weights)")
    elif cfg.get("init_from"):
        init_weights(model, cfg.init_from)

    last = out_dir / "checkpoints" / "last.ckpt"
    preemption = PreemptionCheckpoint(last)
    loggers = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers or False,
                                     callbacks=[*make_callbacks(cfg, task), preemption], plugins=[AtomicCheckpointIO()])
    aside = set_aside_metrics(trainer) if ckpt_path else None
    scale = batch_scale(cfg, trainer)
    print_rank_zero(describe_scale(scale))
    started = time.time()
    try:
        try:  # a signal during the final validation stops it too (Lightning handles it in every entry point)
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
            trainer.save_checkpoint(last)
            digests = rank_digests(trainer, model)
            results = trainer.validate(model, datamodule=datamodule, verbose=False)
        except SIGTERMException:
            where = f"{last}" if preemption.saved else "no checkpoint (interrupted before training started)"
            print_rank_zero(f"interrupted by signal {preemption.exit_code - 128} at step {trainer.global_step}: "
                            f"{where}; resume with the same options plus ckpt_path=last hydra.run.dir={out_dir}")
            raise SystemExit(preemption.exit_code) from None
        metrics = {k: float(v) for r in results for k, v in r.items()}
        summary = make_summary(cfg, task, model, trainer, metrics, last, time.time() - started)
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
