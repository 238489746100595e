"""Byte-level next-token language modelling over local text files (vocab 256, no tokenizer).

``data.task.path`` is a file or a folder (read recursively, ``data.task.glob`` selects files). By default the corpus is
the Python standard library's ``.py`` sources, which every machine has (installed packages under
``site-packages`` are skipped in any folder). Files are memory-mapped and windows
are read on demand, so a multi-GB corpus never loads into RAM. Bytes are bytes: any encoding works.

Splits: a folder is split by file (a stable hash of the relative path sends ~1 in ``val_every`` files to
``val``); a single file keeps its last ``val_fraction`` of bytes for ``val``. Metric: bits per byte,
``mean cross-entropy / ln 2``.

Out-of-distribution corpora (optional), each evaluated as its own split:

* ``data.task.ood_path``: one corpus (a file, or a folder read with ``data.task.glob``), the split ``ood``;
* ``data.task.ood_paths``: named corpora ``{NAME: SPEC}``, the splits ``ood_NAME`` (in the mapping's order). A SPEC is
  a path (a file; a folder, read with ``data.task.glob``; or a path with wildcards, ``/texts/**/*.md``), or a mapping
  ``{path: FOLDER, glob: PATTERN or [PATTERNS]}``: ``path`` null is the Python standard library (the default training
  corpus), ``glob`` null is ``data.task.glob``. A pattern without ``/`` matches file names at any depth (as
  ``data.task.glob``); one with ``/`` is relative to the folder (``**``: any depth). Installed packages are skipped.

No file of a named OOD corpus may be a file of the training corpus (train or val): that is a :class:`DataError`, as
is a corpus that is missing or matches nothing (it names the corpus and the override that points it elsewhere or
drops it). ``ood_path`` keeps its former behaviour (no overlap check), so old configs and checkpoints load as they
did.
"""

import math
import re
import sysconfig
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ebt.errors import ConfigError, DataError
from ebt.tasks.base import Task
from ebt.tasks.metrics import Sums


def default_corpus() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


class ByteCorpus:
    """Random fixed-length windows from a set of memory-mapped files."""

    def __init__(self, files: list[tuple[Path, int, int]], window: int, what: str) -> None:
        # each entry: (path, start byte, end byte) of the usable region
        usable = [(p, s, e) for p, s, e in files if e - s >= window]
        if not usable:
            raise DataError(
                f"{what}: no file has at least {window} bytes (data.task.seq_len + 1); "
                "lower data.task.seq_len or add more text"
            )
        self.files = usable
        weights = np.array([e - s - window + 1 for _, s, e in usable], dtype=np.float64)
        self.cum_weights = np.cumsum(weights / weights.sum())
        self.window = window
        self._maps: dict[int, np.memmap] = {}

    def _map(self, i: int) -> np.memmap:
        if i not in self._maps:
            self._maps[i] = np.memmap(self.files[i][0], dtype=np.uint8, mode="r")
        return self._maps[i]

    def sample(self, rng: np.random.Generator, batch_size: int) -> np.ndarray:
        out = np.empty((batch_size, self.window), dtype=np.int64)
        picks = np.searchsorted(self.cum_weights, rng.random(batch_size), side="right")
        for row, i in enumerate(np.minimum(picks, len(self.files) - 1)):
            _, start, end = self.files[i]
            offset = int(rng.integers(start, end - self.window + 1))
            out[row] = self._map(i)[offset : offset + self.window]
        return out


INSTALLED_PACKAGES = {"site-packages", "dist-packages"}
WILDCARDS = re.compile(r"[*?\[]")
CORPUS_NAME = re.compile(r"[A-Za-z0-9_]+")
OOD_PREFIX = "ood_"  # split of the named OOD corpus NAME: ood_NAME


