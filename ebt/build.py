"""Turn a composed config into a task, a model and a data module (the only place that instantiates parts)."""

from functools import partial

from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from alt_arch.errors import MixerCapabilityError
from ebt.data import TaskDataModule
from ebt.errors import UserError
from ebt.lit_module import LitModel
from ebt.objectives.base import Objective
from ebt.tasks.base import Task


def instantiate(config, *args, **kwargs):
    """``hydra.utils.instantiate`` that lets our own clear errors through instead of wrapping them."""
    try:
        return hydra_instantiate(config, *args, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, UserError | MixerCapabilityError):
            raise cause from None
        raise


def build_task(cfg: DictConfig) -> Task:
    return instantiate(cfg.data.task)


def build_objective(model_cfg: DictConfig, task: Task) -> Objective:
    """``objective(task, backbone=partial(backbone, mixer=..., mlp=..., linear=...), dim=model.dim)``."""
    parts = {name: instantiate(model_cfg[name]) for name in ("mixer", "mlp", "linear")}
    backbone = partial(instantiate(model_cfg.backbone), **parts)
    return instantiate(model_cfg.objective)(task=task, backbone=backbone, dim=model_cfg.dim)


def build_lit_model(cfg: DictConfig, task: Task) -> LitModel:
    config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    return LitModel(build_objective(cfg.model, task), **cfg.optim, config=config)


def build_datamodule(cfg: DictConfig, task: Task) -> TaskDataModule:
    return TaskDataModule(task, batch_size=cfg.data.batch_size, eval_batches=cfg.data.eval_batches,
                          eval_batch_size=cfg.data.get("eval_batch_size"),
                          overfit_batches=cfg.data.get("overfit_batches", 0))
