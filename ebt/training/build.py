"""Turn a composed config into a task, a model and a data module (the only place that instantiates parts).

Every config is validated first (:mod:`ebt.training.validation`: unknown keys, value types and ranges), so a bad
option is one :class:`ConfigError` naming the full key, never a traceback from deep inside a partial.

Task-dependent defaults: a part (``mixer``, ``mlp``, ``linear``) whose constructor takes ``l_max`` and whose config
leaves it null (or unset, with a null default) gets ``l_max = task.max_len``, the longest sequence any split of the
task produces. The rule goes by signature, not by part name: e.g. Hyena normalises filter positions by ``l_max``,
so a fixed value keeps position ``t``'s output independent of the sequence length. An explicit value always wins.
"""

import inspect
from functools import partial

from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from ebt.errors import UserError
from ebt.objectives.base import Objective
from ebt.tasks.base import Task
from ebt.training.data import TaskDataModule
from ebt.training.lit_module import LitModel
from ebt.training.validation import check_config, check_keys


def instantiate(config, *args, **kwargs):
    """``hydra.utils.instantiate`` that checks keys first and lets our own clear errors through unwrapped."""
    check_keys(config)
    try:
        return hydra_instantiate(config, *args, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        raise


def build_task(cfg: DictConfig) -> Task:
    check_config(cfg)
    return instantiate(cfg.data.task)


def with_task_defaults(part, task: Task):
    """``part`` with ``l_max=task.max_len`` when its constructor takes ``l_max`` and it is still null."""
    try:
        l_max = inspect.signature(part).parameters.get("l_max")
    except (ValueError, TypeError):  # no introspectable signature: nothing to fill
        return part
    if l_max is None or l_max.default is not None or task.max_len is None:
        return part
    return partial(part, l_max=task.max_len)


def build_backbone(model_cfg: DictConfig, task: Task):
    """The backbone factory ``partial(backbone, mixer=..., mlp=..., linear=...)``: ``factory(dim, causal=...)``."""
    parts = {name: with_task_defaults(instantiate(model_cfg[name]), task) for name in ("mixer", "mlp", "linear")}
    return partial(instantiate(model_cfg.backbone), **parts)


def build_objective(model_cfg: DictConfig, task: Task) -> Objective:
    """``objective(task=task, backbone=build_backbone(...), dim=model.dim, **model.objective's options)``."""
    return instantiate(model_cfg.objective)(task=task, backbone=build_backbone(model_cfg, task), dim=model_cfg.dim)


def build_lit_model(cfg: DictConfig, task: Task) -> LitModel:
    check_config(cfg)
    config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    return LitModel(build_objective(cfg.model, task), **cfg.optim, on_nan=cfg.get("on_nan", "raise"),
                    max_consecutive_skips=cfg.get("max_consecutive_skips", 10), config=config)


def build_datamodule(cfg: DictConfig, task: Task) -> TaskDataModule:
    return TaskDataModule(task, batch_size=cfg.data.batch_size, eval_batches=cfg.data.eval_batches,
                          eval_batch_size=cfg.data.get("eval_batch_size"),
                          overfit_batches=cfg.data.get("overfit_batches", 0))
