"""Every option of the EBT in one place: :class:`EBTConfig`, a dataclass nesting the option groups.

    EBTConfig(steps=2, init="noise", init_std=1.0, tie_candidate_projection=False, time_embedding=False,
              continuous_loss="mse",
              step_rule=StepRule(...),          # how one thinking step moves the candidate
              randomisation=Randomisation(...), # training-time noise, random step counts, replay
              backprop=Backprop(...),           # what the loss scores, how gradients cross the steps
              evaluation=Evaluation(...),       # logged steps, evaluation noise, early stopping
              candidate=CandidateSpace(...),    # what a discrete candidate is (ebt.objectives.candidates)
              contrastive=Contrastive(...),     # IRED's contrastive energy term (ebt.objectives.contrastive)
              landscapes=Landscapes(...),       # IRED's annealed landscapes (ebt.objectives.landscapes)
              speed=Speed(...))                 # the same numbers, faster: cache, kernels, compile, thinking_grad

``EBT(task, backbone, dim, config)`` takes it (nanoGPT's ``GPT(GPTConfig)``). The command line and the configs that
checkpoints store keep today's flat keys (``model.objective.alpha``, ``model.objective.contrastive_weight``):
:meth:`EBTConfig.from_flat` reads them (each group's field is the flat key of the same name, except where
:data:`FLAT_NAMES` says otherwise), :meth:`EBTConfig.flat` writes them, and :meth:`EBTConfig.upgrade` fills the
options added since a checkpoint was written (:data:`ADDED_OPTIONS`). Each group checks its own values; the checks
that span groups are in :meth:`EBTConfig.__post_init__`, those that need the task in :meth:`EBTConfig.check_task`.
"""

import dataclasses
import inspect
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ebt.errors import ConfigError
from ebt.objectives.candidates import CandidateSpace
from ebt.objectives.compiled import check_compile
from ebt.objectives.contrastive import Contrastive
from ebt.objectives.landscapes import Landscapes
from ebt.tasks.base import Task
from ebt_kernels import KernelBackendError, resolve_backend


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"model.objective.{name}={value!r} is not one of {', '.join(choices)}")


@dataclass
class StepRule:
    """How one thinking step moves the candidate: ``y <- y - alpha_i * bound(dE/dy)``."""

    alpha: float = 1.0  # step size (the reference's ``mcmc_step_size``)
    learn_alpha: bool = True  # the reference's ``mcmc_step_size_learnable``
    alpha_lr_scale: float = 1.0  # lr multiplier of log alpha (the reference's ``mcmc_step_size_lr_multiplier``)
    alpha_jitter: float = 1.0  # s > 1: training draws alpha_i ~ U[alpha/s, alpha*s] per position (paper's S2 recipe)
    grad_clamp: float | None = None  # clamp dE/dy elementwise to [-c, c]
    max_change: float | None = None  # the reference's ``clamp_futures_grad_max_change``: |alpha * dE/dy| <= m
    alpha_decay: float = 0.0  # p >= 0: thinking step i (its index, as the step embeddings read it) uses
    # alpha * (1 + i)^-p (IBC's polynomial decay; horizon-free: an s-step result does not depend on the call's length)
    backtrack: bool = False  # evaluation: a step that raises an element's energy is undone and that element's step
    # size halves for the rest of the call (one extra energy forward per step)
    clamp_candidates: bool = False  # continuous tasks: every candidate (y_0 too) is clamped to the task's valid_range

    def __post_init__(self) -> None:
        if self.alpha <= 0:
            raise ConfigError(f"model.objective.alpha must be > 0, got {self.alpha}")
        if not self.alpha_lr_scale >= 0:
            raise ConfigError(f"model.objective.alpha_lr_scale must be >= 0, got {self.alpha_lr_scale}")
        if self.alpha_lr_scale != 1 and not self.learn_alpha:
            raise ConfigError("model.objective.alpha_lr_scale scales the learning rate of alpha, but "
                              "model.objective.learn_alpha=false keeps alpha fixed; drop one of them")
        if self.alpha_jitter < 1:
            raise ConfigError("model.objective.alpha_jitter is a scale s >= 1 (alpha drawn from [alpha/s, alpha*s])")
        if self.grad_clamp is not None and self.max_change is not None:
            raise ConfigError("model.objective.grad_clamp and model.objective.max_change both bound the thinking step; "
                              "set one of them to null")
        if not self.alpha_decay >= 0:
            raise ConfigError(f"model.objective.alpha_decay must be >= 0 (0: a constant step size), got "
                              f"{self.alpha_decay}")
        for name in ("grad_clamp", "max_change"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"model.objective.{name} must be > 0 (or null), got {value}")


