"""Image denoising on scikit-learn's 8x8 digits: recover the clean image from a noisy copy (continuous task).

The denoising set-up of the EBT paper (Gladstone et al., 2025, Sec. "image denoising"), at toy scale: the input
is ``clean + N(0, noise_std^2)`` (clipped to [0, 1]), the target is the clean image, an EBT starts thinking from
the noisy image itself (``model.objective.init=input``) and a predictor regresses the clean image in one pass.

Batch: ``inputs`` (B, N, F) noisy tokens and ``targets`` (B, N, F) clean tokens, with the tokenisation of
:mod:`ebt.tasks.images` (``patch x patch`` patches, ``spatial_shape = (8 / patch, 8 / patch)``). Images and
their split come from :class:`ebt.tasks.images.Digits`. Training noise is fresh per batch (task rng); the
noise of evaluation images is fixed per image (``split_seed``, row). ``ood`` = test images with a stronger
noise ``ood_noise_std``.

Metrics: ``psnr = mean over images of 10 log10(1 / MSE)`` of the prediction clipped to [0, 1] (headline,
higher is better), ``mse`` (unclipped, per pixel) and ``psnr_noisy`` (the input's PSNR, the do-nothing baseline).
"""

import numpy as np
import torch

from ebt.errors import ConfigError
from ebt.tasks.base import Task
from ebt.tasks.images import Digits
from ebt.tasks.metrics import Sums, mean_sums


class DigitsDenoise(Task):
    kind = "continuous"
    valid_range = (0.0, 1.0)  # pixel intensities
    metric = "psnr"
    metric_mode = "max"
    causal = False

    def __init__(self, *, noise_std: float = 0.3, ood_noise_std: float = 0.5, patch: int = 1,
                 split_seed: int = 0, seed: int = 0) -> None:
        super().__init__(seed=seed)
        for name, value in (("noise_std", noise_std), ("ood_noise_std", ood_noise_std)):
            if value < 0:
                raise ConfigError(f"data.task.{name} must be >= 0, got {value}")
        self.digits = Digits(patch=patch, split_seed=split_seed, seed=seed)
        self.noise_std, self.ood_noise_std, self.split_seed = noise_std, ood_noise_std, split_seed
        self.input_dim = self.output_dim = self.digits.input_dim
        self.spatial_shape, self.max_len = self.digits.spatial_shape, self.digits.max_len

    def _noise(self, split: str, index: int, rows: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
        if split == "train":
            noise = self.rng(split, index).normal(0.0, self.noise_std, size=(len(rows), *shape))
        else:  # fixed per evaluation image, whatever the batch size
            std = self.ood_noise_std if split == "ood" else self.noise_std
            noise = np.stack([np.random.default_rng([self.split_seed, 3, int(r)]).normal(0.0, 1.0, size=shape)
                              for r in rows]) * std
        return torch.from_numpy(noise).float()

    def make_batch(self, split: str, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        source = "test" if split == "ood" else split
        if source not in self.digits.labels:
            raise ValueError(f"unknown split {split!r}; expected train, val, test or ood")
        rows = self.digits.rows(split, index, batch_size)
        clean = self.digits.pixels(source, rows)  # (B, C, H, W) in [0, 1]
        noisy = (clean + self._noise(split, index, rows, tuple(clean.shape[1:]))).clamp(0.0, 1.0)
        return {"inputs": self.digits.tokens(noisy), "targets": self.digits.tokens(clean)}

    def metric_sums(self, prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> Sums:
        """``psnr`` / ``psnr_noisy``: mean over images (of the clamped prediction / the noisy input); ``mse``: mean
        over pixels."""
        targets = batch["targets"].float()
        return {"psnr": mean_sums(sample_psnr(prediction.float().clamp(0.0, 1.0), targets)),
                "mse": mean_sums((prediction.float() - targets) ** 2),
                "psnr_noisy": mean_sums(sample_psnr(batch["inputs"].float(), targets))}

    def describe(self) -> str:
        return (f"digits denoising 8x8, noise std {self.noise_std} (ood {self.ood_noise_std}), "
                f"{self.spatial_shape[0]}x{self.spatial_shape[1]} tokens of {self.input_dim} features")


def sample_psnr(prediction: torch.Tensor, target: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """(B,): ``10 log10(peak^2 / MSE)`` of each sample; MSE floored at 1e-10 so a perfect image stays finite."""
    mse = ((prediction - target) ** 2).flatten(1).mean(dim=1).clamp_min(1e-10)
    return 10.0 * torch.log10(peak**2 / mse)


def psnr(prediction: torch.Tensor, target: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """Mean over samples of :func:`sample_psnr`."""
    return sample_psnr(prediction, target, peak).mean()
