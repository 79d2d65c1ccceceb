"""Data-collection policies: state -> action in the task's action box.

A policy is made per episode with the episode's rng, so its noise depends only on the
episode seed. Each decision is held for `hold` env steps (one env step already repeats the
action `action_repeat` simulator steps).

    uniform     iid uniform in the box: covers the workspace
    ou          Ornstein-Uhlenbeck noise (mean-reverting, temporally correlated)
    correlated  smooth noise: linear interpolation between uniform knots every few decisions
    scripted    goal seeking with the true state (data collection only): short-horizon
                sampling lookahead on a render-free copy of the task, minimising the
                task's own goal distance, plus Gaussian noise
"""
from __future__ import annotations

from typing import Callable

import numpy as np


class Policy:
    """Base: holds each decision for `hold` steps; subclasses implement `decide`."""

    name = "policy"

    def __init__(self, task, rng: np.random.Generator, hold: int = 1):
        if hold < 1:
            raise ValueError(f"hold={hold}, expected >= 1")
        self.task, self.rng, self.hold = task, rng, hold
        self.low = np.asarray(task.action_space.low, dtype=np.float32)
        self.high = np.asarray(task.action_space.high, dtype=np.float32)
        self.mid, self.half = (self.high + self.low) / 2, (self.high - self.low) / 2
        self._t, self._action = 0, None

    def __call__(self, state: np.ndarray) -> np.ndarray:
        if self._t % self.hold == 0:
            self._action = np.clip(self.decide(state), self.low, self.high).astype(np.float32)
        self._t += 1
        return self._action

    def decide(self, state: np.ndarray) -> np.ndarray:  # (A,)
        raise NotImplementedError

    def _from_unit(self, u: np.ndarray) -> np.ndarray:
        """[-1, 1]^A -> the action box."""
        return self.mid + self.half * u


class Uniform(Policy):
    name = "uniform"

    def decide(self, state):
        return self.rng.uniform(self.low, self.high)


class OrnsteinUhlenbeck(Policy):
    """u <- u + theta (0 - u) + sigma N(0, 1), in unit-box coordinates; stationary std ~0.55."""

    name = "ou"

    def __init__(self, task, rng, hold=1, theta: float = 0.15, sigma: float = 0.3):
        super().__init__(task, rng, hold)
        self.theta, self.sigma = theta, sigma
        self.u = rng.uniform(-1, 1, self.low.shape)

    def decide(self, state):
        self.u = self.u - self.theta * self.u + self.sigma * self.rng.standard_normal(self.u.shape)
        self.u = np.clip(self.u, -1, 1)
        return self._from_unit(self.u)


class Correlated(Policy):
    """Piecewise-linear noise through uniform knots `period` decisions apart: smooth sweeps."""

    name = "correlated"

    def __init__(self, task, rng, hold=1, period: int = 4):
        super().__init__(task, rng, hold)
        self.period, self.k = period, 0
        self.a, self.b = rng.uniform(-1, 1, self.low.shape), rng.uniform(-1, 1, self.low.shape)

    def decide(self, state):
        if self.k == self.period:
            self.a, self.b, self.k = self.b, self.rng.uniform(-1, 1, self.low.shape), 0
        u = self.a + (self.b - self.a) * (self.k / self.period)
        self.k += 1
        return self._from_unit(u)


class Scripted(Policy):
    """Goal seeking by sampling lookahead on a copy of the simulator (true state, data only).

    Each decision: `candidates` constant actions (the previous one, zero, and random ones)
    are each held for `horizon` steps from the current true state on `model` (a task
    instance without rendering); the one ending closest to the goal by the task's own
    `distance` wins, then Gaussian noise of `noise` x action scale is added. Holding the
    action over a horizon accounts for momentum, so the arm brakes before the goal.
    """

    name = "scripted"

    def __init__(self, task, rng, hold=1, noise: float = 0.3, model=None,
                 candidates: int = 24, horizon: int = 3):
        super().__init__(task, rng, hold)
        if model is None:
            raise ValueError("the scripted policy needs `model`, a render-free copy of the task")
        self.model, self.noise = model, noise
        self.candidates, self.horizon = candidates, horizon
        self.prev = np.zeros_like(self.low)

    def decide(self, state):
        goal = np.asarray(self.task.goal_state)
        cands = [self.prev, np.clip(np.zeros_like(self.low), self.low, self.high)]
        cands += list(self.rng.uniform(self.low, self.high, (self.candidates - 2, len(self.low))))
        best, best_cost = cands[0], np.inf
        for a in cands:
            self.model.set_state(state)
            for _ in range(self.horizon):
                self.model.step(a)
            cost = float(self.model.distance(np.asarray(self.model.get_state()), goal))
            if cost < best_cost:
                best, best_cost = a, cost
        self.prev = np.asarray(best, dtype=np.float32)
        return best + self.noise * self.half * self.rng.standard_normal(self.low.shape)


POLICIES: dict[str, Callable[..., Policy]] = {
    "uniform": Uniform, "ou": OrnsteinUhlenbeck, "correlated": Correlated, "scripted": Scripted,
}


def pick_policy(policy: str, mixture: dict[str, float], rng: np.random.Generator) -> str:
    """The policy name for one episode: `policy` itself, or a weighted draw for "mixture"."""
    if policy != "mixture":
        return policy
    names = sorted(mixture)  # sorted: the draw must not depend on dict order
    w = np.array([mixture[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=w / w.sum()))]


def make_policy(name: str, task, rng: np.random.Generator, hold: int = 1, noise: float = 0.3,
                model=None) -> Policy:
    if name not in POLICIES:
        raise ValueError(f"policy {name!r}, expected one of {sorted(POLICIES)}")
    if name == "scripted":
        return Scripted(task, rng, hold, noise=noise, model=model)
    return POLICIES[name](task, rng, hold)
