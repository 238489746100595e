"""A batched 2-D navigation world and its scripted, bimodal demonstrator (the world of :mod:`ebt.tasks.nav2d`).

A point agent moves in the plane toward a goal past a disc obstacle. All tensors are batched, float64, on the CPU:
``(B, 2)`` positions, one episode per row, so hundreds of episodes step together.

* **Scenes** (:func:`sample_scenes`): ``demo`` starts (the ``train`` / ``val`` splits) put the agent near ``(-1, 0)``,
  the goal near ``(1, 0)`` and the obstacle near the origin, each jittered uniformly by ``start_jitter``, so the
  obstacle blocks the straight line. ``ood`` starts put the agent where a failed action sequence leaves it, off the
  demonstrated paths: right in front of the (jittered) obstacle, placed relative to it in its obstacle -> goal frame
  (:data:`OOD_GAP`: 0.12 to 0.3 from its edge, :data:`OOD_ACROSS`: within 0.12 of its axis, so 0.395 to 0.6 before
  its centre with the default radius) with a random previous action; the demonstrations pass 0.5 before the
  obstacle about 0.25 off the axis (with the defaults), and from there a policy must turn at once.
* **Dynamics** (:func:`step`): the agent adds a displacement clipped to length ``max_step``. A step *collides* when the
  segment it sweeps comes closer than ``radius`` to the obstacle's centre (not only its end point), and *reaches* the
  goal when it ends within ``goal_tol`` of it; either ends the episode (collision first), as does ``max_steps``.
* **Demonstrator** (:func:`expert_action`): given a side ``s = +-1`` it heads for the waypoint
  ``obstacle + s (radius + margin) n`` (``n`` the unit normal of the obstacle->goal axis) until it is level with the
  obstacle along that axis (within :data:`LEVEL_TOL`, so landing on the waypoint up to rounding counts), then for the
  goal, at full speed. Demonstrations (:func:`demonstrate`) draw ``s`` at random, half each (``ood``: the side the
  agent starts on, the one a sensible expert takes from there), and add Gaussian noise of ``demo_noise * max_step``
  per component to every action: in front of the obstacle the action distribution is bimodal and its mean points
  into the obstacle. A demonstration is never one that collides: the
  noise of a colliding one is drawn again (same start, same side) until it does not, so the start distribution and
  the sides are those drawn. :func:`chunk_collides` checks a chunk of displacements with the same swept test.
* **Rollouts** (:func:`rollout`): a policy maps observations to an action chunk of ``H`` displacements (in units of
  ``max_step``); the first ``execute`` are carried out, then it plans again (receding horizon). Per episode:
  success (goal reached without collision), collision, side (the sign of the agent's offset from the axis where it
  passes the obstacle: +1 above, -1 below), path length, and the number of policy calls.

Observation (:func:`observe`, 8 features): agent position, goal - agent, obstacle - agent, previous action / max_step.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from ebt.errors import ConfigError

OBS_DIM = 8
SPLIT_STARTS = {"train": "demo", "val": "demo", "test": "demo", "ood": "ood"}
OOD_GAP = (0.12, 0.3)  # ood starts: distance from the obstacle's edge (uniform)
OOD_ACROSS = 0.12  # ood starts: largest offset from the obstacle -> goal axis (uniform in [-0.12, 0.12])
LEVEL_TOL = 1e-6  # the demonstrator heads for its waypoint while more than this before the obstacle (along its axis)
MAX_REDRAWS = 100  # rounds of drawing a colliding demonstration's noise again before giving up (an error)


@dataclass(frozen=True)
class World:
    """Geometry and dynamics of the navigation world (lengths in world units)."""

    radius: float = 0.3  # obstacle radius
    max_step: float = 0.1  # longest displacement per step
    goal_tol: float = 0.1  # the goal is reached within this distance
    max_steps: int = 40  # episode length limit (the straight demo path takes about 25 steps)
    margin: float = 0.2  # the demonstrator's clearance beyond the radius at its waypoint
    start_jitter: float = 0.05  # uniform jitter of the demo starts' agent, goal and obstacle positions
    demo_noise: float = 0.3  # demonstration action noise, per component, in units of max_step

    def __post_init__(self) -> None:
        for name in ("radius", "max_step", "goal_tol", "margin"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"data.task.{name} must be > 0, got {getattr(self, name)}")
        for name in ("start_jitter", "demo_noise"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"data.task.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_steps < 1:
            raise ConfigError(f"data.task.max_steps must be >= 1, got {self.max_steps}")


@dataclass
class Scene:
    """One batch of episodes' state, (B, 2) float64 tensors."""

    agent: torch.Tensor
    goal: torch.Tensor
    obstacle: torch.Tensor
    prev_action: torch.Tensor | None = None  # the last displacement; zeros when not given

    def __post_init__(self) -> None:
        if self.prev_action is None:
            self.prev_action = torch.zeros_like(self.agent)

    def __len__(self) -> int:
        return self.agent.shape[0]


