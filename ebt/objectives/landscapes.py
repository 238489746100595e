"""A sequence of annealed energy landscapes, and denoising supervision of each (IRED's two training ideas).

IRED (Du, Mao, Tenenbaum, "Learning Iterative Reasoning through Energy Diffusion", ICML 2024; reference code
https://github.com/yilundu/ired_code_release at commit 9c3538d1, ``diffusion_lib/denoising_diffusion_pytorch_1d.py``)
learns K energies ``E(x, y, k)``, one per noise level ``sigma_k`` of a diffusion schedule, each trained so that its
gradient at a noised answer ``y* + sigma_k eps`` points back at the answer (``grad_y E = eps``, the denoising loss);
inference optimises on the smoothest landscape first and on sharper ones after.

Here, in the EBT's own terms:

* **landscape index**: ``landscapes=K`` adds a learned embedding per landscape to the candidate stream (zero-
  initialised, like the step embedding). Thinking step ``i`` runs on landscape ``k_i = max(K - 1 - i // m, 0)``
  with ``m = landscape_steps``: ``m`` steps on each landscape from the smoothest (``K - 1``) down, then every further
  step on the sharpest (``0``). The schedule depends on the step index only, so the first ``s`` steps of a long
  trajectory are exactly an ``s``-step trajectory (best-of-N and the thinking curve read one trajectory at several
  step counts). Train with ``steps >= K * m`` so that thinking visits every landscape.
* **denoising supervision** (``landscape_weight=w > 0``; works with ``K = 1`` too): each training batch also draws a
  landscape ``k`` uniformly, starts one thinking step at its first step index from the target-as-candidate plus
  Gaussian noise of standard deviation ``sigma_k`` and adds ``w`` times the task loss
  of that step's result: one step on landscape ``k`` must undo noise of scale ``sigma_k``. This is IRED's ``grad E =
  eps`` up to the step size (``y - alpha grad E = y*`` iff ``grad E = sigma_k eps / alpha``) with the task loss in
  place of the squared error on the gradient. The noise ladder (``landscape_schedule``): ``linear``,
  ``sigma_k = landscape_noise * (k + 1) / K`` (the sharpest landscape still sees ``landscape_noise / K``), or
  ``geometric``, ``sigma_k = landscape_noise * r^((K - 1 - k) / (K - 1))`` with ``r = landscape_min_noise`` (IRED's
  levels reach down to about 1 % of the largest: the sharpest landscape learns to stay put near the answer), or
  ``loguniform`` (one landscape only): each sample draws its own ``sigma = landscape_noise * r^u``, ``u ~ U[0, 1]``,
  so one energy learns to undo every noise scale from ``landscape_noise`` down to ``r`` times it. A step from a
  candidate near the answer must then stay near it: the answer is a fixed point of the step map, and extra steps
  stay put (Equilibrium Matching's target gradient, arXiv 2510.02300, section 3, vanishes on the data for the same
  reason).

Deviations from IRED: a linear or geometric noise ladder instead of a cosine diffusion schedule; no
accept-if-the-energy-fell test in the optimisation steps (``backtrack`` is the evaluation-time analogue); noised
candidates are not rescaled by ``sqrt(alpha_bar)``.
"""

from dataclasses import dataclass

import torch

from ebt.errors import ConfigError

SCHEDULES = ("linear", "geometric", "loguniform")


@dataclass
class Landscapes:
    """The annealed landscapes' options (``model.objective.landscape*``)."""

    count: int = 1  # K
    steps: int = 1  # m: thinking steps on each landscape before moving to a sharper one
    noise: float = 1.0  # sigma of the smoothest landscape's denoising supervision
    weight: float = 0.0  # weight of the denoising supervision; 0: off
    schedule: str = "linear"  # the noise ladder: linear | geometric | loguniform (per-sample sigma, K = 1)
    min_noise: float = 0.01  # geometric / loguniform: the smallest noise as a fraction of the largest

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ConfigError(f"model.objective.landscapes must be >= 1 (1: one energy), got {self.count}")
        if self.steps < 1:
            raise ConfigError(f"model.objective.landscape_steps must be >= 1, got {self.steps}")
        if not self.noise > 0:
            raise ConfigError(f"model.objective.landscape_noise must be > 0, got {self.noise}")
        if not self.weight >= 0:
            raise ConfigError(f"model.objective.landscape_weight must be >= 0 (0: off), got {self.weight}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"model.objective.landscape_schedule={self.schedule!r} is not one of "
                              f"{', '.join(SCHEDULES)}")
        if self.schedule == "loguniform" and self.count != 1:
            raise ConfigError(f"model.objective.landscape_schedule=loguniform draws each sample's noise from the whole "
                              f"range for one energy, but model.objective.landscapes={self.count}; use landscapes=1, "
                              "or landscape_schedule=geometric for a ladder of landscapes")
        if not 0 < self.min_noise <= 1:
            raise ConfigError(f"model.objective.landscape_min_noise must be in (0, 1], got {self.min_noise}")

    def index(self, step: int) -> int:
        """The landscape of thinking step ``step``."""
        return max(self.count - 1 - step // self.steps, 0)

    def first_step(self, landscape: int) -> int:
        """The first thinking step that runs on ``landscape``."""
        return (self.count - 1 - landscape) * self.steps

    def sigma(self, landscape: int) -> float:
        """The noise scale of ``landscape``'s denoising supervision (0: the sharpest)."""
        if self.schedule == "geometric" and self.count > 1:
            return self.noise * self.min_noise ** ((self.count - 1 - landscape) / (self.count - 1))
        return self.noise * (landscape + 1) / self.count

    def noise_like(self, landscape: int, target: torch.Tensor) -> torch.Tensor:
        """Gaussian noise for ``landscape``'s denoising supervision, shaped like ``target`` (B, ...): of scale
        :meth:`sigma`, or with ``loguniform`` of a scale drawn per sample."""
        noise = torch.randn_like(target)
        if self.schedule != "loguniform":
            return self.sigma(landscape) * noise
        u = torch.rand((target.shape[0],) + (1,) * (target.dim() - 1), device=target.device, dtype=target.dtype)
        return self.noise * self.min_noise ** u * noise
