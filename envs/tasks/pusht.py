"""`pusht`: gym-pusht's PushT (Diffusion Policy, DINO-WM, LeWM) -- pymunk 2-D physics, NOT MuJoCo.

The simulator is the `gym-pusht` package's own `PushTEnv` (`gym.make("gym_pusht/PushT-v0")`,
unwrapped): its pymunk space, bodies, PD-controlled pusher and `step()` (10 pymunk steps of
0.01 s per step, 10 Hz). Units are gym-pusht's: the arena is 512 x 512 (y down in the image);
we call 10 units "1 cm" (a 51 cm table), so the T's bars are 3 cm wide.

Action: a relative displacement of the pusher's target, DINO-WM's and stable-worldmodel's
parameterisation: every gym-pusht step gets the absolute target clip(agent position + 100 *
a, 0, 512) (their action_scale 100), and one decision holds `a` for 5 gym-pusht steps (DINO-WM's
frameskip 5, 0.5 s). a lives in [-0.5, 0.5]^2: at most ~95 units (a fifth of the arena) per decision.

Success is gym-pusht's own: more than 95% of the goal T covered by the block
(`PushTEnv._get_coverage`, `info["is_success"]`, `info["coverage"]`), with gym-pusht's goal pose
set to the goal state's block pose. distance = 1 - coverage (the uncovered fraction of the goal
T, in [0, 1]). `make_task("pusht", success="anchors")` scores DINO-WM's / LeWM's rule instead
(`eval_state`: agent + block position within 20 units, block angle within pi/9), the rule of their
published figures; both are always in `info`. The goal zone that gym-pusht draws is left out of
the frames: the goal reaches a policy or a model only through the goal image.

State (S = 10, the first 7 in DINO-WM's layout): agent x, y, block x, y, block angle, agent vx, vy,
block vx, vy, block angular velocity (block position = gym-pusht's `block.position`, the body
origin; the angle is not wrapped). Exact copies: every decision starts by rebuilding the pymunk
space from these numbers (gym-pusht's own `_setup()`, then the bodies' positions and velocities;
not its `_set_state`, which steps the physics once and drops the velocities), in the original as
in every copy, so a copy steps bit-identically. This drops pymunk's contact cache (the solver's
warm-started impulses) between decisions; nothing else of the space carries over between steps,
and even pymunk's own `Space.copy()` (which keeps that cache) does not continue bit-identically.
"""
from __future__ import annotations

import math
import os

import numpy as np

from envs.tasks.base import GroundTruthTask, TaskSpec, scalar_or_array
from envs.tasks.phrases import heading_words, pick, region_words, side_words

ARENA = 512.0
UNITS_PER_CM = 10.0
DISPLACEMENT = 100.0     # arena units of target displacement per unit of action (DINO-WM's action_scale)
GYM_STEPS = 5            # gym-pusht steps per decision (DINO-WM's frameskip)
COVERAGE = 0.95          # gym-pusht's success threshold (PushTEnv.success_threshold)
ANCHOR_POS, ANCHOR_ANGLE = 20.0, math.pi / 9   # DINO-WM's eval_state thresholds
AGENT_RADIUS = 15.0
NEAR_WEIGHT = 0.5        # cost: + NEAR_WEIGHT * (pusher-to-block gap / 100)
SUCCESS_RULES = ("coverage", "anchors")

# The T in its body frame (PushTEnv.add_tee, scale 30, length 4): the bar and the stem.
_S, _L = 30.0, 4
T_PARTS = (np.array([(-_L * _S / 2, _S), (_L * _S / 2, _S), (_L * _S / 2, 0), (-_L * _S / 2, 0)]),
           np.array([(-_S / 2, _S), (-_S / 2, _L * _S), (_S / 2, _L * _S), (_S / 2, _S)]))
T_KEYPOINTS = np.concatenate(T_PARTS)      # (8, 2): PushTEnv.get_keypoints' order
T_CENTROID = np.array([0.0, (4 * 30 * 15 + 3 * 30 * 75) / (7 * 30)])  # area centroid in the body frame

SPEC = TaskSpec(
    name="pusht",
    description="gym-pusht PushT (pymunk, not MuJoCo): push the T to the goal image's pose; action = target "
                "displacement / 100 units in [-0.5, 0.5]^2 held 5 gym-pusht steps; success: gym-pusht's "
                "coverage > 95% (distance = 1 - coverage)",
    action_dim=2, action_scale=0.5, action_repeat=GYM_STEPS, frame_skip=10, sim_timestep=0.01,
    episode_steps=50, success_threshold=1.0 - COVERAGE, state_dim=10, full_state_dim=21,
    camera=(), backend="pymunk",
)


