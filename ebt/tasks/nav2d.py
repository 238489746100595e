"""Multimodal imitation (docs/ebt_policy.md): predict a point agent's next action chunk from scripted demonstrations
that go round an obstacle on either side (continuous, non-causal).

The world, the demonstrator and the batched simulator are in :mod:`ebt.tasks.nav2d_sim`. Demonstrations pass the
obstacle above or below at random (half each, with noise), so in front of it the demonstrated action chunk is
bimodal and its mean points into the obstacle: a mean-squared-error predictor averages the modes (Florence et al.,
"Implicit Behavioral Cloning", CoRL 2021), a policy that samples (diffusion) or optimises an energy (EBT-Policy) can
commit to one.

Tokens (the action-chunk form of :mod:`ebt.tasks.matrix_inverse`): ``H = horizon`` tokens, token ``k`` = the
observation (8 features, :func:`~ebt.tasks.nav2d_sim.observe`) and a one-hot step index ``e_k`` (``input_dim = 8 +
H``); target token ``k`` = the demonstrator's ``k``-th next displacement in units of ``max_step`` (``output_dim = 2``;
zeros once the goal is reached). A bidirectional backbone reads the whole chunk, so the EBT optimises it jointly.

Samples: batch ``index`` of a split is ``batch_size`` demonstrations from ``rng(split, index)`` (``train`` / ``val`` /
``test``: demo starts and a random side; ``ood``: starts off the demonstrated paths and the side the agent starts on;
none collides with the obstacle, :func:`~ebt.tasks.nav2d_sim.demonstrate`), one uniformly drawn step of each before
the goal. The batch also holds ``modes`` (B, 2, H, 2): the noise-free chunks of both sides from the same state (equal
once past the obstacle), ``mode_free`` (B, 2) bool: which of them are collision-free (the swept test of the
simulator, :func:`~ebt.tasks.nav2d_sim.chunk_collides`: once the agent is close in front of the obstacle the other
side's chunk drives through it and is no mode at all), ``bimodal`` (B,) bool (both modes collision-free and
different: the choice of side is still open) and ``side`` (B,) (+-1, the demonstration's side). A step from which
neither mode is collision-free (about 0.1 % of ``ood`` samples) is drawn again from the same demonstration.

A harder ``ood`` split (``ood_radius``, default ``None``: the training ``radius``): the ``ood`` split's world
(:meth:`Nav2D.world_for`: its batches, rollout starts, modes and collisions) has an obstacle of radius ``ood_radius``,
unseen in training (the observation does not hold the radius); train / val / test keep ``radius``. Its starts lie the
same 0.12-0.3 from that obstacle's edge, and the demonstrator keeps its ``margin`` beyond it. With a larger radius
its noise-free straight path to the waypoint clips the obstacle from the closest starts (about 7 % of them at 0.45):
demonstrations still never collide (their noise is drawn again) and ``mode_free`` marks those modes.

Metrics (offline; success in closed loop is measured by rollouts, :mod:`ebt.analysis.task_eval.policy_eval`):
``mode_mse`` (headline, lower is better: per sample the MSE to the *nearer collision-free* noise-free mode chunk; an
average of the modes is far from both, and a chunk through the obstacle scores against the mode that goes round it),
``mse`` (to the noisy demonstrated chunk, what a predictor minimises), ``bimodal_mode_mse`` (``mode_mse`` over the
``bimodal`` samples) and ``mode_mse_mean`` (the reference of predicting the mean of the two modes, over those samples).

Rollouts: :meth:`Nav2D.scenes` gives evaluation starts (stream ``rng(split, ROLLOUT_OFFSET + index)``, apart from the
training stream), :meth:`Nav2D.tokens` turns observations into the model's inputs; ``execute`` (actions carried out
per plan) is read by the evaluation.
"""

import math
from dataclasses import replace

import torch