def _list_files(path: Path, pattern: str, what: str, anchored: list[str] | None = None) -> list[Path]:
    """Files of ``path``: the file itself, or the folder's files whose name matches ``pattern`` at any depth (or, with
    ``anchored``, the files matching any of those patterns relative to the folder), sorted; installed packages are
    skipped."""
    if not path.exists():
        raise DataError(f"{what}={path} does not exist; point it at a text file or a folder of text files")
    if path.is_file():
        return [path]
    found = {p for pat in anchored for p in path.glob(pat)} if anchored else set(path.rglob(pattern))
    files = sorted(p for p in found if p.is_file() and INSTALLED_PACKAGES.isdisjoint(p.relative_to(path).parts))
    if not files:
        raise DataError(f"{what}={path} holds no files matching data.task.glob={anchored or pattern!r}")
    return files


def _split_wildcards(path: str) -> tuple[Path, str | None]:
    """``/a/b/**/*.txt`` -> (``/a/b``, ``**/*.txt``); a path without wildcards -> (path, None)."""
    parts = Path(path).expanduser().parts
    first = next((i for i, part in enumerate(parts) if WILDCARDS.search(part)), None)
    if first is None:
        return Path(*parts), None
    return Path(*parts[:first]), "/".join(parts[first:]) if first < len(parts) - 1 else parts[first]


def ood_corpus_files(name: str, spec: Any, default_glob: str) -> tuple[Path, list[Path]]:
    """The folder (or file) and the files of the named OOD corpus ``spec`` (see the module docstring)."""
    key = f"data.task.ood_paths.{name}"
    if not CORPUS_NAME.fullmatch(str(name)):
        raise ConfigError(f"{key}: a corpus name is letters, digits and _ only (its split is {OOD_PREFIX}NAME)")
    if isinstance(spec, str):  # a path: a file, a folder (data.task.glob) or a path with wildcards
        root, pattern = _split_wildcards(spec)
        patterns = [pattern if pattern else f"**/{default_glob}"]
    elif isinstance(spec, Mapping):
        unknown = sorted(set(spec) - {"path", "glob"})
        if unknown:
            raise ConfigError(f"{key}.{unknown[0]} is not an option of an OOD corpus; valid keys: path, glob")
        root = Path(spec["path"]).expanduser() if spec.get("path") else default_corpus()
        glob = spec.get("glob") or default_glob
        patterns = [str(g) for g in ([glob] if isinstance(glob, str) else glob)]
        if not patterns:
            raise ConfigError(f"{key}.glob is an empty list; give a pattern such as '*.txt' (or null: data.task.glob)")
        patterns = [g if "/" in g else f"**/{g}" for g in patterns]  # a bare name matches at any depth
    else:
        raise ConfigError(f"{key} must be a path or a mapping {{path: FOLDER, glob: PATTERN}}, got {spec!r}")
    where = f"{key}.path=<folder> (and {key}.glob=<pattern>)" if isinstance(spec, Mapping) else f"{key}=<path>"
    fix = f"point it elsewhere with {where}, or leave it out with ~{key}"
    if not root.exists():
        raise DataError(f"{key}: {root} does not exist; {fix}")
    try:
        files = _list_files(root, default_glob, key, anchored=patterns)
    except DataError:
        shown = patterns[0] if len(patterns) == 1 else patterns
        stripped = (" (some Python distributions leave out parts of the standard library, such as its test/ folder)"
                    if root == default_corpus() else "")
        raise DataError(f"{key}: no file under {root} matches {shown!r}{stripped}; {fix}") from None
    return root, files


