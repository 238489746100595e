"""Generation with a key/value cache: the same tokens as re-running the window, predictor and EBT, attention and MoH,
past the window length; thinking, early stops and the fallback of mixers that cannot cache."""

import io
import math
import os

import pytest
import torch

from ebt.analysis.doc_tables import read_rows
from ebt.analysis.tools.decoding import CachedDecoder, Thinking, WindowedDecoder, make_decoder
from ebt.analysis.tools.generate import Sampling, generate, generate_ids
from ebt.benchmarks import generation as bench
from ebt.errors import ConfigError
from ebt.objectives import compiled as compiled_module
from ebt.options import read_options
from ebt.tasks.random_tokens import RandomTokens
from ebt.training.build import build_objective
from ebt.training.config import compose_train
from tests.test_generate import options, runs  # noqa: F401 (the module's trained runs)

WINDOW, VOCAB = 12, 29
MIXERS = {"attention": ["model/mixer=attention"],
          "moh": ["model/mixer=moh", "model.mixer.n_heads=4", "model.mixer.shared_heads=1", "model.mixer.top_k=2"],
          "looped": ["model/backbone=looped", "model.backbone.loops=2"]}


def model(objective: str, mixer: str = "attention", *extra: str):
    """A random float64 model (float64: the two paths' roundings cannot tip an argmax) of a ``WINDOW``-token LM."""
    task = RandomTokens(VOCAB, WINDOW)
    task.max_len = WINDOW
    torch.manual_seed(0)
    layers = [] if mixer == "looped" else ["model.backbone.n_layers=2"]
    cfg = compose_train(["model.dim=16", *layers, "kernels=torch", *MIXERS[mixer],
                         f"model/objective={objective}", *extra])
    return build_objective(cfg.model, task).double().eval()


@pytest.mark.parametrize("mixer", list(MIXERS))
def test_a_context_extended_in_pieces_equals_one_pass_and_the_last_candidates_read_it_alone(mixer):
    net = model("ebt", mixer)
    backbone = net.backbone
    x, y = (torch.randn(2, 9, 16, dtype=torch.float64) for _ in range(2))
    whole, caches = backbone.forward_context(x)
    first, past = backbone.forward_context(x[:, :5])
    one, past = backbone.forward_context(x[:, 5:6], past)  # one new row (no mask)
    rest, past = backbone.forward_context(x[:, 6:], past)  # several new rows (a causal mask against the cache)
    torch.testing.assert_close(torch.cat([first, one, rest], dim=1), whole, rtol=0, atol=1e-12)
    candidates = backbone.forward_candidates(y, caches)
    for n in (1, 3):  # the last n candidate rows against the whole context
        torch.testing.assert_close(backbone.forward_candidates(y[:, -n:], past), candidates[:, -n:], rtol=0, atol=1e-12)


def tokens(decoder, prompt, n=20, sampling=None, seed=0):
    torch.manual_seed(seed)
    drawn = generate_ids(decoder, prompt, n, sampling or Sampling(temperature=0), torch.Generator().manual_seed(seed))
    return [t.id for t in drawn], drawn


@pytest.mark.parametrize("mixer", list(MIXERS))
@pytest.mark.parametrize("objective", ["predict", "ebt"])
def test_the_cache_gives_the_tokens_of_the_window_past_its_length(objective, mixer):
    net, thinking = model(objective, mixer), Thinking(best_of=3 if objective == "ebt" else 1)
    greedy = [tokens(decoder(net, WINDOW, thinking), [3, 1, 4])[0] for decoder in (CachedDecoder, WindowedDecoder)]
    assert greedy[0] == greedy[1]
    sampling = Sampling(temperature=1.0)  # a random model's greedy text repeats itself: sampled tokens vary more
    for prompt in ([3, 1, 4], list(range(1, 16))):  # shorter than the window, longer (it slides from the start)
        cached = CachedDecoder(net, WINDOW, thinking)
        fast, fast_tokens = tokens(cached, prompt, sampling=sampling)
        slow, slow_tokens = tokens(WindowedDecoder(net, WINDOW, thinking), prompt, sampling=sampling)
        assert fast == slow, (prompt, fast, slow)
        assert len(set(fast)) > 5  # not a degenerate repetition
        slides = max(0, 19 - max(0, WINDOW - len(prompt)))  # tokens drawn into a full window
        assert len(cached.window) == WINDOW and cached.prefills == 1 + slides
        if objective == "ebt":
            energies = [(a.energy, b.energy) for a, b in zip(fast_tokens, slow_tokens, strict=True)]
            assert all(a == pytest.approx(b, rel=1e-9, abs=1e-9) for a, b in energies)


