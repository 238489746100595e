"""Options every analysis entry point shares (``think.py``, ``eval.py``): the checkpoint (a file or a run folder),
``+data.KEY=VALUE`` overrides of the stored data config, and the evaluation plan (splits, batches, batch size); and the
typed reads of the key=value scripts (:func:`ebt.commands.options_command`): lists, paths and integers, each refused
in one line naming its key."""

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

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


def listed(cfg: DictConfig, key: str) -> list[Any]:
    """``cfg[key]`` as a list: ``key=[a,b]``, one value (``key=a``: a list of one) or null (empty)."""
    value = cfg.get(key)
    if value is None:
        return []
    if isinstance(value, ListConfig):
        return list(OmegaConf.to_container(value, resolve=True))
    if isinstance(value, DictConfig):
        raise ConfigError(f"{key}=: a list is written {key}=[a,b] (or one value, {key}=a)")
    return [value]


def path_list(cfg: DictConfig, key: str, what: str = "") -> list[Path]:
    """``cfg[key]`` as a list of paths; with ``what`` (e.g. ``"multirun folders"``) an empty list is an error that
    shows how to pass them."""
    paths = [Path(str(v)) for v in listed(cfg, key)]
    if what and not paths:
        raise ConfigError(f"{key}= is required: the {what}, e.g. {key}=[A,B] (or {key}=A)")
    return paths


def integer(cfg: DictConfig, key: str, minimum: int | None = None, allow_none: bool = False) -> int | None:
    """``cfg[key]``: an integer (>= ``minimum`` when given), or null where ``allow_none``."""
    value = cfg.get(key)
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ConfigError(f"{key}={value} must be an integer{bound}" + (" (or null)" if allow_none else ""))
    return value


def number(cfg: DictConfig, key: str) -> float:
    """``cfg[key]``: a number."""
    value = cfg.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ConfigError(f"{key}={value} must be a number")
    return float(value)


def int_list(cfg: DictConfig, key: str, minimum: int = 1) -> list[int]:
    """``cfg[key]``: a non-empty list of integers >= ``minimum`` (one value: a list of one)."""
    values = listed(cfg, key)
    if not values or any(not isinstance(v, int) or isinstance(v, bool) or v < minimum for v in values):
        raise ConfigError(f"{key}={values} must be a non-empty list of integers >= {minimum}, e.g. {key}=[1,2,4]")
    return values


def number_list(cfg: DictConfig, key: str) -> list[float]:
    """``cfg[key]``: a non-empty list of numbers (one value: a list of one)."""
    values = listed(cfg, key)
    if not values or any(not isinstance(v, int | float) or isinstance(v, bool) for v in values):
        raise ConfigError(f"{key}={values} must be a non-empty list of numbers, e.g. {key}=[0.5,0.8]")
    return [float(v) for v in values]
