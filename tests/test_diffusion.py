"""The diffusion objective: schedules, timesteps, exact samplers with an oracle denoiser, config errors, parameters."""

import math

import pytest
import torch

from alt_arch.utils import num_params
from ebt.errors import ConfigError
from ebt.objectives.diffusion import Diffusion, cosine_betas, inference_timesteps, linear_betas
from ebt.training.build import build_lit_model, build_task
from tests.utils import compose_config

TINY = ["experiment=nav2d", "model.dim=16", "model.backbone.n_layers=1", "data.batch_size=8"]


def _diffusion(tmp_path, *overrides):
    cfg = compose_config([*TINY, "model/objective=diffusion", *overrides], tmp_path)
    task = build_task(cfg)
    return build_lit_model(cfg, task).objective, task


@pytest.mark.parametrize("betas", [cosine_betas(100), linear_betas(100), linear_betas(1000)])
def test_schedules_run_from_clean_to_noise(betas):
    abar = torch.cumprod(1 - betas, 0)
    assert ((betas > 0) & (betas < 1)).all() and (abar[1:] < abar[:-1]).all()
    assert abar[0] > 0.99 and abar[-1] < 0.01


def test_inference_timesteps():
    assert inference_timesteps(100, 100) == list(range(99, -1, -1))
    assert inference_timesteps(100, 1) == [99]
    assert inference_timesteps(100, 5)[0] == 99 and inference_timesteps(100, 5)[-1] == 0
    with pytest.raises(ConfigError, match="sampling steps"):
        inference_timesteps(100, 101)


def _oracle(objective: Diffusion, modes: torch.Tensor):
    """The exact epsilon of data = one of ``modes`` (K, N, F) with equal probability."""
    def denoise(context, y_t, t):
        abar = objective.alphas_cumprod[t].reshape(-1, 1, 1, 1)
        dist = (y_t[:, None] - abar.sqrt() * modes[None]).square().flatten(2).sum(-1)  # (B, K)
        weights = torch.softmax(-dist / (2 * (1 - abar.flatten()[:, None])), dim=1)
        mean = (weights[:, :, None, None] * modes[None]).sum(1)
        return (y_t - abar.flatten()[:, None, None].sqrt() * mean) / (1 - abar.flatten()[:, None, None]).sqrt()

    objective.denoise = denoise


@pytest.mark.parametrize(("sampler", "steps"), [("ddpm", 100), ("ddim", 100), ("ddim", 10), ("ddpm", 20)])
def test_oracle_denoiser_keeps_both_modes(tmp_path, sampler, steps):
    objective, task = _diffusion(tmp_path, "model.objective.clip_sample=null")
    mode = torch.full((task.horizon, 2), 0.5)
    mode[:, 1] = torch.linspace(-0.8, 0.8, task.horizon)
    _oracle(objective, torch.stack([mode, -mode]))
    torch.manual_seed(0)
    batch = task.make_batch("val", 0, 64)
    sample = objective.sample(batch, steps=steps, sampler=sampler)
    error = torch.stack([(sample - m).square().flatten(1).mean(1) for m in (mode, -mode)], 1)  # (B, 2)
    assert error.min(1).values.max() < 1e-2  # every sample lands on a mode, not between them
    assert 0.2 < (error[:, 0] < error[:, 1]).float().mean() < 0.8  # both modes drawn


def test_ddpm_step_is_the_posterior():
    abar = torch.cumprod(1 - cosine_betas(100), 0)
    t = 50
    beta = 1 - abar[t] / abar[t - 1]
    posterior = (1 - abar[t - 1]) / (1 - abar[t]) * beta  # Ho et al.'s beta~_t
    sigma2 = (1 - abar[t - 1]) / (1 - abar[t]) * (1 - abar[t] / abar[t - 1])  # the sampler's, eta = 1
    assert math.isclose(float(sigma2), float(posterior), rel_tol=1e-12)


def test_trains_a_step_and_samples(tmp_path):
    objective, task = _diffusion(tmp_path, "model.objective.inference_steps=3")
    batch = task.make_batch("train", 0, 8)
    loss, logs = objective.loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and "eps_mse" in logs
    assert objective.predict(batch).shape == batch["targets"].shape
    assert objective.predict(batch).abs().max() <= 1.0  # clip_sample


@pytest.mark.parametrize(("override", "match"), [
    ("data=addition", "needs a continuous task"), ("data=digits", "needs a continuous task"),
    ("model.objective.schedule=quadratic", "schedule"), ("model.objective.sampler=euler", "sampler"),
    ("model.objective.inference_steps=500", "sampling steps"), ("model.objective.train_timesteps=1", "train_timesteps"),
])
def test_bad_options_are_config_errors(tmp_path, override, match):
    with pytest.raises(ConfigError, match=match):
        _diffusion(tmp_path, override)


def test_parameters_match_the_other_policies(tmp_path):
    counts = {}
    for objective in ("predict", "ebt", "diffusion"):
        cfg = compose_config([*TINY, f"model/objective={objective}"], tmp_path)
        counts[objective] = num_params(build_lit_model(cfg, build_task(cfg)).objective)
    assert max(counts.values()) - min(counts.values()) <= 2 * 2 * 16 + 2, counts
