"""Energy-Based Transformer objective: predict by gradient descent on a learned energy.

Gladstone et al., "Energy-Based Transformers are Scalable Learners and Thinkers" (2025, arXiv:2507.02092); earlier
"Cognitively Inspired Energy-Based World Models". The reference implementation, which "the reference" below means:
https://github.com/alexiglad/EBT at commit 0ad36281cc1040136973270073af20c544249224 (``model/nlp/ebt.py``).
An EBT assigns a scalar energy ``E_theta(x, y)`` to a context ``x`` and a candidate ``y`` and predicts by
minimising it ("thinking"):

    y_0 ~ N(0, init_std^2)  (or zeros, or the noisy input for denoising)
    y_{i+1} = y_i - alpha_i * grad_y E_theta(x, y_i + sigma * xi_i),   i = 0 .. S-1

and is trained with the task loss of every step's prediction ``y_{i+1}`` (mean over steps, or the last
only), back-propagated through the gradient (``create_graph=True``: theta receives Hessian-vector terms).

Modes (chosen from the task, no per-mixer special cases):

* autoregressive two-stream (every task with ``causal=True``: tokens, and continuous sequences such as in-context
  regression, as the paper does for video frames): the context stream is a causal pass over the true inputs; the
  candidate for position t (the prediction made from inputs <= t) attends to context positions <= t and to itself
  only, sharing all weights (``backbone.forward_context`` / ``forward_candidates``). The context stream does not
  depend on the candidate, so it is computed once per batch and its per-layer keys/values are reused at
  every step (``cache_context=true``; ``false`` recomputes it per step, identical results). Energy per
  position = ``Linear(D, 1)`` after the backbone's final norm; positions' energies are summed for the
  gradient (each candidate sees only its own context, so one backward gives every position's gradient).
* whole-target (classes, or bidirectional tokens / continuous tasks): candidate features are added to the
  context tokens (per position when aligned with them, broadcast to every token otherwise, e.g. a class
  distribution), a bidirectional pass of any backbone follows, energy = mean of per-token scalars.

Discrete candidates are logits; the model reads ``softmax(y) @ W`` with ``W`` a ``V -> D`` projection
(``tie_candidate_projection``: the token embedding). Continuous candidates are read through ``Linear``. For large
vocabularies ``candidate=topk`` (a sparse thinking step) and ``candidate=embedding`` (a candidate of ``D`` numbers)
are cheaper options (:mod:`ebt.objectives.candidates`). Code layout: the options in :mod:`ebt.objectives.ebt_options`,
the thinking loop and ``energy(y, step)`` of a batch in :mod:`ebt.objectives.thinking`, candidate spaces in
:mod:`ebt.objectives.candidates`, this module the model (energy, loss, evaluation).

Precision: under autocast (``trainer.precision=bf16-mixed``) the backbone runs in bf16, but the energy head and the
candidate's ``softmax(y) @ W`` run in float32 (autocast off, inputs cast up), so energies are float32: ``energy_tol``
and best-of-N compare energies a few bf16 rounding steps apart otherwise.

Speed (docs/ebt_speed.md): the thinking loop reads no device value per step (the finiteness of each step's energy
and gradient is gathered on the device and checked once after the loop); fused SDPA kernels are used wherever the
candidate's gradient does not cross them (the two-stream context stream, evaluation-time thinking), the math backend
only in whole-target training; ``compile=model|thinking_step`` (the top-level key, :mod:`ebt.objectives.compiled`)
compiles the backbone's passes or the whole step (energy and ``dE/dy`` via ``torch.func.grad``), same numbers.

Auxiliary losses of the backbone (MoH load balance) are the mean over every forward pass of the training step: the
context stream and each thinking step's candidate pass (:func:`alt_arch.utils.record_aux`).

Step bounds: ``grad_clamp=c`` clamps each element of ``dE/dy`` to ``[-c, c]``; ``max_change=m`` is the reference's
``clamp_futures_grad_max_change``: ``dE/dy`` is clamped to ``+-m / alpha`` (the base step size, not the jittered
one), so each element of a step moves by at most ``m``. They are exclusive.

Deviations from the reference:

* alpha is learned in log space (``log_alpha``, so it stays positive, and ``alpha_lr_scale`` multiplies the learning
  rate of ``log alpha``); the reference learns alpha itself, clamped at 1e-4, with its own learning-rate multiplier.
* the step-index ("time") embedding is added to the candidate stream only (so the context cache stays valid);
* the uncached path recomputes the context per step instead of running a 2T-token sequence with a block mask (same
  numbers, see tests);
* energies at evaluation also include the energy of the final candidate (one extra forward) for stopping and
  best-of-N;
* ``learn_langevin_after=n``: the reference switches ``requires_grad`` on for sigma when its warm-up ends; here sigma
  is a trainable parameter from the start whose gradient is exactly zero before training step n (so DDP and the
  optimiser see one fixed set of trainable parameters; AdamW's step count for sigma starts at 0, not n);
* Langevin noise: the noisy candidate ``y + sigma xi`` is both where the gradient is taken and what the step starts
  from, as in the reference's language model; evaluation uses ``eval_langevin_std`` (the reference's language model
  keeps its training noise at evaluation).
"""


