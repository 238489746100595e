"""Prepared token files of ``data=tokenized_text``: tokenizer, memory-mapped token ids, a checked cache.

:func:`prepare` lists the corpus (:mod:`ebt.tasks.text_sources`), takes the tokenizer (a ``tokenizer.json`` of
Hugging Face ``tokenizers``, or a byte-level BPE of ``vocab_size`` tokens trained offline on the **train split only**:
ByteLevel pre-tokenizer and decoder, the 256 byte symbols as initial alphabet, ``min_frequency`` 2, plus the special
token ``<|endoftext|>``), tokenizes every split and writes, into
``<cache_dir>/tokenized/<key>/`` (``cache_dir`` default ``${EBT_DATA_CACHE:-~/.cache/ebt-alt-arch}``):

* ``tokenizer.json``;
* ``<split>_ids.bin``: the split's documents' token ids, one stream, each document followed by the separator token
  when the tokenizer has one (``<|endoftext|>``, ``</s>``, ``<eos>`` or ``<|eos|>``), ``uint16`` when the vocabulary
  has at most 65535 tokens, else ``uint32``;
* ``<split>_bytes.bin`` (``uint16``): the UTF-8 bytes of the text each token stands for (0 for a separator), from the
  tokenizer's character offsets: a token ends where its offset ends, so a document's counts sum to its exact size in
  bytes (whitespace a tokenizer drops counts with the next token; a character split over byte-level tokens counts with
  the first). Bits per byte are then comparable across tokenizers and with ``data=text``;
* ``meta.json``, written last: settings, vocabulary size, dtype, separator, per split the numbers of tokens, bytes and
  documents and the SHA-256 of both files.

The key is a hash of everything that determines the files: the corpus files (paths, sizes, modification times; a hub
data set: its name), format, text field, encoding, split settings, the OOD corpus, the tokenizer file's SHA-256 or the
BPE settings, and :data:`VERSION`. So an edited corpus or other options get a new folder, and re-running reuses a
prepared one. A folder whose ``meta.json`` is missing, unreadable or does not match (settings, sizes, checksums) is
rebuilt with one warning line; the checksums are verified on every load (about 0.1 s per 40 MB). Folders of
earlier settings stay until deleted (``rm -r <cache_dir>/tokenized``). Files are written atomically (a temporary
file, then ``os.replace``); concurrent preparations (the ranks of a DDP run) wait on a lock file.

:func:`prepare_task` is ``scripts/prepare_text.py``'s work (with progress bars), :func:`summary` its report.
"""

import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ebt.errors import ConfigError, DataError, EnvironmentSetupError
from ebt.tasks.sudoku import default_cache_dir
from ebt.tasks.text_sources import DocumentReader, Unit, check_encoding, chunks, list_units, require, split_units

VERSION = 1  # bump when the files' layout or content rules change: the key changes with it
SEPARATOR = "<|endoftext|>"
SEPARATORS = (SEPARATOR, "</s>", "<eos>", "<|eos|>")  # a given tokenizer's first of these separates documents
MIN_VOCAB = 257  # the 256 byte symbols and the separator
MIN_FREQUENCY = 2
BATCH_CHARS = 1 << 22  # characters per encode_batch call
META = "meta.json"
TOKENIZED_TEXT = "ebt.tasks.tokenized_text.TokenizedText"  # the data task whose files these are


@dataclass(frozen=True)
class CorpusOptions:
    """The options that determine the prepared files (the ``data.task`` keys of the same names)."""

    path: str | None = None
    glob: str = "*.py"
    format: str = "auto"
    text_field: str = "text"
    hf_dataset: str | None = None
    tokenizer: str | None = None
    vocab_size: int = 4096
    ood_path: str | None = None
    val_every: int = 20
    val_fraction: float = 0.05
    encoding: str = "utf-8"

    @classmethod
    def from_config(cls, options: dict[str, Any]) -> "CorpusOptions":
        """The options among ``options`` (a ``data.task`` mapping; other keys are ignored)."""
        return cls(**{k: options[k] for k in cls.__dataclass_fields__ if k in options})

    def check(self) -> None:
        if self.tokenizer is None and self.vocab_size < MIN_VOCAB:
            raise ConfigError(f"data.task.vocab_size={self.vocab_size} is too small for a byte-level BPE; use >= "
                              f"{MIN_VOCAB} (256 byte symbols and the separator)")
        if self.val_every < 1:
            raise ConfigError(f"data.task.val_every must be >= 1 (every n-th file is validation), got {self.val_every}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"data.task.val_fraction must lie in (0, 1), got {self.val_fraction}")
        check_encoding(self.encoding)


@dataclass
class Prepared:
    """A prepared folder: its ``meta.json`` content and the loaded tokenizer."""

    folder: Path
    meta: dict[str, Any]
    tokenizer: Any  # tokenizers.Tokenizer
    built: bool = False
    seconds: float = 0.0
    splits: tuple[str, ...] = field(default=())

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.meta["dtype"])

    @property
    def separator(self) -> int | None:
        return self.meta["separator"]

    def files(self, split: str) -> tuple[Path, Path]:
        return self.folder / f"{split}_ids.bin", self.folder / f"{split}_bytes.bin"


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            sha.update(block)
    return sha.hexdigest()


