"""Receding-horizon control (MPC) over any Gymnasium env.

At each replan the planner gets only what the episode's *observer* gives it: the oracle
observer reads the simulator (`get_state()`, the goal state or goal image), the pixel
observer keeps the last few RGB observations, the actions between them and the goal image,
and never touches `info["state"]` or `get_state()` (the learned planner's view). The first
`receding_horizon` actions of each plan are executed in the real env, the rest warm-start
the next plan (shifted, padded with the action-space centre). An episode stops at the step
budget, when the env terminates/truncates, or (by default) on success. Success and the final
distance are read from the REAL env after executing: `info["is_success"]`, `info["distance"]`.

E episodes run in lockstep so that one planner call plans all of them (one batched model
call for the learned model, one spread over the workers for the oracle).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import gymnasium as gym
import numpy as np

from planners.base import Planner, warm_start


@dataclass
class MPCConfig:
    receding_horizon: int = 5     # actions executed per plan before replanning (DINO-WM: 5)
    max_steps: int = 50           # env decision-step budget per episode
    stop_on_success: bool = True  # end the episode as soon as the real env reports success
    record_frames: bool = True    # keep the executed frames (videos)
    record_states: bool = False   # copy the real env's start, goal and final state from its info into each
                                  # EpisodeResult (evaluation bookkeeping, never given to the planner; off by
                                  # default, so an MPC loop over a learned model reads no privileged state)


@dataclass
class EpisodeResult:
    seed: int | None
    actions: np.ndarray                       # (T, A) executed actions
    frames: np.ndarray | None                 # (T+1, H, W, 3) uint8 observations, if recorded and pixels
    success: bool                             # the real env's is_success after the last executed step
    final_distance: float                     # the real env's distance after the last executed step (nan if absent)
    steps: int                                # T
    replan_seconds: list[float] = field(default_factory=list)   # per replan, amortised over lockstep episodes
    model_calls: list[int] = field(default_factory=list)        # model calls per replan (shared in lockstep)
    rollouts: int = 0                         # candidate sequences this episode's plans scored
    plans: list[np.ndarray] = field(default_factory=list)       # (H, A) each plan
    inits: list[np.ndarray | None] = field(default_factory=list)  # the warm start each plan got
    start_state: np.ndarray | None = None     # the real env's info["state"] after reset (None if it has none)
    goal_state: np.ndarray | None = None      # the real env's info["goal_state"] after reset
    final_state: np.ndarray | None = None     # the real env's info["state"] after the last executed step
    start_success: bool = False               # the real env's is_success already at reset (a trivial episode)


class Observer(Protocol):
    def reset(self, env: gym.Env, obs: Any, info: dict) -> None: ...
    def step(self, action: np.ndarray, obs: Any, info: dict) -> None: ...
    def __call__(self) -> tuple[Any, Any]: ...     # (state, goal) for the planner


class OracleObserver:
    """Privileged: the task's exact simulator state and its goal (state or image)."""

    def __init__(self, goal: str = "state"):
        if goal not in ("state", "image"):
            raise ValueError(f"goal={goal!r}, expected 'state' or 'image'")
        self.goal = goal
        self.task = None

    def reset(self, env, obs, info):
        self.task = env.unwrapped

    def step(self, action, obs, info):
        pass

    def __call__(self):
        g = self.task.goal_state if self.goal == "state" else self.task.goal_image
        return self.task.get_state(), np.array(g)


@dataclass
class PixelContext:
    """The learned planner's state: recent RGB frames and the actions between them."""
    frames: np.ndarray    # (Tc, H, W, 3) uint8, oldest first; the last is the current observation
    actions: np.ndarray   # (Tc-1, A) float32: actions[i] took frames[i] to frames[i+1]


class PixelObserver:
    """Pixels only: the last `context` observations, the actions between them, the goal image.

    The goal image is read once at reset (`env.get_wrapper_attr("goal_image")`); `info` is
    never read, so no true state can leak into a learned planner through this observer.
    """

    def __init__(self, context: int = 2):
        if context < 1:
            raise ValueError(f"context={context}, expected >= 1 frames")
        self.context = context
        self.frames: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.goal = None

    def reset(self, env, obs, info):
        self.goal = np.array(env.get_wrapper_attr("goal_image"), dtype=np.uint8)
        self.frames, self.actions = [self._frame(obs)], []

    def _frame(self, obs) -> np.ndarray:
        f = np.asarray(obs)
        if f.dtype != np.uint8 or f.ndim != 3 or f.shape[-1] != 3:
            raise ValueError(f"pixel observer got an observation of shape {f.shape} dtype {f.dtype}, "
                             "expected an (H, W, 3) uint8 frame")
        return f.copy()

    def step(self, action, obs, info):
        self.frames = (self.frames + [self._frame(obs)])[-self.context:]
        self.actions = (self.actions + [np.asarray(action, np.float32)])[-(self.context - 1):] if self.context > 1 else []

    def __call__(self):
        A = len(self.actions[0]) if self.actions else 0
        acts = np.stack(self.actions) if self.actions else np.zeros((0, A), np.float32)
        return PixelContext(np.stack(self.frames), acts), self.goal


