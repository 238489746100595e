"""Documents of a text corpus for :mod:`ebt.tasks.tokenized_text`, and its train / val / ood split.

A *unit* is one local file or a Hugging Face hub data set. A plain text file is one document, read directly in
``data.task.encoding`` (default UTF-8): a few bytes invalid in it become U+FFFD (counted, one note line), and a file
with more than :data:`MAX_INVALID_SHARE` of them (and more than a few: a binary file, or another encoding) is refused
(:func:`decode_text`).
A jsonl / json / parquet file or a hub data set holds one document per row (the column
``text_field``) and is read with ``datasets.load_dataset`` (``"json"`` / ``"parquet"`` with ``data_files`` for local
files, which works offline; the hub name as given, ``split="train"``, for users with a network). ``format: auto``
picks the reader by suffix (``.jsonl`` / ``.json``: jsonl, ``.parquet``: parquet, anything else: text).

The split follows :class:`ebt.tasks.text.Text`, so both tasks validate on the same text: several units are split by
file (a stable hash of the relative path sends ~1 in ``val_every`` files to ``val``); a single unit keeps the last
``val_fraction`` of its UTF-8 bytes for ``val`` (the document holding the cut is cut at a character boundary).

``tokenizers`` and ``datasets`` are optional (``pip install -e ".[text]"``): :func:`require` imports them lazily and
names the install command when one is missing.
"""

import codecs
import importlib
import re
import sys
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ebt.errors import ConfigError, DataError, EnvironmentSetupError
from ebt.tasks.text import _list_files, default_corpus

FORMATS = ("auto", "text", "jsonl", "parquet")
SUFFIX_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
INSTALL_HINT = 'pip install -e ".[text]"'
ROWS_PER_READ = 1000
CHUNK_CHARS = 1 << 20  # longer documents are encoded in pieces (bounded memory), see :func:`chunks`
LINE_CUT = re.compile(r"\S\n(?=\S)")  # a newline between two non-space characters
MAX_INVALID_SHARE = 0.01  # a text file with a larger share of bytes invalid in its encoding is refused ...
MIN_INVALID_BYTES = 64  # ... when it holds more of them than this (a few stray bytes, e.g. the standard library's
# Latin-1 test modules in a UTF-8 corpus, are read as U+FFFD with a note)
INVALID = re.compile("[\udc80-\udcff]")  # an invalid byte, as ``surrogateescape`` decodes it


def check_encoding(encoding: str) -> str:
    """``encoding`` when Python has a codec of that name, else a :class:`ConfigError` naming the option."""
    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError):
        raise ConfigError(f"data.task.encoding={encoding!r} is not a text encoding Python knows; use e.g. utf-8, "
                          "latin-1 or cp1252") from None
    return encoding


def decode_text(raw: bytes, encoding: str, where: str) -> str:
    """``raw`` decoded with ``encoding``. Bytes invalid in it become U+FFFD, with a note naming their number; more
    than :data:`MAX_INVALID_SHARE` of the file and more than :data:`MIN_INVALID_BYTES` (a binary file, or text in
    another encoding) is a :class:`DataError` naming the file and the encoding option."""
    text = raw.decode(encoding, errors="surrogateescape")
    invalid = len(INVALID.findall(text))
    if not invalid:
        return text
    share = invalid / len(raw)
    if share > MAX_INVALID_SHARE and invalid > MIN_INVALID_BYTES:
        raise DataError(f"{where}: {invalid:,} of its {len(raw):,} bytes ({share:.1%}) are not valid {encoding}: a "
                        "binary file, or text in another encoding; set data.task.encoding (e.g. latin-1, cp1252) or "
                        "leave the file out (data.task.glob)")
    print(f"note: {where}: {invalid:,} bytes that are not valid {encoding} read as U+FFFD", file=sys.stderr,
          flush=True)
    return INVALID.sub("\ufffd", text)


def require(module: str) -> ModuleType:
    """Import an optional dependency of ``data=tokenized_text``; a missing one is an error naming the install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise EnvironmentSetupError(f"data=tokenized_text needs the Python package {module!r}, which is not installed "
                                    f"({e}); install the text extra: {INSTALL_HINT}") from None


@dataclass(frozen=True)
class Unit:
    """One file (``path``) or the hub data set (``path`` None); ``name``: the relative path (split hash) or hub name."""

    path: Path | None
    format: str  # text | jsonl | parquet | hub
    name: str

    def fingerprint(self) -> list:
        """What identifies the unit's content: path, size and modification time (a hub data set: its name)."""
        if self.path is None:
            return ["hub", self.name]
        stat = self.path.stat()
        return [str(self.path.resolve()), self.format, stat.st_size, stat.st_mtime_ns]

    def describe(self) -> str:
        return f"the hub data set {self.name!r}" if self.path is None else str(self.path)


def file_format(path: Path, format: str) -> str:
    return SUFFIX_FORMATS.get(path.suffix.lower(), "text") if format == "auto" else format


def list_units(path: str | None, glob: str, format: str, hf_dataset: str | None = None,
               key: str = "data.task.path") -> tuple[str, list[Unit]]:
    """(a description of the corpus, its units): the hub data set, or the files of ``path`` (default: the Python
    standard library) matching ``glob``, sorted."""
    if format not in FORMATS:
        raise ConfigError(f"data.task.format={format!r} is not a format; use one of {', '.join(FORMATS)}")
    if hf_dataset:
        if path:
            raise ConfigError(f"data.task.hf_dataset={hf_dataset!r} and {key}={path} both name a corpus; set one of "
                              "them to null")
        return f"hub:{hf_dataset}", [Unit(None, "hub", hf_dataset)]
    root = Path(path).expanduser() if path else default_corpus()
    files = _list_files(root, glob, key)
    description = f"{root} (files matching {glob!r})" if root.is_dir() else str(root)
    return description, [Unit(f, file_format(f, format), str(f.relative_to(root)) if root.is_dir() else f.name)
                         for f in files]