@contextmanager
def _atomic(path: Path) -> Iterator[BinaryIO]:
    """A binary file that replaces ``path`` only once completely written."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise EnvironmentSetupError(f"cannot write the tokenized text cache {folder} ({e.strerror or e}); point "
                                    "data.task.cache_dir (or EBT_DATA_CACHE) at a writable folder") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def token_byte_counts(text: str, offsets: list[tuple[int, int]]) -> np.ndarray:
    """UTF-8 bytes per token of ``text`` from the tokens' character ``offsets`` (see the module docstring)."""
    if not offsets:
        return np.zeros(0, dtype=np.int64)
    ends = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)[:, 1]
    total = len(text)
    if not text.isascii():
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        widths = 1 + (codes >= 0x80).astype(np.int64) + (codes >= 0x800) + (codes >= 0x10000)
        byte_ends = np.concatenate([[0], np.cumsum(widths)])
        ends, total = byte_ends[ends], int(byte_ends[-1])
    ends = np.maximum.accumulate(ends)
    ends[-1] = total  # the last token takes what the tokenizer dropped at the end (trimmed whitespace)
    return np.diff(ends, prepend=0)


Encoded = tuple[np.ndarray, np.ndarray, int, bool]  # ids, bytes per token, UTF-8 size, last piece of a document


def encode_documents(tokenizer, documents: Iterable[str], separator: int | None) -> Iterator[Encoded]:
    """(ids, bytes per token, UTF-8 size, last) per piece of each document (:func:`~ebt.tasks.text_sources.chunks`),
    the separator (0 bytes) after a document's last piece."""
    def encode(batch: list[tuple[str, bool]]) -> Iterator[Encoded]:
        encodings = tokenizer.encode_batch([text for text, _ in batch], add_special_tokens=False)
        for (text, last), enc in zip(batch, encodings, strict=True):
            ids, counts = np.asarray(enc.ids, dtype=np.int64), token_byte_counts(text, enc.offsets)
            if last and separator is not None:
                ids, counts = np.append(ids, separator), np.append(counts, 0)
            size = int(counts.sum()) if len(counts) else len(text.encode("utf-8", "surrogatepass"))
            yield ids, counts, size, last

    batch, size = [], 0
    for doc in documents:
        pieces = list(chunks(doc))
        for i, piece in enumerate(pieces):
            batch.append((piece, i == len(pieces) - 1))
            size += len(piece)
            if size >= BATCH_CHARS:
                yield from encode(batch)
                batch, size = [], 0
    if batch:
        yield from encode(batch)


def train_bpe(documents: Iterable[str], vocab_size: int, progress: bool = False):
    """A byte-level BPE (:mod:`tokenizers`) of ``vocab_size`` tokens trained on ``documents``."""
    tk = require("tokenizers")
    tokenizer = tk.Tokenizer(tk.models.BPE())
    tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=MIN_FREQUENCY, special_tokens=[SEPARATOR],
                                     initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(), show_progress=progress)
    tokenizer.train_from_iterator((piece for doc in documents for piece in chunks(doc)), trainer=trainer)
    return tokenizer


def load_tokenizer(path: Path, key: str = "data.task.tokenizer"):
    """A ``tokenizer.json`` file as a ``tokenizers.Tokenizer``; a missing or unreadable file is a DataError."""
    tk = require("tokenizers")
    if not path.is_file():
        raise DataError(f"{key}={path} does not exist; point it at a Hugging Face tokenizer.json, or set it to null to "
                        "train a byte-level BPE of data.task.vocab_size tokens on the corpus")
    try:
        return tk.Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 - any parse failure means a file that is not a tokenizer
        detail = str(e).splitlines()[0] if str(e) else repr(e)
        raise DataError(f"{key}={path} is not a Hugging Face tokenizer.json ({detail}); save one with "
                        "tokenizer.save(path), or set it to null to train a BPE") from None


