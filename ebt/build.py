"""Turn a composed config into a task, a model and a data module (the only place that instantiates parts)."""

from functools import partial

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ebt.data import TaskDataModule
from ebt.lit_module import LitModel
from ebt.objectives.base import Objective
from ebt.tasks.base import Task


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
