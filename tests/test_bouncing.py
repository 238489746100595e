"""Bouncing-ball video task: physics (inside the frame, elastic bounces), layout, metrics, errors, and the EBT over
frames (causal, equal to the naive per-position forward)."""

import numpy as np
import pytest
import torch

from ebt.errors import ConfigError
from ebt.tasks.bouncing import BouncingBalls, fold, psnr, render
from ebt.training.build import build_lit_model, build_task
from tests.utils import compose_config, naive_ebt_energies, run_cli

TINY = ["data=bouncing", "data.task.frame_size=8", "data.task.radius=1.0", "data.task.frames=5", "model.dim=16",
        "model.mixer.n_heads=2", "kernels=torch"]


def naive_simulation(start: np.ndarray, velocity: np.ndarray, lo: float, hi: float, frames: int) -> np.ndarray:
    """Step by step: move, reflect off a wall once (speeds below the box width)."""
    p, v, out = start.copy(), velocity.copy(), [start.copy()]
    for _ in range(frames - 1):
        p = p + v
        over, under = p > hi, p < lo
        p = np.where(over, 2 * hi - p, np.where(under, 2 * lo - p, p))
        v = np.where(over | under, -v, v)
        out.append(p.copy())
    return np.stack(out)


def test_balls_stay_inside_the_frame_and_bounces_keep_the_speed():
    task = BouncingBalls(frame_size=12, frames=40, balls=2, radius=1.5, speed=(0.5, 1.0), ood_speed=(2.0, 3.0))
    for split in ("val", "ood", "ood_balls"):
        batch = task.make_batch(split, 0, 64)
        pos, vel = batch["positions"].double(), batch["velocities"].double()
        assert pos.min() >= task.margin - 1e-5 and pos.max() <= task.frame_size - task.margin + 1e-5
        speed = vel.norm(dim=-1)  # (B, T, balls)
        torch.testing.assert_close(speed, speed[:, :1].expand_as(speed), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(vel.abs(), vel[:, :1].abs().expand_as(vel), atol=1e-5, rtol=1e-5)
        flips = (vel[:, 1:] * vel[:, :-1] < 0).sum()
        assert flips > 10, f"{split}: too few bounces to test ({flips})"
        # a moving ball never jumps further than its speed per frame, bounce or not
        assert ((pos[:, 1:] - pos[:, :-1]).abs() <= vel[:, :1].abs() + 1e-4).all()
        # a whole disc in every frame: the rendered mass of one ball barely changes (a clipped ball would lose mass)
        one = torch.from_numpy(render(pos[:, :, :1].numpy(), task.radius, task.frame_size)).sum(dim=(-1, -2))
        assert (one.max() - one.min()) / one.mean() < 0.05
    assert batch["positions"].shape[2] == 3  # ood_balls: one more ball


def test_fold_matches_a_step_by_step_simulation_with_reflections():
    rng = np.random.default_rng(0)
    lo, hi = 2.5, 13.5
    start = rng.uniform(lo, hi, size=(50, 2))
    velocity = rng.uniform(-3, 3, size=(50, 2))
    naive = naive_simulation(start, velocity, lo, hi, 30)
    t = np.arange(30)[:, None, None]
    folded, sign = fold(start[None] - lo + velocity[None] * t, hi - lo)
    np.testing.assert_allclose(lo + folded, naive, atol=1e-9)
    np.testing.assert_array_equal(np.abs(velocity * sign), np.abs(velocity)[None].repeat(30, 0))


def test_batches_are_deterministic_and_laid_out_frame_by_frame():
    task = BouncingBalls(frame_size=10, frames=6, radius=1.0, seed=3)
    a, b = task.make_batch("train", 4, 5), task.make_batch("train", 4, 5)
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    assert not torch.equal(a["inputs"], task.make_batch("train", 5, 5)["inputs"])
    assert not torch.equal(a["inputs"], task.make_batch("val", 4, 5)["inputs"])
    assert not torch.equal(a["inputs"], BouncingBalls(frame_size=10, frames=6, radius=1.0, seed=4)
                           .make_batch("train", 4, 5)["inputs"])
    frames = a["frames"]
    assert frames.shape == (5, 6, 10, 10) and a["inputs"].shape == a["targets"].shape == (5, 5, 100)
    torch.testing.assert_close(a["inputs"], frames[:, :-1].flatten(2))  # position t sees frame t ...
    torch.testing.assert_close(a["targets"], frames[:, 1:].flatten(2))  # ... and predicts frame t + 1
    assert frames.min() >= 0 and frames.max() <= 1 and task.max_len == 5 and task.input_dim == task.output_dim == 100
    speed = {s: task.make_batch(s, 0, 64)["velocities"][:, 0].norm(dim=-1) for s in ("val", "ood")}
    assert speed["val"].max() <= 1.0 + 1e-5 and speed["ood"].min() >= 1.5 - 1e-5
    # motion is smooth: anti-aliased discs move by sub-pixel amounts
    assert len(torch.unique(frames)) > 20


def test_metrics():
    task = BouncingBalls(frame_size=8, frames=4, radius=1.0)
    batch = task.make_batch("val", 0, 4)
    perfect = task.metrics(batch["targets"], batch)
    assert perfect["mse"] == 0 and perfect["psnr"] == pytest.approx(100.0)
    off = task.metrics(batch["targets"] + 0.1, batch)
    assert off["psnr"] == pytest.approx(20.0, abs=1e-3) and off["mse"] == pytest.approx(0.01, rel=1e-4)
    assert {"psnr_last", "psnr_first"} <= set(off)
    assert psnr(torch.zeros(2, 3, 4), torch.full((2, 3, 4), 0.5)).shape == (2, 3)
    with pytest.raises(ValueError, match="shape"):
        task.metrics(batch["targets"][:, :1], batch)


@pytest.mark.parametrize(("options", "match"), [
    ({"frame_size": 5, "radius": 2.0}, r"frame_size=5 is too small for balls of radius 2.*>= 2 \* radius \+ 2 = 6"),
    ({"frames": 1}, "frames=1 must be >= 2"),
    ({"radius": 0}, "radius must be > 0"),
    ({"balls": 0}, "balls must be >= 1"),
    ({"speed": (1.0, 0.5)}, r"speed=\[1.0, 0.5\] must be \[lo, hi\]"),
    ({"ood_speed": (1.0,)}, "ood_speed"),
])
def test_bad_options_fail_clearly(options, match):
    with pytest.raises(ConfigError, match=match):
        BouncingBalls(**options)


def test_a_frame_that_does_not_fit_is_one_error_line(tmp_path):
    result = run_cli("train.py", "data=bouncing", "data.task.frame_size=4", "data.task.radius=2", cwd=tmp_path,
                     timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: data.task.frame_size=4 is too small"), result.stderr


def _ebt(tmp_path):
    cfg = compose_config([*TINY, "model/objective=ebt"], tmp_path)
    task = build_task(cfg)
    torch.manual_seed(0)
    ebt = build_lit_model(cfg, task).objective.double()
    batch = {k: v.double() for k, v in task.make_batch("val", 0, 3).items()}
    return ebt, batch


def test_the_ebt_over_frames_equals_a_naive_per_position_forward(tmp_path):
    """Candidate t (frame t+1) has the energy of a causal forward of [frame 0 .. frame t, candidate t] (last slot)."""
    ebt, batch = _ebt(tmp_path)
    assert ebt.autoregressive
    y = torch.rand(batch["targets"].shape, dtype=torch.float64)
    fast = ebt.energy_function(batch)(y, 0)  # (B, T)
    naive = naive_ebt_energies(ebt, batch["inputs"], y)
    torch.testing.assert_close(fast.double(), naive.double(), atol=1e-6, rtol=1e-5)


def test_the_ebt_over_frames_is_causal(tmp_path):
    """Changing a later frame (or candidate) changes no earlier energy nor prediction."""
    ebt, batch = _ebt(tmp_path)
    t = 1
    y = torch.rand(batch["targets"].shape, dtype=torch.float64)
    energy = ebt.energy_function(batch)(y, 0)
    changed = {k: v.clone() for k, v in batch.items()}
    changed["inputs"][:, t + 1:] = torch.rand_like(changed["inputs"][:, t + 1:])
    y2 = y.clone()
    y2[:, t + 1:] = torch.rand_like(y2[:, t + 1:])
    energy2 = ebt.energy_function(changed)(y2, 0)
    torch.testing.assert_close(energy2[:, : t + 1], energy[:, : t + 1], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(energy2[:, t + 1:], energy[:, t + 1:])
    init = torch.rand_like(y)
    before = ebt.think(batch, steps=2, init=init).candidates[-1]
    after = ebt.think(changed, steps=2, init=init).candidates[-1]
    torch.testing.assert_close(after[:, : t + 1], before[:, : t + 1], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("objective", ["ebt", "ebt_s2", "predict"])
def test_the_world_model_experiment_trains_a_step(objective, tmp_path):
    cfg = compose_config(["experiment=bouncing", f"model/objective={objective}", *TINY[1:]], tmp_path)
    task = build_task(cfg)
    model = build_lit_model(cfg, task)
    loss, logs = model.objective.loss(task.make_batch("train", 0, 4))
    loss.backward()
    assert torch.isfinite(loss) and "psnr" in logs
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
