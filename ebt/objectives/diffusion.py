"""Diffusion objective for continuous targets: a DDPM on the target (e.g. an action chunk), epsilon prediction,
sampled by DDPM or DDIM.

Papers: Ho, Jain, Abbeel, "Denoising Diffusion Probabilistic Models" (NeurIPS 2020): the forward process
``y_t = sqrt(abar_t) y_0 + sqrt(1 - abar_t) eps``, a network trained to predict ``eps`` with the squared error, and
ancestral sampling; Song, Meng, Ermon, "Denoising Diffusion Implicit Models" (ICLR 2021): the same model sampled on a
subsequence of timesteps, ``eta = 0`` deterministic; Chi et al., "Diffusion Policy: Visuomotor Policy Learning via
Action Diffusion" (RSS 2023): a DDPM over the robot's action chunk conditioned on observations, 100 training
timesteps with the ``squaredcos_cap_v2`` (cosine) schedule, epsilon prediction, samples clipped to ``[-1, 1]``,
executed receding-horizon. Nichol, Dhariwal, "Improved DDPM" (ICML 2021): the cosine schedule.

Schedule (hand-written; ``T = train_timesteps``):

* ``cosine``: ``abar(t) = f(t) / f(0)``, ``f(t) = cos^2(((t / T) + s) / (1 + s) pi / 2)``, ``s = 0.008``; ``beta_t =
  min(1 - abar(t + 1) / abar(t), 0.999)`` (Nichol & Dhariwal; diffusers' ``squaredcos_cap_v2``);
* ``linear``: ``beta`` evenly from ``beta_start`` to ``beta_end`` (Ho et al.: 1e-4 .. 0.02 at ``T = 1000``), both
  scaled by ``1000 / T`` so a short chain still ends near pure noise (Nichol & Dhariwal's rescaling).

Denoiser: the objective's backbone, bidirectional for a non-causal task (causal for a causal one), reading per token
``encoder(inputs) + candidate_proj(y_t) + time(t)``; ``time(t)`` is the fixed sinusoidal embedding of ``t``
(Transformer style, no parameters), and a linear head maps the output to ``eps_hat`` with the target's shape. With
the same backbone and ``dim`` the parameters match the predictor (``+ candidate_proj``) and the EBT (``+ head``,
``- energy head``) to within ``2 * output_dim * dim``.

Sampling (:meth:`Diffusion.sample`): ``k`` evenly spaced timesteps ``tau_k > ... > tau_1`` from ``T - 1`` down to 0
(``k = T``: every timestep), ``y_T ~ N(0, I)``; at each, ``y0_hat = (y_t - sqrt(1 - abar_t) eps_hat) /
sqrt(abar_t)``, clipped to ``[-clip_sample, clip_sample]`` (eps re-derived from the clipped ``y0_hat``), then
Song et al.'s generalised step to the previous timestep ``t'`` (``abar_{-1} = 1``)::

    sigma = eta sqrt((1 - abar_t') / (1 - abar_t)) sqrt(1 - abar_t / abar_t')
    y_t' = sqrt(abar_t') y0_hat + sqrt(1 - abar_t' - sigma^2) eps_hat + sigma z

``sampler=ddpm`` is ``eta = 1`` (with every timestep: Ho et al.'s ancestral sampler with the posterior variance
``beta~_t``; with fewer, the strided DDPM), ``ddim`` is ``eta = 0``. Compute: one forward pass per timestep visited.

Deviations from Diffusion Policy: a transformer over the chunk's tokens with additive sinusoidal time features instead
of a 1-D conv U-Net with FiLM conditioning (so every policy shares one backbone); no EMA of the weights.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from ebt.errors import ConfigError
from ebt.objectives.base import Objective, input_encoder, output_head, output_size, task_inputs
from ebt.objectives.compiled import check_compile, compile_module
from ebt.tasks.base import Task

SCHEDULES = ("cosine", "linear")
SAMPLERS = {"ddpm": 1.0, "ddim": 0.0}


def cosine_betas(steps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule (float64, (steps,))."""
    def f(t: float) -> float:
        return math.cos((t / steps + s) / (1 + s) * math.pi / 2) ** 2

    return torch.tensor([min(1 - f(i + 1) / f(i), max_beta) for i in range(steps)], dtype=torch.float64)


def linear_betas(steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Ho et al.'s linear schedule rescaled by ``1000 / steps`` (float64, (steps,))."""
    scale = 1000 / steps
    return torch.linspace(beta_start * scale, min(beta_end * scale, 0.999), steps, dtype=torch.float64)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of integer timesteps (B,) (sin and cos halves; an odd dim ends with a zero)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / max(half, 1))
    angles = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    return F.pad(emb, (0, dim - 2 * half))


def inference_timesteps(train_timesteps: int, steps: int) -> list[int]:
    """``steps`` timesteps evenly spaced from ``train_timesteps - 1`` down to 0 (all of them when equal)."""
    if not 1 <= steps <= train_timesteps:
        raise ConfigError(f"diffusion sampling steps must be in [1, train_timesteps={train_timesteps}], got {steps}")
    if steps == 1:
        return [train_timesteps - 1]
    return sorted({round(i * (train_timesteps - 1) / (steps - 1)) for i in range(steps)}, reverse=True)


