"""One restore for every tool: the config, task and trained model a ``scripts/train.py`` checkpoint was written from.

``think.py``, ``grow.py``, ``icl_eval.py`` and resume all go through here. A checkpoint stores its resolved config
with ``_target_`` strings; parts that moved since it was written are mapped to their new place
(:data:`ebt.training.checkpoint.MOVED_MODULES`), so checkpoints written before the package layout changed keep loading
(tests/test_old_checkpoints.py loads a committed one).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ebt.objectives.base import Objective
from ebt.tasks.base import Task
from ebt.training.build import build_lit_model, build_task
from ebt.training.checkpoint import check_compatible, load_checkpoint, stored_config
from ebt.training.lit_module import LitModel


@dataclass
class Run:
    """A trained model restored from its checkpoint (config, task, objective in eval mode)."""

    path: Path
    config: Any
    task: Task
    objective: Objective


def restore_lit_model(checkpoint: dict[str, Any], path: str | Path,
                      data_overrides: Any = None) -> tuple[Any, Task, LitModel]:
    """The config, task and trained ``LitModel`` a ``scripts/train.py`` checkpoint (already loaded) was written from.

    ``data_overrides`` (a mapping) is merged into the stored ``data`` config before the task is built, e.g.
    ``{"task": {"path": "<the corpus' new place>"}}``; unknown keys are refused like on the training command line."""
    cfg = OmegaConf.create(stored_config(checkpoint, path))
    if data_overrides:
        cfg.data = OmegaConf.merge(cfg.data, OmegaConf.create(data_overrides))
    task = build_task(cfg)
    model = build_lit_model(cfg, task)
    check_compatible(checkpoint["state_dict"], model, path)
    model.load_state_dict(checkpoint["state_dict"])
    return cfg, task, model


def load_run(path: str | Path, data_overrides: Any = None) -> Run:
    """Rebuild the model a checkpoint of ``scripts/train.py`` was written from, with its weights (eval mode)."""
    cfg, task, model = restore_lit_model(load_checkpoint(path), path, data_overrides)
    model.eval()
    return Run(Path(path), cfg, task, model.objective)
