"""Checkpoints that are never half-written, and that fail clearly when they are wrong.

``AtomicCheckpointIO`` writes to a temporary file in the target folder, fsyncs it and renames it over the
target (``os.replace`` is atomic on POSIX), so a crash mid-write leaves the previous checkpoint intact. The file gets
the mode an ordinary ``open`` would give it (0666 minus the umask; the temporary file's 0600 is not kept), and a full
disk is a :class:`CheckpointError` naming the last good checkpoint. A kill during a write can leave a temporary
``.<name>.*.tmp`` behind: :func:`remove_stale_temporaries` deletes them when the next run starts in that folder.

Every checkpoint carries ``weights_sha256`` (:func:`weights_digest`, written by ``LitModel.on_save_checkpoint``) and
``optimizer_sha256`` (:func:`tree_digest` of the optimizer state, written by :class:`AtomicCheckpointIO`);
:func:`load_checkpoint` refuses weights or an optimizer state that do not match them, and NaNs in either.

Loading never runs code from the file (docs/security.md): :func:`load_checkpoint` unpickles with
``torch.load(weights_only=True)``, which builds tensors, containers and plain values only, plus the few other types the
project's own checkpoints hold (:data:`SAFE_GLOBALS`: numpy arrays, for the RNG states). Anything else is refused with
one line naming the file and the type, unless the user passes ``trust_checkpoint=true`` (:func:`trusting`).
A stored config may only name the parts that ``configs/model`` and ``configs/data`` can compose
(:func:`buildable_targets`): :func:`stored_config` refuses any other ``_target_`` before anything is imported.
"""

import errno
import functools
import hashlib
import os
import pickle
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from hydra.utils import get_object
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import OmegaConf

from ebt.errors import CheckpointError

try:
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct, scalar

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


# The non-tensor types a checkpoint of this project holds besides containers and plain values: numpy's RNG state
# (an uint32 array) and numpy scalars; each with the names numpy 1.x pickled them under, so older files load too.
NUMPY_DTYPES = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
                np.float16, np.float32, np.float64)
SAFE_GLOBALS: list[Any] = [
    *((f, f"numpy.{core}.multiarray.{f.__name__}") for f in (_reconstruct, scalar) for core in ("_core", "core")),
    np.ndarray, np.dtype, *(type(np.dtype(t)) for t in NUMPY_DTYPES)]
SAFE_NAMES = frozenset(g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in SAFE_GLOBALS)
TRUST = ContextVar("trust_checkpoint", default=False)
TRUST_HINT = ("open it only if you trust whoever made it, with trust_checkpoint=true (unpickling runs any code the "
              "file carries)")


@contextmanager
def trusting(trust: bool) -> Iterator[None]:
    """Within the block, :func:`load_checkpoint` may fall back to a full unpickle (``trust_checkpoint=true``)."""
    token = TRUST.set(bool(trust))
    try:
        yield
    finally:
        TRUST.reset(token)


def refused_types(path: Path) -> list[str]:
    """The globals (``module.name``) a pickled checkpoint names that :func:`load_checkpoint` does not build (read from
    the pickle's opcodes, nothing is run)."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - only used to word the error
        return []
    return sorted(n for n in names if n not in SAFE_NAMES)


def load_checkpoint(path: str | os.PathLike, *, trust: bool | None = None) -> dict[str, Any]:
    """The checkpoint at ``path``, on CPU, unpickled without running code (see the module docstring); clear errors for
    a missing, truncated or foreign file and for integrity problems (:func:`check_integrity`).

    ``trust`` (default: the ``trust_checkpoint`` option, :func:`trusting`) lets a file holding other types load with
    a full unpickle, after a one-line warning."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path "
                              "(an existing .ckpt file written by scripts/train.py)")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():
            raise _unreadable(path, e) from e
        refused = ", ".join(refused_types(path)) or str(e).split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
        if not (TRUST.get() if trust is None else trust):
            raise CheckpointError(f"checkpoint {path} holds {refused[:200]}, which loading would have to run code to "
                                  f"build (pickle); refused, nothing was run: {TRUST_HINT}") from None
        print(f"warning: trust_checkpoint=true: unpickling {path} with full pickle because it holds {refused[:200]}; "
              "this runs any code the file carries", file=sys.stderr, flush=True)
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e2:  # noqa: BLE001 - reported as one line
            raise _unreadable(path, e2) from e2
    except Exception as e:  # zip / torch errors from a truncated or non-checkpoint file
        raise _unreadable(path, e) from e
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"checkpoint {path} has no state_dict; it was not written by this trainer")
    check_integrity(checkpoint, path)
    return checkpoint


