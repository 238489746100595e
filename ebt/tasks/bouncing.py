"""Bouncing balls: next-frame prediction on synthetic grayscale video (generated offline, continuous, causal).

The world-model task of "Cognitively Inspired Energy-Based World Models" (Gladstone et al., EBWM; the EBT paper's
video experiments at toy scale): an autoregressive model sees frames ``0..t`` and predicts frame ``t + 1``; each frame
is one position (``frame_size**2`` features), so the EBT's autoregressive two-stream mode thinks about the next frame
as its candidate.

Sequences: ``balls`` balls of radius ``radius`` (pixels) in a ``frame_size x frame_size`` box, ``frames`` frames.
Each ball starts at a uniform position (its centre at least ``radius + 0.5`` from every wall, so the anti-aliased
disc is always whole) and moves in a uniform direction at a uniform speed in ``speed = [lo, hi]`` pixels per frame.
Walls reflect elastically (the velocity component normal to the wall flips, the speed is kept); the position along
each axis is the exact triangle-wave fold of ``p_0 + v t`` into the allowed interval, so a ball bounces correctly at
any speed and at any point between frames. Balls do not collide with each other (they pass through one another);
overlapping discs are combined with ``max`` so pixels stay in [0, 1]. Rendering is anti-aliased from the continuous
centre (pixel ``(i, j)`` has its centre at ``(i + 0.5, j + 0.5)``; intensity ``clip(radius + 0.5 - distance, 0, 1)``),
so motion is smooth below one pixel per frame.

Splits: ``train`` / ``val`` / ``test`` as configured; ``ood``: faster balls (``ood_speed``); ``ood_balls``: one more
ball (``ood_balls``, default ``balls + 1``) at the training speed. Each batch comes from ``rng(split, index)``.

Batch: ``inputs`` (B, T-1, H*W) = frames ``0..T-2``, ``targets`` (B, T-1, H*W) = frames ``1..T-1`` (position ``t``
predicts frame ``t + 1``), ``frames`` (B, T, H, W), ``positions`` / ``velocities`` (B, T, balls, 2) (x, y in pixels).
Metrics: ``mse`` (per pixel), ``psnr`` (dB, peak 1, per predicted frame then averaged; the headline), ``psnr_last``
(the last position: the longest context), ``psnr_first`` (position 0: one frame, velocity unknown).
"""

import math
from collections.abc import Sequence

import numpy as np
import torch

from ebt.errors import ConfigError
from ebt.tasks.base import Task
from ebt.tasks.metrics import Sums, mean_sums

EXTRA_SPLITS = ("ood_balls",)


