"""data=tokenized_text: prepared files and their cache (reuse, corruption, stale corpus), tokenizers given or trained,
jsonl / parquet sources, deterministic batches, bits per byte, clear errors, and the prepare / train entry points."""

import json
import math
import sys
import zlib

import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from ebt.analysis.thinking.thinking_eval import evaluate_split
from ebt.errors import DataError, EnvironmentSetupError
from ebt.objectives.base import Objective
from ebt.tasks import text_prepare
from ebt.tasks.base import IGNORE_INDEX
from ebt.tasks.text_sources import cut_tail
from ebt.tasks.tokenized_text import TokenizedText
from ebt.training.data import TaskDataModule
from ebt.training.lit_module import LitModel
from ebt.training.restore import Run
from tests.utils import run_cli

tokenizers = pytest.importorskip("tokenizers")
WORDS = ["the", "energy", "model", "thinks", "héllo", "wörld", "日本語", "def", "return", "x", "+", "1", "(", ")"]
VOCAB = 300


def _text(seed: int, words: int = 400) -> str:
    rng = np.random.default_rng(seed)
    lines = [" ".join(rng.choice(WORDS, size=rng.integers(3, 12))) for _ in range(words // 6)]
    return "\n".join(lines) + "\n"


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EBT_DATA_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(6):
        (folder / f"doc{i}.txt").write_text(_text(i), encoding="utf-8")
    return folder


def task(path, **options) -> TokenizedText:
    return TokenizedText(**{"path": str(path), "glob": "*.txt", "vocab_size": VOCAB, "seq_len": 16, "val_every": 3,
                            **options})


def stream(t: TokenizedText, split: str) -> np.ndarray:
    return np.fromfile(t.prepared.files(split)[0], dtype=t.prepared.dtype).astype(np.int64)


def test_prepare_builds_then_reuses(corpus, cache, capsys, monkeypatch):
    first = task(corpus)
    assert "preparing" in capsys.readouterr().err
    assert first.folder.parent == cache / "tokenized" and first.vocab_size == VOCAB
    meta = json.loads((first.folder / "meta.json").read_text())
    assert meta["dtype"] == "uint16" and meta["separator"] == 0
    # the val split is data=text's (crc32 of the relative path), and each split decodes back to its files
    files = sorted(corpus.glob("*.txt"))
    val = [f for f in files if zlib.crc32(f.name.encode()) % 3 == 0] or files[-1:]
    sep = "<|endoftext|>"
    assert first.decode(stream(first, "val").tolist()) == "".join(f.read_text() + sep for f in val)
    assert meta["splits"]["train"]["bytes"] == sum(f.stat().st_size for f in files if f not in val)
    mtimes = {p.name: p.stat().st_mtime_ns for p in first.folder.iterdir()}
    monkeypatch.setattr(text_prepare, "build", lambda *a, **k: pytest.fail("a valid folder was rebuilt"))
    second = task(corpus)
    assert capsys.readouterr().err == ""
    assert second.folder == first.folder
    assert {p.name: p.stat().st_mtime_ns for p in second.folder.iterdir()} == mtimes


def test_corrupt_missing_or_stale_files_are_rebuilt(corpus, capsys):
    first = task(corpus)
    ids_path = first.prepared.files("train")[0]
    good = ids_path.read_bytes()
    ids_path.write_bytes(bytes([good[0] ^ 1]) + good[1:])  # same size, other content
    capsys.readouterr()
    task(corpus)
    err = capsys.readouterr().err
    assert "warning:" in err and "train_ids.bin does not match its checksum" in err and len(err.splitlines()) == 1
    assert ids_path.read_bytes() == good
    (first.folder / "meta.json").write_text("{not json")
    task(corpus)
    assert "unreadable" in capsys.readouterr().err
    (corpus / "doc1.txt").write_text("an edited file, longer than before\n" * 20)
    edited = task(corpus)
    assert edited.folder != first.folder and "preparing" in capsys.readouterr().err


def test_ood_corpus_uses_the_train_tokenizer(corpus, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "prose.txt").write_text("plain prose of another kind, with ünïcode. " * 30)
    plain, with_ood = task(corpus), task(corpus, ood_path=str(other))
    assert with_ood.eval_splits == ("val", "ood") and plain.eval_splits == ("val",)
    # the BPE is trained on the train split only: adding an OOD corpus leaves it unchanged
    assert with_ood.prepared.meta["tokenizer_sha256"] == plain.prepared.meta["tokenizer_sha256"]
    assert with_ood.decode(stream(with_ood, "ood").tolist()) == (other / "prose.txt").read_text() + "<|endoftext|>"
    assert with_ood.make_batch("ood", 0, 2)["input_ids"].shape == (2, 16)


def test_given_tokenizer_is_used(corpus, tmp_path):
    word = tokenizers.Tokenizer(tokenizers.models.WordLevel(unk_token="[UNK]"))
    word.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    word.train_from_iterator([p.read_text() for p in corpus.glob("*.txt")],
                             tokenizers.trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    word.save(str(tmp_path / "tokenizer.json"))
    t = task(corpus, tokenizer=str(tmp_path / "tokenizer.json"), vocab_size=4096)
    assert t.vocab_size == word.get_vocab_size() < 64 and t.separator is None
    assert t.encode("the energy model") == word.encode("the energy model").ids
    files = sorted(corpus.glob("*.txt"))
    val = [f for f in files if zlib.crc32(f.name.encode()) % 3 == 0] or files[-1:]
    assert stream(t, "val").tolist() == [i for f in val for i in word.encode(f.read_text()).ids]
    # bytes per token from offsets: whitespace the tokenizer drops counts with the next token; sums are exact
    assert t.prepared.meta["splits"]["val"]["bytes"] == sum(f.stat().st_size for f in val)
    assert (t.make_batch("train", 0, 4)["targets"] != IGNORE_INDEX).all()


def test_jsonl_and_parquet_give_the_ids_of_the_text(corpus, tmp_path):
    pytest.importorskip("datasets")
    pq = pytest.importorskip("pyarrow.parquet")
    text = (corpus / "doc0.txt").read_text() + (corpus / "doc1.txt").read_text()
    (tmp_path / "one.txt").write_text(text, encoding="utf-8")
    (tmp_path / "one.jsonl").write_text(json.dumps({"body": text, "id": 1}) + "\n", encoding="utf-8")
    pq.write_table(__import__("pyarrow").table({"body": [text]}), tmp_path / "one.parquet")
    plain = task(tmp_path / "one.txt")
    for name in ("one.jsonl", "one.parquet"):
        other = task(tmp_path / name, text_field="body")
        for split in ("train", "val"):
            assert np.array_equal(stream(other, split), stream(plain, split)), (name, split)
    with pytest.raises(DataError, match="no column data.task.text_field='text'.*body"):
        task(tmp_path / "one.jsonl")
    head, tail = cut_tail([text], 0.05)
    assert head[0] + tail[0] == text and len(tail[0].encode()) <= len(text.encode()) - int(len(text.encode()) * 0.95)


def test_batches_are_deterministic(corpus):
    a, b, c = task(corpus), task(corpus), task(corpus, seed=1)
    for split in ("train", "val"):
        torch.testing.assert_close(a.make_batch(split, 3, 4), b.make_batch(split, 3, 4))
    assert not torch.equal(a.make_batch("train", 0, 4)["input_ids"], a.make_batch("train", 1, 4)["input_ids"])
    assert not torch.equal(a.make_batch("train", 0, 4)["input_ids"], c.make_batch("train", 0, 4)["input_ids"])
    batch = a.make_batch("val", 0, 4)
    assert batch["input_ids"].shape == batch["targets"].shape == batch["target_bytes"].shape == (4, 16)


def test_bits_per_byte_by_hand(tmp_path):
    (tmp_path / "ascii.txt").write_text("the cat sat on the mat; " * 60)
    t = task(tmp_path / "ascii.txt", seq_len=12)
    batch = t.make_batch("train", 0, 3)
    targets, nbytes = batch["targets"], batch["target_bytes"]
    scored = targets != IGNORE_INDEX
    for i, n in zip(targets[scored].tolist(), nbytes[scored].tolist(), strict=True):
        assert n == len(t.decode([i]).encode())  # ASCII: a token's bytes are its text's
    assert (nbytes[~scored] == 0).all()
    logits = torch.zeros(3, 12, t.vocab_size)
    logits[0, 0, 5] = 2.0  # one non-uniform position
    ce = -torch.log_softmax(logits, -1).gather(-1, targets.clamp_min(0)[..., None])[..., 0]
    expected = ce[scored].sum().item() / math.log(2) / nbytes[scored].sum().item()
    metrics = t.metrics(logits, batch)
    assert metrics["bpb"].item() == pytest.approx(expected, rel=1e-5)
    assert metrics["loss_per_token"].item() == pytest.approx(ce[scored].mean().item(), rel=1e-5)


class FixedLogits(Objective):
    """Logits N(0, 3^2) drawn from the batch's own token ids: the same for a batch wherever it is evaluated."""

    def __init__(self, task: TokenizedText) -> None:
        super().__init__(task=task)
        self.scale = nn.Parameter(torch.ones(()))

    def predict(self, batch):
        generator = torch.Generator().manual_seed(int(batch["input_ids"].sum()))
        return 3 * self.scale * torch.randn(*batch["input_ids"].shape, self.task.vocab_size, generator=generator)


def test_bits_per_byte_of_a_split_is_total_bits_over_total_bytes(corpus):
    """Ratio metrics are totals over the split: eval.py's evaluate_split and Lightning validation report total bits /
    total bytes (and total right / scored tokens), not the mean of the batches' ratios."""
    t, batches, size = task(corpus), 6, 3
    objective = FixedLogits(t).eval()
    bits = nbytes = right = tokens = 0.0
    batch_bpb = []
    with torch.no_grad():
        for i in range(batches):
            batch = t.make_batch("val", i, size)
            logits, targets = objective.predict(batch), batch["targets"]
            scored = targets != IGNORE_INDEX
            ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
            b, n = float(ce[scored.flatten()].sum()) / math.log(2), int(batch["target_bytes"][scored].sum())
            bits, nbytes = bits + b, nbytes + n
            right += int(((logits.argmax(-1) == targets) & scored).sum())
            tokens += int(scored.sum())
            batch_bpb.append(b / n)
    exact = bits / nbytes
    assert abs(sum(batch_bpb) / batches - exact) > 1e-3 * exact  # the batches' bytes per token differ
    run = Run(corpus, OmegaConf.create({"seed": 0}), t, objective)
    found = evaluate_split(run, "val", batches, size)
    assert found["bpb"] == pytest.approx(exact, rel=1e-6) and found["tok_acc"] == pytest.approx(right / tokens)
    data = TaskDataModule(t, batch_size=size, eval_batches=batches)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        inference_mode=False)
    (logged,) = trainer.validate(LitModel(objective), datamodule=data, verbose=False)
    assert logged["val/bpb"] == pytest.approx(exact, rel=1e-5)
    assert logged["val/tok_acc"] == pytest.approx(right / tokens, rel=1e-5)


def test_encode_decode_round_trip(corpus):
    t = task(corpus)
    for text in ["héllo wörld 日本語\n  def f(x): return x + 1", "", "emoji 🙂 and tabs\t\t"]:
        assert t.decode(t.encode(text)) == text
    assert all(isinstance(i, int) and 0 <= i < t.vocab_size for i in t.encode("the model"))


def test_bad_input_is_a_clear_error(corpus, tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"data.task.tokenizer=.*missing.json does not exist; point it at"):
        task(corpus, tokenizer=str(tmp_path / "missing.json"))
    with pytest.raises(DataError, match=r"holds no files matching data.task.glob='\*.md'"):
        task(corpus, glob="*.md")
    with pytest.raises(DataError, match="fewer than data.task.seq_len"):
        task(corpus, seq_len=100000)
    (tmp_path / "rows.jsonl").write_text('{"text": "a"}\n')
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(EnvironmentSetupError, match=r"'datasets'.*pip install -e \"\.\[text\]\""):
        task(tmp_path / "rows.jsonl")
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(EnvironmentSetupError, match=r"'tokenizers'.*pip install -e \"\.\[text\]\""):
        task(corpus)


@pytest.mark.slow  # subprocesses end to end (~20 s); .ci/run runs the slow tests too
def test_prepare_script_and_a_training_run(corpus, tmp_path, cache):
    env = {"EBT_DATA_CACHE": str(cache)}
    options = [f"data.task.path={corpus}", "data.task.glob=*.txt", f"data.task.vocab_size={VOCAB}"]
    result = run_cli("prepare_text.py", *options, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "prepared" in result.stdout and "bytes/token" in result.stdout and "tokenized" in result.stdout
    result = run_cli("prepare_text.py", f"data.task.path={tmp_path / 'missing'}", cwd=tmp_path, env=env)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "does not exist" in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    result = run_cli("train.py", "data=tokenized_text", "debug=fdr", *options, "data.task.seq_len=16",
                     "model.dim=32", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "preparing" not in result.stderr  # the script's files are reused
    assert json.loads((tmp_path / "run" / "summary.json").read_text())
