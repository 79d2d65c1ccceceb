"""The ground-truth task protocol, and its MuJoCo-MJCF backend.

A ground-truth task is a real simulator behind one small protocol (`GroundTruthTask`), the
only thing that collection, the oracles, the benchmark and LearnedWorld-v0 see:

    reset(seed, options={"goal_state", "start_state"}) -> (frame, info)   # frames from ONE fixed camera
    step(action) -> (frame, reward, terminated, truncated, info)          # envs.actions.check_action first
    get_state() / set_state(state)        # an exact copy: a copy steps bit-identically to the original
    goal_image, goal_state                # the goal reaches a policy or a model only as the goal image
    distance / is_success / cost / caption_of   # the simulator's own success rule, a planning cost, captions
    spec_: TaskSpec                       # plain data (saved into dataset manifests)
    pickle.dumps(task)                    # (class, make_task kwargs, get_state()): worker processes

Backends: `GoalPixelTask` here (our MJCF models stepped with `mujoco.mj_step`: reacher, pusher,
point_maze), `envs.tasks.dmc_reacher` (dm_control's suite), `envs.tasks.pusht` (gym-pusht,
pymunk). A backend implements the hooks marked below; everything else is shared.

State vectors (float64):
    state      (S,)  = the simulator's physics state                  # `info["state"]`, S = spec.state_dim
    goal_state (S,)  = a state of the same layout that shows the goal reached
    get_state()      = state, goal_state, [elapsed decisions], extra   # spec.full_state_dim = 2 S + 1 + len(extra)
`extra` is what else the simulator needs to continue bit-exactly; for MuJoCo the warm start of
the constraint solver (the solver starts from it; with contacts the result differs in the last
bits without it).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import gymnasium as gym
import mujoco
import numpy as np

from envs.actions import check_action
from envs.rendering import FrameRenderer, free_camera


def scalar_or_array(x, kind=float):
    """A 0-d result as a plain `kind` (float, bool), a batched one as the array: what one state vs (..., S) gives."""
    x = np.asarray(x)
    return kind(x) if x.ndim == 0 else x


@dataclass(frozen=True)
class TaskSpec:
    """What a task is; plain data (saved into dataset manifests)."""

    name: str                  # key of envs.mujoco_tasks.TASKS
    description: str           # one line for humans (says the action and success rule where not obvious)
    action_dim: int            # A
    action_scale: float        # actions live in [-action_scale, action_scale]^A
    action_repeat: int         # base-env steps each decision is held for (Reacher-v5 steps for reacher)
    frame_skip: int            # simulator steps per base-env step (the source env's frame_skip / substeps)
    sim_timestep: float        # seconds per simulator step
    episode_steps: int         # decisions per episode (default truncation)
    success_threshold: float   # success when distance(state, goal_state) <= this (metres for MuJoCo tasks)
    state_dim: int             # S: length of the physics state (MuJoCo: nq + nv)
    full_state_dim: int        # length of get_state(): 2 * S + 1 + extra (MuJoCo: nv, the solver warm start)
    camera: tuple[float, ...]  # (distance, elevation, azimuth, lookat x, y, z) of a free camera; () = the
                               # simulator's own fixed view (a model camera, or a 2-D top view)
    backend: str = "mujoco"    # the simulator: "mujoco" (our MJCF) | "dm_control" | "pymunk" (gym-pusht)

    @property
    def decision_seconds(self) -> float:
        """Simulated time one decision lasts."""
        return self.sim_timestep * self.frame_skip * self.action_repeat

    def caption(self, state: np.ndarray) -> str:
        """Short English sentences describing a true state (or a full get_state() vector)."""
        return task_class(self.name).caption_of(state)


# Task classes by spec name, filled as each task module defines its class (see
# GroundTruthTask.__init_subclass__), so that a spec finds its class without this module
# importing the registry `envs.mujoco_tasks` (which imports this module).
_TASK_CLASSES: dict[str, type["GroundTruthTask"]] = {}


def task_class(name: str) -> type["GroundTruthTask"]:
    """The task class whose spec is named `name` (its module must have been imported)."""
    try:
        return _TASK_CLASSES[name]
    except KeyError:
        raise KeyError(f"no task class named {name!r} has been defined; import envs.mujoco_tasks "
                       f"(defined: {sorted(_TASK_CLASSES)})") from None


def _restore(cls: type["GroundTruthTask"], kwargs: dict, state: np.ndarray) -> "GroundTruthTask":
    task = cls(**kwargs)  # what make_task(name, **kwargs) builds
    task.set_state(state)
    return task


class GroundTruthTask(gym.Env):
    """A goal-conditioned task over a real simulator, RGB frames as observations (module docstring).

    A backend sets `spec_` and implements the simulator hooks `_build`, `_physics_state`,
    `_restore_physics`, `_advance`, `_draw`, `_draw_state` (and `_extra_state` / `_set_extra`
    when the physics state alone does not continue bit-exactly, `_close` when something must be
    released), and the task hooks `_sample` (start and goal states), `distance` and `caption_of`.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    spec_: ClassVar[TaskSpec]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        spec = cls.__dict__.get("spec_")
        if spec is not None:
            _TASK_CLASSES[spec.name] = cls

    def __init__(self, image_size: int = 64, max_steps: int | None = None, render: bool = True,
                 show_goal: bool = False, terminate_on_success: bool = False,
                 render_mode: str | None = "rgb_array"):
        if not isinstance(image_size, (int, np.integer)) or image_size < 8:
            raise ValueError(f"image_size={image_size!r}, expected an int >= 8")
        if max_steps is not None and (not isinstance(max_steps, (int, np.integer)) or max_steps < 1):
            raise ValueError(f"max_steps={max_steps!r}, expected an int >= 1 or None")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r}, expected 'rgb_array' or None")
        spec = self.spec_
        self.task_kwargs = dict(image_size=int(image_size), max_steps=max_steps, render=bool(render),
                                show_goal=bool(show_goal), terminate_on_success=bool(terminate_on_success),
                                render_mode=render_mode)
        self.image_size = int(image_size)
        self.max_steps = int(max_steps or spec.episode_steps)
        self.terminate_on_success = bool(terminate_on_success)
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": round(1.0 / spec.decision_seconds)}

        H = W = self.image_size
        self.observation_space = gym.spaces.Box(0, 255, (H, W, 3), np.uint8)
        s = np.float32(spec.action_scale)
        self.action_space = gym.spaces.Box(-s, s, (spec.action_dim,), np.float32)
        self.renders = bool(render)
        self._build(render=bool(render), show_goal=bool(show_goal))
        n_extra = len(self._extra_state())
        if spec.full_state_dim != 2 * spec.state_dim + 1 + n_extra or len(self._physics_state()) != spec.state_dim:
            raise RuntimeError(f"{spec.name}: spec state dims ({spec.state_dim}, {spec.full_state_dim}) do not "
                               f"match the simulator (state {len(self._physics_state())}, extra {n_extra})")

        # Until the first reset: a valid state (the simulator's reference pose) reaching itself.
        self.elapsed = 0
        self.goal_state = self._physics_state()
        self.goal_image = self._render_state(self.goal_state)

    # ------------------------------------------------------------------ simulator hooks (backend)
    def _build(self, render: bool, show_goal: bool) -> None:
        """Make the simulator (and, with render=True, its renderer); hide the goal marker unless show_goal."""
        raise NotImplementedError

    def _physics_state(self) -> np.ndarray:
        """(S,) float64 physics state of the simulator now."""
        raise NotImplementedError

    def _restore_physics(self, state: np.ndarray) -> None:
        """Put the simulator in physics state `state` (S,), as a fresh reset there would."""
        raise NotImplementedError

    def _extra_state(self) -> np.ndarray:
        """What else a bit-exact continuation needs (part of get_state()); nothing by default."""
        return np.zeros(0)

    def _set_extra(self, extra: np.ndarray) -> None:
        pass

    def _advance(self, action: np.ndarray) -> None:
        """One decision: the checked float64 action held for spec.action_repeat base-env steps."""
        raise NotImplementedError

    def _draw(self) -> np.ndarray:
        """(H, W, 3) uint8 frame of the current state (only called when rendering)."""
        raise NotImplementedError

    def _draw_state(self, state: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 frame of physics state `state`, leaving the simulator as it is."""
        raise NotImplementedError

    def _close(self) -> None:
        pass

    # ------------------------------------------------------------------ task hooks
    def _sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(start state (S,), goal state (S,)) for a new episode; both consistent in their goal entries."""
        raise NotImplementedError

    @classmethod
    def distance(cls, state: np.ndarray, goal_state: np.ndarray) -> float | np.ndarray:
        """Task distance (metres for the MuJoCo tasks; batched over leading dims given (..., S) arrays)."""
        raise NotImplementedError

    @classmethod
    def caption_of(cls, state: np.ndarray) -> str:
        raise NotImplementedError

    def cost(self, state: np.ndarray, goal_state: np.ndarray) -> float | np.ndarray:
        """A true-state planning cost, lower is better; the distance unless a task shapes it."""
        return self.distance(state, goal_state)

    def _normalize_goal(self, goal: np.ndarray) -> np.ndarray:
        """The goal state made self-consistent (its marker entries where the goal is, at rest)."""
        return goal

    def _with_goal(self, start: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """The start state with the goal marker entries copied from the goal state."""
        return start

    def _success_now(self, state: np.ndarray, distance: float) -> bool:
        """info["is_success"]: the simulator's own success test of the current state."""
        return distance <= self.spec_.success_threshold

    def _info_extra(self) -> dict:
        """Backend-specific info entries (e.g. gym-pusht's coverage)."""
        return {}

    # ------------------------------------------------------------------ pure helpers
    @classmethod
    def is_success(cls, state: np.ndarray, goal_state: np.ndarray) -> bool | np.ndarray:
        return scalar_or_array(np.asarray(cls.distance(state, goal_state)) <= cls.spec_.success_threshold, bool)

    def caption(self, state: np.ndarray | None = None) -> str:
        """Short English sentences from the true state (default: the current one)."""
        return self.caption_of(self._physics_state() if state is None else state)

    @classmethod
    def _split(cls, state: np.ndarray) -> np.ndarray:
        """(..., S) physics state out of a state or a full get_state() vector."""
        state = np.asarray(state, dtype=np.float64)
        S = cls.spec_.state_dim
        if state.shape[-1] not in (S, cls.spec_.full_state_dim):
            raise ValueError(f"{cls.spec_.name} state has length {state.shape[-1]}, expected {S} "
                             f"(physics state) or {cls.spec_.full_state_dim} (get_state())")
        return state[..., :S]

    @classmethod
    def _split_one(cls, state: np.ndarray) -> np.ndarray:
        """(S,) physics state of ONE state (what caption_of takes), else a ValueError."""
        s = cls._split(state)
        if s.ndim != 1:
            raise ValueError(f"caption_of takes one state, got shape {s.shape}")
        return s

    # ------------------------------------------------------------------ state copies
    def get_state(self) -> np.ndarray:
        """(state, goal_state, elapsed, extra) as one float64 vector: an exact copy."""
        return np.concatenate([self._physics_state(), self.goal_state, [float(self.elapsed)],
                               self._extra_state()]).astype(np.float64)

    def set_state(self, state: np.ndarray) -> None:
        """Restore a get_state() vector (or a bare physics state, keeping the goal and time)."""
        spec = self.spec_
        state = np.asarray(state, dtype=np.float64)
        if state.shape not in ((spec.full_state_dim,), (spec.state_dim,)):
            raise ValueError(f"{spec.name} state has shape {state.shape}, expected ({spec.full_state_dim},) "
                             f"from get_state() or ({spec.state_dim},) (the physics state)")
        if not np.all(np.isfinite(state)):
            raise ValueError(f"{spec.name} state has NaN or inf entries, expected finite values")
        S = spec.state_dim
        self._restore_physics(state[:S])
        if state.shape[0] == spec.full_state_dim:
            goal = state[S:2 * S]
            if not np.array_equal(goal, self.goal_state):
                self._set_goal(goal)
            self.elapsed = int(round(state[2 * S]))
            self._set_extra(state[2 * S + 1:])

    def _set_goal(self, goal_state: np.ndarray) -> None:
        self.goal_state = np.array(goal_state, dtype=np.float64)
        self.goal_image = self._render_state(self.goal_state)

    def __reduce__(self):
        # Picklable as (class, kwargs, exact state): a worker process gets an identical copy.
        return (_restore, (type(self), dict(self.task_kwargs), self.get_state()))

    # ------------------------------------------------------------------ frames
    def _render_state(self, state: np.ndarray) -> np.ndarray | None:
        return self._draw_state(state) if self.renders else None

    def render_frame(self) -> np.ndarray:
        """(H, W, 3) uint8 frame of the current state."""
        if not self.renders:
            raise RuntimeError(f"{self.spec_.name} was made with render=False; make it with render=True "
                               "to get frames")
        return self._draw()

    def render(self) -> np.ndarray | None:
        return self.render_frame() if self.render_mode == "rgb_array" else None

    def _frame(self) -> np.ndarray | None:
        # render=False: no frame at all (None), so that nothing mistakes a blank for data
        return self._draw() if self.renders else None

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"goal_state", "start_state"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}, expected 'goal_state' and/or "
                             "'start_state'")
        S = self.spec_.state_dim
        given = {}
        for key in ("goal_state", "start_state"):   # checked before the simulator is touched
            if key in options:
                v = np.asarray(options[key], dtype=np.float64)
                if v.shape != (S,) or not np.all(np.isfinite(v)):
                    raise ValueError(f"reset option {key} has shape {v.shape} (or non-finite values), "
                                     f"expected a finite ({S},) state of {self.spec_.name}")
                given[key] = v
        start, goal = self._sample(self.np_random)
        start, goal = given.get("start_state", start), given.get("goal_state", goal)
        goal = self._normalize_goal(goal)
        start = self._with_goal(start, goal)
        self._restore_physics(start)
        self.elapsed = 0
        self._set_goal(goal)
        return self._frame(), self._info()

    def step(self, action):
        a = check_action(action, self.action_space)
        self._advance(a)
        self.elapsed += 1
        info = self._info()
        reward = -float(info["distance"])
        terminated = bool(self.terminate_on_success and info["is_success"])
        truncated = self.elapsed >= self.max_steps
        return self._frame(), reward, terminated, truncated, info

    def _info(self) -> dict:
        state = self._physics_state()
        dist = float(self.distance(state, self.goal_state))
        return {"state": state, "goal_state": self.goal_state.copy(), "distance": dist,
                "is_success": bool(self._success_now(state, dist)), "elapsed": self.elapsed,
                **self._info_extra()}

    def close(self) -> None:
        self._close()


