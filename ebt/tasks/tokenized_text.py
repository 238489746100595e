"""Next-token language modelling over local text with a Hugging Face ``tokenizers`` tokenizer (``data=tokenized_text``).

The corpus is ``data.task.path`` (a file or folder read with ``data.task.glob``, as :class:`ebt.tasks.text.Text`;
default: the Python standard library's ``.py`` sources, so it runs offline out of the box) in ``data.task.format``
``auto | text | jsonl | parquet`` (jsonl / parquet rows' column ``text_field``), or the hub data set
``data.task.hf_dataset`` (needs a network). The tokenizer is ``data.task.tokenizer`` (a ``tokenizer.json``) or a
byte-level BPE of ``data.task.vocab_size`` tokens trained offline on the train split; ``vocab_size`` of the task
(and so of the model) is the tokenizer's. Needs the optional extra: ``pip install -e ".[text]"``.

The corpus is tokenized once into memory-mapped files (:mod:`ebt.tasks.text_prepare`; first use prepares it with one
log line, ``scripts/prepare_text.py`` does the same with progress bars). Splits: train / val as ``data=text`` (by
file, or the tail of a single file; :mod:`ebt.tasks.text_sources`), and ``data.task.ood_path`` as the split ``ood``
(same tokenizer); there is no ``test`` split. A batch is ``batch_size`` random windows of ``seq_len + 1`` tokens of a
split's token stream (documents follow each other, separated by the tokenizer's end-of-text token when it has one; a
target that is the separator is not scored), drawn from ``self.rng(split, index)``: deterministic per (seed, split,
index).

Metrics: ``bpb`` (headline): the cross-entropy in bits summed over the scored targets, divided by the UTF-8 bytes of
the text those targets stand for (``target_bytes`` in the batch), comparable across tokenizers and with ``data=text``;
``loss_per_token`` (nats) and ``tok_acc``.
"""

import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from ebt.errors import ConfigError, DataError
from ebt.tasks.base import IGNORE_INDEX, Task
from ebt.tasks.metrics import Sums
from ebt.tasks.text_prepare import CorpusOptions, Prepared, prepare


class TokenStream:
    """Random windows of ``window`` tokens (ids and bytes per token) from a split's memory-mapped files."""

    def __init__(self, prepared: Prepared, split: str, window: int, what: str) -> None:
        self.tokens = int(prepared.meta["splits"][split]["tokens"])
        if self.tokens < window:
            raise DataError(f"{what}: {self.tokens} tokens, fewer than data.task.seq_len + 1 = {window}; lower "
                            "data.task.seq_len or add more text")
        self.paths, self.dtype, self.window = prepared.files(split), prepared.dtype, window
        self._maps: tuple[np.memmap, np.memmap] | None = None

    def sample(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, bytes per token), both (batch_size, window) int64."""
        if self._maps is None:
            self._maps = (np.memmap(self.paths[0], dtype=self.dtype, mode="r"),
                          np.memmap(self.paths[1], dtype=np.uint16, mode="r"))
        starts = rng.integers(0, self.tokens - self.window + 1, size=batch_size)
        index = starts[:, None] + np.arange(self.window)
        return self._maps[0][index].astype(np.int64), self._maps[1][index].astype(np.int64)


class TokenizedText(Task):
    kind = "tokens"
    metric = "bpb"
    metric_mode = "min"
    causal = True

    def __init__(
        self,
        *,
        path: str | None = None,
        glob: str = "*.py",
        format: Literal["auto", "text", "jsonl", "parquet"] = "auto",
        text_field: str = "text",
        encoding: str = "utf-8",
        hf_dataset: str | None = None,
        tokenizer: str | None = None,
        vocab_size: int = 4096,
        seq_len: int = 128,
        ood_path: str | None = None,
        val_every: int = 20,
        val_fraction: float = 0.05,
        cache_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(seed=seed)
        if seq_len < 1:
            raise ConfigError(f"data.task.seq_len must be >= 1, got {seq_len}")
        options = CorpusOptions(path=path, glob=glob, format=format, text_field=text_field, hf_dataset=hf_dataset,
                                tokenizer=tokenizer, vocab_size=vocab_size, ood_path=ood_path, val_every=val_every,
                                val_fraction=val_fraction, encoding=encoding)
        self.prepared = prepare(options, cache_dir)
        self.tokenizer = self.prepared.tokenizer
        self.vocab_size = self.prepared.vocab_size
        self.separator = self.prepared.separator
        self.seq_len = self.max_len = seq_len
        corpus = self.prepared.meta["corpus"]
        what = {split: f"data.task.ood_path={ood_path}" if split == "ood" else f"the corpus {corpus} ({split})"
                for split in self.prepared.splits}
        self.streams = {split: TokenStream(self.prepared, split, seq_len + 1, what[split]) for split in what}

    @property
    def eval_splits(self) -> tuple[str, ...]:
        return tuple(s for s in self.streams if s != "train")

    @property
    def folder(self) -> Path:
        """Where the prepared files are."""
        return self.prepared.folder

    def make_batch(self, split: str, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        if split not in self.streams:
            raise ValueError(f"unknown split {split!r} of the tokenized text task; expected one of "
                             f"{list(self.streams)}")
        ids, nbytes = self.streams[split].sample(self.rng(split, index), batch_size)
        ids = torch.from_numpy(ids)
        targets = ids[:, 1:].clone()
        if self.separator is not None:
            targets[targets == self.separator] = IGNORE_INDEX
        return {"input_ids": ids[:, :-1], "targets": targets, "target_bytes": torch.from_numpy(nbytes[:, 1:])}

    def metric_sums(self, prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> Sums:
        """``bpb``: bits / UTF-8 bytes of the scored target tokens; ``loss_per_token``: nats / scored tokens;
        ``tok_acc``: right scored tokens / scored tokens."""
        targets = batch["targets"]
        scored = targets != IGNORE_INDEX
        ce = F.cross_entropy(prediction.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX,
                             reduction="sum")
        tokens = scored.sum().to(ce.device)
        nbytes = batch["target_bytes"].to(ce.device)[scored.to(ce.device)].sum()
        correct = (prediction.argmax(-1) == targets) & scored
        return {"bpb": (ce / math.log(2), nbytes), "loss_per_token": (ce, tokens), "tok_acc": (correct.sum(), tokens)}

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens added; generation prompts)."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        """Text of token ids (special tokens shown; an incomplete UTF-8 sequence shows as U+FFFD)."""
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def describe(self) -> str:
        train = self.prepared.meta["splits"]["train"]
        return (f"tokenized LM on {self.prepared.meta['corpus']} (vocab {self.vocab_size}, "
                f"{train['bytes'] / max(train['tokens'], 1):.2f} bytes/token, seq_len {self.seq_len}; "
                f"files in {self.folder})")
