"""Associative recall: well-formed sequences, a consistent key -> value map, only the answer scored, OOD longer."""

import pytest
import torch

from ebt.errors import ConfigError
from ebt.tasks.assoc_recall import AssocRecall
from ebt.tasks.base import IGNORE_INDEX


@pytest.mark.parametrize("seq_len", [9, 10])
def test_batches_are_well_formed_and_the_answer_is_the_stored_value(seq_len):
    task = AssocRecall(vocab=10, seq_len=seq_len, seed=3)
    batch = task.make_batch("train", 0, 32)
    x, y = batch["input_ids"], batch["targets"]
    assert x.shape == y.shape == (32, seq_len)
    assert (y[:, :-1] == IGNORE_INDEX).all() and (y[:, -1] >= task.n_keys).all() and (y[:, -1] < 10).all()
    lead = seq_len - 1 - 2 * ((seq_len - 1) // 2)
    assert (x[:, :lead] == task.pad).all()
    for row, answer in zip(x, y[:, -1], strict=True):
        keys, values = row[lead:-1:2], row[lead + 1 : -1 : 2]
        assert (keys < task.n_keys).all() and (values >= task.n_keys).all()
        query = row[-1]
        assert (keys == query).any()
        assert set(values[keys == query].tolist()) == {int(answer)}  # every occurrence shows the same value
        for k in keys.unique():  # the map is consistent within the sequence
            assert len(set(values[keys == k].tolist())) == 1


def test_deterministic_and_ood_is_longer():
    task = AssocRecall(vocab=20, seq_len=16)
    a, b = task.make_batch("val", 2, 4), task.make_batch("val", 2, 4)
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert task.make_batch("ood", 0, 4)["input_ids"].shape == (4, 32)


def test_metric_scores_only_the_answer():
    task = AssocRecall(vocab=10, seq_len=9)
    batch = task.make_batch("val", 0, 8)
    logits = torch.zeros(8, 9, task.vocab_size)
    logits[:, :-1, 0] = 5.0  # garbage everywhere except the answer position
    logits[torch.arange(8), -1, batch["targets"][:, -1]] = 5.0
    assert task.metrics(logits, batch)["acc"] == 1.0
    logits[0, -1] = 0.0
    logits[0, -1, task.pad] = 9.0
    assert task.metrics(logits, batch)["acc"] == pytest.approx(7 / 8)


def test_bad_configuration_is_reported():
    with pytest.raises(ConfigError, match="vocab"):
        AssocRecall(vocab=3)
    with pytest.raises(ConfigError, match="ood_seq_len"):
        AssocRecall(seq_len=32, ood_seq_len=16)