import torch
from torch import nn

from ebt.errors import ConfigError
from ebt.objectives import thinking
from ebt.objectives.base import (
    Objective,
    input_encoder,
    loss_sums,
    output_size,
    prediction_loss,
    scored_positions,
    task_inputs,
)
from ebt.objectives.candidates import CandidateSpace, at_least_float32
from ebt.objectives.compiled import check_compile, compiled_pass
from ebt.objectives.contrastive import Contrastive, contrastive_loss, corrupted_candidate, positive_candidate
from ebt.objectives.ebt_options import (
    ADDED_OPTIONS,
    Backprop,
    Randomisation,
    StepRule,
    check_choice,
    check_functional_step,
    checked_kernels,
    logged_steps,
)
from ebt.objectives.landscapes import Landscapes
from ebt.objectives.replay import ReplayBuffer
from ebt.objectives.thinking import BatchEnergy, Thought
from ebt.tasks.base import Task
from ebt.tasks.metrics import Sums, mean_sums
from ebt_kernels import resolve_backend

__all__ = ["ADDED_OPTIONS", "EBT", "Backprop", "BatchEnergy", "Randomisation", "StepRule", "Thought"]


class EBT(Objective):
    """The EBT objective. The keyword arguments are flat (the command line's ``model.objective.<name>``, and the
    config old checkpoints store); they are grouped here into :class:`StepRule`, :class:`Randomisation` and
    :class:`Backprop`, which say what each one is for. The others:

    * ``steps`` / ``eval_steps``: thinking steps in training (and the headline evaluation); steps whose evaluation
      metrics are logged (``acc_step{k}``).
    * ``init`` / ``init_std``: ``y_0``: noise (``init_std``), zeros, or the noisy input (continuous denoising); the
      reference's ``denoising_initial_condition`` / ``gaussian_random_noise_scaling``.
    * ``eval_langevin_std``: Langevin noise while thinking at evaluation (the reference's
      ``infer_langevin_dynamics_noise``): > 0 makes evaluation stochastic (e.g. for best-of-N in ``scripts/think.py``).
    * ``energy_tol``: evaluation stops a prediction once its energy changes by less than this (adaptive compute).
    * ``tie_candidate_projection``: tokens only: read the candidate as ``softmax(y) @ W_emb`` through the token
      embedding (no ``candidate_proj``; the reference's ``vocab_to_embed_uses_prob_dist``).
    * ``time_embedding``: a learned step-index embedding added to the candidate stream, so the energy can differ
      between steps (the reference's ``ebt_type=time_embed``); zero-initialised.
    * ``cache_context``: autoregressive: compute the context stream once per batch (same numbers as ``false``).
    * ``continuous_loss``: continuous tasks: ``mse`` or ``smooth_l1`` for every step's prediction.
    * ``kernels``: the implementation of the step's fused ops (``torch`` or ``triton``), the same numbers.
    * ``compile``: ``none``, ``model`` or ``thinking_step`` (:mod:`ebt.objectives.compiled`), the same numbers.
    * ``thinking_grad``: ``autograd`` (``torch.autograd.grad(create_graph=True)`` on a leaf candidate) or ``func``
      (``torch.func.grad``: the candidate is no leaf of the training graph, so the backward skips the unused gradient
      to each detached ``y_i``: one ``B x T x V x D`` matmul and a softmax backward less per step); the same numbers.
    * ``candidate`` / ``candidate_k``: discrete tasks: what the candidate is (:mod:`ebt.objectives.candidates`):
      ``simplex`` (``V`` logits read as ``softmax(y) @ W``, the paper's, exact), ``topk`` (after the first step only
      the ``candidate_k`` largest logits per position move) or ``embedding`` (``D`` numbers read as they are and
      decoded to logits ``y @ W^T`` for the loss; a different model). The last two make large vocabularies cheaper.
    * ``contrastive_*``: IRED's supervision of the energy landscape (:mod:`ebt.objectives.contrastive`): the energy
      of the target pushed below the energy of a wrong candidate, ``contrastive_weight`` times; 0 is off.
    * ``landscapes`` / ``landscape_steps`` / ``landscape_noise`` / ``landscape_weight``: IRED's annealed energy
      landscapes and their denoising supervision (:mod:`ebt.objectives.landscapes`); 1 landscape, weight 0 is off.
    """

    thinks = True

    def __init__(
        self,
        *,
        task: Task,
        backbone,
        dim: int,
        steps: int = 2,
        eval_steps: int | list[int] | None = None,
        alpha: float = 1.0,
        learn_alpha: bool = True,
        alpha_lr_scale: float = 1.0,
        alpha_jitter: float = 1.0,
        init: str = "noise",
        init_std: float = 1.0,
        loss_on: str | None = None,
        detach_steps: bool = True,
        truncate: bool = False,
        langevin_std: float = 0.0,
        eval_langevin_std: float = 0.0,
        learn_langevin_after: int | None = None,
        random_steps: int = 0,
        replay_size: int = 0,
        replay_fraction: float = 0.25,
        grad_clamp: float | None = None,
        max_change: float | None = None,
        energy_tol: float | None = None,
        tie_candidate_projection: bool = False,
        time_embedding: bool = False,
        cache_context: bool = True,
        continuous_loss: str = "mse",
        kernels: str = "torch",
        compile: str = "none",
        thinking_grad: str = "autograd",
        candidate: str = "simplex",
        candidate_k: int = 64,
        contrastive_weight: float = 0.0,
        contrastive_negatives: str = "corrupt",
        contrastive_corrupt: float = 0.05,
        contrastive_positive_logit: float = 5.0,
        landscapes: int = 1,
        landscape_steps: int = 1,
        landscape_noise: float = 1.0,
        landscape_weight: float = 0.0,
    ) -> None:
        super().__init__(task=task, continuous_loss=continuous_loss)
        self.step_rule = StepRule(alpha, learn_alpha, alpha_lr_scale, alpha_jitter, grad_clamp, max_change)
        self.randomisation = Randomisation(langevin_std, learn_langevin_after, random_steps, replay_size,
                                           replay_fraction)
        self.backprop = Backprop(detach_steps, truncate, loss_on)
        self.contrastive = Contrastive(contrastive_weight, contrastive_negatives, contrastive_corrupt,
                                       contrastive_positive_logit)
        self.landscapes = Landscapes(landscapes, landscape_steps, landscape_noise, landscape_weight)
        check_choice("init", init, ("noise", "zeros", "input"))
        if steps < 1:
            raise ConfigError(f"model.objective.steps must be >= 1 (training thinks), got {steps}")
        if init == "input" and (task.kind != "continuous" or task.input_dim != task.output_dim):
            raise ConfigError("model.objective.init=input needs a continuous task whose inputs have the targets' shape")
        if eval_langevin_std < 0:
            raise ConfigError(f"model.objective.eval_langevin_std must be >= 0, got {eval_langevin_std}")
        self.autoregressive = task.causal  # a causal task is always run causally (two-stream), tokens or vectors
        self.discrete = task.kind in ("tokens", "classes")
        self.steps = steps
        self.logged_steps = logged_steps(eval_steps, steps)
        self.eval_steps = max(self.logged_steps)
        self.init, self.init_std = init, init_std
        self.eval_langevin_std, self.energy_tol = eval_langevin_std, energy_tol
        self.cache_context = cache_context
        self.kernels = checked_kernels(kernels)
        self.compile = check_compile(compile)
        check_choice("thinking_grad", thinking_grad, ("autograd", "func"))
        self.thinking_grad = thinking_grad
        self._backends: dict[torch.device, str] = {}
        self._progress = 0  # the training step (set_progress); learn_langevin_after reads it
        self.output_size = output_size(task)
        self.candidate_space = CandidateSpace(candidate, candidate_k)
        self.candidate_space.check(task, self.output_size)
        self.dim = dim
        if candidate == "embedding" and (contrastive_weight > 0 or landscape_weight > 0):
            raise ConfigError("model.objective.candidate=embedding has no target candidate for IRED's supervision "
                              "(contrastive_weight / landscape_weight > 0): use candidate=simplex with them")
        if candidate == "topk" and self.compile == "thinking_step":
            raise ConfigError("model.objective.candidate=topk does not run under compile=thinking_step (its sparse "
                              "read changes within a thinking call); use compile=none or model")

        self.log_alpha = nn.Parameter(torch.tensor(float(alpha)).log(), requires_grad=learn_alpha)
        self.log_alpha.no_weight_decay, self.log_alpha.lr_scale = True, alpha_lr_scale
        self.langevin = nn.Parameter(torch.tensor(float(langevin_std)), requires_grad=learn_langevin_after is not None)
        self.langevin.no_weight_decay = True

        self.encoder = input_encoder(task, dim)
        self.backbone = backbone(dim, causal=self.autoregressive, spatial_shape=task.spatial_shape)
        self.energy_head = nn.Linear(self.backbone.out_dim, 1, bias=False)
        nn.init.normal_(self.energy_head.weight, std=0.02)
        if tie_candidate_projection:
            if task.kind != "tokens":
                raise ConfigError("model.objective.tie_candidate_projection=true needs a tokens task")
            self.candidate_proj = None
        else:
            self.candidate_proj = nn.Linear(self.output_size, dim, bias=False)
            nn.init.normal_(self.candidate_proj.weight, std=0.02)
        max_steps = max(self.steps + random_steps, self.eval_steps, landscapes * landscape_steps, 1) + 1
        self.time_embedding = nn.Embedding(max_steps, dim) if time_embedding else None
        if self.time_embedding is not None:
            nn.init.zeros_(self.time_embedding.weight)
        self.landscape_embedding = nn.Embedding(landscapes, dim) if landscapes > 1 else None
        if self.landscape_embedding is not None:
            nn.init.zeros_(self.landscape_embedding.weight)
        self.replay = ReplayBuffer(replay_size) if replay_size else None
        if self.functional_grad:
            check_functional_step(self.backbone, "compile=thinking_step" if self.compile == "thinking_step" else
                                   "model.objective.thinking_grad=func")

    @staticmethod
    def upgrade_options(options: dict) -> dict:
        """The stored options of an older checkpoint, as today's options spell them: options added since are filled
        with their defaults (off: the model the checkpoint trained), and ``loss_on: all`` of a checkpoint written
        before ``loss_on`` defaulted to null meant "all, or the last step with truncate=true" (truncate overrode it),
        which is what null means now."""
        options = {**ADDED_OPTIONS, **options}
        return {**options, "loss_on": None} if options.get("loss_on") == "all" else options

    # ----------------------------------------------------------------------------------------------- knobs
    @property
    def functional_grad(self) -> bool:
        """Whether the step's ``dE/dy`` comes from ``torch.func.grad`` (``thinking_grad=func``, or compiled)."""
        return self.thinking_grad == "func" or self.compile == "thinking_step"

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp().clamp_min(1e-4)

    def set_progress(self, step: int) -> None:
        super().set_progress(step)
        self._progress = step

    def training_noise(self) -> torch.Tensor:
        """sigma for training thinking. With ``learn_langevin_after=n`` it is trainable (``requires_grad`` from
        the start, so DDP and the optimiser see one fixed set of parameters) and its gradient is zero before
        training step n (its value enters the graph times zero)."""
        after = self.randomisation.learn_langevin_after
        if after is None or self._progress >= after:
            return self.langevin
        return self.langevin.detach() + 0 * self.langevin

    def backend(self, device: torch.device) -> str:
        """The kernels backend for tensors on ``device``: resolved once per device (the request was checked at
        build time), so no op call reads the environment or probes the driver again."""
        if device not in self._backends:
            self._backends[device] = resolve_backend(self.kernels, device)
        return self._backends[device]

    def _step_sizes(self, energy: torch.Tensor, training: bool) -> torch.Tensor:
        """alpha, or per-position alpha drawn from [alpha/s, alpha*s] in training; shaped like ``energy``."""
        alpha, jitter = self.alpha.expand_as(energy), self.step_rule.alpha_jitter
        if training and jitter > 1:
            low, high = alpha / jitter, alpha * jitter
            alpha = low + torch.rand_like(energy) * (high - low)
        return alpha

    # ------------------------------------------------------------------------------------------- energy
    def _read_candidate(self, y: torch.Tensor, step: int) -> torch.Tensor:
        """Candidate features the backbone reads: ``softmax(y) @ W`` (discrete) or ``W y`` (continuous), plus the
        step's embeddings."""
        e, extra = self._candidate_features(y), self._step_offset(step)
        return e if extra is None else e + extra

    def _candidate_features(self, y: torch.Tensor, backend: str | None = None) -> torch.Tensor:
        """The candidate's features: discrete: ``softmax(y) @ W`` (float32 at least) or the embedding-space candidate
        itself (:mod:`ebt.objectives.candidates`); continuous: ``W y``. ``backend``: the kernels' (default: the
        model's, resolved for ``y``'s device)."""
        if self.discrete:
            return self.candidate_space.read(y, self.read_matrix(), backend or self.backend(y.device))
        return self.candidate_proj(y)

    def read_matrix(self) -> torch.Tensor:
        """The ``V x D`` matrix a discrete candidate is read through: the token embedding
        (``tie_candidate_projection``) or ``candidate_proj``'s weight."""
        return self.encoder.weight if self.candidate_proj is None else self.candidate_proj.weight.t()

    def decode(self, y: torch.Tensor) -> torch.Tensor:
        """A candidate as the task's prediction: logits ``y @ W^T`` for ``candidate=embedding``, else ``y`` itself."""
        return self.candidate_space.decode(y, self.read_matrix()) if self.discrete else y

    def _step_offset(self, step: int) -> torch.Tensor | None:
        """The step's embeddings added to the candidate features (time and landscape; ``None`` without them)."""
        extra = None
        if self.time_embedding is not None:
            extra = self.time_embedding.weight[min(step, self.time_embedding.num_embeddings - 1)]
        if self.landscape_embedding is not None:
            landscape = self.landscape_embedding.weight[self.landscapes.index(step)]
            extra = landscape if extra is None else extra + landscape
        return extra

    def _energy_of(self, e: torch.Tensor, stream, *, first_order: bool = False) -> torch.Tensor:
        """The energy of the candidate features ``e`` (:meth:`_read_candidate`) given ``stream`` (two-stream: the
        context's per-layer keys / values; whole-target: the context tokens). ``first_order``: the result is
        differentiated once at most (``compile=model`` may then run the compiled candidate pass)."""
        compiled = first_order and self.compile == "model"
        if self.autoregressive:
            h = compiled_pass(self.backbone, "forward_candidates", e, stream) if compiled else \
                self.backbone.forward_candidates(e, stream)  # (B, T, D)
            return self._energy(h)  # (B, T)
        e = e if e.dim() == 3 else e[:, None, :]  # aligned per token, or broadcast to every token
        h = compiled_pass(self.backbone, "forward", stream + e) if compiled else self.backbone(stream + e)
        return self._energy(h).mean(dim=1)  # (B,)

    def _context_stream(self, context: torch.Tensor):
        """The context stream's per-layer keys / values (compiled with ``compile=model``: differentiated once)."""
        if self.compile == "model":
            return compiled_pass(self.backbone, "forward_context", context)[1]
        return self.backbone.forward_context(context)[1]

    def _energy(self, h: torch.Tensor) -> torch.Tensor:
        """Per-token energies ``(B, N)`` of the backbone's output ``h`` ``(B, N, D)``, in float32 at least (autocast
        off; a float64 model stays float64)."""
        wide = at_least_float32(torch.promote_types(h.dtype, self.energy_head.weight.dtype))
        with torch.autocast(h.device.type, enabled=False):
            return nn.functional.linear(h.to(wide), self.energy_head.weight.to(wide)).squeeze(-1)

    def energy_function(self, batch: dict[str, torch.Tensor], *, first_order: bool = False) -> "BatchEnergy":
        """``energy(y, step)`` for this batch: (B, T) per position (autoregressive) or (B,) per sample."""
        return BatchEnergy(self, self.encoder(task_inputs(self.task, batch)), first_order=first_order)

    def initial_candidate(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``y_0`` in the model's dtype: noise, zeros or (continuous) the input itself."""
        targets, dtype = batch["targets"], self.energy_head.weight.dtype
        if self.init == "input":
            return batch["inputs"].to(dtype=dtype, copy=True)
        size = self.candidate_space.size(self.output_size, self.dim)
        shape = (*targets.shape, size) if self.discrete else targets.shape
        if self.init == "zeros":
            return torch.zeros(shape, device=targets.device, dtype=dtype)
        return torch.randn(shape, device=targets.device, dtype=dtype) * self.init_std

    # ------------------------------------------------------------------------------------------ thinking
    think = thinking.think  # ``model.think(batch, steps=..., ...)``: gradient descent on the energy (see there)

    # ------------------------------------------------------------------------------------------ training
    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        init, random_steps = None, self.randomisation.random_steps
        if self.replay is not None:
            batch, init = self.replay.mix(batch, self.initial_candidate(batch), self.randomisation.replay_fraction)
        steps = self.steps + (int(torch.randint(0, random_steps + 1, ())) if random_steps else 0)
        thought = self.think(batch, steps=steps, training=True, init=init)
        if self.replay is not None:
            self.replay.add(batch, thought.candidates[-1].detach())
        predictions = thought.candidates[1:] if steps else thought.candidates
        scored = [self.decode(p) for p in (predictions if self.backprop.scored == "all" else predictions[-1:])]
        losses = [prediction_loss(self.task, p, batch, self.continuous_loss) for p in scored]
        loss = torch.stack(losses).mean()
        logs: dict[str, torch.Tensor] = {"alpha": self.alpha.detach()}
        with torch.no_grad():
            for i, energy in enumerate(thought.energies):
                logs[f"energy_step{i}"] = energy.mean()
            if thought.energies:
                logs["energy_gap"] = thought.energies[0].mean() - thought.energies[-1].mean()
            for name, value in self.task.metrics(scored[-1].detach(), batch).items():  # the last prediction
                logs[name] = value
            first = len(thought.candidates) - len(scored)  # index of the first scored prediction
            for k, (prediction, step_loss) in enumerate(zip(scored, losses, strict=True), start=first):
                logs[f"loss_step{k}"] = step_loss.detach()
                logs[f"{self.task.metric}_step{k}"] = self.task.metrics(prediction.detach(), batch)[self.task.metric]
        logs |= thought.aux_metrics | {name: value.detach() for name, value in thought.aux.items()}
        if self.contrastive.enabled:
            term, margin = self._contrastive_term(batch, thought.candidates[-1].detach(), steps)
            loss = loss + self.contrastive.weight * term
            logs |= {"contrastive_loss": term.detach(), "energy_margin": margin}
        if self.landscapes.weight > 0:
            term = self._denoising_term(batch, thought.candidates[-1].detach())
            loss = loss + self.landscapes.weight * term
            logs["denoise_loss"] = term.detach()
        return loss + sum(thought.aux.values()), logs

    def _denoising_term(self, batch: dict[str, torch.Tensor], final: torch.Tensor) -> torch.Tensor:
        """IRED's denoising supervision: one thinking step on a random landscape k from the target plus noise of
        scale sigma_k; the task loss of where it lands."""
        landscapes = self.landscapes
        k = int(torch.randint(0, landscapes.count, ()))
        target = positive_candidate(self.task, batch, final, self.contrastive)
        noisy = target + landscapes.sigma(k) * torch.randn_like(target)
        thought = self.think(batch, steps=1, training=True, init=noisy, start=landscapes.first_step(k))
        return prediction_loss(self.task, thought.candidates[-1], batch, self.continuous_loss)

    def _contrastive_term(self, batch: dict[str, torch.Tensor], final: torch.Tensor,
                          step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """IRED's contrastive energy loss of the target against a wrong candidate, and the mean energy margin
        ``E(y-) - E(y+)`` (positive when the landscape ranks them right)."""
        options = self.contrastive
        positive = positive_candidate(self.task, batch, final, options)
        negative = final if options.negatives == "prediction" else \
            corrupted_candidate(self.task, batch, positive, options)
        energy = self.energy_function(batch)
        energy_positive, energy_negative = energy(positive, step), energy(negative, step)
        weights = scored_positions(self.task, batch) if self.autoregressive else None
        term = contrastive_loss(energy_positive, energy_negative, weights)
        with torch.no_grad():
            gap = (energy_negative - energy_positive).float()
            margin = gap.mean() if weights is None else (gap * weights).sum() / weights.sum().clamp_min(1)
        return term, margin

    # ---------------------------------------------------------------------------------------- evaluation
    def predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        thought = self.think(batch, steps=self.steps, langevin_std=self.eval_langevin_std, keep=())
        return self.decode(thought.candidates[-1].detach())

    def evaluate_sums(self, batch: dict[str, torch.Tensor]) -> Sums:
        """Metrics after ``steps`` (headline) and after each logged step k (``acc_step{k}``, ``energy_step{k}``: the
        mean over energy elements), ``energy_gap`` (step 0 minus the last step) and ``steps_used``, as ``(sum, count)``
        pairs (:meth:`Objective.evaluate_sums`)."""
        horizon = self.eval_steps
        thought = self.think(batch, steps=horizon, langevin_std=self.eval_langevin_std,
                             energy_tol=self.energy_tol, final_energy=True, keep=self.logged_steps)
        sums: Sums = {}
        for k, candidate in enumerate(thought.candidates):
            if k not in self.logged_steps:
                continue
            candidate = self.decode(candidate.detach())
            step_sums = dict(self.task.metric_sums(candidate, batch))
            step_sums["loss"] = loss_sums(self.task, candidate, batch, self.continuous_loss)
            for name, value in step_sums.items():
                sums[f"{name}_step{k}"] = value
            sums[f"energy_step{k}"] = mean_sums(thought.energies[k].detach().float())
            if k == self.steps:
                sums |= step_sums
        (first, count), (last, _) = sums["energy_step0"], sums[f"energy_step{horizon}"]
        sums["energy_gap"] = (first - last, count)
        if thought.steps_used is not None:
            sums["steps_used"] = mean_sums(thought.steps_used.float())
        return sums
