"""Associative recall (Ba et al., 2016; the synthetic task of H3 and Hyena, Poli et al. 2023, Sec. 4.1).

A sample is a list of key-value pairs followed by a query key; the answer is the value stored under that key::

    k_1 v_1 k_2 v_2 ... k_n v_n q  ->  v(q)

The ``vocab`` symbols are split into keys (the first ``vocab // 2``) and values (the rest). Each sequence draws a
fresh random key -> value map; the ``n`` pairs draw keys with replacement and always show that key's value, so a
key may repeat but never contradicts itself. The query is one of the keys shown. Sequences have
``seq_len`` input tokens (``n = (seq_len - 1) // 2`` pairs, one leading PAD when ``seq_len`` is even) and a
next-token shift, so the prediction at the last input position (the query) is the only scored token. ``acc`` is
exact match of that answer. The OOD split uses longer sequences (``ood_seq_len``, default ``2 * seq_len``) with
the same vocabulary: more pairs to search, positions never seen in training.
"""

import numpy as np
import torch

from ebt.errors import ConfigError
from ebt.tasks.base import IGNORE_INDEX, Task, token_accuracy_sums
from ebt.tasks.metrics import Sums


class AssocRecall(Task):
    kind = "tokens"
    metric = "acc"
    metric_mode = "max"
    causal = True

    def __init__(self, *, vocab: int = 20, seq_len: int = 64, ood_seq_len: int | None = None, seed: int = 0) -> None:
        super().__init__(seed=seed)
        if vocab < 4:
            raise ConfigError(f"data.task.vocab must be >= 4 (at least 2 keys and 2 values), got {vocab}")
        if seq_len < 3:
            raise ConfigError(f"data.task.seq_len must be >= 3 (one pair and a query), got {seq_len}")
        self.vocab = vocab
        self.n_keys = vocab // 2
        self.pad = vocab
        self.vocab_size = vocab + 1
        self.seq_len_train = seq_len
        self.ood_seq_len = ood_seq_len if ood_seq_len is not None else 2 * seq_len
        if self.ood_seq_len <= seq_len:
            raise ConfigError(f"data.task.ood_seq_len ({self.ood_seq_len}) must exceed data.task.seq_len ({seq_len})")
        self.max_len = self.ood_seq_len

    def seq_len(self, split: str) -> int:
        """Input length of ``split`` (the query is the last input token)."""
        return self.ood_seq_len if split == "ood" else self.seq_len_train

    def make_batch(self, split: str, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        rng = self.rng(split, index)
        length = self.seq_len(split)
        n_pairs = (length - 1) // 2
        n_values = self.vocab - self.n_keys
        mapping = rng.integers(0, n_values, size=(batch_size, self.n_keys)) + self.n_keys  # (B, K) values
        keys = rng.integers(0, self.n_keys, size=(batch_size, n_pairs))  # (B, n)
        values = np.take_along_axis(mapping, keys, axis=1)  # (B, n)
        query = keys[np.arange(batch_size), rng.integers(0, n_pairs, size=batch_size)]  # (B,) a key shown
        answer = mapping[np.arange(batch_size), query]
        pairs = np.stack([keys, values], axis=-1).reshape(batch_size, 2 * n_pairs)
        lead = np.full((batch_size, length - 1 - 2 * n_pairs), self.pad)
        inputs = np.concatenate([lead, pairs, query[:, None]], axis=1)  # (B, length)
        targets = np.full((batch_size, length), IGNORE_INDEX)
        targets[:, -1] = answer
        return {"input_ids": torch.from_numpy(inputs.astype(np.int64)),
                "targets": torch.from_numpy(targets.astype(np.int64))}

    def metric_sums(self, prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> Sums:
        return {"acc": token_accuracy_sums(prediction, batch["targets"])["acc"]}

    def describe(self) -> str:
        return (f"associative recall: vocab {self.vocab}, {self.seq_len_train} tokens "
                f"(OOD: {self.ood_seq_len} tokens)")
