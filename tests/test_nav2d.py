"""The nav2d imitation task and its simulator: bimodal demonstrations, collisions and goals, deterministic batches."""

import numpy as np
import pytest
import torch

from ebt.errors import ConfigError
from ebt.tasks.nav2d import Nav2D
from ebt.tasks.nav2d_sim import (
    Scene,
    World,
    demonstrate,
    expert_action,
    expert_chunk,
    offsets,
    rollout,
    sample_scenes,
    side_of,
    step,
)

SPLITS = ("train", "val", "test", "ood")


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


def test_the_expert_does_not_stall_on_its_waypoint():
    """Landing on the waypoint up to a rounding (float32 observations) must not stop the demonstrator there."""
    world = World()
    for along in (-1e-8, 0.0, 1e-8):
        scene = _scene((along, -(world.radius + world.margin)))
        action = expert_action(scene, torch.tensor([-1.0]), world)
        assert action.norm().item() == pytest.approx(world.max_step) and action[0, 0] > 0.08


def _expert_policy(task: Nav2D, side_rule):
    def policy(obs: torch.Tensor) -> torch.Tensor:
        obs = obs.double()
        scene = Scene(obs[:, :2], obs[:, :2] + obs[:, 2:4], obs[:, :2] + obs[:, 4:6])
        return side_rule(scene) / task.world.max_step

    return policy


def test_expert_succeeds_and_the_mean_of_the_modes_collides():
    task = Nav2D(seed=0)
    h, w = task.horizon, task.world
    nearer = _expert_policy(task, lambda s: expert_chunk(s, side_of(s.agent, s.goal, s.obstacle), h, w))
    for split in ("val", "ood"):  # from every start (the policy sees float32 observations: no stall at the waypoint)
        out = rollout(task.scenes(split, 0, 1024), nearer, w, execute=1)
        assert bool(out["success"].all()), f"{split}: the noise-free expert fails from {int((~out['success']).sum())}"
        assert set(out["side"][out["success"]].tolist()) == {-1.0, 1.0}
    mean = _expert_policy(task, lambda s: sum(expert_chunk(s, torch.full((len(s),), v), h, w) for v in (1.0, -1.0)) / 2)
    out = rollout(task.scenes("val", 0, 64), mean, w, execute=task.execute)
    assert out["collision"].float().mean() > 0.9  # averaging the modes drives into the obstacle


def _collides(scene: Scene, chunk: torch.Tensor, world: World) -> torch.Tensor:
    """(B,) bool, by hand with the simulator's swept step: displacements (B, H, 2) hit the obstacle before the goal."""
    hit, active = torch.zeros(len(scene), dtype=torch.bool), torch.ones(len(scene), dtype=torch.bool)
    for k in range(chunk.shape[1]):
        result = step(scene, chunk[:, k], world)
        hit |= active & result.collided
        keep = active[:, None]
        scene = Scene(torch.where(keep, result.scene.agent, scene.agent), scene.goal, scene.obstacle)
        active &= ~(result.reached | result.collided)
    return hit


@pytest.mark.parametrize("split", SPLITS)
def test_no_demonstration_collides(split):
    """57 of 1000 ood demonstrations used to pass through the obstacle."""
    task = Nav2D(seed=0)
    w = task.world
    for index in range(4):
        rng = task.rng(split, index)
        demos = demonstrate(rng, sample_scenes(rng, 250, task.starts(split), w), w,
                            random_side=task.starts(split) == "demo")
        goal, obstacle = demos.scene.goal, demos.scene.obstacle
        for t in range(demos.actions.shape[0]):
            running = t < demos.length
            hit = step(Scene(demos.agent[t], goal, obstacle), demos.actions[t], w).collided & running
            assert not bool(hit.any()), f"{split} batch {index}: {int(hit.sum())} demonstration(s) collide at step {t}"
        assert bool((demos.length < w.max_steps).all())  # and every one reaches the goal