def separator_id(tokenizer) -> int | None:
    return next((i for t in SEPARATORS if (i := tokenizer.token_to_id(t)) is not None), None)


@dataclass
class Corpus:
    """The resolved corpus: its units per split, the settings' fingerprint and key."""

    description: str
    splits: dict[str, list[tuple[Unit, str]]]
    fingerprint: dict[str, Any]
    key: str


def resolve(options: CorpusOptions) -> Corpus:
    """List the corpus and compute the key of its prepared folder (cheap: no file is read)."""
    options.check()
    description, units = list_units(options.path, options.glob, options.format, options.hf_dataset)
    splits = split_units(units, options.val_every)
    ood = []
    if options.ood_path:
        ood = list_units(options.ood_path, options.glob, options.format, key="data.task.ood_path")[1]
        splits["ood"] = [(u, "all") for u in ood]
    if options.tokenizer:
        tokenizer_path = Path(options.tokenizer).expanduser()
        load_tokenizer(tokenizer_path)  # a clear error before anything is built
        tokenizer = {"file_sha256": _sha256_file(tokenizer_path)}
    else:
        tokenizer = {"bpe": {"vocab_size": options.vocab_size, "min_frequency": MIN_FREQUENCY}}
    fingerprint = {"version": VERSION, "corpus": [u.fingerprint() for u in units],
                   "ood": [u.fingerprint() for u in ood], "format": options.format, "text_field": options.text_field,
                   "encoding": options.encoding, "val_every": options.val_every, "val_fraction": options.val_fraction,
                   "tokenizer": tokenizer}
    key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]
    return Corpus(description, splits, fingerprint, key)


def check_folder(folder: Path, corpus: Corpus) -> str | None:
    """Why ``folder`` does not hold valid prepared files for ``corpus`` (``"missing"`` when there is nothing), or
    ``None`` when it does."""
    meta_path = folder / META
    if not meta_path.is_file():
        leftovers = [p for p in folder.glob("*") if p.name != ".lock"] if folder.is_dir() else []
        return "meta.json is missing (an interrupted preparation?)" if leftovers else "missing"
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") != corpus.fingerprint or meta.get("key") != corpus.key:
            return "it was prepared for other settings"
        if _sha256_file(folder / "tokenizer.json") != meta["tokenizer_sha256"]:
            return "tokenizer.json does not match its checksum"
        itemsize = np.dtype(meta["dtype"]).itemsize
        for split in corpus.splits:
            info = meta["splits"][split]
            for name, size, sha in ((f"{split}_ids.bin", itemsize, info["ids_sha256"]),
                                    (f"{split}_bytes.bin", 2, info["bytes_sha256"])):
                path = folder / name
                if not path.is_file() or path.stat().st_size != info["tokens"] * size:
                    return f"{name} is missing or has the wrong size"
                if _sha256_file(path) != sha:
                    return f"{name} does not match its checksum"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable ({type(e).__name__}: {e})"
    return None


def _write_split(folder: Path, split: str, stream: Iterator[Encoded], dtype: np.dtype, bar=None) -> dict[str, Any]:
    counts = {"tokens": 0, "bytes": 0, "documents": 0}
    shas = hashlib.sha256(), hashlib.sha256()
    with _atomic(folder / f"{split}_ids.bin") as ids_file, _atomic(folder / f"{split}_bytes.bin") as bytes_file:
        for ids, nbytes, size, last in stream:
            for f, sha, data in ((ids_file, shas[0], ids.astype(dtype)),
                                 (bytes_file, shas[1], np.minimum(nbytes, 65535).astype(np.uint16))):
                raw = data.tobytes()
                f.write(raw)
                sha.update(raw)
            counts["tokens"] += len(ids)
            counts["bytes"] += size
            counts["documents"] += last
            if bar is not None:
                bar.update(size)
    return {**counts, "ids_sha256": shas[0].hexdigest(), "bytes_sha256": shas[1].hexdigest()}


