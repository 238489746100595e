"""The distribution of the next token during generation: re-run the window, or extend a key/value cache.

A :class:`Decoder` is told the prompt (:meth:`Decoder.start`) and then each token drawn (:meth:`Decoder.advance`),
and answers with the next position's logits (:class:`Next`; for an EBT also the chosen candidate's final energy and
the thinking steps it took). The context is a sliding window of the model's length (``task.max_len``).

* :class:`WindowedDecoder` (any causal model): every token runs the whole window again. Predictor: one forward pass
  of the window, the last position's logits. EBT: thinking on every position of the window (``best_of`` copies),
  ``best_of * (steps + 1)`` passes of the window per token, of which only the last position is used.
* :class:`CachedDecoder` (mixers with a key/value cache: attention, MoH): the prompt's context is computed once
  (prefill) and each drawn token appends one row of keys / values per layer (RoPE positions continue). Predictor:
  that row's logits are the next distribution. EBT: the new position's ``best_of`` candidates think for ``steps``
  against the cached context stream (:meth:`ebt.objectives.energy.BatchEnergy.of_stream`): one candidate row per
  step instead of a window. ``Thinking.compile``: that step (energy and ``dE/dy``) runs through ``torch.compile``
  with dynamic shapes, compiled once for every context length (20-35 s on a CPU; docs/generation.md; inductor's
  float rounding differs from eager, so a near-tied token can differ).

Both give the same tokens, up to float rounding (the cached path attends with one row where the windowed one runs
a causal pass; the tokens were bitwise equal in the float64 tests and in the benchmark's float32 runs). In the
two-stream EBT a candidate row reads the context at and before its position and itself only, so the last row thinks
the same in a window pass as alone against the cache; the initial candidates of the new position are drawn the same
way in both (``best_of`` draws of one row; the windowed path starts the other rows of its window from zeros, which do
not reach the last one). Thinking with Langevin noise (``langevin_std > 0``) draws that noise for the window in one
path and for one row in the other, so the two then differ by the draws
(tests hold the equality for deterministic thinking, the default ``eval_langevin_std=0``).

When the window is full (``task.max_len`` tokens) a new token cannot be appended; ``slide`` says what happens:

* ``token`` (default, exact): the cache is rebuilt from the last ``max_len`` tokens at every new token (one prefill
  per token, the positions restart at 0): the tokens of the windowed path, at the cost of a window pass per token;
* ``half``: the cache is rebuilt from the last ``max_len // 2`` tokens and then extended token by token until it is
  full again: one prefill per ``max_len / 2`` tokens, but a token then sees between ``max_len / 2`` and ``max_len``
  tokens of context, not the windowed path's ``max_len``, so its tokens can differ.
"""

from dataclasses import dataclass

import torch

from ebt.objectives.base import Objective
from ebt.objectives.energy import BatchEnergy

SLIDES = ("token", "half")


@dataclass
class Thinking:
    """EBT overrides for each new position; None: the checkpoint's evaluation setting."""

    steps: int | None = None
    best_of: int = 1
    energy_tol: float | None = None
    langevin_std: float | None = None
    compile: bool = False  # the cached path's thinking step through torch.compile (dynamic shapes)

    def settings(self, ebt: Objective) -> tuple[int, float | None, float]:
        """``(steps, energy_tol, langevin_std)`` with the checkpoint's evaluation settings filled in."""
        tol = self.energy_tol if self.energy_tol is not None else ebt.energy_tol
        langevin = self.langevin_std if self.langevin_std is not None else ebt.eval_langevin_std
        return self.steps or ebt.steps, tol, langevin


@dataclass
class Next:
    """The next position's logits (V,), and for an EBT the chosen candidate's final energy and its steps taken."""

    logits: torch.Tensor
    energy: float | None = None
    steps_used: float | None = None


def cache_refusal(objective: Objective) -> str | None:
    """Why ``objective`` cannot generate with a key/value cache (None: it can)."""
    if getattr(objective, "extends_context", False):
        return None
    backbone = getattr(objective, "backbone", None)
    blocks = backbone.modules() if backbone is not None else []
    mixers = sorted({type(block.mixer).__name__ for block in blocks
                     if isinstance(getattr(block, "mixer", None), torch.nn.Module)
                     and not getattr(block.mixer, "extends_context", False)})
    if mixers:
        return f"mixer {', '.join(mixers)} cannot extend a cached context by one position"
    return f"{type(objective).__name__} on this task cannot extend a cached context by one position"


