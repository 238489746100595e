"""Options every analysis entry point shares (``think.py``, ``eval.py``): the checkpoint (a file or a run folder),
``+data.KEY=VALUE`` overrides of the stored data config, and the evaluation plan (splits, batches, batch size). The
typed reads of key=value options are in :mod:`ebt.options`."""

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ebt.errors import ConfigError
from ebt.training.restore import Run, resolve_source, results_folder


def checkpoint_option(cfg: DictConfig, key: str) -> str:
    """The model source of option ``key``: a .ckpt file, a run folder (its ``checkpoints/last.ckpt``, as
    ``scripts/train.py ckpt_path=`` takes it) or a folder written by ``scripts/export.py``."""
    return resolve_source(cfg.get(key), key)


def data_overrides(cfg: DictConfig) -> dict[str, Any] | None:
    """``+data.KEY=VALUE`` options: merged into the checkpoint's stored data config (a moved corpus, ...)."""
    data = cfg.get("data")
    if data is None:
        return None
    if not isinstance(data, DictConfig):
        raise ConfigError(f"data={data}: give data keys one by one, e.g. +data.task.path=<the corpus' new place>")
    return OmegaConf.to_container(data, resolve=True)


def positive_option(cfg: DictConfig, key: str, default: int) -> int:
    """``cfg[key]``, or ``default`` (the run's own setting) when null; 0 and negatives are refused."""
    value = cfg.get(key)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{key}={value} must be an integer >= 1 (or null: the run's data.{key})")
    return value


def eval_plan(cfg: DictConfig, run: Run) -> tuple[list[str], int, int]:
    """Splits (default: the task's evaluation splits), number of batches and batch size of the evaluation."""
    splits = list(run.task.eval_splits) if cfg.get("splits") is None else list(cfg.splits)
    unknown = [s for s in splits if s not in (*run.task.eval_splits, "test", "train")]
    if unknown or not splits:
        problem = f"{unknown} unknown for this task" if unknown else "no split given"
        raise ConfigError(f"splits={splits}: {problem}; use some of {list(run.task.eval_splits)} (null: all)")
    data = run.config.data
    batches = positive_option(cfg, "eval_batches", data.eval_batches)
    batch_size = positive_option(cfg, "eval_batch_size", data.get("eval_batch_size") or data.batch_size)
    return splits, batches, batch_size


def out_dir(cfg: DictConfig, ckpt: str, name: str) -> Path:
    """``cfg.out_dir``, or the folder ``name`` in the checkpoint's run folder (an exported folder: in it); for a
    ``.ckpt`` outside a run folder, ``<stem>-<name>`` next to the file (never a folder above it)."""
    if cfg.get("out_dir"):
        return Path(cfg.out_dir)
    folder = results_folder(ckpt)
    path = Path(ckpt).resolve()
    return folder / name if folder is not None else path.parent / f"{path.stem}-{name}"