class Text(Task):
    kind = "tokens"
    metric = "bpb"
    metric_mode = "min"
    causal = True
    vocab_size = 256

    def __init__(
        self,
        *,
        path: str | None = None,
        glob: str = "*.py",
        seq_len: int = 128,
        ood_path: str | None = None,
        ood_paths: dict[str, str | dict[str, Any]] | None = None,
        val_every: int = 20,
        val_fraction: float = 0.05,
        seed: int = 0,
    ) -> None:
        super().__init__(seed=seed)
        if seq_len < 1:
            raise ConfigError(f"data.task.seq_len must be >= 1, got {seq_len}")
        if val_every < 1:
            raise ConfigError(f"data.task.val_every must be >= 1 (every n-th file is validation), got {val_every}")
        if not 0 < val_fraction < 1:
            raise ConfigError(f"data.task.val_fraction must lie in (0, 1), got {val_fraction}")
        self.seq_len = self.max_len = seq_len
        root = Path(path).expanduser() if path else default_corpus()
        files = _list_files(root, glob, "data.task.path")
        window = seq_len + 1
        if len(files) == 1:
            size = files[0].stat().st_size
            cut = int(size * (1 - val_fraction))
            train, val = [(files[0], 0, cut)], [(files[0], cut, size)]
        else:
            is_val = [zlib.crc32(str(f.relative_to(root)).encode()) % val_every == 0 for f in files]
            if not any(is_val):
                is_val[-1] = True
            train = [(f, 0, f.stat().st_size) for f, v in zip(files, is_val, strict=True) if not v]
            val = [(f, 0, f.stat().st_size) for f, v in zip(files, is_val, strict=True) if v]
        self.corpora = {"train": ByteCorpus(train, window, f"data.task.path={root} (train)"),
                        "val": ByteCorpus(val, window, f"data.task.path={root} (val)")}
        self.root = root
        training_files = {f.resolve() for f in files}
        if ood_path:
            ood_root = Path(ood_path).expanduser()
            ood_files = _list_files(ood_root, glob, "data.task.ood_path")  # not checked for overlap: as it was
            self._add_ood("ood", "data.task.ood_path", ood_root, ood_files, set(), window)
        if ood_paths is not None and not isinstance(ood_paths, Mapping):
            raise ConfigError(f"data.task.ood_paths must be a mapping {{NAME: PATH or {{path, glob}}}}, got "
                              f"{ood_paths!r}")
        for name, spec in (ood_paths or {}).items():
            ood_root, ood_files = ood_corpus_files(str(name), spec, glob)
            self._add_ood(OOD_PREFIX + str(name), f"data.task.ood_paths.{name}", ood_root, ood_files,
                          training_files, window)

    def _add_ood(self, split: str, key: str, root: Path, files: list[Path], training: set[Path], window: int) -> None:
        """Register ``files`` as the split ``split``; files of the training corpus are refused."""
        shared = [f for f in files if f.resolve() in training]
        if shared:
            raise DataError(f"{key}: {len(shared)} of its files belong to the training corpus (e.g. {shared[0]}), so "
                            "it is not out of distribution; narrow its glob or point it at other files")
        self.corpora[split] = ByteCorpus([(f, 0, f.stat().st_size) for f in files], window, f"{key}={root}")

    @property
    def eval_splits(self) -> tuple[str, ...]:
        return tuple(s for s in self.corpora if s != "train")

    def make_batch(self, split: str, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        if split not in self.corpora:
            raise ValueError(f"unknown split {split!r} of the text task; expected one of {list(self.corpora)}")
        windows = torch.from_numpy(self.corpora[split].sample(self.rng(split, index), batch_size))
        return {"input_ids": windows[:, :-1], "targets": windows[:, 1:]}

    def metric_sums(self, prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> Sums:
        """``bpb``: bits / bytes (a token is a byte); ``tok_acc``: right bytes / bytes."""
        targets = batch["targets"]
        ce = F.cross_entropy(prediction.flatten(0, 1).float(), targets.flatten(), reduction="sum")
        count = torch.tensor(targets.numel(), device=ce.device)
        return {"bpb": (ce / math.log(2), count), "tok_acc": ((prediction.argmax(-1) == targets).sum(), count)}

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``: its UTF-8 bytes (generation prompts)."""
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        """Text of token ids (bytes); an incomplete UTF-8 sequence shows as U+FFFD."""
        return bytes(ids).decode("utf-8", errors="replace")

    def describe(self) -> str:
        return f"byte-level LM on {self.root} (seq_len {self.seq_len})"