class Decoder:
    """The next-token logits of a growing token sequence (see the module docstring)."""

    def __init__(self, objective: Objective, window_len: int, thinking: Thinking) -> None:
        self.objective, self.window_len, self.thinking = objective, window_len, thinking
        self.device = next(objective.parameters()).device

    def start(self, prompt: list[int]) -> Next:
        """The logits after ``prompt``."""
        raise NotImplementedError

    def advance(self, token: int) -> Next:
        """The logits after the sequence so far followed by ``token``."""
        raise NotImplementedError

    def ids(self, tokens: list[int]) -> torch.Tensor:
        return torch.tensor([tokens], dtype=torch.long, device=self.device)  # (1, T)

    def initial_candidates(self) -> torch.Tensor:
        """``best_of`` initial candidates of one new position (n, 1, size), drawn the same way by every decoder."""
        targets = torch.zeros(self.thinking.best_of, 1, dtype=torch.long, device=self.device)
        return self.objective.initial_candidate({"targets": targets})

    def think(self, batch: dict[str, torch.Tensor], init: torch.Tensor, energy: BatchEnergy | None = None) -> Next:
        """Thinking on ``init`` (n, T, size); the last position's candidate with the lowest final energy."""
        ebt = self.objective
        steps, tol, langevin = self.thinking.settings(ebt)
        thought = ebt.think(batch, steps=steps, langevin_std=langevin, energy_tol=tol, final_energy=True,
                            keep={steps}, init=init, energy_function=energy)
        final = thought.energies[-1][:, -1]  # (n,): E(y_S) at the new position
        best = int(final.argmin())
        used = float(thought.steps_used[best, -1]) if thought.steps_used is not None else float(steps)
        return Next(ebt.decode(thought.candidates[-1][best, -1].detach()), float(final[best]), used)


class WindowedDecoder(Decoder):
    """Every token runs the last ``window_len`` tokens again (any causal model)."""

    def start(self, prompt: list[int]) -> Next:
        self.tokens = list(prompt)
        return self.next()

    def advance(self, token: int) -> Next:
        self.tokens.append(token)
        return self.next()

    def next(self) -> Next:
        window = self.ids(self.tokens[-self.window_len:])  # (1, T)
        if not self.objective.thinks:
            return Next(self.objective.predict({"input_ids": window})[0, -1])
        last = self.initial_candidates()  # (n, 1, size)
        n, t = last.shape[0], window.shape[1]
        init = torch.cat([last.new_zeros(n, t - 1, last.shape[-1]), last], dim=1)  # only the last row is read
        ids = window.expand(n, -1)
        return self.think({"input_ids": ids, "targets": torch.zeros_like(ids)}, init)


class CachedDecoder(Decoder):
    """A key/value cache of the window's context, extended by one row per token (``slide``: the module docstring)."""

    def __init__(self, objective: Objective, window_len: int, thinking: Thinking, slide: str = "token") -> None:
        super().__init__(objective, window_len, thinking)
        if slide not in SLIDES:
            raise ValueError(f"slide={slide!r}; use one of {SLIDES}")
        self.slide, self.window, self.cache = slide, [], None
        self.prefills = 0  # how often the cache was built from scratch (the prompt, then each slide)

    def start(self, prompt: list[int]) -> Next:
        return self.prefill(list(prompt)[-self.window_len:])

    def advance(self, token: int) -> Next:
        if len(self.window) < self.window_len:
            self.window.append(token)
            return self.extend(self.ids([token]))
        keep = self.window_len if self.slide == "token" else max(1, self.window_len // 2)
        return self.prefill((self.window + [token])[-keep:])

    def prefill(self, window: list[int]) -> Next:
        self.window, self.cache, self.prefills = window, None, self.prefills + 1
        return self.extend(self.ids(window))

    def extend(self, new_ids: torch.Tensor) -> Next:
        """Append ``new_ids`` (1, n) to the cache; the logits of the position after them."""
        if not self.objective.thinks:
            logits, self.cache = self.objective.predict_extending(new_ids, self.cache)
            return Next(logits[0, -1])
        ebt = self.objective
        prefill = self.cache is None
        self.cache = ebt.context_stream(ebt.encode({"input_ids": new_ids}), self.cache)
        if prefill:  # contiguous like every extended cache (concatenated): one compiled graph for both
            self.cache = contiguous(self.cache)
        energy = BatchEnergy.of_stream(ebt, self.cache, compiled=self.thinking.compile)
        return self.think({}, self.initial_candidates(), energy)


def contiguous(cache):
    """A cache (tensors in nested lists / tuples) with every tensor contiguous."""
    if isinstance(cache, torch.Tensor):
        return cache.contiguous()
    if isinstance(cache, list | tuple):
        return type(cache)(contiguous(c) for c in cache)
    return cache


def make_decoder(objective: Objective, window_len: int, thinking: Thinking, cache: bool, slide: str = "token"
                 ) -> tuple[Decoder, str | None]:
    """The cached decoder when asked for and possible, else the windowed one with the reason it is not cached
    (None when no cache was asked for)."""
    if not cache:
        return WindowedDecoder(objective, window_len, thinking), None
    refusal = cache_refusal(objective)
    if refusal is not None:
        return WindowedDecoder(objective, window_len, thinking), refusal
    return CachedDecoder(objective, window_len, thinking, slide), None


def describe_path(decoder: Decoder) -> str:
    """How ``decoder`` computes each token, for the speed line."""
    if isinstance(decoder, CachedDecoder):
        return f"key/value cache, slide={decoder.slide}"
    return "windowed (every token re-runs the window)"