@dataclass
class Randomisation:
    """Training-time randomisation (the paper's System 2 recipe, ``model/objective=ebt_s2``); evaluation thinks
    without it."""

    langevin_std: float = 0.0  # noise sigma added to the candidate before each step (the reference's
    # ``langevin_dynamics_noise``)
    learn_langevin_after: int | None = None  # sigma trainable from this training step on (the reference's
    # ``langevin_dynamics_noise_learnable``, switched on when its warm-up ends)
    random_steps: int = 0  # each batch thinks steps + U{0..random_steps} steps (cf. ``randomize_mcmc_num_steps``)
    replay_size: int = 0  # > 0: replay buffer of this many (sample, final candidate) pairs (``mcmc_replay_buffer``)
    replay_fraction: float = 0.25  # share of each batch replayed (``mcmc_replay_buffer_sample_bs_percent``)

    def __post_init__(self) -> None:
        if self.langevin_std < 0:
            raise ConfigError(f"model.objective.langevin_std must be >= 0, got {self.langevin_std}")
        if self.learn_langevin_after is not None and not self.langevin_std > 0:
            raise ConfigError("model.objective.learn_langevin_after learns the noise scale, but "
                              "model.objective.langevin_std=0 adds no noise to learn from; set langevin_std > 0 "
                              "or learn_langevin_after=null")
        if self.learn_langevin_after is not None and self.learn_langevin_after < 0:
            raise ConfigError(f"model.objective.learn_langevin_after must be >= 0 (a training step) or null, "
                              f"got {self.learn_langevin_after}")
        if self.random_steps < 0:
            raise ConfigError(f"model.objective.random_steps must be >= 0, got {self.random_steps}")
        if self.replay_size < 0:
            raise ConfigError(f"model.objective.replay_size must be >= 0 (0: no replay), got {self.replay_size}")
        if self.replay_size and not 0 < self.replay_fraction < 1:
            raise ConfigError(f"model.objective.replay_fraction must be in (0, 1) with model.objective.replay_size > "
                              f"0, got {self.replay_fraction}")


@dataclass
class Backprop:
    """What the training loss scores and how its gradient flows back through the thinking steps."""

    detach_steps: bool = True  # detach the candidate between steps (the reference's default; ``no_mcmc_detach``)
    truncate: bool = False  # only the last step is second order, and only its loss is scored (``truncate_mcmc``)
    loss_on: str | None = None  # all | last | null (= last with truncate, else all)

    def __post_init__(self) -> None:
        if self.loss_on is not None:
            check_choice("loss_on", self.loss_on, ("all", "last"))
        if self.truncate and self.loss_on == "all":
            raise ConfigError("model.objective.truncate=true scores the last step only, but "
                              "model.objective.loss_on=all asks for every step; set loss_on=null (or last), or "
                              "truncate=false")

    @property
    def scored(self) -> str:
        """``all`` or ``last``: the steps whose predictions the training loss averages."""
        return self.loss_on or ("last" if self.truncate else "all")


