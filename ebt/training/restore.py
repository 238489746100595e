"""One restore for every tool: the config, task and trained model a ``scripts/train.py`` checkpoint was written from.

``think.py``, ``grow.py``, ``icl_eval.py`` and resume all go through here. A checkpoint stores its resolved config
with ``_target_`` strings; parts that moved since it was written are mapped to their new place
(:data:`MOVED_MODULES`), so checkpoints written before the package layout changed keep loading
(tests/test_old_checkpoints.py loads a committed one).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ebt.errors import CheckpointError
from ebt.objectives.base import Objective
from ebt.tasks.base import Task
from ebt.training.build import build_lit_model, build_task
from ebt.training.checkpoint import check_compatible, load_checkpoint
from ebt.training.lit_module import LitModel

# module paths of configurable parts before the layout of ``alt_arch/linears`` and ``ebt/training`` -> now
MOVED_MODULES = {
    "alt_arch.linear": "alt_arch.linears.dense",
    "alt_arch.pattention": "alt_arch.linears.pattention",
    "alt_arch.memory_layer": "alt_arch.linears.memory",
    "ebt.summary": "ebt.training.summary",
    "ebt.callbacks": "ebt.training.callbacks",
    "ebt.grid": "ebt.training.grid",
}


def current_target(target: str) -> str:
    """``target`` (``module.name``) with a moved module replaced by its new path."""
    module, _, name = target.rpartition(".")
    return f"{MOVED_MODULES[module]}.{name}" if module in MOVED_MODULES else target


def upgrade_config(config: Any) -> Any:
    """A stored (plain) config with every ``_target_`` pointing at the current module paths."""
    if isinstance(config, dict):
        return {k: current_target(v) if k == "_target_" and isinstance(v, str) else upgrade_config(v)
                for k, v in config.items()}
    if isinstance(config, list):
        return [upgrade_config(v) for v in config]
    return config


def stored_config(checkpoint: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The training config a checkpoint stores, upgraded to the current layout."""
    config = (checkpoint.get("hyper_parameters") or {}).get("config")
    if not config:
        raise CheckpointError(f"checkpoint {path} stores no training config (hyper_parameters.config); "
                              "it was not written by scripts/train.py")
    return upgrade_config(config)


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