class Diffusion(Objective):
    """DDPM on a continuous task's targets (see the module docstring). Options: ``train_timesteps`` (T),
    ``schedule`` (cosine | linear, with ``beta_start`` / ``beta_end``), ``sampler`` (ddpm | ddim) and
    ``inference_steps`` (null: T) for prediction and validation, ``clip_sample`` (null: no clipping); ``compile``
    (the top-level key): ``model`` compiles the backbone, ``thinking_step`` is refused (no thinking step)."""

    samples = True

    def __init__(self, *, task: Task, backbone, dim: int, train_timesteps: int = 100, schedule: str = "cosine",
                 beta_start: float = 1e-4, beta_end: float = 0.02, sampler: str = "ddpm",
                 inference_steps: int | None = None, clip_sample: float | None = 1.0,
                 continuous_loss: str = "mse", compile: str = "none") -> None:
        super().__init__(task=task, continuous_loss=continuous_loss)
        self.compile = check_compile(compile, ("none", "model"))
        if task.kind != "continuous":
            raise ConfigError(f"model/objective=diffusion needs a continuous task (it diffuses the target vectors); "
                              f"{task.describe()} is a {task.kind} task: use model/objective=predict or ebt")
        if train_timesteps < 2:
            raise ConfigError(f"model.objective.train_timesteps must be >= 2, got {train_timesteps}")
        if schedule not in SCHEDULES:
            raise ConfigError(f"model.objective.schedule={schedule!r} is not one of {', '.join(SCHEDULES)}")
        if sampler not in SAMPLERS:
            raise ConfigError(f"model.objective.sampler={sampler!r} is not one of {', '.join(SAMPLERS)}")
        if not 0 < beta_start <= beta_end < 1:
            raise ConfigError(f"model.objective.beta_start={beta_start}, beta_end={beta_end}: need "
                              "0 < beta_start <= beta_end < 1")
        if clip_sample is not None and not clip_sample > 0:
            raise ConfigError(f"model.objective.clip_sample must be > 0 (or null: no clipping), got {clip_sample}")
        self.train_timesteps, self.sampler = train_timesteps, sampler
        self.inference_steps = train_timesteps if inference_steps is None else inference_steps
        inference_timesteps(train_timesteps, self.inference_steps)  # checks the range
        self.clip_sample = clip_sample
        betas = cosine_betas(train_timesteps) if schedule == "cosine" else \
            linear_betas(train_timesteps, beta_start, beta_end)
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0).float(), persistent=False)
        self.dim = dim
        self.encoder = input_encoder(task, dim)
        self.backbone = backbone(dim, causal=task.causal, spatial_shape=task.spatial_shape)
        self.candidate_proj = nn.Linear(output_size(task), dim, bias=False)
        nn.init.normal_(self.candidate_proj.weight, std=0.02)
        self.head = output_head(task, self.backbone.out_dim)
        if self.compile == "model":  # the denoiser is differentiated once: its backbone compiles as the predictor's
            compile_module(self.backbone)

    def denoise(self, context: torch.Tensor, y_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``eps_hat`` (B, N, F_out) for noisy targets ``y_t`` at timesteps ``t`` (B,); ``context`` = encoded inputs."""
        h = context + self.candidate_proj(y_t) + timestep_embedding(t, self.dim).to(context.dtype)[:, None, :]
        return self.head(self.backbone(h))

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        y0 = batch["targets"].to(self.candidate_proj.weight.dtype)
        b = y0.shape[0]
        t = torch.randint(0, self.train_timesteps, (b,), device=y0.device)
        eps = torch.randn_like(y0)
        abar = self.alphas_cumprod[t].reshape(b, *([1] * (y0.dim() - 1)))
        y_t = abar.sqrt() * y0 + (1 - abar).sqrt() * eps
        eps_hat = self.denoise(self.encoder(task_inputs(self.task, batch)), y_t, t)
        mask = batch.get("target_mask")
        if mask is not None:
            eps_hat, eps = eps_hat[mask], eps[mask]
        loss = F.mse_loss(eps_hat.float(), eps.float())
        return loss, {"eps_mse": loss.detach()}

    @torch.no_grad()
    def sample(self, batch: dict[str, torch.Tensor], *, steps: int | None = None, sampler: str | None = None,
               eta: float | None = None) -> torch.Tensor:
        """A sample of the targets (B, N, F_out) by ``steps`` denoising passes (default ``inference_steps``) with
        ``sampler`` (default the configured one) or an explicit ``eta``."""
        steps = self.inference_steps if steps is None else steps
        if eta is None:
            sampler = self.sampler if sampler is None else sampler
            if sampler not in SAMPLERS:
                raise ConfigError(f"sampler={sampler!r} is not one of {', '.join(SAMPLERS)}")
            eta = SAMPLERS[sampler]
        targets = batch["targets"]
        context = self.encoder(task_inputs(self.task, batch))
        y = torch.randn(targets.shape, device=targets.device, dtype=context.dtype)
        times = inference_timesteps(self.train_timesteps, steps)
        abars = self.alphas_cumprod
        for i, t in enumerate(times):
            abar = abars[t]
            abar_prev = abars[times[i + 1]] if i + 1 < len(times) else abars.new_tensor(1.0)
            eps = self.denoise(context, y, torch.full((y.shape[0],), t, device=y.device))
            y0 = (y - (1 - abar).sqrt() * eps) / abar.sqrt()
            if self.clip_sample is not None:
                y0 = y0.clamp(-self.clip_sample, self.clip_sample)
                eps = (y - abar.sqrt() * y0) / (1 - abar).sqrt()
            sigma = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).clamp_min(0).sqrt()
            y = abar_prev.sqrt() * y0 + (1 - abar_prev - sigma**2).clamp_min(0).sqrt() * eps
            if i + 1 < len(times) and float(sigma) > 0:
                y = y + sigma * torch.randn_like(y)
        return y

    def predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.sample(batch)
