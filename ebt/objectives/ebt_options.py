"""The EBT's options, grouped by what they are for (:class:`StepRule`, :class:`Randomisation`, :class:`Backprop`),
and the checks of the flat ``model.objective.<name>`` keys that :class:`ebt.objectives.ebt.EBT` takes."""

from dataclasses import dataclass

from torch import nn

from ebt.errors import ConfigError
from ebt_kernels import KernelBackendError, resolve_backend


@dataclass
class StepRule:
    """How one thinking step moves the candidate: ``y <- y - alpha_i * bound(dE/dy)``."""

    alpha: float = 1.0  # step size (the reference's ``mcmc_step_size``)
    learn_alpha: bool = True  # the reference's ``mcmc_step_size_learnable``
    alpha_lr_scale: float = 1.0  # lr multiplier of log alpha (the reference's ``mcmc_step_size_lr_multiplier``)
    alpha_jitter: float = 1.0  # s > 1: training draws alpha_i ~ U[alpha/s, alpha*s] per position (paper's S2 recipe)
    grad_clamp: float | None = None  # clamp dE/dy elementwise to [-c, c]
    max_change: float | None = None  # the reference's ``clamp_futures_grad_max_change``: |alpha * dE/dy| <= m

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


# Options added after checkpoints were first shared, at the defaults that leave the model as it was trained.
ADDED_OPTIONS = {"contrastive_weight": 0.0, "contrastive_negatives": "corrupt", "contrastive_corrupt": 0.05,
                 "contrastive_positive_logit": 5.0, "landscapes": 1, "landscape_steps": 1, "landscape_noise": 1.0,
                 "landscape_weight": 0.0, "compile": "none", "thinking_grad": "autograd",
                 "candidate": "simplex", "candidate_k": 64}


def logged_steps(eval_steps: int | list[int] | None, steps: int) -> list[int]:
    """Thinking steps whose metrics evaluation logs: 0..eval_steps (an int, default 2 x steps) or a list; always
    including 0 (the initial candidate) and the training step count (the headline metric)."""
    if eval_steps is None:
        eval_steps = 2 * steps
    listed = [eval_steps] if isinstance(eval_steps, int) else [int(k) for k in eval_steps]
    if any(k < 0 for k in listed):  # the int itself is checked: range(-1 + 1) would be empty and pass silently
        raise ConfigError(f"model.objective.eval_steps must be >= 0 (or a list of such step counts), got {eval_steps}")
    chosen = list(range(eval_steps + 1)) if isinstance(eval_steps, int) else listed
    return sorted({0, steps, *chosen})


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"model.objective.{name}={value!r} is not one of {', '.join(choices)}")


def checked_kernels(kernels: str) -> str:
    """The requested kernels backend, refused now (one clear line) if it cannot run on this machine."""
    try:
        resolve_backend(kernels)
    except (KernelBackendError, ValueError) as error:
        raise ConfigError(f"kernels={kernels}: {error}") from None
    return kernels


def check_functional_step(backbone: nn.Module, what: str) -> None:
    """A step under ``torch.func.grad`` (``what``): refuse the backbones it cannot run."""
    if getattr(backbone, "checkpoint", False):
        raise ConfigError(f"{what} does not combine with activation checkpointing (model.backbone.checkpoint=true); "
                          "turn one of them off")
    if any(hasattr(m, "aux_losses") for m in backbone.modules()):
        raise ConfigError(f"{what} cannot run a backbone that records auxiliary losses (MoH attention) inside "
                          "torch.func.grad; turn it off")