def test_sampled_tokens_agree_too_and_thinking_options_apply_under_the_cache():
    net = model("ebt")
    thinking = Thinking(steps=4, best_of=2)
    sampling = Sampling(temperature=1.0, top_k=10)
    assert tokens(CachedDecoder(net, WINDOW, thinking), [5, 6], sampling=sampling, seed=3)[0] == \
        tokens(WindowedDecoder(net, WINDOW, thinking), [5, 6], sampling=sampling, seed=3)[0]
    energies = {}
    for steps in (1, 4):  # more steps think further: other final energies (the windowed path's, as tested above)
        _, drawn = tokens(CachedDecoder(net, WINDOW, Thinking(steps=steps, best_of=2)), [5, 6], n=5)
        energies[steps] = [t.energy for t in drawn]
    assert all(a != pytest.approx(b, abs=1e-9) for a, b in zip(energies[1], energies[4], strict=True))
    _, stopped = tokens(CachedDecoder(net, WINDOW, Thinking(steps=6, energy_tol=1e9)), [5, 6], n=5)
    assert all(t.steps_used == 1 for t in stopped)  # a huge tolerance stops every token after one step
    _, still = tokens(CachedDecoder(net, WINDOW, Thinking(steps=6, energy_tol=1e-12)), [5, 6], n=5)
    assert all(t.steps_used == 6 for t in still)
    _, quiet = tokens(CachedDecoder(net, WINDOW, Thinking(steps=2)), [5, 6], n=5)
    _, noisy = tokens(CachedDecoder(net, WINDOW, Thinking(steps=2, langevin_std=0.5)), [5, 6], n=5)
    assert all(a.energy != pytest.approx(b.energy, abs=1e-9) for a, b in zip(quiet, noisy, strict=True))