def _import_pusht():
    """gym-pusht (and pygame) with a headless SDL, and without pygame's banner."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import gym_pusht  # noqa: F401  (registers gym_pusht/PushT-v0)
    from gym_pusht.envs.pusht import PushTEnv

    return PushTEnv


def t_vertices(pose: np.ndarray) -> np.ndarray:
    """(..., 3) block poses (x, y, angle) -> (..., 8, 2) world vertices of the two T parts (4 each)."""
    pose = np.asarray(pose, np.float64)
    c, s = np.cos(pose[..., 2])[..., None], np.sin(pose[..., 2])[..., None]
    x, y = T_KEYPOINTS[:, 0], T_KEYPOINTS[:, 1]
    return np.stack([c * x - s * y + pose[..., 0:1], s * x + c * y + pose[..., 1:2]], -1)


def coverage(block_pose: np.ndarray, goal_pose: np.ndarray) -> float | np.ndarray:
    """Fraction of the goal T covered by the block T, as PushTEnv._get_coverage (shapely; batched)."""
    import shapely

    a, b = np.broadcast_arrays(np.asarray(block_pose, np.float64), np.asarray(goal_pose, np.float64))
    lead = a.shape[:-1]
    va, vb = t_vertices(a.reshape(-1, 3)), t_vertices(b.reshape(-1, 3))

    def tees(v):
        return shapely.multipolygons(np.stack([shapely.polygons(v[:, :4]), shapely.polygons(v[:, 4:])], 1))

    ga, gb = tees(va), tees(vb)
    cov = shapely.area(shapely.intersection(gb, ga)) / shapely.area(gb)
    cov = cov.reshape(lead)
    return scalar_or_array(cov)


def angle_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| wrapped to [0, pi]."""
    return np.abs((np.asarray(a) - np.asarray(b) + np.pi) % (2 * np.pi) - np.pi)