@dataclass
class Evaluation:
    """How evaluation thinks: which steps it logs, its noise, and when a prediction stops."""

    eval_steps: int | list[int] | None = None  # steps whose metrics are logged: 0..n, a list, or null (2 x steps)
    eval_langevin_std: float = 0.0  # noise while thinking at evaluation (the reference's
    # ``infer_langevin_dynamics_noise``); > 0 makes evaluation stochastic (best-of-N in scripts/think.py)
    energy_tol: float | None = None  # stop a prediction once its energy changes by less than this (adaptive compute)

    def __post_init__(self) -> None:
        if self.eval_langevin_std < 0:
            raise ConfigError(f"model.objective.eval_langevin_std must be >= 0, got {self.eval_langevin_std}")

    def logged_steps(self, steps: int) -> list[int]:
        """Thinking steps whose metrics evaluation logs: 0..eval_steps (an int, default 2 x steps) or a list;
        always including 0 (the initial candidate) and the training step count (the headline metric)."""
        eval_steps = 2 * steps if self.eval_steps is None else self.eval_steps
        listed = [eval_steps] if isinstance(eval_steps, int) else [int(k) for k in eval_steps]
        if any(k < 0 for k in listed):  # the int itself is checked: range(-1 + 1) would be empty and pass silently
            raise ConfigError(f"model.objective.eval_steps must be >= 0 (or a list of such step counts), got "
                              f"{eval_steps}")
        chosen = list(range(eval_steps + 1)) if isinstance(eval_steps, int) else listed
        return sorted({0, steps, *chosen})


@dataclass
class Speed:
    """Options that change how fast the EBT runs, never its numbers (docs/ebt_speed.md)."""

    cache_context: bool = True  # autoregressive: compute the context stream once per batch (false: every step)
    kernels: str = "torch"  # the step's fused ops: torch | triton (ebt_kernels)
    compile: str = "none"  # none | model | thinking_step (ebt.objectives.compiled; the top-level key)
    thinking_grad: str = "autograd"  # dE/dy by torch.autograd.grad(create_graph=True) on a leaf candidate, or
    # func: torch.func.grad, so the candidate is no leaf of the training graph and the backward skips the unused
    # gradient to each detached y_i (one B x T x V x D matmul and a softmax backward less per step)

    def __post_init__(self) -> None:
        try:
            resolve_backend(self.kernels)  # refused now (one clear line) if it cannot run on this machine
        except (KernelBackendError, ValueError) as error:
            raise ConfigError(f"kernels={self.kernels}: {error}") from None
        check_compile(self.compile)
        check_choice("thinking_grad", self.thinking_grad, ("autograd", "func"))

    @property
    def functional_grad(self) -> bool:
        """Whether the step's ``dE/dy`` comes from ``torch.func.grad`` (``thinking_grad=func``, or compiled)."""
        return self.thinking_grad == "func" or self.compile == "thinking_step"

    def check_backbone(self, backbone: nn.Module) -> None:
        """A step under ``torch.func.grad``: refuse the backbones it cannot run."""
        if not self.functional_grad:
            return
        what = "compile=thinking_step" if self.compile == "thinking_step" else "model.objective.thinking_grad=func"
        if getattr(backbone, "checkpoint", False):
            raise ConfigError(f"{what} does not combine with activation checkpointing (model.backbone.checkpoint="
                              "true); turn one of them off")
        if any(hasattr(m, "aux_losses") for m in backbone.modules()):
            raise ConfigError(f"{what} cannot run a backbone that records auxiliary losses (MoH attention) inside "
                              "torch.func.grad; turn it off")


# group field -> flat key, where the two differ (every other field's flat key is its own name)
FLAT_NAMES: dict[str, dict[str, str]] = {
    "candidate": {"kind": "candidate", "k": "candidate_k"},
    "contrastive": {name: f"contrastive_{name}" for name in ("weight", "negatives", "corrupt", "positive_logit",
                                                             "count", "prediction_steps")},
    "landscapes": {"count": "landscapes", "steps": "landscape_steps", "noise": "landscape_noise",
                   "weight": "landscape_weight", "schedule": "landscape_schedule", "min_noise": "landscape_min_noise"},
}