def split_units(units: list[Unit], val_every: int) -> dict[str, list[tuple[Unit, str]]]:
    """``{"train": [(unit, part)], "val": [...]}``; part ``all``, or ``head`` / ``tail`` of a single unit."""
    if len(units) == 1:
        return {"train": [(units[0], "head")], "val": [(units[0], "tail")]}
    is_val = [zlib.crc32(u.name.encode()) % val_every == 0 for u in units]
    if not any(is_val):
        is_val[-1] = True
    return {"train": [(u, "all") for u, v in zip(units, is_val, strict=True) if not v],
            "val": [(u, "all") for u, v in zip(units, is_val, strict=True) if v]}


def cut_tail(docs: list[str], fraction: float) -> tuple[list[str], list[str]]:
    """(head, tail) of ``docs`` with the last ``fraction`` of their UTF-8 bytes in the tail, cut at a character
    boundary (a single text file: the same cut as :class:`ebt.tasks.text.Text`)."""
    sizes = [len(d.encode("utf-8", "surrogatepass")) for d in docs]
    cut, start = int(sum(sizes) * (1 - fraction)), 0
    for i, (doc, size) in enumerate(zip(docs, sizes, strict=True)):
        if start + size > cut:
            raw, at = doc.encode("utf-8", "surrogatepass"), cut - start
            while at < size and raw[at] & 0xC0 == 0x80:  # a continuation byte: move to the next character
                at += 1
            head = [*docs[:i], raw[:at].decode("utf-8", "surrogatepass")]
            tail = [raw[at:].decode("utf-8", "surrogatepass"), *docs[i + 1 :]]
            return [d for d in head if d], [d for d in tail if d]
        start += size
    return docs, []


def chunks(doc: str, limit: int = CHUNK_CHARS) -> Iterator[str]:
    """``doc`` in pieces of about ``limit`` characters, cut after a newline between two non-space characters, where a
    byte-level BPE pre-tokenizer splits anyway (so its ids do not change); a document without such a line stays
    whole."""
    start = 0
    while len(doc) - start > limit:
        found = LINE_CUT.search(doc, start + limit)
        if found is None:
            break
        yield doc[start : found.end()]
        start = found.end()
    yield doc[start:]


class DocumentReader:
    """Reads the documents of units; ``scratch`` holds ``datasets``' temporary cache for local jsonl / parquet."""

    def __init__(self, text_field: str, val_fraction: float, scratch: Path, progress: bool = False,
                 encoding: str = "utf-8") -> None:
        self.text_field, self.val_fraction, self.scratch, self.progress = text_field, val_fraction, scratch, progress
        self.encoding = check_encoding(encoding)
        self._cut: tuple[Unit, tuple[list[str], list[str]]] | None = None  # the last single unit's head and tail

    def documents(self, pieces: Iterable[tuple[Unit, str]]) -> Iterator[str]:
        """The non-empty documents of ``pieces`` (see :func:`split_units`), in order."""
        for unit, part in pieces:
            if part == "all":
                yield from self.read(unit)
                continue
            if self._cut is None or self._cut[0] != unit:
                self._cut = (unit, cut_tail(list(self.read(unit)), self.val_fraction))
            yield from self._cut[1][0 if part == "head" else 1]

    def read(self, unit: Unit) -> Iterator[str]:
        if unit.format == "text":
            text = decode_text(unit.path.read_bytes(), self.encoding, str(unit.path))
            if text:
                yield text
            return
        yield from self._rows(unit)

    def _rows(self, unit: Unit) -> Iterator[str]:
        datasets = require("datasets")
        if not self.progress:
            datasets.disable_progress_bars()
            datasets.logging.set_verbosity_error()
        field, where = self.text_field, unit.describe()
        self.scratch.mkdir(parents=True, exist_ok=True)
        local = unit.path is not None
        with tempfile.TemporaryDirectory(dir=self.scratch, prefix="datasets-") if local else nullcontext() as cache:
            try:
                if local:
                    data = datasets.load_dataset("json" if unit.format == "jsonl" else unit.format,
                                                 data_files=[str(unit.path)], split="train", cache_dir=cache)
                else:
                    data = datasets.load_dataset(unit.name, split="train")
            except Exception as e:  # noqa: BLE001 - any reader failure is a bad file (or name) the user can fix
                detail = str(e).strip().splitlines()[0] if str(e).strip() else "no detail"
                fix = ("check that it is valid " + unit.format + " or set data.task.format") if local else \
                    "check the name and the network (a hub data set is downloaded)"
                raise DataError(f"could not read {where} with datasets.load_dataset ({type(e).__name__}: {detail}); "
                                f"{fix}") from None
            if field not in data.column_names:
                raise DataError(f"{where} has no column data.task.text_field={field!r} (its columns: "
                                f"{', '.join(data.column_names)}); set data.task.text_field to the text column")
            for batch in data.select_columns([field]).iter(batch_size=ROWS_PER_READ):
                for text in batch[field]:
                    if text is not None and not isinstance(text, str):
                        raise DataError(f"{where}: column {field!r} holds {type(text).__name__} values, not text; "
                                        "set data.task.text_field to a text column")
                    if text:
                        yield text