class PushTTask(GroundTruthTask):
    """gym-pusht's PushT behind the ground-truth task protocol (module docstring)."""

    spec_ = SPEC

    def __init__(self, *args, success: str = "coverage", **kwargs):
        if success not in SUCCESS_RULES:
            raise ValueError(f"success={success!r}, expected one of {SUCCESS_RULES}")
        self.success_rule = success
        super().__init__(*args, **kwargs)
        self.task_kwargs["success"] = success

    # -- simulator ---------------------------------------------------------------
    def _build(self, render: bool, show_goal: bool) -> None:
        import gymnasium as gym

        _import_pusht()
        make = dict(obs_type="state", render_mode="rgb_array")   # its own frames are drawn by us (no goal zone)
        self._env = gym.make("gym_pusht/PushT-v0", **make).unwrapped
        self._env.reset(seed=0)
        self._goal_env = gym.make("gym_pusht/PushT-v0", **make).unwrapped if render else None
        if self._goal_env is not None:
            self._goal_env.reset(seed=0)
        self._show_goal = show_goal
        self._state = self._read(self._env)
        self._goal_pose = np.asarray(self._env.goal_pose, np.float64)
        self._last = {"n_contacts": 0}

    @staticmethod
    def _read(env) -> np.ndarray:
        a, b = env.agent, env.block
        return np.array([*a.position, *b.position, b.angle, *a.velocity, *b.velocity, b.angular_velocity],
                        np.float64)

    def _write(self, env, state: np.ndarray, goal_pose: np.ndarray) -> None:
        env._setup()   # gym-pusht's own fresh space: walls, pusher, T, contact counter
        env.goal_pose = np.array(goal_pose, np.float64)
        env.agent.position = (float(state[0]), float(state[1]))
        env.agent.velocity = (float(state[5]), float(state[6]))
        env.block.angle = float(state[4])          # the angle first: it turns about the centre of gravity
        env.block.position = (float(state[2]), float(state[3]))
        env.block.velocity = (float(state[7]), float(state[8]))
        env.block.angular_velocity = float(state[9])

    def _physics_state(self) -> np.ndarray:
        return self._state.copy()

    def _restore_physics(self, state: np.ndarray) -> None:
        self._state = np.array(state, np.float64)
        self._last = {"n_contacts": 0}

    def _set_goal(self, goal_state: np.ndarray) -> None:
        self._goal_pose = np.asarray(goal_state, np.float64)[2:5].copy()
        self._last.pop("coverage", None)   # coverage is of the goal pose
        super()._set_goal(goal_state)

    def _advance(self, action: np.ndarray) -> None:
        env = self._env
        self._write(env, self._state, self._goal_pose)
        contacts = 0
        for _ in range(GYM_STEPS):
            target = np.clip(np.asarray(env.agent.position) + DISPLACEMENT * action, 0.0, ARENA)
            _, _, _, _, info = env.step(target)   # gym-pusht's own step: PD control, 10 pymunk steps
            contacts += int(info["n_contacts"])
        self._state = self._read(env)
        self._last = {"n_contacts": contacts, "coverage": float(info["coverage"])}

    def _draw_env(self, env) -> np.ndarray:
        import pygame
        from gym_pusht.envs.pymunk_override import DrawOptions

        screen = pygame.Surface((512, 512))
        screen.fill((255, 255, 255))
        if self._show_goal:   # gym-pusht's goal zone (light green), for debugging only
            goal = env.get_goal_pose_body(env.goal_pose)
            for shape in env.block.shapes:
                pts = [pygame.math.Vector2(*goal.local_to_world(v)) for v in shape.get_vertices()]
                pygame.draw.polygon(screen, pygame.Color("LightGreen"), pts)
        for body in (env.agent, env.block):   # the shapes' cached world vertices (a step would update them)
            env.space.reindex_shapes_for_body(body)
        env.space.debug_draw(DrawOptions(screen))   # walls, pusher, T: gym-pusht's own drawing
        return env._get_img(screen, width=self.image_size, height=self.image_size)

    def _draw(self) -> np.ndarray:
        self._write(self._goal_env, self._state, self._goal_pose)
        return self._draw_env(self._goal_env)

    def _draw_state(self, state: np.ndarray) -> np.ndarray:
        self._write(self._goal_env, state, self._goal_pose)
        return self._draw_env(self._goal_env)

    def _close(self) -> None:
        self.renders = False

    # -- success -------------------------------------------------------------------
    @classmethod
    def distance(cls, state, goal_state):
        """1 - coverage: the fraction of the goal T that the block does not cover (gym-pusht's measure)."""
        s, g = cls._split(state), cls._split(goal_state)
        d = 1.0 - np.asarray(coverage(s[..., 2:5], g[..., 2:5]))
        return scalar_or_array(d)

    @classmethod
    def coverage_success(cls, state, goal_state):
        """gym-pusht's rule: coverage > 95%."""
        ok = np.asarray(cls.distance(state, goal_state)) < 1.0 - COVERAGE
        return scalar_or_array(ok, bool)

    @classmethod
    def anchor_success(cls, state, goal_state):
        """DINO-WM's / LeWM's rule (eval_state): |agent and block xy| < 20 units and block angle < pi/9."""
        s, g = cls._split(state), cls._split(goal_state)
        ok = (np.linalg.norm(s[..., :4] - g[..., :4], axis=-1) < ANCHOR_POS) & \
             (angle_error(s[..., 4], g[..., 4]) < ANCHOR_ANGLE)
        return scalar_or_array(ok, bool)

    def is_success(self, state, goal_state):
        """The task's success rule (gym-pusht's coverage by default; success="anchors": DINO-WM's)."""
        if self.success_rule == "anchors":
            return self.anchor_success(state, goal_state)
        return self.coverage_success(state, goal_state)

    def _live_coverage(self) -> float:
        """gym-pusht's own coverage of the current state (PushTEnv._get_coverage, as its step reports it)."""
        if "coverage" not in self._last:   # after a reset or set_state
            self._write(self._env, self._state, self._goal_pose)
            self._last["coverage"] = float(self._env._get_coverage())
        return self._last["coverage"]

    def _success_now(self, state: np.ndarray, distance: float) -> bool:
        if self.success_rule == "anchors":
            return bool(self.anchor_success(state, self.goal_state))
        return self._live_coverage() > COVERAGE   # gym-pusht's is_success

    def _info_extra(self) -> dict:
        s, g = self._state, self.goal_state
        cov = self._live_coverage()
        return {"coverage": cov, "success_coverage": cov > COVERAGE,
                "success_anchors": bool(self.anchor_success(s, g)), "n_contacts": self._last["n_contacts"],
                "block_error": float(np.linalg.norm(s[2:4] - g[2:4])), "angle_error": float(angle_error(s[4], g[4]))}

    def cost(self, state, goal_state):
        """Shaped planning cost: mean T-keypoint displacement to the goal pose / 100 units, plus
        NEAR_WEIGHT x the pusher's gap to the block / 100 units (the pusher must reach the block to move it).
        Under success="anchors" the rule also judges the pusher's position, so the cost adds the pusher's
        distance to the goal's pusher / 100 units: the oracle plans for the target it is judged on."""
        s, g = self._split(state), self._split(goal_state)
        pose = np.linalg.norm(t_vertices(s[..., 2:5]) - t_vertices(g[..., 2:5]), axis=-1).mean(-1)
        c = pose + NEAR_WEIGHT * pusher_gap(s)
        if self.success_rule == "anchors":
            c = c + np.linalg.norm(s[..., :2] - g[..., :2], axis=-1)
        return scalar_or_array(c / DISPLACEMENT)

    # -- episodes ------------------------------------------------------------------
    def _sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """gym-pusht's reset distribution (agent in [50, 450)^2, block in [100, 400)^2, any angle), redrawn
        while the pusher overlaps the T or the start is already a success; goal: gym-pusht's goal pose
        (256, 256, pi/4) with the pusher somewhere off the goal T, at rest."""
        goal = np.zeros(10)
        goal[2:5] = [256.0, 256.0, math.pi / 4]
        while True:
            goal[:2] = rng.integers(50, 450, 2)
            if pusher_gap(goal) > 10.0:
                break
        while True:
            start = np.zeros(10)
            start[:2] = rng.integers(50, 450, 2)
            start[2:4] = rng.integers(100, 400, 2)
            start[4] = rng.uniform(-np.pi, np.pi)
            if pusher_gap(start) > 5.0 and not self.is_success(start, goal) and \
                    not self.coverage_success(start, goal):
                return start, goal

    def _normalize_goal(self, goal: np.ndarray) -> np.ndarray:
        goal = np.array(goal, dtype=np.float64)
        goal[5:] = 0.0   # at rest
        return goal

    @classmethod
    def caption_of(cls, state) -> str:
        s = cls._split_one(state)
        agent, pose = s[:2], s[2:5]
        centre = pose[:2] + _rot(pose[2]) @ T_CENTROID
        # image directions: +x right, +y up (gym-pusht's y points down the image)
        cx, cy = (centre[0] - ARENA / 2) / UNITS_PER_CM, (ARENA / 2 - centre[1]) / UNITS_PER_CM
        # the stem points from the bar along the body's +y axis; said as an image heading
        stem = _rot(pose[2]) @ np.array([0.0, 1.0])
        heading = heading_words(math.atan2(-stem[1], stem[0]))
        name = pick(("The T block", "The T", "The tee"), *pose)
        first = f"{name} is {region_words(cx, cy, ARENA / 2 / UNITS_PER_CM)} the table, its stem pointing {heading}"
        speed = float(np.linalg.norm(s[7:9]))
        if speed > 20.0 or abs(s[9]) > 0.5:
            first += pick((" as it slides", " while it moves"), *s[7:9])
        gap = float(pusher_gap(s))
        rel = agent - centre
        side = side_words(rel[0], -rel[1])
        if gap < 2.0:
            second = f"The pusher touches it on the {side} side"
        else:
            second = (f"The pusher is about {max(1, round(gap / UNITS_PER_CM)):.0f} cm from it, "
                      f"on its {side} side")
        moving = float(np.linalg.norm(s[5:7]))
        second += " and moves" if moving > 20.0 else " and is nearly still"
        return f"{first}. {second}."


def _rot(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s], [s, c]])


def pusher_gap(state: np.ndarray) -> float | np.ndarray:
    """(..., S) states -> distance from the pusher's disc to the T (0 when touching or overlapping)."""
    import shapely

    s = np.asarray(state, np.float64)
    lead = s.shape[:-1]
    flat = s.reshape(-1, s.shape[-1])
    v = t_vertices(flat[:, 2:5])
    tees = shapely.union(shapely.polygons(v[:, :4]), shapely.polygons(v[:, 4:]))
    d = shapely.distance(shapely.points(flat[:, :2]), tees) - AGENT_RADIUS
    d = np.maximum(d, 0.0).reshape(lead)
    return scalar_or_array(d)
