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

Where each part lives (a newcomer's map):

* every option, grouped: :class:`ebt.objectives.config.EBTConfig` (``EBT(task, backbone, dim, config)``);
* the energy ``E(x, y)`` and the learned parts (two-stream and whole-target modes, the candidate read, precision):
  :mod:`ebt.objectives.energy`;
* the thinking loop: :mod:`ebt.objectives.thinking`; candidate spaces: :mod:`ebt.objectives.candidates`;
* this module: the training step (:meth:`EBT.loss`) and evaluation (:meth:`EBT.evaluate_sums`).

Speed (docs/ebt_speed.md): ``compile=model|thinking_step`` (the top-level key, :mod:`ebt.objectives.compiled`)
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

from ebt.errors import ConfigError
from ebt.objectives import thinking
from ebt.objectives.base import loss_sums, prediction_loss, scored_positions
from ebt.objectives.config import ADDED_OPTIONS, Backprop, EBTConfig, Randomisation, StepRule
from ebt.objectives.contrastive import contrastive_loss, corrupted_candidate, positive_candidate
from ebt.objectives.energy import BatchEnergy, EnergyModel
from ebt.objectives.replay import ReplayBuffer
from ebt.objectives.thinking import Thought
from ebt.tasks.base import Task
from ebt.tasks.metrics import Sums, mean_sums

__all__ = ["ADDED_OPTIONS", "EBT", "Backprop", "BatchEnergy", "EBTConfig", "Randomisation", "StepRule", "Thought"]


class EBT(EnergyModel):
    """The EBT objective: ``EBT(task, backbone, dim, EBTConfig(...))``, or ``EBT(task, backbone, dim, **flat)`` with
    the flat ``model.objective.<key>`` options of the command line and of the configs checkpoints store
    (:meth:`EBTConfig.from_flat`). Every option is documented in :mod:`ebt.objectives.config`; the energy and the
    learned parts in :class:`ebt.objectives.energy.EnergyModel`."""

    thinks = True

    def __init__(self, task: Task, backbone, dim: int, config: EBTConfig | None = None, **options) -> None:
        if config is not None and options:
            raise ConfigError(f"EBT takes a config or flat options, not both (got {', '.join(options)})")
        super().__init__(task, backbone, dim, config if config is not None else EBTConfig.from_flat(options))
        replay_size = self.config.randomisation.replay_size
        self.replay = ReplayBuffer(replay_size) if replay_size else None
        self._progress = 0  # the training step (set_progress); learn_langevin_after reads it

    @classmethod
    def options_signature(cls):
        """The flat options and their types (what config validation checks keys and values against)."""
        return EBTConfig.options_signature()

    @staticmethod
    def upgrade_options(options: dict) -> dict:
        """The stored flat options of an older checkpoint as today's options spell them (:meth:`EBTConfig.upgrade`)."""
        return EBTConfig.upgrade(options)

    # ----------------------------------------------------------------------------------------------- knobs
    @property
    def steps(self) -> int:
        """Thinking steps in training and in the headline evaluation."""
        return self.config.steps

    @property
    def logged_steps(self) -> list[int]:
        """Steps whose metrics evaluation logs (``acc_step{k}``)."""
        return self.config.logged_steps

    @property
    def eval_steps(self) -> int:
        """The longest evaluation thinks (the last logged step)."""
        return max(self.config.logged_steps)

    @property
    def eval_langevin_std(self) -> float:
        return self.config.evaluation.eval_langevin_std

    @property
    def energy_tol(self) -> float | None:
        return self.config.evaluation.energy_tol

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
        after = self.config.randomisation.learn_langevin_after
        if after is None or self._progress >= after:
            return self.langevin
        return self.langevin.detach() + 0 * self.langevin

    def step_sizes(self, energy: torch.Tensor, training: bool, step: int = 0) -> torch.Tensor:
        """alpha at thinking step ``step`` (times ``(1 + step)^-p`` with ``alpha_decay=p``), or per position drawn from
        [alpha/s, alpha*s] around it in training; shaped like ``energy``."""
        rule = self.config.step_rule
        alpha, jitter = self.alpha.expand_as(energy), rule.alpha_jitter
        if rule.alpha_decay:
            alpha = alpha * (1 + step) ** -rule.alpha_decay
        if training and jitter > 1:
            low, high = alpha / jitter, alpha * jitter
            alpha = low + torch.rand_like(energy) * (high - low)
        return alpha

    # ------------------------------------------------------------------------------------------ thinking
    think = thinking.think  # ``model.think(batch, steps=..., ...)``: gradient descent on the energy (see there)

    # ------------------------------------------------------------------------------------------ training
    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        init, randomisation = None, self.config.randomisation
        random_steps = randomisation.random_steps
        if self.replay is not None:
            batch, init = self.replay.mix(batch, self.initial_candidate(batch), randomisation.replay_fraction)
        steps = self.steps + (int(torch.randint(0, random_steps + 1, ())) if random_steps else 0)
        thought = self.think(batch, steps=steps, training=True, init=init)
        if self.replay is not None:
            self.replay.add(batch, thought.candidates[-1].detach())
        predictions = thought.candidates[1:] if steps else thought.candidates
        scored = [self.decode(p) for p in (predictions if self.config.backprop.scored == "all" else predictions[-1:])]
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
        if self.config.contrastive.weight > 0:
            term, margin = self._contrastive_term(batch, thought.candidates[-1].detach(), steps)
            loss = loss + self.config.contrastive.weight * term
            logs |= {"contrastive_loss": term.detach(), "energy_margin": margin}
        if self.config.landscapes.weight > 0:
            term = self._denoising_term(batch, thought.candidates[-1].detach())
            loss = loss + self.config.landscapes.weight * term
            logs["denoise_loss"] = term.detach()
        return loss + sum(thought.aux.values()), logs

    def _denoising_term(self, batch: dict[str, torch.Tensor], final: torch.Tensor) -> torch.Tensor:
        """IRED's denoising supervision: one thinking step on a random landscape k from the target plus noise of
        scale sigma_k; the task loss of where it lands."""
        landscapes = self.config.landscapes
        k = int(torch.randint(0, landscapes.count, ()))
        target = positive_candidate(self.task, batch, final, self.config.contrastive)
        noisy = target + landscapes.noise_like(k, target)
        thought = self.think(batch, steps=1, training=True, init=noisy, start=landscapes.first_step(k))
        return prediction_loss(self.task, thought.candidates[-1], batch, self.continuous_loss)

    def _contrastive_term(self, batch: dict[str, torch.Tensor], final: torch.Tensor,
                          step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """IRED's contrastive energy loss of the target against a wrong candidate, and the mean energy margin
        ``E(y-) - E(y+)`` (positive when the landscape ranks them right)."""
        options = self.config.contrastive
        positive = positive_candidate(self.task, batch, final, options)
        if options.negatives == "prediction" and options.prediction_steps is not None:
            final = self.think(batch, steps=options.prediction_steps, keep=()).candidates[-1].detach()
        negatives = [final] if options.negatives == "prediction" else \
            [corrupted_candidate(self.task, batch, positive, options) for _ in range(options.count)]
        energy = self.energy_function(batch)
        energy_positive, energy_negatives = energy(positive, step), [energy(n, step) for n in negatives]
        weights = scored_positions(self.task, batch) if self.autoregressive else None
        term = contrastive_loss(energy_positive, energy_negatives, weights)
        with torch.no_grad():  # the margin to the first negative
            gap = (energy_negatives[0] - energy_positive).float()
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