def sample_scenes(rng: np.random.Generator, n: int, starts: str, world: World) -> Scene:
    """``n`` scenes with ``demo`` or ``ood`` starts (see the module docstring)."""
    jitter = world.start_jitter
    goal = np.array([1.0, 0.0]) + rng.uniform(-jitter, jitter, (n, 2))
    obstacle = rng.uniform(-jitter, jitter, (n, 2))
    if starts == "demo":
        agent = np.array([-1.0, 0.0]) + rng.uniform(-jitter, jitter, (n, 2))
        prev = np.zeros((n, 2))
    elif starts == "ood":  # in the obstacle -> goal frame of the jittered obstacle: the gap to its edge is exact
        gap, across = rng.uniform(*OOD_GAP, n), rng.uniform(-OOD_ACROSS, OOD_ACROSS, n)
        along = -np.sqrt((world.radius + gap) ** 2 - across**2)
        d = goal - obstacle
        d = d / np.linalg.norm(d, axis=1, keepdims=True)
        normal = np.stack([-d[:, 1], d[:, 0]], axis=1)
        agent = obstacle + along[:, None] * d + across[:, None] * normal
        angle = rng.uniform(0, 2 * np.pi, n)
        prev = world.max_step * rng.uniform(0, 1, (n, 1)) * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    else:
        raise ConfigError(f"unknown starts {starts!r}; expected demo or ood")
    t = torch.from_numpy
    return Scene(t(agent), t(goal), t(obstacle), t(prev))


def take(scene: Scene, rows: torch.Tensor) -> Scene:
    """The episodes ``rows`` (a (B,) bool mask or indices) of ``scene``."""
    return Scene(scene.agent[rows], scene.goal[rows], scene.obstacle[rows], scene.prev_action[rows])