@pytest.mark.parametrize("split", SPLITS)
def test_mode_mse_accepts_only_collision_free_modes(split):
    """The other side's noise-free chunk, through the obstacle once the agent is past the point where
    it can turn, used to be scored as a perfect prediction."""
    task = Nav2D(seed=0)
    w = task.world
    batch = task.make_batch(split, 0, 256)
    obs = batch["inputs"][:, 0, :8].double()
    scene = Scene(obs[:, :2], obs[:, :2] + obs[:, 2:4], obs[:, :2] + obs[:, 4:6], obs[:, 6:8] * w.max_step)
    collides = torch.stack([_collides(scene, batch["modes"][:, k].double() * w.max_step, w) for k in range(2)], 1)
    assert 0.2 < collides.any(dim=1).float().mean() < 0.5  # many samples have a colliding mode ...
    assert not bool(collides.all(dim=1).any())  # ... none has only colliding ones
    for k in range(2):  # predicting one side's chunk: perfect where it is collision-free, else scored against the other
        error = task.sample_error(batch["modes"][:, k], batch)
        assert bool((error[~collides[:, k]] < 1e-6).all())
        other = (batch["modes"][:, k] - batch["modes"][:, 1 - k]).square().flatten(1).mean(1)
        assert torch.allclose(error[collides[:, k]], other[collides[:, k]])
        assert bool((error[collides[:, k]] > 0.05).all())
    through = collides.any(dim=1)  # a chunk through the obstacle is never a perfect prediction
    worst = torch.where(collides[:, 0, None, None], batch["modes"][:, 0], batch["modes"][:, 1])
    assert float(task.metrics(worst[through], {k: v[through] for k, v in batch.items()})["mode_mse"]) > 0.05


def test_ood_start_distances_lie_in_the_documented_range():
    """With the obstacle's jitter the gap to its edge used to range over 0.079-0.358, not 0.12-0.3."""
    task = Nav2D(seed=0)
    for index in range(3):
        ood = task.scenes("ood", index, 2000)
        gap = (ood.agent - ood.obstacle).norm(dim=-1) - task.world.radius
        along, across = offsets(ood.agent, ood.goal, ood.obstacle)
        assert 0.12 - 1e-9 <= gap.min() < 0.125 and 0.295 < gap.max() <= 0.3 + 1e-9
        assert across.abs().max() <= 0.12 + 1e-9 and bool((along < 0).all())
    batch = task.make_batch("ood", 0, 512)  # demonstrations start there too
    starts = sample_scenes(task.rng("ood", 0), 512, "ood", task.world)
    gap = (starts.agent - starts.obstacle).norm(dim=-1) - task.world.radius
    assert gap.min() >= 0.12 - 1e-9 and gap.max() <= 0.3 + 1e-9 and batch["inputs"].shape[0] == 512


def test_rollouts_are_deterministic_for_a_seed():
    task = Nav2D(seed=1)

    def noisy(obs):
        return torch.randn(obs.shape[0], task.horizon, 2)

    results = []
    for _ in range(2):
        torch.manual_seed(7)
        results.append(rollout(task.scenes("ood", 0, 16), noisy, task.world, execute=2))
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


def test_metrics_score_the_nearer_free_mode_and_are_ratios_of_sums():
    task = Nav2D(seed=0)
    batch = task.make_batch("val", 0, 64)
    free = batch["mode_free"]
    nearer_free = torch.where(free[:, 0, None, None], batch["modes"][:, 0], batch["modes"][:, 1])
    metrics = task.metrics(nearer_free, batch)
    assert metrics["mode_mse"].item() == pytest.approx(0.0, abs=1e-7)
    assert batch["bimodal"].any() and not (batch["bimodal"] & ~free.all(dim=1)).any()
    mean = task.metrics(batch["modes"].mean(dim=1), batch)
    assert mean["bimodal_mode_mse"].item() == pytest.approx(mean["mode_mse_mean"].item())
    sums = task.metric_sums(batch["modes"].mean(dim=1), batch)
    assert sums["bimodal_mode_mse"][1].item() == batch["bimodal"].sum().item()
    assert all(torch.allclose(mean[k], total / count) for k, (total, count) in sums.items())


@pytest.mark.parametrize(("options", "match"), [({"horizon": 0}, "horizon"), ({"horizon": 4, "execute": 5}, "execute"),
                                                ({"radius": 0.0}, "radius"), ({"max_steps": 0}, "max_steps"),
                                                ({"ood_radius": 0.0}, "ood_radius"),
                                                ({"ood_radius": -0.45}, "ood_radius"),
                                                ({"ood_radius": float("nan")}, "ood_radius")])
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


