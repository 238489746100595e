"""scripts/generate.py: sampling from a byte-level LM, predictor and EBT, from a checkpoint or its export."""

import inspect
import io

import pytest
import torch
from omegaconf import OmegaConf

from ebt.analysis.tools.generate import Sampling, encode_prompt, filter_logits, generate, sample_token
from ebt.errors import ConfigError, DataError
from ebt.objectives import ebt
from ebt.tasks.text import Text
from ebt.training.export import export
from ebt.training.train import train
from tests.utils import ROOT, compose_config, run_cli

TINY = ["data=text", "data.task.seq_len=16", "model.dim=16", "model.backbone.n_layers=1", "kernels=torch",
        "data.batch_size=4", "data.eval_batches=1", "data.eval_batch_size=4", "trainer.max_steps=2",
        "trainer.val_check_interval=2", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 2-step predictor and EBT on a small local corpus; the EBT also exported."""
    root = tmp_path_factory.mktemp("generate")
    corpus = root / "corpus.py"
    corpus.write_text(inspect.getsource(ebt)[:6000])
    for name, extra in (("predict", ["model/objective=predict"]), ("ebt", [])):
        train(compose_config([*TINY, f"data.task.path={corpus}", *extra], root / name))
    export(OmegaConf.create({"ckpt": str(root / "ebt"), "out": str(root / "ebt_x")}))
    return root


def options(**values):
    return OmegaConf.merge(OmegaConf.load(ROOT / "configs" / "generate.yaml"), OmegaConf.create(values))


def test_sampling_greedy_top_k_and_seed():
    logits = torch.tensor([0.0, 3.0, 1.0, 2.0])
    generator = torch.Generator().manual_seed(0)
    assert sample_token(logits, Sampling(temperature=0), generator) == (1, 1.0)
    assert all(sample_token(logits, Sampling(temperature=5.0, top_k=1), generator)[0] == 1 for _ in range(20))
    kept = filter_logits(logits, Sampling(temperature=2.0, top_k=2))
    assert torch.equal(torch.isfinite(kept), torch.tensor([False, True, False, True])) and kept[1] == 1.5
    draws = [[sample_token(logits, Sampling(), torch.Generator().manual_seed(7))[0] for _ in range(5)]
             for _ in range(2)]
    assert draws[0] == draws[1]


class Stub:
    vocab_size = 4

    def __init__(self, encode):
        self.encode = encode


def test_prompts_the_tokenizer_cannot_encode_are_refused():
    with pytest.raises(DataError, match=r"outside the model's vocabulary of 4 \(\[7\]\)"):
        encode_prompt(Stub(lambda text: [1, 7]), "ab")
    with pytest.raises(DataError, match="cannot be encoded by this model's tokenizer"):
        encode_prompt(Stub(lambda text: {}["?"]), "?")
    with pytest.raises(ConfigError, match="prompt= is empty"):
        encode_prompt(Stub(list), "")
    text = Text.__new__(Text)  # encode needs no corpus
    assert encode_prompt(text, "é") == [0xC3, 0xA9]
    with pytest.raises(DataError, match="cannot be encoded"):
        encode_prompt(text, "\udcff")  # an undecodable byte on the command line (surrogateescape)


@pytest.mark.parametrize("name", ["predict", "ebt"])
def test_generation_is_reproducible_and_the_same_from_the_export(runs, name, tmp_path):
    stream = io.StringIO()
    prompt = "def think(self, batch):"  # longer than the 16-token window: it slides
    first = generate(options(ckpt=str(runs / name), prompt=prompt, max_new_tokens=6, top_k=20, verbose=True,
                             out=str(tmp_path / "sample.txt")), stream)
    assert len(first["tokens"]) == 6 and first["text"].startswith(prompt)
    assert (tmp_path / "sample.txt").read_text() == first["text"]
    lines = stream.getvalue().splitlines()
    assert len(lines) == 7 and "tokens/s" in lines[-1] and first["tokens_per_s"] > 0
    assert ("energy=" in lines[0] and "steps=2" in lines[0]) == (name == "ebt")
    again = generate(options(ckpt=str(runs / (f"{name}_x" if name == "ebt" else name)), prompt=prompt,
                             max_new_tokens=6, top_k=20), io.StringIO())
    assert [t.id for t in again["tokens"]] == [t.id for t in first["tokens"]]


def test_ebt_thinking_options_and_bad_options(runs, tmp_path):
    result = generate(options(ckpt=str(runs / "ebt"), prompt="import", max_new_tokens=3, steps=6, best_of=3,
                              energy_tol=1e9, temperature=0), io.StringIO())
    assert all(t.steps_used == 1 and t.probability == 1.0 for t in result["tokens"])  # a huge tolerance stops at 1
    with pytest.raises(ConfigError, match="are thinking options"):
        generate(options(ckpt=str(runs / "predict"), prompt="x", steps=4), io.StringIO())
    with pytest.raises(ConfigError, match=r"max_new_tokens=0 must be an integer >= 1"):
        generate(options(ckpt=str(runs / "ebt"), prompt="x", max_new_tokens=0))
    with pytest.raises(ConfigError, match="temperature=-1 must be a number >= 0"):
        generate(options(ckpt=str(runs / "ebt"), prompt="x", temperature=-1))
    (tmp_path / "prompt.txt").write_bytes(b"def \xff")
    with pytest.raises(DataError, match="is not UTF-8 text"):
        generate(options(ckpt=str(runs / "ebt"), prompt_file=str(tmp_path / "prompt.txt")))


def test_a_prompt_with_an_undecodable_byte_is_one_error_line(runs, tmp_path):
    result = run_cli("generate.py", f"ckpt={runs / 'predict'}", "prompt=\"a\udcff\"", cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "cannot be encoded" in errors[0], result.stderr[-2000:]
    assert not result.stdout.strip()
