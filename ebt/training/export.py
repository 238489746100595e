"""Shareable checkpoints: a trained model written as an exported folder (``model.safetensors`` + ``config.yaml`` +
``export.json``, :mod:`ebt.training.export_format`), the command behind ``scripts/export.py``.

A pickled Lightning checkpoint (``.ckpt``) holds what a resume needs (optimizer, schedule, RNG states) and is read by a
restricted unpickler (:func:`~ebt.training.checkpoint.load_checkpoint`, docs/security.md). An exported folder holds
only what inference and fine-tuning need, in formats that load without pickle; pickled ``.ckpt`` files stay the format
of resume (``ckpt_path=``).

:func:`write_export` writes the files into a temporary folder beside the target and renames it into place, so no
reader ever sees a half-written export.
"""

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save_file

from ebt.errors import ConfigError
from ebt.training.checkpoint import current_umask, weights_digest
from ebt.training.export_format import CONFIG, EXPORT_FILES, FORMAT, FORMAT_VERSION, INFO, WEIGHTS
from ebt.training.provenance import git_state
from ebt.training.restore import load_source, resolve_source, restore_lit_model


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


def export(cfg: DictConfig) -> Path:
    """``scripts/export.py ckpt=<run folder, .ckpt or export> out=<folder> [overwrite=true] [+data.KEY=VALUE]``.

    The model is rebuilt from the checkpoint's config and its weights loaded first (so an export always loads), then
    written with :func:`write_export`; ``+data.*`` overrides (a moved corpus) are merged into the stored config."""
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
