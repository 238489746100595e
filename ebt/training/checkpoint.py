"""Checkpoints that are never half-written, and that fail clearly when they are wrong.

``AtomicCheckpointIO`` writes to a temporary file in the target folder, fsyncs it and renames it over the
target (``os.replace`` is atomic on POSIX), so a crash mid-write leaves the previous checkpoint intact. The file gets
the mode an ordinary ``open`` would give it (0666 minus the umask; the temporary file's 0600 is not kept), and a full
disk is a :class:`CheckpointError` naming the last good checkpoint. A kill during a write can leave a temporary
``.<name>.*.tmp`` behind: :func:`remove_stale_temporaries` deletes them when the next run starts in that folder.

Every checkpoint carries ``weights_sha256`` (:func:`weights_digest`, written by ``LitModel.on_save_checkpoint``);
:func:`load_checkpoint` refuses weights that do not match it and NaNs in the weights or the optimizer state.
"""

import errno
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_object
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from ebt.errors import CheckpointError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (``os.umask`` sets it while reading)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _disk_full(error: BaseException) -> OSError | None:
    """The ENOSPC / EDQUOT ``OSError`` behind ``error`` (torch.save wraps it in a RuntimeError), if any."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in DISK_FULL:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def last_good_checkpoint(path: Path) -> str:
    """The checkpoint a run can resume from after a failed write of ``path``: ``path`` itself when it exists (the
    write is atomic, so it is intact), else the newest ``.ckpt`` beside it (or in ``checkpoints/`` beside it)."""
    if path.suffix == ".ckpt" and path.is_file():
        return str(path)
    found = [*path.parent.glob("*.ckpt"), *(path.parent / "checkpoints").glob("*.ckpt")]
    return str(max(found, key=lambda p: p.stat().st_mtime)) if found else "none (no checkpoint was written yet)"


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(file_object)`` on a temp file next to ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~current_umask())  # mkstemp's 0600 would survive the rename
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        full = _disk_full(e)
        if full is not None:
            raise CheckpointError(f"the disk is full: writing {path} failed ({full.strerror}); the last good "
                                  f"checkpoint is {last_good_checkpoint(path)}; free space, then resume with "
                                  "ckpt_path=last") from e
        raise


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (``.<name>.*.tmp``) that a kill during :func:`atomic_write` left in ``folder``."""
    stale = sorted(Path(folder).glob(".*.tmp")) if Path(folder).is_dir() else []
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """``torch.load`` on CPU with clear errors for a missing, truncated or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path "
                              "(an existing .ckpt file written by scripts/train.py)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # pickle / zip errors from a truncated or non-checkpoint file
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated or not a checkpoint): "
                              f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from e
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"checkpoint {path} has no state_dict; it was not written by this trainer")
    check_integrity(checkpoint, path)
    return checkpoint


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict: names, dtypes, shapes and bytes, in sorted key order (device independent)."""
    sha = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name]
        if not isinstance(tensor, torch.Tensor):
            continue
        sha.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        sha.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()


def _nan_tensors(tree: Any, prefix: str) -> list[str]:
    """Names of the floating tensors holding a NaN in a nested dict / list of tensors."""
    if isinstance(tree, torch.Tensor):
        return [prefix] if tree.is_floating_point() and bool(torch.isnan(tree).any()) else []
    if isinstance(tree, dict):
        return [n for k, v in tree.items() for n in _nan_tensors(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(tree, list | tuple):
        return [n for i, v in enumerate(tree) for n in _nan_tensors(v, f"{prefix}.{i}")]
    return []


def check_integrity(checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    """Refuse weights that do not match their stored checksum, and NaNs in the weights or the optimizer state.
    Checkpoints written before the checksum existed are accepted (only the NaN check applies)."""
    expected = checkpoint.get("weights_sha256")
    if expected is not None and weights_digest(checkpoint["state_dict"]) != expected:
        raise CheckpointError(f"checkpoint {path}: the weights do not match their checksum (altered or corrupt); "
                              "use an intact copy, or resume from another checkpoint of the run")
    nan = _nan_tensors(checkpoint["state_dict"], "") + _nan_tensors(checkpoint.get("optimizer_states", []),
                                                                     "optimizer_states")
    if nan:
        raise CheckpointError(f"checkpoint {path} is corrupt: NaN in {_shorten(nan, 3)}; a run saves only finite "
                              "weights, so use an earlier checkpoint of the run (or start again)")


def resolve_ckpt_path(ckpt_path: str | os.PathLike | None, output_dir: str | os.PathLike) -> str | None:
    """The checkpoint file to resume from.

    * ``last``: ``<output_dir>/checkpoints/last.ckpt``, i.e. this run's folder (pass ``hydra.run.dir=<run folder>``
      to resume a run in place); None (start fresh, with a note) when it has none yet, so a job script that is
      requeued after preemption can always pass ``ckpt_path=last``;
    * a run folder: its ``checkpoints/last.ckpt`` (an error when missing);
    * anything else: the file itself (checked by :func:`load_checkpoint`).
    """
    if not ckpt_path:
        return None
    if str(ckpt_path) == "last":
        path = Path(output_dir) / "checkpoints" / "last.ckpt"
        if path.is_file():
            return str(path)
        print(f"ckpt_path=last: no {path} yet, starting from scratch", flush=True)
        return None
    path = Path(ckpt_path)
    if path.is_dir():
        for candidate in (path / "checkpoints" / "last.ckpt", path / "last.ckpt"):
            if candidate.is_file():
                return str(candidate)
        raise CheckpointError(f"ckpt_path={path} is a folder without checkpoints/last.ckpt; pass a run folder, a .ckpt "
                              "file, or ckpt_path=last with hydra.run.dir=<the run folder>")
    return str(path)


def _shorten(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_compatible(state_dict: dict[str, torch.Tensor], model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Raise a one-line error listing missing / unexpected / mis-shaped keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = sorted(k for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    problems = []
    if missing:
        problems.append(f"missing keys: {_shorten(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_shorten(unexpected)}")
    if shapes:
        problems.append("shape mismatch: " + _shorten(
            [f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}" for k in shapes]))
    if problems:
        raise CheckpointError(f"checkpoint {path} does not fit this model ({'; '.join(problems)}); "
                              "use the same model/* and data options as the run that wrote it")


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        atomic_write(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        return load_checkpoint(path)


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
    """A stored (plain) config with every ``_target_`` pointing at the current module paths, and the options of a
    part whose class has ``upgrade_options(options) -> options`` (e.g. ``EBT``) passed through it."""
    if isinstance(config, dict):
        config = {k: current_target(v) if k == "_target_" and isinstance(v, str) else upgrade_config(v)
                  for k, v in config.items()}
        upgrade = _options_upgrade(config.get("_target_"))
        return upgrade(config) if upgrade is not None else config
    if isinstance(config, list):
        return [upgrade_config(v) for v in config]
    return config


def _options_upgrade(target: Any):
    """``upgrade_options`` of the class a ``_target_`` names, or None (no such method, or not importable)."""
    if not isinstance(target, str):
        return None
    try:
        return getattr(get_object(target), "upgrade_options", None)
    except Exception:  # noqa: BLE001 - an unknown target is reported when the config is built
        return None


def stored_config(checkpoint: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The training config a checkpoint stores, upgraded to the current layout."""
    config = (checkpoint.get("hyper_parameters") or {}).get("config")
    if not config:
        raise CheckpointError(f"checkpoint {path} stores no training config (hyper_parameters.config); "
                              "it was not written by scripts/train.py")
    return upgrade_config(config)