def test_slide_half_rebuilds_the_cache_every_half_window():
    net = model("predict")
    half = CachedDecoder(net, WINDOW, Thinking(), slide="half")
    exact = CachedDecoder(net, WINDOW, Thinking())
    prompt, n = [1, 2, 3], 30
    first, _ = tokens(half, prompt, n)
    second, _ = tokens(exact, prompt, n)
    filled = WINDOW - len(prompt) + 1  # tokens drawn before the window is full: both paths agree there
    assert first[:filled] == second[:filled]
    after = n - 1 - (WINDOW - len(prompt))  # tokens drawn into a full window
    assert exact.prefills == 1 + after
    assert half.prefills == 1 + math.ceil(after / (WINDOW - WINDOW // 2 + 1))  # keep half, append until full
    # each token of the half slide is the windowed path's token on the context the half slide keeps
    window = list(prompt)
    for token in first:
        logits = net.predict({"input_ids": torch.tensor([window])})[0, -1]
        assert int(logits.argmax()) == token
        window = window + [token] if len(window) < WINDOW else (window + [token])[-(WINDOW // 2):]


def test_mixers_that_cannot_cache_fall_back_with_a_reason():
    for mixer_options in (["model/mixer=pool"], ["model/mixer=hyena"]):
        task = RandomTokens(VOCAB, WINDOW)
        task.max_len = WINDOW
        cfg = compose_train(["model.dim=16", "model.backbone.n_layers=1", "kernels=torch", *mixer_options])
        net = build_objective(cfg.model, task).eval()
        decoder, refusal = make_decoder(net, WINDOW, Thinking(), cache=True)
        assert isinstance(decoder, WindowedDecoder) and "cannot extend a cached context" in refusal
        assert type(net.backbone.blocks[0].mixer).__name__ in refusal
        assert len(tokens(decoder, [1, 2], n=3)[0]) == 3
    decoder, refusal = make_decoder(model("predict"), WINDOW, Thinking(), cache=False)
    assert isinstance(decoder, WindowedDecoder) and refusal is None


@pytest.mark.parametrize("name", ["predict", "ebt"])
def test_the_command_uses_the_cache_and_cache_false_gives_the_same_text(runs, name):  # noqa: F811
    prompt = "def think(self, batch):"  # longer than the runs' 16-token window: it slides
    texts = []
    for cache in (True, False):
        stream = io.StringIO()
        result = generate(options(ckpt=str(runs / name), prompt=prompt, max_new_tokens=8, temperature=0, cache=cache),
                     stream)
        speed = stream.getvalue().splitlines()[-1]
        assert ("key/value cache" in speed) == cache and ("windowed" in speed) != cache
        texts.append(result["text"])
    assert texts[0] == texts[1]
    with pytest.raises(ConfigError, match="cache=3 must be true"):
        generate(options(ckpt=str(runs / name), prompt="x", cache=3))
    with pytest.raises(ConfigError, match="slide=left is not one of token, half"):
        generate(options(ckpt=str(runs / name), prompt="x", slide="left"))


def test_the_benchmark_writes_both_paths_per_model_and_prompt(tmp_path):
    argv = ["dim=16", "layers=1", "vocab=31", "window=8", "prompts=[3,12]", "new_tokens=3", "steps=[1]",
            "best_of=[1,2]", "reps=1", "compile=false", f"out={tmp_path}"]
    bench.main(read_options(argv, bench.DEFAULTS))
    rows = read_rows(tmp_path / "generation.csv")
    assert [(r["model"], r["prompt"], r["path"]) for r in rows[:4]] == [
        ("predict", "3", "cached"), ("predict", "3", "windowed"), ("predict", "12", "cached"),
        ("predict", "12", "windowed")]
    assert len(rows) == 3 * 2 * 2 and all(r["same_tokens"] == "True" for r in rows)
    assert all(float(r["tokens_per_s"]) > 0 and float(r["token_ms"]) > 0 for r in rows)
    assert (tmp_path / "generation.png").stat().st_size > 0


def test_a_compiled_step_compiles_once_for_every_context_length_and_writes_the_same_tokens(monkeypatch):
    """aot_eager (dynamo and aot_autograd, no C++ code generation; ``EBT_TEST_COMPILE_BACKEND=inductor`` tests
    inductor): the compiled one-position step gives the eager tokens, with one graph for all lengths."""
    monkeypatch.setattr(compiled_module, "BACKEND", os.environ.get("EBT_TEST_COMPILE_BACKEND", "aot_eager"))
    monkeypatch.setattr(compiled_module, "_CACHE", {})
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()  # reset() keeps the counters of earlier compilations
    net = model("ebt")
    eager = tokens(CachedDecoder(net, WINDOW, Thinking(best_of=2)), [3, 1, 4], n=12)[0]
    fast = tokens(CachedDecoder(net, WINDOW, Thinking(best_of=2, compile=True)), [3, 1, 4], n=12)[0]
    assert fast == eager
    assert len(compiled_module._CACHE) == 1  # the dynamic step, for context lengths 3 .. 12
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # traced once, not once per length


def test_compile_needs_the_cached_thinking_step(runs):  # noqa: F811
    with pytest.raises(ConfigError, match="are thinking options"):
        generate(options(ckpt=str(runs / "predict"), prompt="x", compile=True), io.StringIO())
    with pytest.raises(ConfigError, match="compile=true compiles the thinking step of the key/value cache"):
        generate(options(ckpt=str(runs / "ebt"), prompt="x", compile=True, cache=False), io.StringIO())