def axes(goal: torch.Tensor, obstacle: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit vector along obstacle -> goal and its normal (rotated +90 degrees), each (B, 2)."""
    d = goal - obstacle
    d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    return d, torch.stack([-d[:, 1], d[:, 0]], dim=-1)


def offsets(agent: torch.Tensor, goal: torch.Tensor, obstacle: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The agent's (along, across) coordinates relative to the obstacle, in the obstacle -> goal frame, each (B,)."""
    d, n = axes(goal, obstacle)
    rel = agent - obstacle
    return (rel * d).sum(-1), (rel * n).sum(-1)


def side_of(agent: torch.Tensor, goal: torch.Tensor, obstacle: torch.Tensor) -> torch.Tensor:
    """+1 where the agent is on the normal's side of the axis (or on it), -1 otherwise; (B,) float64."""
    across = offsets(agent, goal, obstacle)[1]
    return torch.where(across >= 0, 1.0, -1.0).to(torch.float64)


def clip_norm(action: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Displacements (..., 2) scaled down to length at most ``max_norm``."""
    norm = action.norm(dim=-1, keepdim=True)
    return action * (max_norm / norm.clamp_min(max_norm))


def expert_action(scene: Scene, side: torch.Tensor, world: World) -> torch.Tensor:
    """The noise-free demonstrator's displacement (B, 2) for sides ``side`` (B,) of +-1."""
    d, n = axes(scene.goal, scene.obstacle)
    along = ((scene.agent - scene.obstacle) * d).sum(-1, keepdim=True)
    waypoint = scene.obstacle + side[:, None] * (world.radius + world.margin) * n
    target = torch.where(along < -LEVEL_TOL, waypoint, scene.goal)  # at the waypoint: on (no stall on a rounding)
    return clip_norm(target - scene.agent, world.max_step)


def segment_distance(start: torch.Tensor, end: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
    """Distance (B,) from ``point`` to the segment ``start -> end`` (each (B, 2))."""
    seg = end - start
    length2 = (seg * seg).sum(-1).clamp_min(1e-18)
    u = (((point - start) * seg).sum(-1) / length2).clamp(0.0, 1.0)
    return (start + u[:, None] * seg - point).norm(dim=-1)


@dataclass
class StepResult:
    scene: Scene
    collided: torch.Tensor  # (B,) bool: this step's segment entered the obstacle
    reached: torch.Tensor  # (B,) bool: this step ended within goal_tol of the goal
    moved: torch.Tensor  # (B,) the length actually moved


def step(scene: Scene, action: torch.Tensor, world: World) -> StepResult:
    """Move every agent by its displacement ``action`` (B, 2), clipped to ``max_step``."""
    action = clip_norm(action.to(torch.float64), world.max_step)
    end = scene.agent + action
    collided = segment_distance(scene.agent, end, scene.obstacle) < world.radius
    reached = (end - scene.goal).norm(dim=-1) < world.goal_tol
    return StepResult(replace(scene, agent=end, prev_action=action), collided, reached, action.norm(dim=-1))


def observe(scene: Scene, world: World) -> torch.Tensor:
    """Observation features (B, 8): agent, goal - agent, obstacle - agent, previous action / max_step."""
    return torch.cat([scene.agent, scene.goal - scene.agent, scene.obstacle - scene.agent,
                      scene.prev_action / world.max_step], dim=-1)


def _select(mask: torch.Tensor, new: Scene, old: Scene) -> Scene:
    m = mask[:, None]
    return Scene(torch.where(m, new.agent, old.agent), old.goal, old.obstacle,
                 torch.where(m, new.prev_action, old.prev_action))


def chunk_collides(scene: Scene, chunk: torch.Tensor, world: World) -> torch.Tensor:
    """(B,) bool: carrying out the displacements ``chunk`` (B, H, 2) (world units) from ``scene`` collides with the
    obstacle (the swept test of :func:`step`) before it reaches the goal."""
    hit, active = torch.zeros(len(scene), dtype=torch.bool), torch.ones(len(scene), dtype=torch.bool)
    for k in range(chunk.shape[1]):
        result = step(scene, chunk[:, k], world)
        hit = hit | (active & result.collided)
        scene = _select(active, result.scene, scene)
        active = active & ~result.reached & ~result.collided
    return hit


def expert_chunk(scene: Scene, side: torch.Tensor, horizon: int, world: World) -> torch.Tensor:
    """The noise-free demonstrator's next ``horizon`` actions (B, H, 2) from ``scene``, zeros once at the goal."""
    actions, active = [], torch.ones(len(scene), dtype=torch.bool)
    for _ in range(horizon):
        action = expert_action(scene, side, world) * active[:, None]
        result = step(scene, action, world)
        scene = _select(active, result.scene, scene)
        active = active & ~result.reached
        actions.append(action)
    return torch.stack(actions, dim=1)


@dataclass
class Demonstrations:
    """Demonstrated episodes: states (T+1, B, ...) and actions (T, B, 2) with the step each reached the goal."""

    agent: torch.Tensor  # (T+1, B, 2)
    prev_action: torch.Tensor  # (T+1, B, 2)
    actions: torch.Tensor  # (T, B, 2), zeros after the goal
    length: torch.Tensor  # (B,) int64: steps taken until the goal (T when not reached)
    scene: Scene  # the starts
    side: torch.Tensor  # (B,) the side each went round
    collided: torch.Tensor  # (B,) bool: some step before the goal entered the obstacle (never, from demonstrate)


def _demonstrate_once(rng: np.random.Generator, scene: Scene, side: torch.Tensor, world: World) -> Demonstrations:
    n, steps = len(scene), world.max_steps
    noise = torch.from_numpy(rng.standard_normal((steps, n, 2))) * world.demo_noise * world.max_step
    agents, prevs, actions = [scene.agent], [scene.prev_action], []
    active = torch.ones(n, dtype=torch.bool)
    collided = torch.zeros(n, dtype=torch.bool)
    length = torch.full((n,), steps, dtype=torch.int64)
    current = scene
    for t in range(steps):
        action = clip_norm(expert_action(current, side, world) + noise[t], world.max_step) * active[:, None]
        result = step(current, action, world)
        collided = collided | (active & result.collided)
        current = _select(active, result.scene, current)
        newly = active & result.reached
        length = torch.where(newly, t + 1, length)
        active = active & ~result.reached
        agents.append(current.agent)
        prevs.append(current.prev_action)
        actions.append(action)
    return Demonstrations(torch.stack(agents), torch.stack(prevs), torch.stack(actions), length, scene, side, collided)


def demonstrate(rng: np.random.Generator, scene: Scene, world: World, *, random_side: bool) -> Demonstrations:
    """Noisy scripted demonstrations from ``scene``: side random (half each) or the side the agent starts on. None
    collides: a colliding one's noise is drawn again (same start and side) up to :data:`MAX_REDRAWS` times (a
    ``RuntimeError`` after that: the noise-free expert itself would collide from that start)."""
    side = torch.from_numpy(rng.choice([-1.0, 1.0], len(scene))) if random_side else \
        side_of(scene.agent, scene.goal, scene.obstacle)
    demos = _demonstrate_once(rng, scene, side, world)
    for _ in range(MAX_REDRAWS):
        bad = demos.collided.clone()
        if not bool(bad.any()):
            return demos
        again = _demonstrate_once(rng, take(scene, bad), side[bad], world)
        for name in ("agent", "prev_action", "actions"):
            getattr(demos, name)[:, bad] = getattr(again, name)
        demos.length[bad], demos.collided[bad] = again.length, again.collided
    raise RuntimeError(f"{int(demos.collided.sum())} demonstration(s) still collide after {MAX_REDRAWS} redraws of "
                       "their noise: the noise-free expert collides from those starts")


Policy = Callable[[torch.Tensor], torch.Tensor]  # observations (B, 8) -> action chunk (B, H, 2) in max_step units


def rollout(scene: Scene, policy: Policy, world: World, *, execute: int,
            on_plan: Callable[[int, torch.Tensor], None] | None = None) -> dict[str, torch.Tensor]:
    """Run ``policy`` receding-horizon from ``scene``: plan a chunk, execute its first ``execute`` actions, repeat.

    Returns per episode (B,): ``success``, ``collision``, ``timeout`` (bool), ``side`` (+-1: where it passed the
    obstacle), ``path_length``, ``steps`` (environment steps taken) and ``plans`` (policy calls while still running).
    ``on_plan(call_index, active_mask)`` is called before each plan (the gated policy counts compute with it)."""
    if execute < 1:
        raise ConfigError(f"execute must be >= 1 (actions carried out per plan), got {execute}")
    n = len(scene)
    done = torch.zeros(n, dtype=torch.bool)
    collision, success = done.clone(), done.clone()
    path = torch.zeros(n, dtype=torch.float64)
    steps_taken = torch.zeros(n, dtype=torch.int64)
    plans = torch.zeros(n, dtype=torch.int64)
    best_along = torch.full((n,), float("inf"), dtype=torch.float64)
    side = side_of(scene.agent, scene.goal, scene.obstacle)
    t, call = 0, 0
    while t < world.max_steps and not bool(done.all()):
        if on_plan is not None:
            on_plan(call, ~done)
        chunk = policy(observe(scene, world).float()).detach().to(torch.float64)
        if chunk.dim() != 3 or chunk.shape[0] != n or chunk.shape[-1] != 2:
            raise ConfigError(f"a policy must return an action chunk (B={n}, H, 2), got {tuple(chunk.shape)}")
        if execute > chunk.shape[1]:
            raise ConfigError(f"execute={execute} actions per plan, but the policy's chunk has {chunk.shape[1]}; "
                              f"set execute <= {chunk.shape[1]}")
        plans = plans + (~done).long()
        call += 1
        for k in range(execute):
            if t >= world.max_steps:
                break
            result = step(scene, chunk[:, k] * world.max_step, world)
            live = ~done
            scene = _select(live, result.scene, scene)
            path = path + result.moved * live
            steps_taken = steps_taken + live.long()
            along, across = offsets(scene.agent, scene.goal, scene.obstacle)
            closer = live & (along.abs() < best_along)
            best_along = torch.where(closer, along.abs(), best_along)
            side = torch.where(closer, torch.where(across >= 0, 1.0, -1.0).to(torch.float64), side)
            collision = collision | (live & result.collided)
            success = success | (live & result.reached & ~result.collided)
            done = done | (live & (result.collided | result.reached))
            t += 1
    return {"success": success, "collision": collision, "timeout": ~done, "side": side, "path_length": path,
            "steps": steps_taken, "plans": plans}
