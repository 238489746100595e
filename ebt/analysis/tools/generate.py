"""Sample text from a trained language model, predictor or EBT: the driver behind ``scripts/generate.py``.

Autoregressive sampling over a sliding context window of the model's length (``task.max_len``, e.g. the text task's
``seq_len``): each new token is drawn from the distribution of the last position given at most that many tokens.

* predictor: the logits of the last position;
* EBT: the next position is a thinking problem (``steps``, ``best_of`` candidates from fresh noise, kept by the lowest
  final energy at the new position, ``energy_tol`` adaptive stop, Langevin noise ``langevin_std``; each defaults to
  the checkpoint's evaluation setting), and the chosen final candidate's logits are the distribution.

How the logits are computed (:mod:`ebt.analysis.tools.decoding`): with ``cache=true`` (default) from a key/value
cache of the context (one new row per token; the EBT thinks on the new position only), for mixers that cannot cache
(Hyena, pooling) or with ``cache=false`` by running the whole window again for every token; both give the same
tokens (the same computation up to float rounding). ``slide`` says what the cache does once the window is full
(``token``: rebuilt at every token, exact; ``half``: rebuilt from the last half of the window every ``max_len / 2``
tokens, faster, other tokens).

Sampling: ``softmax(logits / temperature)`` restricted to the ``top_k`` largest logits; ``temperature=0`` is greedy
(argmax). Draws come from a ``torch.Generator`` seeded with ``seed``, and the EBT's initial noise from the global
stream seeded the same way, so a run is reproducible.

Tasks: any causal ``tokens`` task with ``encode(text) -> list[int]`` and ``decode(ids) -> str`` (the byte-level
``data=text``, a tokenizer task); others are refused with one clear error.
"""

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch
from omegaconf import DictConfig

from ebt.analysis import run_options as opts
from ebt.analysis.plotting import write_text
from ebt.analysis.tools.decoding import SLIDES, CachedDecoder, Decoder, Thinking, describe_path, make_decoder
from ebt.errors import ConfigError, DataError, UserError
from ebt.objectives.base import Objective
from ebt.objectives.frozen import frozen
from ebt.options import integer
from ebt.tasks.base import Task
from ebt.training.restore import Run, load_run, resolve_source


@dataclass
class Sampling:
    """How the next token is drawn from its logits."""

    temperature: float = 1.0  # 0: greedy
    top_k: int | None = None  # keep the k largest logits (None: all)


@dataclass
class Token:
    """One generated token and what it cost."""

    id: int
    probability: float  # of the sampled token under the sampling distribution
    energy: float | None = None  # EBT: final energy of the chosen candidate at the new position
    steps_used: float | None = None  # EBT: thinking steps taken (fewer than ``steps`` with ``energy_tol``)


def check_language_model(task: Task, source: str) -> None:
    """Refuse a task that is not a causal tokens task with ``encode`` / ``decode`` (a text LM)."""
    has_codec = callable(getattr(task, "encode", None)) and callable(getattr(task, "decode", None))
    if task.kind != "tokens" or not task.causal or not has_codec:
        raise ConfigError(f"ckpt={source} was trained on {task.describe()} ({task.kind} task"
                          f"{'' if task.causal else ', not causal'}{'' if has_codec else ', no text encoding'}); "
                          "generate.py needs a text language model, e.g. one trained with data=text")


def encode_prompt(task: Task, text: str) -> list[int]:
    """Token ids of ``text``; characters the tokenizer cannot encode, or ids outside its vocabulary, are refused."""
    if text == "":
        raise ConfigError("prompt= is empty; give at least one character to continue from (prompt=\"...\" or "
                          "prompt_file=PATH)")
    try:
        ids = list(task.encode(text))
    except UserError:
        raise
    except (ValueError, KeyError, UnicodeError) as e:
        raise DataError(f"the prompt cannot be encoded by this model's tokenizer ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:160]}); use characters it knows") from None
    bad = sorted({i for i in ids if not 0 <= int(i) < task.vocab_size})
    if bad:
        raise DataError(f"the prompt has token ids outside the model's vocabulary of {task.vocab_size} "
                        f"({bad[:5]}); use characters its tokenizer knows")
    if not ids:
        raise DataError("the prompt encodes to no token; give text the tokenizer knows")
    return [int(i) for i in ids]


