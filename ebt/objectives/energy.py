"""The EBT's energy ``E_theta(x, y)``: a scalar for a context ``x`` and a candidate prediction ``y``.

:class:`EnergyModel` holds every learned part of the EBT (the state dict is defined here) and its public energy
interface, which the thinking loop (:mod:`ebt.objectives.thinking`) and the compiled step
(:mod:`ebt.objectives.compiled`) use:

    context = model.encode(batch)                   # the input tokens / features, embedded
    stream = model.context_stream(context)          # what the candidate pass reads
    e = model.read_candidate(y, step)               # the candidate's features plus the step's embeddings
    energy = model.energy(e, stream)                # (B, T) per position, or (B,) per sample

and :meth:`EnergyModel.energy_function` bundles them for one batch (:class:`BatchEnergy`: ``energy(y, step)``).

Generation with a key/value cache (:mod:`ebt.analysis.tools.decoding`): ``context_stream(context, past)`` extends a
cached stream by new positions (:attr:`EnergyModel.extends_context`), and :meth:`BatchEnergy.of_stream` thinks on
the candidate of the last position only, against that stream (a candidate row reads the context at and before its
own position and nothing else, so one row's thinking is the same as in a pass over the whole window).

Two modes, chosen from the task (no per-mixer special cases):

* autoregressive two-stream (every task with ``causal=True``): the context stream is a causal pass over the true
  inputs; the candidate for position t attends to context positions <= t and to itself only, sharing all weights
  (``backbone.forward_context`` / ``forward_candidates``). The stream is the context's per-layer keys / values,
  computed once per batch (``cache_context=true``) or at every call (``false``; the same numbers). Energy per
  position = ``Linear(D, 1)`` after the backbone's final norm; positions' energies are summed for the gradient.
* whole-target (classes, bidirectional tokens / continuous tasks): the stream is the context tokens; candidate
  features are added to them (per position when aligned, broadcast otherwise), a bidirectional pass of any backbone
  follows, energy = mean of per-token scalars.

Discrete candidates are logits read as ``softmax(y) @ W`` (``W`` the token embedding with
``tie_candidate_projection``, else ``candidate_proj``; or a sparse / embedding-space read:
:mod:`ebt.objectives.candidates`); continuous candidates through ``Linear``. The step-index ("time") and landscape
embeddings are added to the candidate stream only, so the context stream stays valid across steps.

Precision: the energy head and the candidate read run in float32 at least (autocast off), so energies compared by
``energy_tol`` and best-of-N are not a few bf16 rounding steps apart.
"""

from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from ebt.objectives.base import Objective, caches_context, input_encoder, output_size, task_inputs
from ebt.objectives.candidates import SparseSupport, at_least_float32
from ebt.objectives.compiled import compiled_energy_and_grad, compiled_pass, energy_and_grad
from ebt.objectives.config import EBTConfig
from ebt.tasks.base import Task
from ebt_kernels import resolve_backend