# Options added after checkpoints were first shared, at the defaults that leave the model as it was trained.
ADDED_OPTIONS = {"contrastive_weight": 0.0, "contrastive_negatives": "corrupt", "contrastive_corrupt": 0.05,
                 "contrastive_positive_logit": 5.0, "landscapes": 1, "landscape_steps": 1, "landscape_noise": 1.0,
                 "landscape_weight": 0.0, "compile": "none", "thinking_grad": "autograd",
                 "candidate": "simplex", "candidate_k": 64, "alpha_decay": 0.0, "backtrack": False,
                 "clamp_candidates": False, "energy_reduce": "mean", "contrastive_count": 1,
                 "landscape_schedule": "linear", "landscape_min_noise": 0.01, "energy_form": "linear",
                 "contrastive_prediction_steps": None}


@dataclass
class EBTConfig:
    """Every option of the EBT (see the module docstring); the groups check their values when built."""

    steps: int = 2  # thinking steps in training (and the headline evaluation)
    init: str = "noise"  # y_0: noise | zeros | input (continuous denoising: the noisy input itself); the
    # reference's ``denoising_initial_condition``
    init_std: float = 1.0  # y_0's noise scale (the reference's ``gaussian_random_noise_scaling``)
    tie_candidate_projection: bool = False  # tokens: read the candidate as softmax(y) @ W_emb through the token
    # embedding, no candidate_proj (the reference's ``vocab_to_embed_uses_prob_dist``)
    time_embedding: bool = False  # a learned, zero-initialised step-index embedding added to the candidate stream,
    # so the energy can differ between steps (the reference's ``ebt_type=time_embed``)
    continuous_loss: str = "mse"  # continuous tasks: mse | smooth_l1 for every step's prediction
    energy_form: str = "linear"  # a token's energy: linear (w . h, the paper's) or squared (||W h||^2 / D, IRED's
    # E = ||f(x, y)||^2: bounded below by 0, so an answer can be an exact minimum where the gradient vanishes)
    energy_reduce: str = "mean"  # whole-target tasks: a sample's energy is the mean (the paper's) or the sum of its
    # tokens' energies; the mean divides each token's dE/dy by N (81 on Sudoku), the sum does not. Causal tasks keep
    # one energy per position, each with its own gradient: there both choices are the same model (so a recipe that
    # sets sum, model/objective=ebt_converge, runs on every task)
    step_rule: StepRule = field(default_factory=StepRule)
    randomisation: Randomisation = field(default_factory=Randomisation)
    backprop: Backprop = field(default_factory=Backprop)
    evaluation: Evaluation = field(default_factory=Evaluation)
    candidate: CandidateSpace = field(default_factory=CandidateSpace)
    contrastive: Contrastive = field(default_factory=Contrastive)
    landscapes: Landscapes = field(default_factory=Landscapes)
    speed: Speed = field(default_factory=Speed)


    def __post_init__(self) -> None:
        check_choice("init", self.init, ("noise", "zeros", "input"))
        check_choice("energy_reduce", self.energy_reduce, ("mean", "sum"))
        check_choice("energy_form", self.energy_form, ("linear", "squared"))
        if self.steps < 1:
            raise ConfigError(f"model.objective.steps must be >= 1 (training thinks), got {self.steps}")
        self.evaluation.logged_steps(self.steps)  # checks eval_steps
        ired = self.contrastive.weight > 0 or self.landscapes.weight > 0
        if self.candidate.kind == "embedding" and ired:
            raise ConfigError("model.objective.candidate=embedding has no target candidate for IRED's supervision "
                              "(contrastive_weight / landscape_weight > 0): use candidate=simplex with them")
        if self.candidate.kind == "topk" and self.speed.compile == "thinking_step":
            raise ConfigError("model.objective.candidate=topk does not run under compile=thinking_step (its sparse "
                              "read changes within a thinking call); use compile=none or model")

    def check_task(self, task: Task, output_size: int) -> None:
        """The options that depend on the task (``output_size``: its vocabulary, classes or target features)."""
        if self.init == "input" and (task.kind != "continuous" or task.input_dim != task.output_dim):
            raise ConfigError("model.objective.init=input needs a continuous task whose inputs have the targets' shape")
        if self.step_rule.clamp_candidates and task.valid_range is None:
            raise ConfigError(f"model.objective.clamp_candidates=true needs a task with a valid range of values "
                              f"(a continuous task that declares valid_range); {task.describe()} has none")
        if self.tie_candidate_projection and task.kind != "tokens":
            raise ConfigError("model.objective.tie_candidate_projection=true needs a tokens task")
        self.candidate.check(task, output_size)

    @property
    def logged_steps(self) -> list[int]:
        return self.evaluation.logged_steps(self.steps)

    @property
    def max_step_index(self) -> int:
        """The largest step index any thinking call reads (the time embedding's size minus one)."""
        landscape_steps = self.landscapes.count * self.landscapes.steps
        return max(self.steps + self.randomisation.random_steps, max(self.logged_steps), landscape_steps, 1)

    # ------------------------------------------------------------------------------------------- flat keys
    @classmethod
    def flat_fields(cls) -> dict[str, tuple[str | None, str, Any, Any]]:
        """flat key -> (group or None, field, type hint, default), in the order of the dataclasses."""
        out: dict[str, tuple[str | None, str, Any, Any]] = {}
        hints = typing.get_type_hints(cls)
        for top in dataclasses.fields(cls):
            if not dataclasses.is_dataclass(hints[top.name]):
                out[top.name] = (None, top.name, hints[top.name], top.default)
                continue
            group, group_hints = hints[top.name], typing.get_type_hints(hints[top.name])
            for f in dataclasses.fields(group):
                flat = FLAT_NAMES.get(top.name, {}).get(f.name, f.name)
                out[flat] = (top.name, f.name, group_hints[f.name], f.default)
        return out

    @classmethod
    def from_flat(cls, options: Mapping[str, Any]) -> "EBTConfig":
        """The config of today's flat keys (the command line's ``model.objective.<key>``; what checkpoints store);
        an unknown key is a :class:`ConfigError` naming the valid ones."""
        fields = cls.flat_fields()
        unknown = sorted(set(options) - set(fields))
        if unknown:
            raise ConfigError(f"model.objective.{unknown[0]} is not an EBT option; valid: {', '.join(fields)}")
        top: dict[str, Any] = {}
        groups: dict[str, dict[str, Any]] = {}
        for key, value in options.items():
            group, name = fields[key][:2]
            (top if group is None else groups.setdefault(group, {}))[name] = value
        hints = typing.get_type_hints(cls)
        return cls(**top, **{group: hints[group](**values) for group, values in groups.items()})

    def flat(self) -> dict[str, Any]:
        """The flat keys of this config (the inverse of :meth:`from_flat`)."""
        return {key: getattr(self if group is None else getattr(self, group), name)
                for key, (group, name, _, _) in self.flat_fields().items()}

    @classmethod
    def options_signature(cls) -> inspect.Signature:
        """The flat keys as keyword parameters with their types and defaults (what config validation checks)."""
        return inspect.Signature([inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=default,
                                                    annotation=hint)
                                  for key, (_, _, hint, default) in cls.flat_fields().items()])

    @classmethod
    def upgrade(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """The stored flat options of an older checkpoint, as today's options spell them: options added since are
        filled with their defaults (off: the model the checkpoint trained), and ``loss_on: all`` of a checkpoint
        written before ``loss_on`` defaulted to null meant "all, or the last step with truncate=true" (truncate
        overrode it), which is what null means now."""
        options = {**ADDED_OPTIONS, **options}
        return {**options, "loss_on": None} if options.get("loss_on") == "all" else options