class NullObserver:
    """For model-free baselines (the random policy): nothing at all."""

    def reset(self, env, obs, info):
        pass

    def step(self, action, obs, info):
        pass

    def __call__(self):
        return None, None


def run_mpc(envs: Sequence[gym.Env], planner: Planner, model: Any, observers: Sequence[Observer],
            cfg: MPCConfig, seeds: Sequence[int | None], reset_options: Sequence[dict | None] | None = None,
            ) -> list[EpisodeResult]:
    """Run len(envs) episodes in lockstep with receding-horizon planning; one result per env.
    Env e starts from `env.reset(seed=seeds[e], options=reset_options[e])` (e.g. the benchmark's
    {"start_state", "goal_state"})."""
    E = len(envs)
    if not (len(observers) == len(seeds) == E) or E == 0:
        raise ValueError(f"got {E} envs, {len(observers)} observers and {len(seeds)} seeds; expected the same number (>= 1)")
    if cfg.receding_horizon < 1 or cfg.receding_horizon > planner.horizon:
        raise ValueError(f"receding_horizon={cfg.receding_horizon}, expected 1..planner horizon ({planner.horizon})")
    if cfg.max_steps < 1:
        raise ValueError(f"max_steps={cfg.max_steps}, expected >= 1")
    reset_options = list(reset_options or [None] * E)
    if len(reset_options) != E:
        raise ValueError(f"got {len(reset_options)} reset options for {E} envs")
    pad = planner.scaler.center_np
    records, frames, last_info = [], [], []
    for env, obs_fn, seed, opt in zip(envs, observers, seeds, reset_options):
        obs, info = env.reset(seed=seed, options=opt)
        obs_fn.reset(env, obs, info)
        records.append(EpisodeResult(seed, np.zeros((0, planner.scaler.dim), np.float32), None, False, float("nan"), 0,
                                     start_state=_copy(info.get("state")) if cfg.record_states else None,
                                     goal_state=_copy(info.get("goal_state")) if cfg.record_states else None,
                                     start_success=bool(info.get("is_success", False))))
        frames.append([np.array(obs)] if cfg.record_frames and _is_image(obs) else None)
        last_info.append(info)
    acts: list[list[np.ndarray]] = [[] for _ in range(E)]
    prev: list[np.ndarray | None] = [None] * E
    executed = [0] * E
    done = [False] * E
    while not all(done):
        idx = [e for e in range(E) if not done[e]]
        views = [observers[e]() for e in idx]
        inits = [None if prev[e] is None else warm_start(prev[e], executed[e], pad) for e in idx]
        init = None if any(i is None for i in inits) else np.stack(inits)
        res = planner.plan(model, [v[0] for v in views], [v[1] for v in views], init)
        for j, e in enumerate(idx):
            rec, env = records[e], envs[e]
            rec.plans.append(res.actions[j].copy())
            rec.inits.append(None if init is None else init[j].copy())
            rec.replan_seconds.append(res.seconds / len(idx))
            rec.model_calls.append(res.model_calls)
            rec.rollouts += res.rollouts // len(idx)
            n = min(cfg.receding_horizon, cfg.max_steps - rec.steps)
            k = 0
            for t in range(n):
                a = res.actions[j, t]
                obs, _, terminated, truncated, info = env.step(a)
                observers[e].step(a, obs, info)
                acts[e].append(a)
                rec.steps += 1
                k += 1
                last_info[e] = info
                if frames[e] is not None:
                    frames[e].append(np.array(obs))
                if terminated or truncated or (cfg.stop_on_success and bool(info.get("is_success", False))):
                    done[e] = True
                    break
            prev[e], executed[e] = res.actions[j], k
            if rec.steps >= cfg.max_steps:
                done[e] = True
    for e, rec in enumerate(records):
        rec.actions = np.asarray(acts[e], np.float32).reshape(-1, planner.scaler.dim)
        rec.frames = None if frames[e] is None else np.stack(frames[e])
        rec.success = bool(last_info[e].get("is_success", False))
        rec.final_distance = float(last_info[e].get("distance", float("nan")))
        if cfg.record_states:  # where each failure ended, beside where it started and was asked to go
            rec.final_state = _copy(last_info[e].get("state"))
    return records


def _copy(x: Any) -> np.ndarray | None:
    return None if x is None else np.array(x, dtype=np.float64)


def _is_image(obs: Any) -> bool:
    a = np.asarray(obs) if obs is not None else None
    return a is not None and a.dtype == np.uint8 and a.ndim == 3 and a.shape[-1] == 3