def test_the_default_ood_split_is_unchanged():
    """Without ood_radius the ood batches are those from before the option (sums pinned from that code)."""
    task = Nav2D(seed=0)
    assert task.world_for("ood") is task.world
    assert task.describe() == ("nav2d: reach the goal past an obstacle (radius 0.3), bimodal demonstrations, action "
                               "chunks of 8 (execute 4)")
    batch = task.make_batch("ood", 0, 64)
    sums = {k: float(v.double().sum()) for k, v in batch.items()}
    assert sums["inputs"] == pytest.approx(1219.6985365998698, rel=1e-6)
    assert sums["targets"] == pytest.approx(279.125870667398, rel=1e-6)
    assert sums["modes"] == pytest.approx(495.8439531738404, rel=1e-6)
    assert (sums["mode_free"], sums["bimodal"], sums["side"]) == (110.0, 4.0, 12.0)
    same = Nav2D(seed=0, ood_radius=0.3).make_batch("ood", 0, 64)  # the training radius, given: the same split
    assert all(torch.equal(batch[k], same[k]) for k in batch)


def test_ood_radius_enlarges_the_ood_obstacle_only():
    task, default = Nav2D(seed=0, ood_radius=0.45), Nav2D(seed=0)
    ood = task.world_for("ood")
    assert ood.radius == 0.45 and ood.margin == task.world.margin and ood.max_step == task.world.max_step
    assert all(task.world_for(split) is task.world and task.world.radius == 0.3 for split in ("train", "val", "test"))
    assert "ood obstacle radius 0.45" in task.describe()
    for split in ("train", "val", "test"):  # the other splits' batches and rollout starts are unchanged
        a, b = task.make_batch(split, 0, 64), default.make_batch(split, 0, 64)
        assert all(torch.equal(a[k], b[k]) for k in a), split
        assert torch.equal(task.scenes(split, 0, 64).agent, default.scenes(split, 0, 64).agent)
    assert not torch.equal(task.make_batch("ood", 0, 64)["inputs"], default.make_batch("ood", 0, 64)["inputs"])
    with pytest.raises(ValueError, match="unknown split"):
        task.world_for("dev")


def test_ood_radius_demonstrations_and_modes_go_round_the_larger_obstacle():
    task = Nav2D(seed=0, ood_radius=0.45)
    w = task.world_for("ood")
    for index in range(2):  # demonstrations: collision-free against the larger obstacle, every one reaches the goal
        rng = task.rng("ood", index)
        demos = demonstrate(rng, sample_scenes(rng, 250, "ood", w), w, random_side=False)
        for t in range(demos.actions.shape[0]):
            hit = step(Scene(demos.agent[t], demos.scene.goal, demos.scene.obstacle), demos.actions[t], w).collided
            assert not bool((hit & (t < demos.length)).any()), f"batch {index}: a demonstration collides at step {t}"
        assert bool((demos.length < w.max_steps).all())
    batch = task.make_batch("ood", 0, 256)
    obs = batch["inputs"][:, 0, :8].double()
    scene = Scene(obs[:, :2], obs[:, :2] + obs[:, 2:4], obs[:, :2] + obs[:, 4:6], obs[:, 6:8] * w.max_step)
    assert bool(((scene.agent - scene.obstacle).norm(dim=-1) > 0.45).all())
    assert not bool(_collides(scene, batch["targets"].double() * w.max_step, w).any())  # no demonstrated chunk
    collides = torch.stack([_collides(scene, batch["modes"][:, k].double() * w.max_step, w) for k in range(2)], 1)
    assert torch.equal(batch["mode_free"], ~collides)  # mode_free is against the larger obstacle ...
    assert bool(batch["mode_free"].any(dim=1).all())  # ... with a collision-free mode in every sample
    small = torch.stack([_collides(scene, batch["modes"][:, k].double() * w.max_step, task.world) for k in range(2)], 1)
    assert bool((collides & ~small).any())  # some modes miss the training obstacle but not the larger one


def test_ood_radius_rollout_starts_face_the_larger_obstacle():
    task = Nav2D(seed=0, ood_radius=0.45)
    w = task.world_for("ood")
    ood = task.scenes("ood", 0, 2000)
    gap = (ood.agent - ood.obstacle).norm(dim=-1) - 0.45  # the documented 0.12-0.3 from the larger obstacle's edge
    assert 0.12 - 1e-9 <= gap.min() < 0.125 and 0.295 < gap.max() <= 0.3 + 1e-9
    nearer = _expert_policy(task, lambda s: expert_chunk(s, side_of(s.agent, s.goal, s.obstacle), task.horizon, w))
    out = rollout(task.scenes("ood", 0, 1024), nearer, w, execute=1)
    # the noise-free expert clips the larger obstacle from the closest starts only (module docstring: about 7 %)
    assert 0.03 < out["collision"].float().mean() < 0.12 and not bool(out["timeout"].any())
