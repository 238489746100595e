"""The exported folder (``scripts/export.py``): ``model.safetensors`` + ``config.yaml`` + ``export.json``, recognised
and read back without pickle (:mod:`ebt.training.export` writes it).

* ``model.safetensors``: the ``LitModel`` state dict (keys ``objective.*``) as contiguous CPU tensors. Tied weights
  (e.g. ``tie_embeddings``: the head is the embedding) are stored once; the file's metadata maps each alias to the
  stored name (``tied``, JSON) and holds the checksum of the stored tensors (``weights_sha256``,
  :func:`~ebt.training.checkpoint.weights_digest`), verified on load; a folder without it is refused
  (:func:`check_weights`).
* ``config.yaml``: the resolved training config the model is built from (module paths upgraded to today's layout);
  loading builds only the parts that ``configs/model`` and ``configs/data`` name
  (:func:`~ebt.training.checkpoint.check_buildable`), so a tampered config cannot run other code.
* ``export.json``: format version, source checkpoint, git commit and dirty flag (when known), parameter count,
  objective and task (for people; loading does not need it).

:func:`load_exported` returns a checkpoint-like dict (``state_dict`` and ``hyper_parameters.config``) that
:func:`ebt.training.restore.restore_lit_model` takes like a loaded ``.ckpt``; so ``generate.py``, ``eval.py``,
``think.py`` and training's ``init_from=`` accept an exported folder wherever they accept a checkpoint.
"""

import json
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors import SafetensorError, safe_open

from ebt.errors import CheckpointError
from ebt.training.checkpoint import weights_digest

FORMAT, FORMAT_VERSION = "ebt-export", 1
WEIGHTS, CONFIG, INFO = "model.safetensors", "config.yaml", "export.json"
EXPORT_FILES = (WEIGHTS, CONFIG, INFO)


def exported_folder(path: str | Path | None) -> Path | None:
    """The exported folder ``path`` names (the folder, or its ``model.safetensors``), or None when it names none.

    A folder counts as an export when it holds any of :data:`EXPORT_FILES` and no ``checkpoints/last.ckpt`` (a run
    folder), so an export missing a file is still recognised and refused by :func:`load_exported` with its name."""
    if path is None or str(path) == "":
        return None
    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():
        path = path.parent
    if not path.is_dir() or (path / "checkpoints" / "last.ckpt").is_file():
        return None
    return path if any((path / name).is_file() for name in EXPORT_FILES) else None


def load_exported(folder: str | Path) -> dict[str, Any]:
    """A checkpoint-like dict (``state_dict``, ``hyper_parameters.config``, ``export``) of an exported folder.

    A missing or unreadable file, a missing checksum, or weights that do not match it, is a :class:`CheckpointError`
    (:func:`check_weights`)."""
    folder = Path(folder)
    missing = [name for name in (WEIGHTS, CONFIG) if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"exported folder {folder} has no {' and no '.join(missing)}; an export holds "
                              f"{WEIGHTS} and {CONFIG} (write one with scripts/export.py ckpt=<run> out=<folder>)")
    info = _read_info(folder / INFO)
    try:
        with safe_open(folder / WEIGHTS, framework="pt") as f:
            metadata = f.metadata() or {}
            state_dict = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 - not a dict
        tied = json.loads(metadata.get("tied", "{}"))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{folder / WEIGHTS} is unreadable (truncated or not a safetensors file): "
                              f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}") from e
    check_weights(folder, state_dict, metadata.get("weights_sha256") or info.get("weights_sha256"),
                  metadata.get("format") or info.get("format"))
    for alias, name in tied.items():
        if name not in state_dict:
            raise CheckpointError(f"{folder / WEIGHTS}: the tied tensor {alias} names {name}, which the file does not "
                                  "hold; export the checkpoint again")
        state_dict[alias] = state_dict[name]
    config = _read_config(folder / CONFIG)
    return {"state_dict": state_dict, "hyper_parameters": {"config": config}, "export": info}


def check_weights(folder: Path, state_dict: dict[str, torch.Tensor], expected: Any, made_by: Any) -> None:
    """Weights that do not match ``weights_sha256`` are refused, and so is a missing checksum (altered tensors would
    load unnoticed), except in a folder that declares another tool's ``format`` (one warning line)."""
    if expected is None:
        if made_by is not None and made_by != FORMAT:
            print(f"warning: {folder / WEIGHTS} declares format {str(made_by)[:80]!r} (not written by "
                  "scripts/export.py) and has no weights_sha256: its tensors are not checked", file=sys.stderr,
                  flush=True)
            return
        raise CheckpointError(f"{folder / WEIGHTS} has no weights_sha256 (removed, or never written), so altered "
                              "weights would load unnoticed; export the checkpoint again (a folder made by another "
                              'tool: name that tool in export.json\'s "format" to load it with a warning)')
    if weights_digest(state_dict) != expected:
        raise CheckpointError(f"{folder / WEIGHTS}: the weights do not match their checksum (altered or corrupt); "
                              "export the checkpoint again")


def _read_info(path: Path) -> dict[str, Any]:
    """``export.json`` ({} when absent); unreadable or not a mapping: a :class:`CheckpointError`."""
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not readable JSON ({type(e).__name__}: {e}); export the checkpoint "
                              "again") from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{path} is not a JSON object; export the checkpoint again")
    return info


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = OmegaConf.load(path)
    except Exception as e:  # noqa: BLE001 - any YAML error: one line
        raise CheckpointError(f"{path} is not a readable YAML config: {str(e).splitlines()[0][:200]}") from e
    if not isinstance(config, DictConfig) or "model" not in config or "data" not in config:
        raise CheckpointError(f"{path} is not a training config (no model and data sections); export the "
                              "checkpoint again")
    return OmegaConf.to_container(config, resolve=False)
