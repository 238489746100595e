"""What the EBT's candidate is and how the backbone reads it (``model.objective.candidate``).

Discrete tasks (tokens, classes) have a vocabulary of ``V`` outputs and a ``V x D`` read matrix ``W`` (the token
embedding with ``tie_candidate_projection``, else ``candidate_proj``). Three candidate spaces:

* ``simplex`` (default, the paper's): the candidate is ``V`` logits per position, read as ``softmax(y) @ W``. Exact,
  and the cost of the read grows with ``B x T x V x D`` per thinking step: forward, ``dE/dy`` and, in training,
  the double backward (about 150 GFLOP per step at V=32000, d=384, 1024 positions; docs/ebt_speed.md).
* ``topk`` (an approximation of the thinking step, not of the energy): from the second thinking step of each
  :meth:`EBT.think` call on, only the ``candidate_k`` largest logits of each position move; the others stay where the
  first (exact) step left them. Their softmax mass and embedding sum are constants of the call, computed once
  (:class:`SparseSupport`: one ``B x T x V x D`` product and, in training, its one backward to ``W``), so a step
  reads, differentiates and double-differentiates ``B x T x k x D`` instead. The energy of a candidate is the exact
  ``softmax(y) @ W`` read (the frozen logits enter through their constant sums): only ``dE/dy`` is restricted to
  the support, and Langevin noise too.
* ``embedding`` (a different model): the candidate is ``D`` numbers per position, read by the backbone as they
  are (no ``softmax @ W``); the prediction is decoded to logits ``y @ W^T`` (:meth:`CandidateSpace.decode`, the
  read matrix used the other way round) only where a loss or a metric needs logits. A thinking step does no
  vocabulary-sized work; each scored prediction costs one ``B x T x V x D`` product and its backward, as a
  predictor's output head does.

Continuous tasks read the candidate through ``candidate_proj`` (``Linear``) and accept only ``simplex`` (the
name then just means "the default").

Numbers (step time, accuracy effect on short runs): docs/ebt_speed.md, section 2.
"""

from dataclasses import dataclass

import torch
from torch.nn import functional

from ebt.errors import ConfigError
from ebt.tasks.base import Task
from ebt_kernels import softmax_embed

CANDIDATE_SPACES = ("simplex", "topk", "embedding")


def at_least_float32(dtype: torch.dtype) -> torch.dtype:
    """``dtype`` widened to float32 (bf16 / fp16 -> float32; float32 and float64 unchanged)."""
    return torch.promote_types(dtype, torch.float32)


