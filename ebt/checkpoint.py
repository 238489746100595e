"""Checkpoints that are never half-written, and that fail clearly when they are wrong.

``AtomicCheckpointIO`` writes to a temporary file in the target folder, fsyncs it and renames it over the
target (``os.replace`` is atomic on POSIX), so a crash mid-write leaves the previous checkpoint intact.
"""

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from ebt.errors import CheckpointError


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(file_object)`` on a temp file next to ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    return checkpoint


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