def _unreadable(path: Path, error: BaseException) -> CheckpointError:
    detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    return CheckpointError(f"checkpoint {path} is unreadable (truncated or not a checkpoint): "
                           f"{type(error).__name__}: {detail}")


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict: names, dtypes, shapes and bytes, in sorted key order (device independent)."""
    sha = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name]
        if not isinstance(tensor, torch.Tensor):
            continue
        sha.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        sha.update(_tensor_bytes(tensor))
    return sha.hexdigest()


def tree_digest(tree: Any) -> str:
    """SHA-256 of a nested dict / list / tuple of tensors and plain values (an optimizer state): every path, tensor
    (dtype, shape, bytes) and value (``repr``), dicts in sorted key order (device independent)."""
    sha = hashlib.sha256()

    def visit(node: Any, name: str) -> None:
        if isinstance(node, torch.Tensor):
            sha.update(f"{name}|{node.dtype}|{tuple(node.shape)}|".encode())
            sha.update(_tensor_bytes(node))
        elif isinstance(node, dict):
            for key in sorted(node, key=lambda k: (type(k).__name__, str(k))):
                visit(node[key], f"{name}.{key}")
        elif isinstance(node, list | tuple):
            for i, value in enumerate(node):
                visit(value, f"{name}.{i}")
        else:
            sha.update(f"{name}|{node!r}|".encode())

    visit(tree, "")
    return sha.hexdigest()


def stamp_checksums(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """Set ``weights_sha256`` and (with an optimizer state) ``optimizer_sha256`` of ``checkpoint`` (in place)."""
    checkpoint["weights_sha256"] = weights_digest(checkpoint["state_dict"])
    if "optimizer_states" in checkpoint:
        checkpoint["optimizer_sha256"] = tree_digest(checkpoint["optimizer_states"])
    return checkpoint


def save_checkpoint_file(checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    """Write a checkpoint dict built outside Lightning (e.g. a grown one) atomically, with fresh checksums."""
    stamp_checksums(checkpoint)
    atomic_write(path, lambda f: torch.save(checkpoint, f))


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
    """Refuse NaNs in the weights or the optimizer state (named: the likelier diagnosis), then weights or an optimizer
    state that do not match their stored checksums. Checkpoints written before a checksum existed are accepted without
    it (only the other checks apply)."""
    nan = _nan_tensors(checkpoint["state_dict"], "") + _nan_tensors(checkpoint.get("optimizer_states", []),
                                                                     "optimizer_states")
    if nan:
        raise CheckpointError(f"checkpoint {path} is corrupt: NaN in {_shorten(nan, 3)}; a run saves only finite "
                              "weights, so use an earlier checkpoint of the run (or start again)")
    expected = checkpoint.get("weights_sha256")
    if expected is not None and weights_digest(checkpoint["state_dict"]) != expected:
        raise CheckpointError(f"checkpoint {path}: the weights do not match their checksum (altered or corrupt); "
                              "use an intact copy, or resume from another checkpoint of the run")
    expected = checkpoint.get("optimizer_sha256")
    if expected is not None and tree_digest(checkpoint.get("optimizer_states")) != expected:
        raise CheckpointError(f"checkpoint {path}: the optimizer state does not match its checksum (altered or "
                              "corrupt); use an intact copy, or resume from another checkpoint of the run")


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
    """Lightning's checkpoint IO: atomic writes with ``optimizer_sha256``, and loads through :func:`load_checkpoint`
    (never a full unpickle unless ``trust_checkpoint=true``), whatever ``weights_only`` Lightning asks for."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        if "optimizer_states" in checkpoint:
            checkpoint["optimizer_sha256"] = tree_digest(checkpoint["optimizer_states"])
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
# names that left a module which stays (a module split by job): old ``module.name`` -> now
MOVED_NAMES = {
    "ebt.training.summary.progress_bar": "ebt.training.progress.progress_bar",
    "ebt.training.summary.model_summary": "ebt.training.progress.model_summary",
}