def psnr(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB (peak 1) of each frame: (..., P) pixels -> (...); an exact frame scores 100 dB."""
    mse = (prediction.float() - target.float()).square().mean(dim=-1)
    return 10 * torch.log10(1 / mse.clamp_min(1e-10))


def fold(u: np.ndarray, length: float) -> tuple[np.ndarray, np.ndarray]:
    """Reflect unbounded coordinates ``u`` into ``[0, length]`` (a triangle wave of period ``2 length``): the folded
    position and the sign (+1 / -1) that the velocity has there."""
    m = np.mod(u, 2 * length)
    forward = m <= length
    return np.where(forward, m, 2 * length - m), np.where(forward, 1.0, -1.0)


def render(positions: np.ndarray, radius: float, size: int) -> np.ndarray:
    """Anti-aliased discs: (..., balls, 2) centres (x, y) in pixels -> (..., size, size) frames in [0, 1]."""
    centres = np.arange(size) + 0.5
    dx = centres[None, :] - positions[..., 0, None, None]  # (..., balls, 1, W)
    dy = centres[:, None] - positions[..., 1, None, None]  # (..., balls, H, 1)
    discs = np.clip(radius + 0.5 - np.sqrt(dx**2 + dy**2), 0.0, 1.0)  # (..., balls, H, W)
    return discs.max(axis=-3)


def _speed_range(name: str, value: Sequence[float]) -> tuple[float, float]:
    values = [float(v) for v in value]
    if len(values) != 2 or not 0 <= values[0] <= values[1]:
        raise ConfigError(f"data.task.{name}={list(value)} must be [lo, hi] pixels per frame with 0 <= lo <= hi")
    return values[0], values[1]


class BouncingBalls(Task):
    kind = "continuous"
    valid_range = (0.0, 1.0)  # pixel intensities
    metric = "psnr"
    metric_mode = "max"
    causal = True

    def __init__(self, *, frame_size: int = 16, frames: int = 10, balls: int = 1, radius: float = 2.0,
                 speed: Sequence[float] = (0.5, 1.0), ood_speed: Sequence[float] = (1.5, 2.0),
                 ood_balls: int | None = None, seed: int = 0) -> None:
        super().__init__(seed=seed)
        if radius <= 0:
            raise ConfigError(f"data.task.radius must be > 0 pixels, got {radius}")
        if frame_size < 2 * radius + 2:
            raise ConfigError(f"data.task.frame_size={frame_size} is too small for balls of radius {radius}: a ball "
                              f"needs room to move, frame_size >= 2 * radius + 2 = {math.ceil(2 * radius + 2)}")
        if frames < 2:
            raise ConfigError(f"data.task.frames={frames} must be >= 2 (a frame to see and one to predict)")
        ood_balls = balls + 1 if ood_balls is None else ood_balls
        for name, value in (("balls", balls), ("ood_balls", ood_balls)):
            if value < 1:
                raise ConfigError(f"data.task.{name} must be >= 1, got {value}")
        self.frame_size, self.frames, self.radius = int(frame_size), int(frames), float(radius)
        self.balls, self.ood_balls = int(balls), int(ood_balls)
        self.speed, self.ood_speed = _speed_range("speed", speed), _speed_range("ood_speed", ood_speed)
        self.input_dim = self.output_dim = self.frame_size**2
        self.max_len = self.frames - 1  # positions = frames seen

    @property
    def eval_splits(self) -> tuple[str, ...]:
        return ("val", "ood", *EXTRA_SPLITS)

    @property
    def margin(self) -> float:
        """The closest a ball centre comes to a wall: the whole anti-aliased disc stays inside the frame."""
        return self.radius + 0.5

    def split_setting(self, split: str) -> tuple[int, tuple[float, float]]:
        """(number of balls, speed range) of a split."""
        if split == "ood":
            return self.balls, self.ood_speed
        if split == "ood_balls":
            return self.ood_balls, self.speed
        return self.balls, self.speed

    def trajectories(self, rng: np.random.Generator, batch_size: int, balls: int,
                     speed: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
        """Positions and velocities (B, T, balls, 2) in pixels (per frame) of freshly drawn sequences."""
        length = self.frame_size - 2 * self.margin
        start = rng.uniform(0.0, length, size=(batch_size, 1, balls, 2))
        angle = rng.uniform(0.0, 2 * math.pi, size=(batch_size, 1, balls))
        magnitude = rng.uniform(*speed, size=(batch_size, 1, balls))
        velocity = magnitude[..., None] * np.stack([np.cos(angle), np.sin(angle)], axis=-1)  # (B, 1, balls, 2)
        t = np.arange(self.frames, dtype=np.float64)[None, :, None, None]
        folded, sign = fold(start + velocity * t, length)
        return self.margin + folded, velocity * sign

    def make_batch(self, split: str, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        rng = self.rng(split, index)
        positions, velocities = self.trajectories(rng, batch_size, *self.split_setting(split))
        frames = torch.from_numpy(render(positions, self.radius, self.frame_size)).float()  # (B, T, H, W)
        flat = frames.flatten(2)  # (B, T, H*W)
        return {"inputs": flat[:, :-1].contiguous(), "targets": flat[:, 1:].contiguous(), "frames": frames,
                "positions": torch.from_numpy(positions).float(), "velocities": torch.from_numpy(velocities).float()}

    def metric_sums(self, prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> Sums:
        """``psnr``: mean over predicted frames of their PSNR; ``mse``: mean over pixels; ``psnr_last`` /
        ``psnr_first``: over sequences, of the last / first predicted frame."""
        targets = batch["targets"]
        if prediction.shape != targets.shape:
            raise ValueError(f"prediction shape {tuple(prediction.shape)} != targets {tuple(targets.shape)}")
        per_frame = psnr(prediction, targets)  # (B, T-1)
        return {"psnr": mean_sums(per_frame), "mse": mean_sums((prediction.float() - targets.float()).square()),
                "psnr_last": mean_sums(per_frame[:, -1]), "psnr_first": mean_sums(per_frame[:, 0])}

    def describe(self) -> str:
        lo, hi = self.speed
        olo, ohi = self.ood_speed
        size = f"{self.frame_size}x{self.frame_size}"
        return (f"bouncing balls: {self.balls} ball(s) of radius {self.radius:g} in {size} frames, "
                f"{self.frames} frames, speed {lo:g}-{hi:g} px/frame "
                f"(ood: speed {olo:g}-{ohi:g}; ood_balls: {self.ood_balls} balls)")
