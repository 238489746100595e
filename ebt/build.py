"""Turn a composed config into a task, a model and a data module (the only place that instantiates parts).

Every config node is checked before it is instantiated: a key that the ``_target_``'s signature does not take
(``model.mixer.n_head``), or an unknown key of ``model`` / ``data`` / ``optim``, is a :class:`ConfigError` naming the
full key and the valid ones, instead of a ``TypeError`` from deep inside a partial.
"""

import difflib
import inspect
from functools import partial

from hydra.errors import InstantiationException
from hydra.utils import get_object
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from alt_arch.errors import MixerCapabilityError
from ebt.data import TaskDataModule
from ebt.errors import ConfigError, UserError
from ebt.lit_module import LitModel
from ebt.objectives.base import Objective
from ebt.tasks.base import Task

HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
INJECTED = {"self", "dim", "causal", "mixer", "mlp", "linear", "spatial_shape", "task", "backbone", "objective",
            "config"}  # arguments the builders pass themselves: not listed as options
MODEL_KEYS = {"mixer", "linear", "mlp", "backbone", "objective", "dim"}
DATA_KEYS = {"task", "batch_size", "eval_batches", "eval_batch_size", "overfit_batches"}


def _full_key(node: DictConfig, key: str) -> str:
    path = node._get_full_key(None)
    return f"{path}.{key}" if path else key


def _reject(node: DictConfig, unknown: list[str], valid: list[str], owner: str) -> None:
    key = unknown[0]
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {_full_key(node, close[0])}?)" if close else ""
    shown = ", ".join(valid[:40]) + (f", ... ({len(valid) - 40} more)" if len(valid) > 40 else "")
    raise ConfigError(f"{_full_key(node, key)} is not an option of {owner}{hint}; valid keys: {shown or 'none'}; "
                      "fix the spelling or drop the override")


def check_keys(config) -> None:
    """Raise :class:`ConfigError` for the first key of ``config`` (recursively) that its ``_target_`` does not take."""
    if isinstance(config, ListConfig):
        for i in range(len(config)):
            check_keys(config._get_node(i))
        return
    if not isinstance(config, DictConfig) or config._is_none() or config._is_missing():
        return
    target = config._get_node("_target_") if "_target_" in config else None
    if target is not None and not OmegaConf.is_interpolation(config, "_target_"):
        try:
            params = inspect.signature(get_object(str(target._value()))).parameters.values()
        except (ImportError, ValueError, TypeError):  # hydra reports an unknown target itself
            params = None
        if params is not None and not any(p.kind is p.VAR_KEYWORD for p in params):
            names = [p.name for p in params if p.kind is not p.VAR_POSITIONAL]
            unknown = [k for k in config if k not in HYDRA_KEYS and k not in names]
            if unknown:
                _reject(config, unknown, [n for n in names if n not in INJECTED], str(target._value()))
    for key in config:
        check_keys(config._get_node(key))


def check_config(cfg: DictConfig) -> None:
    """Unknown keys under ``model``, ``data``, ``optim`` and in every ``_target_`` node of them."""
    optim_keys = [n for n in inspect.signature(LitModel).parameters if n not in INJECTED]
    for name, valid, owner in (("model", MODEL_KEYS, "the model (parts and width)"),
                               ("data", DATA_KEYS, "a data config"), ("optim", optim_keys, "the optimiser")):
        node = cfg.get(name)
        if isinstance(node, DictConfig):
            unknown = [k for k in node if k not in valid]
            if unknown:
                _reject(node, unknown, sorted(valid), owner)
            check_keys(node)


def instantiate(config, *args, **kwargs):
    """``hydra.utils.instantiate`` that checks keys first and lets our own clear errors through unwrapped."""
    check_keys(config)
    try:
        return hydra_instantiate(config, *args, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, UserError | MixerCapabilityError):
            raise cause from None
        raise


def build_task(cfg: DictConfig) -> Task:
    check_config(cfg)
    return instantiate(cfg.data.task)


def build_objective(model_cfg: DictConfig, task: Task) -> Objective:
    """``objective(task, backbone=partial(backbone, mixer=..., mlp=..., linear=...), dim=model.dim)``."""
    parts = {name: instantiate(model_cfg[name]) for name in ("mixer", "mlp", "linear")}
    backbone = partial(instantiate(model_cfg.backbone), **parts)
    return instantiate(model_cfg.objective)(task=task, backbone=backbone, dim=model_cfg.dim)


def build_lit_model(cfg: DictConfig, task: Task) -> LitModel:
    check_config(cfg)
    config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    return LitModel(build_objective(cfg.model, task), **cfg.optim, on_nan=cfg.get("on_nan", "raise"),
                    max_consecutive_skips=cfg.get("max_consecutive_skips", 10), config=config)


def build_datamodule(cfg: DictConfig, task: Task) -> TaskDataModule:
    return TaskDataModule(task, batch_size=cfg.data.batch_size, eval_batches=cfg.data.eval_batches,
                          eval_batch_size=cfg.data.get("eval_batch_size"),
                          overfit_batches=cfg.data.get("overfit_batches", 0))
