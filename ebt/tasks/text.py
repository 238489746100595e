"""Byte-level next-token language modelling over local text files (vocab 256, no tokenizer).

``data.task.path`` is a file or a folder (read recursively, ``data.task.glob`` selects files). By default the corpus is
the Python standard library's ``.py`` sources, which every machine has (installed packages under
``site-packages`` are skipped in any folder). Files are memory-mapped and windows
are read on demand, so a multi-GB corpus never loads into RAM. Bytes are bytes: any encoding works.

Splits: a folder is split by file (a stable hash of the relative path sends ~1 in ``val_every`` files to
``val``); a single file keeps its last ``val_fraction`` of bytes for ``val``. ``data.task.ood_path`` (optional) is
a second corpus evaluated as the ``ood`` split. Metric: bits per byte, ``mean cross-entropy / ln 2``.
"""

import math
import sysconfig
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ebt.errors import ConfigError, DataError
from ebt.tasks.base import Task


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


def _list_files(path: Path, pattern: str, what: str) -> list[Path]:
    if not path.exists():
        raise DataError(f"{what}={path} does not exist; point it at a text file or a folder of text files")
    if path.is_file():
        return [path]
    files = sorted(
        p for p in path.rglob(pattern)
        if p.is_file() and INSTALLED_PACKAGES.isdisjoint(p.relative_to(path).parts)
    )
    if not files:
        raise DataError(f"{what}={path} holds no files matching data.task.glob={pattern!r}")
    return files


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
        if ood_path:
            ood_root = Path(ood_path).expanduser()
            ood_files = [(f, 0, f.stat().st_size) for f in _list_files(ood_root, glob, "data.task.ood_path")]
            self.corpora["ood"] = ByteCorpus(ood_files, window, f"data.task.ood_path={ood_root}")
        self.root = root

    @property
    def eval_splits(self) -> tuple[str, ...]:
        return ("val", "ood") if "ood" in self.corpora else ("val",)

    def make_batch(self, split: str, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        windows = torch.from_numpy(self.corpora[split].sample(self.rng(split, index), batch_size))
        return {"input_ids": windows[:, :-1], "targets": windows[:, 1:]}

    def metrics(self, prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ce = F.cross_entropy(prediction.flatten(0, 1).float(), batch["targets"].flatten())
        return {"bpb": ce / math.log(2), "tok_acc": (prediction.argmax(-1) == batch["targets"]).float().mean()}

    def describe(self) -> str:
        return f"byte-level LM on {self.root} (seq_len {self.seq_len})"