def filter_logits(logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """(V,) logits divided by the temperature, all but the ``top_k`` largest set to -inf."""
    logits = logits.float() / sampling.temperature
    if sampling.top_k is not None and sampling.top_k < logits.numel():
        kth = torch.topk(logits, sampling.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, -math.inf)
    return logits


def sample_token(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> tuple[int, float]:
    """The next token id drawn from (V,) ``logits`` (argmax at temperature 0) and its probability."""
    logits = logits.detach().float().cpu()
    if sampling.temperature == 0:
        token = int(logits.argmax())
        return token, 1.0
    probs = torch.softmax(filter_logits(logits, sampling), dim=-1)
    token = int(torch.multinomial(probs, 1, generator=generator))
    return token, float(probs[token])


def generate_ids(decoder: Decoder, prompt: list[int], max_new_tokens: int, sampling: Sampling,
                 generator: torch.Generator, on_token=None) -> list[Token]:
    """``max_new_tokens`` tokens after ``prompt`` from ``decoder``'s logits (:mod:`ebt.analysis.tools.decoding`);
    ``on_token(i, token)`` is called after each one."""
    tokens: list[Token] = []
    with frozen(decoder.objective), torch.no_grad():
        step = decoder.start(prompt)
        for i in range(max_new_tokens):
            token, probability = sample_token(step.logits, sampling, generator)
            tokens.append(Token(token, probability, step.energy, step.steps_used))
            if on_token is not None:
                on_token(i, tokens[-1])
            if i + 1 < max_new_tokens:
                step = decoder.advance(token)
    return tokens


# ------------------------------------------------------------------------------------------------ the command
def _options(cfg: DictConfig) -> tuple[int, Sampling, Thinking]:
    max_new = integer(cfg, "max_new_tokens", 1)
    temperature = cfg.get("temperature")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not temperature >= 0 \
            or not math.isfinite(temperature):
        raise ConfigError(f"temperature={temperature} must be a number >= 0 (0: greedy)")
    tol, langevin = cfg.get("energy_tol"), cfg.get("langevin_std")
    if tol is not None and (isinstance(tol, bool) or not isinstance(tol, int | float) or not tol > 0):
        raise ConfigError(f"energy_tol={tol} must be > 0 (or null: the checkpoint's setting)")
    if langevin is not None and (isinstance(langevin, bool) or not isinstance(langevin, int | float)
                                 or not langevin >= 0):
        raise ConfigError(f"langevin_std={langevin} must be >= 0 (or null: the checkpoint's eval_langevin_std)")
    thinking = Thinking(integer(cfg, "steps", 1, allow_none=True), integer(cfg, "best_of", 1),
                        None if tol is None else float(tol), None if langevin is None else float(langevin),
                        _flag(cfg, "compile"))
    integer(cfg, "seed", 0)
    return max_new, Sampling(float(temperature), integer(cfg, "top_k", 1, allow_none=True)), thinking


def _cache_options(cfg: DictConfig) -> tuple[bool, str]:
    cache, slide = _flag(cfg, "cache", True), cfg.get("slide", "token")
    if slide not in SLIDES:
        raise ConfigError(f"slide={slide} is not one of {', '.join(SLIDES)} (token: exact, the cache is rebuilt at "
                          "every token once the window is full; half: rebuilt every max_len / 2 tokens)")
    return cache, str(slide)


def _check_compile(ebt: Objective, thinking: Thinking, decoder: Decoder) -> None:
    """``compile=true`` compiles the cached path's one-position thinking step: refuse it where there is none."""
    if not thinking.compile:
        return
    if not isinstance(decoder, CachedDecoder):
        raise ConfigError("compile=true compiles the thinking step of the key/value cache, and this run generates "
                          "without one (cache=false, or a mixer that cannot cache); set compile=false")
    if ebt.config.candidate.sparse:
        raise ConfigError("compile=true cannot compile candidate=topk thinking (its read changes inside a call); "
                          "set compile=false")


def _flag(cfg: DictConfig, key: str, default: bool = False) -> bool:
    value = cfg.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value} must be true or false")
    return value


def _prompt_text(cfg: DictConfig) -> str:
    prompt, path = cfg.get("prompt"), cfg.get("prompt_file")
    if prompt is not None and path:
        raise ConfigError("prompt= and prompt_file= both given; pass one of them")
    if not path:
        if prompt is None:
            raise ConfigError("prompt= is required, e.g. 'prompt=\"def main(\"' (or prompt_file=PATH)")
        return str(prompt)
    try:
        return Path(str(path)).read_bytes().decode("utf-8")
    except OSError as e:
        raise DataError(f"prompt_file={path} cannot be read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"prompt_file={path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None


def _device(cfg: DictConfig) -> torch.device:
    name = str(cfg.get("device") or "auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but this machine has no CUDA GPU; use device=cpu (or auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name} is not a device; use auto, cpu or cuda") from None


def describe(run: Run, thinking: Thinking) -> str:
    """``Predict`` or ``EBT, 2 steps, best-of-1`` (with the settings generation uses)."""
    ebt = run.objective
    if not ebt.thinks:
        return type(ebt).__name__
    steps, tol, _ = thinking.settings(ebt)
    return (f"EBT, {steps} steps, best-of-{thinking.best_of}"
            + (f", energy_tol {tol:g}" if tol is not None else "") + (", compiled step" if thinking.compile else ""))


def generate(cfg: DictConfig, stream: TextIO | None = None) -> dict[str, Any]:
    """Run ``scripts/generate.py``: print the prompt and its continuation to stdout (and ``out=``, atomically),
    per-token lines with ``verbose=true`` and the speed on stderr. Returns the text, the tokens and the timing."""
    max_new, sampling, thinking = _options(cfg)
    cache, slide = _cache_options(cfg)
    prompt_text = _prompt_text(cfg)
    device = _device(cfg)
    source = resolve_source(cfg.get("ckpt"), "ckpt")
    run = load_run(source, opts.data_overrides(cfg))
    check_language_model(run.task, source)
    if not run.objective.thinks and (cfg.get("steps") is not None or thinking.best_of != 1
                                     or cfg.get("energy_tol") is not None or thinking.compile):
        raise ConfigError(f"steps=, best_of=, energy_tol= and compile= are thinking options; ckpt={source} is a "
                          f"{type(run.objective).__name__}, which predicts in one forward pass")
    prompt = encode_prompt(run.task, prompt_text)
    run.objective.to(device)
    torch.manual_seed(cfg.seed)  # the EBT's initial candidates and Langevin noise
    generator = torch.Generator().manual_seed(cfg.seed)
    err = stream or sys.stderr
    decoder, refusal = make_decoder(run.objective, run.task.max_len or len(prompt) + max_new, thinking, cache, slide)
    _check_compile(run.objective, thinking, decoder)
    if refusal is not None:
        print(f"generate: {refusal}; every token re-runs the whole window (no key/value cache)", file=err, flush=True)
    on_token = _verbose_printer(run.task, err) if cfg.get("verbose") else None
    started = time.perf_counter()
    tokens = generate_ids(decoder, prompt, max_new, sampling, generator, on_token)
    seconds = time.perf_counter() - started
    text = run.task.decode(prompt + [t.id for t in tokens])
    print(text)
    if cfg.get("out"):
        write_text(Path(str(cfg.out)), text)
    rate = len(tokens) / seconds if seconds > 0 else math.inf
    print(f"generated {len(tokens)} tokens in {seconds:.2f} s: {rate:.1f} tokens/s ({describe(run, thinking)}, "
          f"{describe_path(decoder)}, {device.type}, context window {run.task.max_len})", file=err, flush=True)
    return {"text": text, "prompt": prompt, "tokens": tokens, "seconds": seconds, "tokens_per_s": rate}


def _verbose_printer(task: Task, stream: TextIO):
    """``on_token`` that prints ``i  'text'  id=...  p=...  energy=...  steps=...`` per generated token."""
    def show(i: int, token: Token) -> None:
        line = f"{i:5d}  {task.decode([token.id])!r:>8}  id={token.id:<6d} p={token.probability:.3f}"
        if token.energy is not None:
            line += f"  energy={token.energy:.4f}  steps={token.steps_used:g}"
        print(line, file=stream, flush=True)
    return show