@dataclass
class CandidateSpace:
    """``model.objective.candidate`` and ``candidate_k``, checked against the task."""

    kind: str = "simplex"
    k: int = 64  # topk: logits per position that move after the first step

    def check(self, task: Task, output_size: int) -> None:
        if self.kind not in CANDIDATE_SPACES:
            raise ConfigError(f"model.objective.candidate={self.kind!r} is not one of {', '.join(CANDIDATE_SPACES)}")
        if self.kind != "simplex" and task.kind not in ("tokens", "classes"):
            raise ConfigError(f"model.objective.candidate={self.kind} needs a discrete task (tokens or classes); a "
                              f"{task.kind} task's candidate is read through a Linear: use candidate=simplex")
        if self.kind == "topk" and not 0 < self.k < output_size:
            raise ConfigError(f"model.objective.candidate_k={self.k} must be in [1, {output_size - 1}] (the "
                              f"vocabulary has {output_size} entries; k >= V is the exact candidate=simplex)")

    @property
    def sparse(self) -> bool:
        return self.kind == "topk"

    def size(self, output_size: int, dim: int) -> int:
        """Numbers per candidate position: ``D`` in embedding space, else the task's output size."""
        return dim if self.kind == "embedding" else output_size

    def read(self, y: torch.Tensor, weight: torch.Tensor, backend: str) -> torch.Tensor:
        """The candidate's features (before the step's embeddings): ``softmax(y) @ W`` (float32 at least) or, in
        embedding space, ``y`` itself. ``weight``: the ``V x D`` read matrix."""
        dtype = torch.promote_types(y.dtype, weight.dtype)
        if self.kind == "embedding":
            return y.to(dtype)
        wide = at_least_float32(dtype)
        with torch.autocast(y.device.type, enabled=False):  # float32 (at least) reduction over the vocabulary
            e = softmax_embed(y.to(wide), weight.to(wide), backend=backend)
        return e.to(dtype)  # a bf16 model (bf16-true) reads bf16 features

    def decode(self, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The prediction in the task's output space: logits ``y @ W^T`` for an embedding candidate, else ``y``."""
        if self.kind != "embedding":
            return y
        wide = at_least_float32(torch.promote_types(y.dtype, weight.dtype))
        with torch.autocast(y.device.type, enabled=False):
            return functional.linear(y.to(wide), weight.to(wide))


class SparseSupport:
    """``candidate=topk``: the ``k`` logits per position that still move, and the constant softmax mass and
    embedding sum of the others, all taken from the logits ``y`` at the moment of the restriction.

    With ``m`` the (detached) row maximum of ``y``, ``S`` the top-``k`` indices, ``Z = sum_{j not in S} exp(y_j - m)``
    and ``A = sum_{j not in S} exp(y_j - m) W_j``, the read of the support logits ``s`` (the full candidate: ``y``
    with ``s`` in place of ``y_S``, :meth:`full`) is ``(A + sum_i exp(s_i - m) W_{S_i}) / (Z + sum_i exp(s_i - m))``
    = ``softmax(full(s)) @ W`` exactly (the shift is raised when a support logit grows past ``m``, so nothing
    overflows). ``A`` keeps its graph to ``W`` (training's gradient to the read matrix through the frozen logits is
    exact). Thinking then works on ``s`` (``..., k``): gradients, updates and noise never touch ``V``-sized tensors.
    """

    def __init__(self, y: torch.Tensor, weight: torch.Tensor, k: int) -> None:
        wide = at_least_float32(torch.promote_types(y.dtype, weight.dtype))
        self.frozen = y
        with torch.autocast(y.device.type, enabled=False):
            y, weight = y.to(wide), weight.to(wide)
            self.index = y.detach().topk(k, dim=-1).indices  # (..., k)
            self.shift = y.detach().amax(dim=-1, keepdim=True)  # (..., 1)
            rest = torch.exp(y - self.shift).scatter(-1, self.index, 0.0)  # (..., V): the frozen logits' weights
            self.mass = rest.sum(dim=-1, keepdim=True)  # Z (..., 1)
            self.total = rest @ weight  # A (..., D)
            flat = weight.index_select(0, self.index.reshape(-1))  # the support's rows, once per call
            self.rows = flat.view(*self.index.shape, weight.shape[-1])  # (..., k, D)

    def top(self, y: torch.Tensor) -> torch.Tensor:
        """The support logits of a full candidate ``y`` (``..., k``)."""
        return y.gather(-1, self.index)

    def full(self, top: torch.Tensor) -> torch.Tensor:
        """The full candidate (``..., V``): the restriction's logits with ``top`` on the support."""
        return self.frozen.scatter(-1, self.index, top.to(self.frozen.dtype))

    def read(self, top: torch.Tensor) -> torch.Tensor:
        """``softmax(full(top)) @ W``."""
        dtype = torch.promote_types(top.dtype, self.rows.dtype)
        wide = at_least_float32(dtype)
        with torch.autocast(top.device.type, enabled=False):
            top = top.to(wide)
            shift = torch.maximum(self.shift, top.detach().amax(dim=-1, keepdim=True))
            scale = torch.exp(self.shift - shift)  # <= 1: the frozen sums at the new shift
            q = torch.exp(top - shift)  # (..., k)
            e = (self.total * scale + (q.unsqueeze(-2) @ self.rows).squeeze(-2)) / (self.mass * scale +
                                                                             q.sum(-1, keepdim=True))
        return e.to(dtype)
