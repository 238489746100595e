"""Shareable checkpoints: a trained model as ``model.safetensors`` + ``config.yaml`` + ``export.json``, and back.

A pickled Lightning checkpoint (``.ckpt``) holds what a resume needs (optimizer, schedule, RNG states) and is read by a
restricted unpickler (:func:`~ebt.training.checkpoint.load_checkpoint`, docs/security.md). An exported folder holds
only what inference and fine-tuning need, in formats that load without pickle:

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

:func:`write_export` writes the files into a temporary folder beside the target and renames it into place, so no
reader ever sees a half-written export. :func:`load_exported` returns a checkpoint-like dict (``state_dict`` and
``hyper_parameters.config``) that :func:`ebt.training.restore.restore_lit_model` takes like a loaded ``.ckpt``; so
``generate.py``, ``eval.py``, ``think.py`` and training's ``init_from=`` accept an exported folder wherever they
accept a checkpoint. Pickled ``.ckpt`` files stay the format of resume (``ckpt_path=``).
"""

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ebt.errors import CheckpointError, ConfigError
from ebt.training.checkpoint import current_umask, weights_digest
from ebt.training.summary import git_state

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


def shareable_tensors(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors to store (tied ones once, each a contiguous CPU copy) and ``{alias: stored name}`` of the others."""
    tensors: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, tensor in state_dict.items():
        key = (tensor.device, tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
               tensor.stride(), tensor.dtype)
        if tensor.numel() and key in seen:
            tied[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = tensor.detach().to("cpu", copy=True).contiguous()  # a copy never shares storage
    return tensors, tied


def write_export(state_dict: dict[str, torch.Tensor], config: dict[str, Any], out: str | Path,
                 info: dict[str, Any], *, overwrite: bool = False) -> Path:
    """Write ``out/{model.safetensors, config.yaml, export.json}`` atomically (a temporary folder renamed into place).

    An existing non-empty ``out`` is refused unless ``overwrite`` (then it is replaced as a whole)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out={out} is a file; give a folder for the export")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"out={out} exists and is not empty; pick a new folder or pass overwrite=true to replace it")
    tensors, tied = shareable_tensors(state_dict)
    digest = weights_digest(tensors)
    info = {"format": FORMAT, "format_version": FORMAT_VERSION, **info, "weights_sha256": digest,
            "tied": tied, "files": list(EXPORT_FILES)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp's 0700 would survive the rename
        save_file(tensors, tmp / WEIGHTS, metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION),
                                                     "tied": json.dumps(tied), "weights_sha256": digest})
        (tmp / CONFIG).write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
        (tmp / INFO).write_text(json.dumps(info, indent=2) + "\n")
        for name in EXPORT_FILES:  # the mode an ordinary open gives (safetensors writes 0600)
            (tmp / name).chmod(0o666 & ~current_umask())
        _replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _replace_folder(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` is moved aside first and deleted once ``tmp`` is in place."""
    if not out.exists():
        tmp.rename(out)
        return
    old = out.parent / f".{out.name}.{time.time_ns()}.old"
    out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


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


def export(cfg: DictConfig) -> Path:
    """``scripts/export.py ckpt=<run folder, .ckpt or export> out=<folder> [overwrite=true] [+data.KEY=VALUE]``.

    The model is rebuilt from the checkpoint's config and its weights loaded first (so an export always loads), then
    written with :func:`write_export`; ``+data.*`` overrides (a moved corpus) are merged into the stored config."""
    from ebt.training.restore import load_source, resolve_source, restore_lit_model  # restore imports this module

    source = resolve_source(cfg.get("ckpt"), "ckpt")
    if not cfg.get("out"):
        raise ConfigError("out= is required: the folder to write model.safetensors, config.yaml and export.json to")
    out = Path(str(cfg.out))
    if out.is_dir() and any(out.iterdir()) and not cfg.get("overwrite"):
        raise ConfigError(f"out={out} exists and is not empty; pick a new folder or pass overwrite=true to replace it")
    data = cfg.get("data")
    if data is not None and not isinstance(data, DictConfig):
        raise ConfigError(f"data={data}: give data keys one by one, e.g. +data.task.path=<the corpus' new place>")
    overrides = OmegaConf.to_container(data, resolve=True) if data is not None else None
    config, task, model = restore_lit_model(load_source(source), source, overrides)
    info = {"source": str(Path(source).resolve()), "git": git_state(),
            "parameters": sum(p.numel() for p in model.parameters()), "objective": type(model.objective).__name__,
            "task": task.describe(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_export(model.state_dict(), OmegaConf.to_container(config, resolve=True), out, info,
                 overwrite=bool(cfg.get("overwrite")))
    print(f"exported {source} -> {out}: {WEIGHTS} ({info['parameters']:,} parameters, {info['objective']} on "
          f"{info['task']}), {CONFIG}, {INFO}")
    return out
