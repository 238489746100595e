"""The nav2d imitation task and its simulator: bimodal demonstrations, collisions and goals, deterministic batches."""

import numpy as np
import pytest
import torch

from ebt.errors import ConfigError
from ebt.tasks.nav2d import Nav2D
from ebt.tasks.nav2d_sim import Scene, World, expert_chunk, offsets, rollout, side_of, step


def _scene(agent, goal=(1.0, 0.0), obstacle=(0.0, 0.0)) -> Scene:
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    return Scene(t(agent), t(goal), t(obstacle))


def test_demonstrations_are_bimodal_in_every_batch():
    task = Nav2D(seed=0)
    for index in range(8):
        batch = task.make_batch("train", index, 32)
        assert set(batch["side"].tolist()) == {-1.0, 1.0}, f"batch {index} has one side only"
    batch = task.make_batch("train", 0, 512)
    # in front of the obstacle the lateral part of the demonstrated chunk has both signs, half each ...
    obs = batch["inputs"][:, 0, :8].double()
    agent, obstacle, goal = obs[:, :2], obs[:, :2] + obs[:, 4:6], obs[:, :2] + obs[:, 2:4]
    along, across = offsets(agent, goal, obstacle)
    near_axis = (along < -0.3) & (across.abs() < 0.1)
    lateral = batch["targets"][near_axis][:, :, 1].sum(dim=1)
    assert near_axis.sum() > 30
    assert 0.3 < (lateral > 0).float().mean() < 0.7
    # ... so their mean points at the obstacle (lateral mean small against either mode's)
    assert lateral.mean().abs() < 0.3 * lateral.abs().mean()


def test_batches_are_deterministic_and_split_apart():
    a, b = Nav2D(seed=3).make_batch("val", 1, 16), Nav2D(seed=3).make_batch("val", 1, 16)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["inputs"], Nav2D(seed=3).make_batch("val", 2, 16)["inputs"])
    assert not torch.equal(a["inputs"], Nav2D(seed=3).make_batch("ood", 1, 16)["inputs"])
    assert a["inputs"].shape == (16, 8, 16) and a["targets"].shape == (16, 8, 2) and a["modes"].shape == (16, 2, 8, 2)


def test_collisions_and_goals_by_hand():
    world = World(max_step=2.0)
    through = step(_scene((-0.5, 0.0)), torch.tensor([[1.0, 0.0]]), world)  # both ends outside, the segment inside
    assert through.collided.item() and not through.reached.item()
    short = step(_scene((-0.5, 0.0)), torch.tensor([[0.1, 0.0]]), world)
    assert not short.collided.item()
    grazing = step(_scene((-0.5, 0.31)), torch.tensor([[1.0, 0.0]]), world)  # passes 0.31 > radius from the centre
    assert not grazing.collided.item()
    goal = step(_scene((0.85, 0.0)), torch.tensor([[0.1, 0.0]]), world)
    assert goal.reached.item() and not goal.collided.item()
    clipped = step(_scene((0.0, 1.0)), torch.tensor([[3.0, 4.0]]), World(max_step=0.5))
    assert torch.allclose(clipped.scene.agent, torch.tensor([[0.3, 1.4]], dtype=torch.float64))


def _expert_policy(task: Nav2D, side_rule):
    def policy(obs: torch.Tensor) -> torch.Tensor:
        obs = obs.double()
        scene = Scene(obs[:, :2], obs[:, :2] + obs[:, 2:4], obs[:, :2] + obs[:, 4:6])
        return side_rule(scene) / task.world.max_step

    return policy


def test_expert_succeeds_and_the_mean_of_the_modes_collides():
    task = Nav2D(seed=0)
    scenes = task.scenes("val", 0, 64)
    h, w = task.horizon, task.world
    nearer = _expert_policy(task, lambda s: expert_chunk(s, side_of(s.agent, s.goal, s.obstacle), h, w))
    out = rollout(scenes, nearer, w, execute=task.execute)
    assert out["success"].float().mean() > 0.95 and set(out["side"][out["success"]].tolist()) == {-1.0, 1.0}
    mean = _expert_policy(task, lambda s: sum(expert_chunk(s, torch.full((len(s),), v), h, w) for v in (1.0, -1.0)) / 2)
    out = rollout(scenes, mean, w, execute=task.execute)
    assert out["collision"].float().mean() > 0.9  # averaging the modes drives into the obstacle


def test_rollouts_are_deterministic_for_a_seed():
    task = Nav2D(seed=1)

    def noisy(obs):
        return torch.randn(obs.shape[0], task.horizon, 2)

    results = []
    for _ in range(2):
        torch.manual_seed(7)
        results.append(rollout(task.scenes("ood", 0, 16), noisy, task.world, execute=2))
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


def test_metrics_score_the_nearer_mode():
    task = Nav2D(seed=0)
    batch = task.make_batch("val", 0, 64)
    metrics = task.metrics(batch["modes"][:, 0], batch)
    assert metrics["mode_mse"].item() == pytest.approx(0.0, abs=1e-7)
    mean = task.metrics(batch["modes"].mean(dim=1), batch)
    assert mean["front_mode_mse"].item() == pytest.approx(mean["mode_mse_mean"].item())


@pytest.mark.parametrize(("options", "match"), [({"horizon": 0}, "horizon"), ({"horizon": 4, "execute": 5}, "execute"),
                                                ({"radius": 0.0}, "radius"), ({"max_steps": 0}, "max_steps")])
def test_bad_options_are_config_errors(options, match):
    with pytest.raises(ConfigError, match=match):
        Nav2D(**options)


def test_ood_starts_are_off_the_demonstrated_paths():
    task = Nav2D(seed=0)
    val, ood = task.scenes("val", 0, 256), task.scenes("ood", 0, 256)
    along = {name: offsets(s.agent, s.goal, s.obstacle)[0] for name, s in (("val", val), ("ood", ood))}
    assert along["val"].max() < -0.85 and along["ood"].min() > -0.7 and along["ood"].max() < -0.3
    gap = (ood.agent - ood.obstacle).norm(dim=-1) - task.world.radius
    assert gap.min() > 0.0  # never inside the obstacle
    assert np.isclose(float((ood.agent[:, 1] > 0).double().mean()), 0.5, atol=0.1)