class EnergyModel(Objective):
    """The learned parts of the EBT and its energy (see the module docstring). Parameters, in order: ``log_alpha``
    and ``langevin`` (the thinking step's learned step size and noise scale), ``encoder``, ``backbone``,
    ``energy_head``, ``candidate_proj``, ``time_embedding``, ``landscape_embedding``."""

    def __init__(self, task: Task, backbone, dim: int, config: EBTConfig) -> None:
        super().__init__(task=task, continuous_loss=config.continuous_loss)
        self.config, self.dim = config, dim
        self.output_size = output_size(task)
        config.check_task(task, self.output_size)
        self.autoregressive = task.causal  # a causal task is always run causally (two-stream), tokens or vectors
        self.discrete = task.kind in ("tokens", "classes")
        rule, noise = config.step_rule, config.randomisation
        self.log_alpha = nn.Parameter(torch.tensor(float(rule.alpha)).log(), requires_grad=rule.learn_alpha)
        self.log_alpha.no_weight_decay, self.log_alpha.lr_scale = True, rule.alpha_lr_scale
        self.langevin = nn.Parameter(torch.tensor(float(noise.langevin_std)),
                                     requires_grad=noise.learn_langevin_after is not None)
        self.langevin.no_weight_decay = True

        self.encoder = input_encoder(task, dim)
        self.backbone = backbone(dim, causal=self.autoregressive, spatial_shape=task.spatial_shape)
        heads = 1 if config.energy_form == "linear" else self.backbone.out_dim
        self.energy_head = nn.Linear(self.backbone.out_dim, heads, bias=False)
        nn.init.normal_(self.energy_head.weight, std=0.02)
        self.candidate_proj = None
        if not config.tie_candidate_projection:
            self.candidate_proj = nn.Linear(self.output_size, dim, bias=False)
            nn.init.normal_(self.candidate_proj.weight, std=0.02)
        self.time_embedding = self._zero_embedding(config.max_step_index + 1, dim) if config.time_embedding else None
        count = config.landscapes.count
        self.landscape_embedding = self._zero_embedding(count, dim) if count > 1 else None
        config.speed.check_backbone(self.backbone)
        self._backends: dict[torch.device, str] = {}

    @staticmethod
    def _zero_embedding(n: int, dim: int) -> nn.Embedding:
        embedding = nn.Embedding(n, dim)
        nn.init.zeros_(embedding.weight)
        return embedding

    # ------------------------------------------------------------------------------------ the interface
    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The context: the batch's input tokens / features, embedded (B, N, D)."""
        return self.encoder(task_inputs(self.task, batch))

    def context_stream(self, context: torch.Tensor, past: Any = None):
        """What the candidate pass reads: two-stream: the context's per-layer keys / values (compiled with
        ``compile=model``: the candidate's gradient never flows through it); whole-target: the context itself.
        ``past``: the stream of earlier positions, extended by ``context``'s rows (:attr:`extends_context`)."""
        if not self.autoregressive:
            return context
        if past is not None:
            return self.backbone.forward_context(context, past)[1]
        if self.config.speed.compile == "model":
            return compiled_pass(self.backbone, "forward_context", context)[1]
        return self.backbone.forward_context(context)[1]

    def candidate_features(self, y: torch.Tensor, backend: str | None = None) -> torch.Tensor:
        """The candidate's features: discrete: ``softmax(y) @ W`` (float32 at least) or the embedding-space candidate
        itself (:mod:`ebt.objectives.candidates`); continuous: ``W y``. ``backend``: the kernels' (default: the
        model's, resolved for ``y``'s device)."""
        if self.discrete:
            return self.config.candidate.read(y, self.read_matrix(), backend or self.backend(y.device))
        return self.candidate_proj(y)

    def step_embedding(self, step: int) -> torch.Tensor | None:
        """The step's embeddings added to the candidate features (time and landscape; ``None`` without them)."""
        extra = None
        if self.time_embedding is not None:
            extra = self.time_embedding.weight[min(step, self.time_embedding.num_embeddings - 1)]
        if self.landscape_embedding is not None:
            landscape = self.landscape_embedding.weight[self.config.landscapes.index(step)]
            extra = landscape if extra is None else extra + landscape
        return extra

    def read_candidate(self, y: torch.Tensor, step: int) -> torch.Tensor:
        """What the backbone reads of candidate ``y`` at thinking step ``step``: its features plus the step's
        embeddings."""
        return with_step(self.candidate_features(y), self.step_embedding(step))

    def energy(self, features: torch.Tensor, stream, *, first_order: bool = False) -> torch.Tensor:
        """The energy of candidate features (:meth:`read_candidate`) given the context stream: ``(B, T)``
        (two-stream) or ``(B,)`` (whole-target). ``first_order``: the result is differentiated once at most
        (``compile=model`` may then run the compiled candidate pass)."""
        compiled = first_order and self.config.speed.compile == "model"
        if self.autoregressive:
            h = compiled_pass(self.backbone, "forward_candidates", features, stream) if compiled else \
                self.backbone.forward_candidates(features, stream)  # (B, T, D)
            return self._head(h)  # (B, T)
        e = features if features.dim() == 3 else features[:, None, :]  # aligned per token, or broadcast
        h = compiled_pass(self.backbone, "forward", stream + e) if compiled else self.backbone(stream + e)
        per_token = self._head(h)  # (B, N)
        return per_token.sum(dim=1) if self.config.energy_reduce == "sum" else per_token.mean(dim=1)  # (B,)

    @property
    def extends_context(self) -> bool:
        """Whether :meth:`context_stream` can extend a cached stream by new positions: a two-stream model whose
        backbone caches (attention, MoH) and whose input encoding is per position."""
        return caches_context(self.task, self.encoder, self.backbone)

    def energy_function(self, batch: dict[str, torch.Tensor], *, first_order: bool = False) -> "BatchEnergy":
        """``energy(y, step)`` for this batch: (B, T) per position (autoregressive) or (B,) per sample."""
        return BatchEnergy(self, self.encode(batch), first_order=first_order)

    # ------------------------------------------------------------------------------------- candidates
    def read_matrix(self) -> torch.Tensor:
        """The ``V x D`` matrix a discrete candidate is read through: the token embedding
        (``tie_candidate_projection``) or ``candidate_proj``'s weight."""
        return self.encoder.weight if self.candidate_proj is None else self.candidate_proj.weight.t()

    def decode(self, y: torch.Tensor) -> torch.Tensor:
        """A candidate as the task's prediction: logits ``y @ W^T`` for ``candidate=embedding``, else ``y`` itself."""
        return self.config.candidate.decode(y, self.read_matrix()) if self.discrete else y

    def initial_candidate(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``y_0`` in the model's dtype: noise, zeros or (continuous) the input itself."""
        targets, dtype, config = batch["targets"], self.energy_head.weight.dtype, self.config
        if config.init == "input":
            return batch["inputs"].to(dtype=dtype, copy=True)
        size = config.candidate.size(self.output_size, self.dim)
        shape = (*targets.shape, size) if self.discrete else targets.shape
        if config.init == "zeros":
            return torch.zeros(shape, device=targets.device, dtype=dtype)
        return torch.randn(shape, device=targets.device, dtype=dtype) * config.init_std

    def backend(self, device: torch.device) -> str:
        """The kernels backend for tensors on ``device``: resolved once per device (the request was checked at
        build time), so no op call reads the environment or probes the driver again."""
        if device not in self._backends:
            self._backends[device] = resolve_backend(self.config.speed.kernels, device)
        return self._backends[device]

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        """Per-token energies ``(B, N)`` of the backbone's output ``h`` ``(B, N, D)``: ``w . h``
        (``energy_form=linear``) or ``||W h||^2 / D`` (``squared``), in float32 at least (autocast off; a float64 model
        stays float64)."""
        wide = at_least_float32(torch.promote_types(h.dtype, self.energy_head.weight.dtype))
        with torch.autocast(h.device.type, enabled=False):
            out = nn.functional.linear(h.to(wide), self.energy_head.weight.to(wide))
        return out.squeeze(-1) if self.config.energy_form == "linear" else out.square().mean(dim=-1)


def with_step(features: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
    """Candidate features plus the step's embeddings (``None``: none)."""
    return features if extra is None else features + extra


class BatchEnergy:
    """``energy(y, step)`` of one batch: (B, T) per position (two-stream) or (B,) per sample (whole-target). The
    context stream runs once here (``cache_context``) or at every call. After :meth:`restrict` (``candidate=topk``)
    the read is the sparse one."""

    def __init__(self, model: EnergyModel, context: torch.Tensor | None, *, first_order: bool = False,
                 stream: Any = None, step_compile: bool | None = None, dynamic: bool = False) -> None:
        """``stream``: the context stream, already computed (``context`` is then not read); ``step_compile``: the
        step through :func:`compiled_energy_and_grad` (default: the model's ``compile=thinking_step``), with
        ``dynamic`` shapes or not."""
        self.model, self.context, self.first_order = model, context, first_order
        cached = model.autoregressive and model.config.speed.cache_context
        self.cached = stream if stream is not None else model.context_stream(context) if cached else None
        self.support: SparseSupport | None = None
        self.step_compile = model.config.speed.compile == "thinking_step" if step_compile is None else step_compile
        self.dynamic = dynamic

    @classmethod
    def of_stream(cls, model: EnergyModel, stream: Any, *, compiled: bool = False) -> "BatchEnergy":
        """The energy against a context stream already computed (generation's cache): candidates ``(B, n, ...)``
        stand for the stream's last ``n`` positions (``B`` candidates share a stream of batch 1). Eager passes
        (``first_order=False``), whatever the model's ``compile`` (a stream one position longer at every token would
        recompile a static graph each time); with ``compiled`` the step is compiled once for any stream length."""
        return cls(model, None, stream=stream, step_compile=compiled, dynamic=compiled)

    def stream(self):
        """What the candidate pass reads (:meth:`EnergyModel.context_stream`), cached or recomputed."""
        return self.cached if self.cached is not None else self.model.context_stream(self.context)

    def features(self, y: torch.Tensor, step: int) -> torch.Tensor:
        """The candidate's features plus the step's embeddings (:meth:`EnergyModel.read_candidate`, or the sparse
        read)."""
        if self.support is None:
            return self.model.read_candidate(y, step)
        return with_step(self.support.read(y), self.model.step_embedding(step))

    def __call__(self, y: torch.Tensor, step: int) -> torch.Tensor:
        return self.model.energy(self.features(y, step), self.stream(), first_order=self.first_order)

    def restrict(self, y: torch.Tensor) -> torch.Tensor:
        """``candidate=topk``: from now on only the top-k logits of ``y`` move. Returns them (``..., k``): what the
        loop differentiates and updates from here on (:meth:`full` turns them back into full candidates). The
        frozen sums are built from ``y`` itself when it carries history (training with ``detach_steps=false``), so
        gradients still reach earlier steps through them; ``dE/d top`` never flows through them."""
        carries_history = y.requires_grad and not y.is_leaf
        self.support = SparseSupport(y if carries_history else y.detach(), self.model.read_matrix(),
                                     self.model.config.candidate.k)
        top = self.support.top(y)
        if carries_history:
            return top
        return top.detach().requires_grad_(y.requires_grad)

    def full(self, y: torch.Tensor) -> torch.Tensor:
        """The full candidate of the loop's ``y`` (``y`` itself until :meth:`restrict`)."""
        return y if self.support is None else self.support.full(y)

    def value_and_grad(self, y: torch.Tensor, step: int, create_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(energy, dE/dy)`` at ``y``; ``create_graph``: the gradient is differentiable (training's second-order
        term). ``thinking_grad=autograd`` (``y`` requires grad): ``torch.autograd.grad``; ``func``: ``torch.func.grad``;
        ``compile=thinking_step``: ``torch.func.grad`` in one compiled function."""
        speed = self.model.config.speed
        if self.step_compile:
            with nullcontext() if create_graph else torch.no_grad():
                return compiled_energy_and_grad(self.model, y, self.stream(), self.model.step_embedding(step),
                                                dynamic=self.dynamic)
        if speed.thinking_grad == "func":
            with nullcontext() if create_graph else torch.no_grad():
                return energy_and_grad(lambda v: self(v, step), y)
        energy = self(y, step)
        return energy, torch.autograd.grad(energy.sum(), y, create_graph=create_graph)[0]