from ebt.errors import ConfigError
from ebt.tasks.base import Task
from ebt.tasks.metrics import Sums, masked_sums, mean_sums
from ebt.tasks.nav2d_sim import (
    OBS_DIM,
    SPLIT_STARTS,
    Demonstrations,
    Scene,
    World,
    chunk_collides,
    demonstrate,
    expert_chunk,
    observe,
    offsets,
    sample_scenes,
)

ROLLOUT_OFFSET = 1_000_000  # rollout starts use rng(split, ROLLOUT_OFFSET + index): not a training batch's stream
MAX_STEP_REDRAWS = 20  # rounds of drawing a sample's step again while neither mode from it is collision-free


class Nav2D(Task):
    kind = "continuous"
    metric = "mode_mse"
    metric_mode = "min"
    causal = False

    def __init__(self, *, horizon: int = 8, execute: int = 4, radius: float = 0.3, max_step: float = 0.1,
                 goal_tol: float = 0.1, max_steps: int = 40, margin: float = 0.2, start_jitter: float = 0.05,
                 demo_noise: float = 0.3, ood_radius: float | None = None, seed: int = 0) -> None:
        super().__init__(seed=seed)
        if horizon < 1:
            raise ConfigError(f"data.task.horizon must be >= 1 (actions per chunk), got {horizon}")
        if not 1 <= execute <= horizon:
            raise ConfigError(f"data.task.execute={execute} must be in [1, horizon={horizon}] (actions carried out "
                              "per plan)")
        self.world = World(radius=radius, max_step=max_step, goal_tol=goal_tol, max_steps=max_steps, margin=margin,
                           start_jitter=start_jitter, demo_noise=demo_noise)
        if ood_radius is not None and not ood_radius > 0:
            raise ConfigError(f"data.task.ood_radius must be > 0 (the ood split's obstacle radius; null: the training "
                              f"radius), got {ood_radius}")
        self.ood_radius = ood_radius
        self.ood_world = self.world if ood_radius is None else replace(self.world, radius=float(ood_radius))
        self.horizon, self.execute = horizon, execute
        self.input_dim, self.output_dim, self.max_len = OBS_DIM + horizon, 2, horizon

    def starts(self, split: str) -> str:
        if split not in SPLIT_STARTS:
            raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_STARTS)}")
        return SPLIT_STARTS[split]

    def world_for(self, split: str) -> World:
        """The world of ``split``: ``ood`` has the obstacle radius ``ood_radius`` when set, every split else
        ``radius``."""
        return self.ood_world if self.starts(split) == "ood" else self.world

    def tokens(self, obs: torch.Tensor) -> torch.Tensor:
        """Model inputs (B, H, 8 + H) from observations (B, 8): the observation and a one-hot step index per token."""
        if obs.dim() != 2 or obs.shape[1] != OBS_DIM:
            raise ValueError(f"observations must be (B, {OBS_DIM}), got {tuple(obs.shape)}")
        b, h = obs.shape[0], self.horizon
        index = torch.eye(h, dtype=obs.dtype, device=obs.device).expand(b, h, h)
        return torch.cat([obs[:, None, :].expand(b, h, OBS_DIM), index], dim=-1).contiguous()

    def scenes(self, split: str, index: int, n: int) -> Scene:
        """``n`` evaluation starts of ``split`` for rollouts (fixed for the seed)."""
        return sample_scenes(self.rng(split, ROLLOUT_OFFSET + index), n, self.starts(split), self.world_for(split))

    def make_batch(self, split: str, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        rng = self.rng(split, index)
        starts, world = self.starts(split), self.world_for(split)
        demos = demonstrate(rng, sample_scenes(rng, batch_size, starts, world), world, random_side=starts == "demo")
        rows = torch.arange(batch_size)
        t = torch.from_numpy(rng.integers(0, 2**62, batch_size)) % demos.length.clamp_min(1)  # a step before the goal
        modes, free = self._modes(demos, t, rows, world)
        for _ in range(MAX_STEP_REDRAWS):  # a state from which both sides collide is no sample of a choice of mode
            stuck = ~free.any(dim=1)
            if not bool(stuck.any()):
                break
            redraw = torch.from_numpy(rng.integers(0, 2**62, int(stuck.sum()))) % demos.length[stuck].clamp_min(1)
            t[stuck] = redraw
            modes[stuck], free[stuck] = self._modes(demos, t[stuck], rows[stuck], world)
        if not bool(free.any(dim=1).all()):
            raise RuntimeError("nav2d: a demonstration has no step with a collision-free mode")
        scene = self._state(demos, t, rows)
        padded = torch.cat([demos.actions, torch.zeros(self.horizon, batch_size, 2, dtype=torch.float64)])
        steps = t[None, :] + torch.arange(self.horizon)[:, None]  # (H, B)
        chunk = padded[steps, rows[None, :]].transpose(0, 1)  # (B, H, 2)
        front = offsets(scene.agent, scene.goal, scene.obstacle)[0] < 0
        scale = world.max_step
        return {"inputs": self.tokens(observe(scene, world)).float(), "targets": (chunk / scale).float(),
                "modes": (modes / scale).float(), "mode_free": free, "bimodal": front & free.all(dim=1),
                "side": demos.side.float()}

    @staticmethod
    def _state(demos: Demonstrations, t: torch.Tensor, rows: torch.Tensor) -> Scene:
        return Scene(demos.agent[t, rows], demos.scene.goal[rows], demos.scene.obstacle[rows],
                     demos.prev_action[t, rows])

    def _modes(self, demos: Demonstrations, t: torch.Tensor, rows: torch.Tensor,
               world: World) -> tuple[torch.Tensor, torch.Tensor]:
        """The noise-free chunks (B, 2, H, 2) of both sides (+1, -1) from step ``t`` of demonstrations ``rows`` and
        which are collision-free (B, 2) in ``world``."""
        scene = self._state(demos, t, rows)
        modes = torch.stack([expert_chunk(scene, torch.full((len(rows),), s), self.horizon, world)
                             for s in (1.0, -1.0)], dim=1)
        free = torch.stack([~chunk_collides(scene, modes[:, k], world) for k in range(2)], dim=1)
        return modes, free

    # ----- metrics --------------------------------------------------------------------------------------------
    def sample_error(self, prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-sample MSE (B,) to the nearer collision-free noise-free mode chunk (a mode that drives through the
        obstacle is never scored against)."""
        diff = prediction.detach().float()[:, None] - batch["modes"].to(prediction.device).float()  # (B, 2, H, 2)
        error = diff.square().flatten(2).mean(-1)  # (B, 2)
        free = batch["mode_free"].to(error.device)
        return error.masked_fill(~free, math.inf).min(dim=1).values

    def metric_sums(self, prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> Sums:
        """Every metric as ``(sum, count)`` over the batch: a split's value is the total sum over the total count
        (``bimodal_mode_mse`` and ``mode_mse_mean`` count the ``bimodal`` samples only, ``mse`` every action
        component)."""
        if prediction.shape != batch["targets"].shape:
            raise ValueError(f"prediction shape {tuple(prediction.shape)} != targets {tuple(batch['targets'].shape)}")
        device = prediction.device
        mode_error = self.sample_error(prediction, batch).to(device)
        bimodal = batch["bimodal"].to(device)
        modes = batch["modes"].to(device).float()
        mean_error = (modes.mean(dim=1, keepdim=True) - modes).square().flatten(2).mean(-1).min(dim=1).values
        squared = (prediction.detach().float() - batch["targets"].to(device).float()).square()
        return {"mode_mse": mean_sums(mode_error), "mse": mean_sums(squared),
                "bimodal_mode_mse": masked_sums(mode_error, bimodal),
                "mode_mse_mean": masked_sums(mean_error, bimodal)}

    def describe(self) -> str:
        w = self.world
        ood = "" if self.ood_radius is None else f"; ood obstacle radius {self.ood_radius:g}"
        return (f"nav2d: reach the goal past an obstacle (radius {w.radius:g}), bimodal demonstrations, action "
                f"chunks of {self.horizon} (execute {self.execute}){ood}")