class GoalPixelTask(GroundTruthTask):
    """The MuJoCo-MJCF backend: a real MuJoCo model stepped with `mujoco.mj_step`, one free camera.

    Every task keeps its goal in its own joints (as Reacher-v5's target and Pusher-v5's goal
    already are) and hides the goal marker in the pixels. Physics state = (qpos, qvel); extra =
    qacc_warmstart. Subclasses set `spec_`, `xml`, `goal_joints`, `goal_geoms`/`goal_bodies`, and
    implement `_marker`, `_sample`, `distance` and `caption_of`.
    """

    xml: ClassVar[Path]                          # the task's MJCF file
    goal_joints: ClassVar[tuple[int, ...]]       # qpos indices of the joints that hold the goal marker
    goal_geoms: ClassVar[tuple[str, ...]] = ()   # geoms that mark the goal: hidden in the pixels
    goal_bodies: ClassVar[tuple[str, ...]] = ()  # bodies whose geoms all mark the goal

    def _load_model(self) -> mujoco.MjModel:
        return mujoco.MjModel.from_xml_path(str(self.xml))

    def _marker(self, goal: np.ndarray) -> np.ndarray:
        """The goal_joints values that put the (hidden) marker where goal state `goal` has its goal."""
        raise NotImplementedError

    def _normalize_goal(self, goal: np.ndarray) -> np.ndarray:
        goal = np.array(goal, dtype=np.float64)
        goal[list(self.goal_joints)] = self._marker(goal)
        goal[self.model.nq:] = 0.0   # at rest
        return goal

    def _with_goal(self, start: np.ndarray, goal: np.ndarray) -> np.ndarray:
        start = np.array(start, dtype=np.float64)
        joints = list(self.goal_joints)
        start[joints] = goal[joints]
        start[[self.model.nq + j for j in joints]] = 0.0   # the marker at rest
        return start

    def _build(self, render: bool, show_goal: bool) -> None:
        spec = self.spec_
        self.model = self._load_model()
        self.data = mujoco.MjData(self.model)
        self._goal_data = mujoco.MjData(self.model)  # scratch data for rendering the goal image
        if not show_goal:
            hidden = [self.model.geom(g).id for g in self.goal_geoms]
            for b in self.goal_bodies:
                hidden += np.flatnonzero(self.model.geom_bodyid == self.model.body(b).id).tolist()
            self.model.geom_rgba[hidden, 3] = 0.0  # alpha 0: not drawn at all
        self._nsub = spec.frame_skip * spec.action_repeat  # MuJoCo steps per decision
        S = self.model.nq + self.model.nv
        if S != spec.state_dim or spec.full_state_dim != 2 * S + 1 + self.model.nv:
            raise RuntimeError(f"{spec.name}: spec state dims ({spec.state_dim}, {spec.full_state_dim}) "
                               f"do not match the model (nq={self.model.nq}, nv={self.model.nv})")
        self._renderer = None
        if render:
            d, el, az, *look = spec.camera
            self._renderer = FrameRenderer(self.model, self.image_size, self.image_size,
                                           free_camera(d, el, az, look))
        mujoco.mj_forward(self.model, self.data)

    def _physics_state(self, data: mujoco.MjData | None = None) -> np.ndarray:
        data = self.data if data is None else data
        return np.concatenate([data.qpos, data.qvel]).astype(np.float64)

    def _write(self, data: mujoco.MjData, state: np.ndarray) -> None:
        nq = self.model.nq
        data.qpos[:] = state[:nq]
        data.qvel[:] = state[nq:]
        mujoco.mj_forward(self.model, data)

    def _restore_physics(self, state: np.ndarray) -> None:
        mujoco.mj_resetData(self.model, self.data)  # clears ctrl, time, contacts
        self._write(self.data, state)

    def _extra_state(self) -> np.ndarray:
        return self.data.qacc_warmstart

    def _set_extra(self, extra: np.ndarray) -> None:
        self.data.qacc_warmstart[:] = extra

    def _advance(self, action: np.ndarray) -> None:
        self.data.ctrl[:] = action
        mujoco.mj_step(self.model, self.data, nstep=self._nsub)

    def _draw(self) -> np.ndarray:
        return self._renderer.render(self.data)

    def _draw_state(self, state: np.ndarray) -> np.ndarray:
        self._write(self._goal_data, state)
        return self._renderer.render(self._goal_data)

    def _close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self.renders = False
