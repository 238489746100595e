"""``compile=none|model|thinking_step``: torch.compile for the objectives (the top-level ``compile`` key).

* ``model``: the backbone's passes are compiled. The predictor compiles ``backbone.forward``
  (``nn.Module.compile``: the state dict keeps its keys). The EBT calls ``forward_context`` /
  ``forward_candidates`` (two-stream) or ``forward`` (whole-target), so compiling ``forward`` alone would do nothing
  for it: :func:`compiled_pass` compiles the method it calls. A compiled pass cannot be differentiated twice
  (aot_autograd has no double backward), so the EBT compiles only the passes that are differentiated once: the
  context stream (the candidate's gradient never flows through it) and, in evaluation-time thinking, the candidate
  pass; the training candidate pass (second order) stays eager.
* ``thinking_step``: the EBT's step, the energy and ``dE/dy``, is one compiled function (:func:`energy_and_grad`):
  ``dE/dy`` comes from ``torch.func.grad`` inside the compiled region instead of ``torch.autograd.grad(...,
  create_graph=True)`` (which does not compile), and training differentiates the compiled graph once, which is the
  exact second-order term. Inside it the candidate's ``softmax(y) @ W`` runs as torch ops (inductor fuses them).

Generation compiles the one-position step of its key/value cache with dynamic shapes (``compile=true`` of
``scripts/generate.py``; :meth:`ebt.objectives.energy.BatchEnergy.of_stream`).

Compiled functions are cached per underlying function (and dynamic or not), not per model (no state in the module:
copies and checkpoints are unaffected); dynamo guards on shapes, dtypes and grad mode and recompiles when they change.
"""

from collections.abc import Callable
from typing import Any

import torch

from ebt.errors import ConfigError

COMPILE_CHOICES = ("none", "model", "thinking_step")
BACKEND = "inductor"  # torch.compile's backend (tests use "aot_eager": the same tracing, no code generation)
_CACHE: dict[tuple[Callable, bool], Callable] = {}


def check_compile(value: str, choices: tuple[str, ...] = COMPILE_CHOICES) -> str:
    """``value`` if it is one of ``choices``, else a :class:`ConfigError` naming them."""
    if value not in choices:
        raise ConfigError(f"compile={value!r} is not one of {', '.join(choices)} (the top-level key `compile`)")
    return value


def _compiled(fn: Callable, fullgraph: bool = False, dynamic: bool = False) -> Callable:
    key = (fn, dynamic)
    if key not in _CACHE:
        _CACHE[key] = torch.compile(fn, dynamic=dynamic, fullgraph=fullgraph, backend=BACKEND)
    return _CACHE[key]


def compile_module(module: torch.nn.Module) -> None:
    """``module.compile()`` in place (its ``__call__``; the state dict keeps its keys)."""
    module.compile(dynamic=False, backend=BACKEND)


def compiled_pass(module: torch.nn.Module, name: str, *args: Any) -> Any:
    """``module.<name>(*args)`` through torch.compile (the class's function, compiled once for every instance)."""
    return _compiled(getattr(type(module), name))(module, *args)


def energy_and_grad(energy: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(energy(y), d sum(energy(y)) / dy)`` with ``torch.func.grad`` (compilable; see the module docstring)."""

    def total(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        value = energy(y)
        return value.sum(), value

    grad, value = torch.func.grad(total, has_aux=True)(y)
    return value, grad


def compiled_energy_and_grad(model: torch.nn.Module, y: torch.Tensor, stream: Any, extra: torch.Tensor | None, *,
                             dynamic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The EBT's compiled thinking step: the energy of ``y`` (features plus the step's embeddings ``extra``) given
    ``stream``, and its gradient in ``y``. ``dynamic``: compiled for any context length (generation's cache grows by
    one position per token; compiled once instead of once per length)."""
    return _compiled(_step, fullgraph=True, dynamic=dynamic)(model, y, stream, extra)  # one graph, or an error


def _step(model: torch.nn.Module, y: torch.Tensor, stream: Any, extra: torch.Tensor | None
          ) -> tuple[torch.Tensor, torch.Tensor]:
    def energy(v: torch.Tensor) -> torch.Tensor:
        e = model.candidate_features(v, "torch")
        return model.energy(e if extra is None else e + extra, stream)

    return energy_and_grad(energy, y)
