"""One restore for every tool: the config, task and trained model a ``scripts/train.py`` checkpoint was written from.

``think.py``, ``eval.py``, ``generate.py``, ``export.py``, ``grow.py``, ``icl_eval.py``, training's ``init_from=`` and
resume all go through here. A source is a ``.ckpt`` file, a run folder (its ``checkpoints/last.ckpt``) or a folder
written by ``scripts/export.py`` (:mod:`ebt.training.export_format`: safetensors weights + ``config.yaml``), see
:func:`resolve_source` and :func:`load_source`. A checkpoint stores its resolved config with ``_target_`` strings;
parts that moved since it was written are mapped to their new place (:data:`~ebt.training.checkpoint.MOVED_MODULES`,
:data:`~ebt.training.checkpoint.MOVED_NAMES`), so checkpoints written before the package layout changed keep loading
(tests/test_old_checkpoints.py loads a committed one). Loading runs no code from the source (docs/security.md): a
``.ckpt`` goes through the restricted unpickler of :func:`~ebt.training.checkpoint.load_checkpoint`, and a stored or
exported config may only name buildable parts (:func:`~ebt.training.checkpoint.stored_config`).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ebt.errors import CheckpointError, ConfigError
from ebt.objectives.base import Objective
from ebt.tasks.base import Task
from ebt.training.build import build_lit_model, build_task
from ebt.training.checkpoint import check_compatible, load_checkpoint, resolve_ckpt_path, stored_config
from ebt.training.export_format import exported_folder, load_exported
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


def resolve_source(value: Any, key: str = "ckpt") -> str:
    """The model source option ``key`` names: an exported folder (or its ``model.safetensors``) as the folder, a run
    folder as its ``checkpoints/last.ckpt``, a ``.ckpt`` file as itself (checked when loaded)."""
    if value is None or str(value) == "":
        raise ConfigError(f"{key}= is required: a checkpoint of scripts/train.py, its run folder or a folder written "
                          f"by scripts/export.py, e.g. {key}=outputs/train/runs/<run>")
    if str(value) == "last":
        raise ConfigError(f"{key}=last means a run's own folder in train.py; pass the run folder or its .ckpt file")
    folder = exported_folder(value)
    if folder is not None:
        return str(folder)
    path = Path(str(value))
    if path.is_dir() and not (path / "checkpoints" / "last.ckpt").is_file() and not (path / "last.ckpt").is_file():
        raise CheckpointError(f"{key}={path} is a folder without checkpoints/last.ckpt (a run folder) or "
                              "model.safetensors + config.yaml (an export); pass a run folder, a .ckpt file or an "
                              "exported folder")
    return resolve_ckpt_path(path, Path.cwd())


def load_source(path: str | Path) -> dict[str, Any]:
    """A loaded checkpoint (``state_dict``, ``hyper_parameters.config``, ...) of a ``.ckpt`` file or an exported
    folder (resolve a run folder with :func:`resolve_source` first)."""
    folder = exported_folder(path)
    return load_exported(folder) if folder is not None else load_checkpoint(path)


def results_folder(source: str | Path) -> Path | None:
    """Where a tool writes its results about ``source`` by default: an exported folder itself, the run folder of a
    ``.ckpt`` in a run's ``checkpoints/`` (``<run>/checkpoints/last.ckpt`` -> ``<run>``), else None (a loose file:
    its folder is nobody's run folder)."""
    folder = exported_folder(source)
    if folder is not None:
        return folder
    path = Path(source).resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else None


def load_run(path: str | Path, data_overrides: Any = None) -> Run:
    """Rebuild the model of a ``scripts/train.py`` checkpoint (a ``.ckpt``, a run folder or an exported folder),
    with its weights (eval mode)."""
    source = resolve_source(path)
    cfg, task, model = restore_lit_model(load_source(source), source, data_overrides)
    model.eval()
    return Run(Path(source), cfg, task, model.objective)