def build(folder: Path, corpus: Corpus, options: CorpusOptions, progress: bool = False) -> None:
    """Tokenize ``corpus`` into ``folder`` (the tokenizer first, ``meta.json`` last)."""
    from tqdm.auto import tqdm

    (folder / META).unlink(missing_ok=True)
    reader = DocumentReader(options.text_field, options.val_fraction, folder / "scratch", progress, options.encoding)
    try:
        if options.tokenizer:
            tokenizer = load_tokenizer(Path(options.tokenizer).expanduser())
        else:
            if progress:
                _note(f"training a byte-level BPE of {options.vocab_size} tokens on the train split")
            tokenizer = train_bpe(reader.documents(corpus.splits["train"]), options.vocab_size, progress)
        with _atomic(folder / "tokenizer.json") as f:
            f.write(Path(options.tokenizer).expanduser().read_bytes() if options.tokenizer else
                    tokenizer.to_str().encode())
        vocab = tokenizer.get_vocab_size(with_added_tokens=True)
        dtype, separator = np.dtype(np.uint16 if vocab <= 65535 else np.uint32), separator_id(tokenizer)
        splits = {}
        for split, pieces in corpus.splits.items():
            share = {"all": 1.0, "head": 1 - options.val_fraction, "tail": options.val_fraction}
            total = sum(u.path.stat().st_size * share[part] for u, part in pieces if u.path is not None) or None
            with tqdm(total=total, desc=f"tokenizing {split}", unit="B", unit_scale=True, disable=not progress,
                      mininterval=0.5) as bar:
                stream = encode_documents(tokenizer, reader.documents(pieces), separator)
                splits[split] = _write_split(folder, split, stream, dtype, bar)
    finally:
        shutil.rmtree(folder / "scratch", ignore_errors=True)
    meta = {"version": VERSION, "key": corpus.key, "fingerprint": corpus.fingerprint, "corpus": corpus.description,
            "options": asdict(options), "vocab_size": vocab, "dtype": dtype.name, "separator": separator,
            "tokenizer_sha256": _sha256_file(folder / "tokenizer.json"), "splits": splits}
    with _atomic(folder / META) as f:
        f.write(json.dumps(meta, indent=1).encode())


def prepare(options: CorpusOptions, cache_dir: str | Path | None = None, *, progress: bool = False) -> Prepared:
    """The prepared files of ``options`` under ``<cache_dir>/tokenized/<key>/``: reused when valid, else (re)built
    (one line on stderr: a note the first time, a warning when an existing folder is invalid)."""
    require("tokenizers")
    corpus = resolve(options)
    folder = Path(cache_dir or default_cache_dir()).expanduser() / "tokenized" / corpus.key
    built, start = False, time.perf_counter()
    with _locked(folder):
        problem = check_folder(folder, corpus)
        if problem == "missing":
            _note(f"tokenized text: preparing {corpus.description} in {folder} (once; reused while the corpus and "
                  "options stay the same)")
        elif problem is not None:
            _note(f"warning: tokenized text cache {folder} is invalid ({problem}); rebuilding it")
        if problem is not None:
            try:
                build(folder, corpus, options, progress)
            except BaseException:
                if problem == "missing":  # nothing to keep: the next run starts afresh, without a warning
                    shutil.rmtree(folder, ignore_errors=True)
                raise
            built = True
        meta = json.loads((folder / META).read_text())
    tokenizer = load_tokenizer(folder / "tokenizer.json", key=f"the prepared {folder / 'tokenizer.json'}")
    return Prepared(folder, meta, tokenizer, built, time.perf_counter() - start, tuple(corpus.splits))


def prepare_task(task: dict[str, Any], overrides: list[str]) -> str:
    """``scripts/prepare_text.py``'s work: prepare the files of ``task`` (the composed ``data.task`` of
    ``data=tokenized_text`` as a plain dict) with progress bars; returns the report to print: :func:`summary` and the
    training command (``overrides``, the script's) that reuses the files. ConfigError for another data task."""
    if task.get("_target_") != TOKENIZED_TEXT:
        raise ConfigError(f"scripts/prepare_text.py prepares data=tokenized_text only, got {task.get('_target_')}; "
                          "drop the data= override")
    prepared = prepare(CorpusOptions.from_config(task), task.get("cache_dir"), progress=True)
    command = f"train with: python scripts/train.py data=tokenized_text {' '.join(overrides)}".rstrip()
    return f"{summary(prepared)}\n{command}"


def summary(prepared: Prepared) -> str:
    """Where the files are, the vocabulary, and tokens and bytes per token of each split (the CLI's report)."""
    meta = prepared.meta
    what = "prepared" if prepared.built else "reused"
    lines = [f"{what} {prepared.folder} in {prepared.seconds:.1f}s: {meta['corpus']}, vocab {meta['vocab_size']} "
             f"({meta['dtype']}), separator id {meta['separator']}"]
    for split in prepared.splits:
        info = meta["splits"][split]
        per = info["bytes"] / max(info["tokens"], 1)
        lines.append(f"  {split:5s} {info['tokens']:>12,d} tokens {info['bytes']:>14,d} bytes  {per:.2f} bytes/token")
    return "\n".join(lines)