def current_target(target: str) -> str:
    """``target`` (``module.name``) with a moved module replaced by its new path, then a moved name by its own."""
    module, _, name = target.rpartition(".")
    target = f"{MOVED_MODULES[module]}.{name}" if module in MOVED_MODULES else target
    return MOVED_NAMES.get(target, target)


def upgrade_config(config: Any) -> Any:
    """A stored (plain) config with every ``_target_`` pointing at the current module paths, and the options of a
    buildable part (:func:`buildable_targets`) whose class has ``upgrade_options(options) -> options`` (e.g. ``EBT``)
    passed through it. Other targets are left as they are and never imported."""
    if isinstance(config, dict):
        config = {k: current_target(v) if k == "_target_" and isinstance(v, str) else upgrade_config(v)
                  for k, v in config.items()}
        upgrade = _options_upgrade(config.get("_target_"))
        return upgrade(config) if upgrade is not None else config
    if isinstance(config, list):
        return [upgrade_config(v) for v in config]
    return config


def _options_upgrade(target: Any):
    """``upgrade_options`` of the buildable part a ``_target_`` names, or None (no such method, not importable, or
    not a buildable part: those are not imported)."""
    if not isinstance(target, str) or target not in buildable_targets():
        return None
    try:
        return getattr(get_object(target), "upgrade_options", None)
    except Exception:  # noqa: BLE001 - an unknown target is reported when the config is built
        return None


BUILT_SECTIONS = ("model", "data")  # the parts of a stored config that a restore builds


@functools.cache
def buildable_targets() -> frozenset[str]:
    """Every ``_target_`` the config tree can compose into ``model`` and ``data`` (configs/model, configs/data and
    the ``model`` / ``data`` sections of configs/experiment): the parts a stored config may name. Read from the
    files, so there is no second registry to keep up to date."""
    from ebt.training.config import CONFIG_DIR

    def targets(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("_target_"), str):
                yield node["_target_"]
            for value in node.values():
                yield from targets(value)
        elif isinstance(node, list):
            for value in node:
                yield from targets(value)

    found: set[str] = set()
    for folder in ("model", "data", "experiment"):
        for file in sorted((CONFIG_DIR / folder).rglob("*.yaml")):
            content = yaml.safe_load(file.read_text()) or {}
            found.update(targets(content if folder != "experiment" else
                                 [content.get(section) for section in BUILT_SECTIONS]))
    return frozenset(found)


def _target_entries(node: Any, key: str) -> Iterator[tuple[str, Any]]:
    """``(full key, value)`` of every ``_target_`` under ``node`` (dicts and lists, recursively)."""
    if isinstance(node, dict):
        for name, value in node.items():
            full = f"{key}.{name}"
            if name == "_target_":
                yield full, value
            else:
                yield from _target_entries(value, full)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _target_entries(value, f"{key}.{i}")


def check_buildable(config: dict[str, Any], path: str | Path) -> None:
    """Refuse a stored config whose ``model`` / ``data`` name anything but a buildable part (a tampered file could
    name any importable function, e.g. ``torch.load`` on a pickle it ships): one line naming the key."""
    allowed = buildable_targets()
    for section in BUILT_SECTIONS:
        for key, target in _target_entries(config.get(section), section):
            if not isinstance(target, str) or current_target(target) not in allowed:
                raise CheckpointError(f"{path}: {key}={str(target)[:200]!r} is not a part this project builds (the "
                                      "_target_s of configs/model and configs/data); refused, nothing was imported "
                                      "or run; use a checkpoint or export written by scripts/train.py / "
                                      "scripts/export.py")


def stored_config(checkpoint: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The training config a checkpoint stores, interpolations resolved (so that every part is visible), checked by
    :func:`check_buildable` and upgraded to the current layout."""
    config = (checkpoint.get("hyper_parameters") or {}).get("config")
    if not config:
        raise CheckpointError(f"checkpoint {path} stores no training config (hyper_parameters.config); "
                              "it was not written by scripts/train.py")
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint {path}: its training config is a {type(config).__name__}, not a mapping; "
                              "it was not written by scripts/train.py")
    try:
        config = OmegaConf.to_container(OmegaConf.create(config), resolve=True)
    except Exception as e:  # noqa: BLE001 - any OmegaConf error: one line
        raise CheckpointError(f"checkpoint {path}: its training config cannot be read "
                              f"({type(e).__name__}: {str(e).strip().splitlines()[0][:200]})") from None
    check_buildable(config, path)
    return upgrade_config(config)
