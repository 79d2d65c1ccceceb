"""The tasks' data policies (scripted and random controllers): state -> action in the task's action box.

They drive `lw collect` (pretrain.data.collect) and the anchors' held-out trajectories of the
benchmark (planners.goals): `episode_policy(task, seed, ...)` is the one draw of episode `seed`'s
policy, so both see the same episode for the same seed. A policy is made per episode with the
episode's rng, so its noise depends only on the episode seed. Each decision is held for `hold` env steps (one env step already repeats the
action `action_repeat` simulator steps).

    uniform     iid uniform in the box: covers the workspace
    ou          Ornstein-Uhlenbeck noise (mean-reverting, temporally correlated)
    correlated  smooth noise: linear interpolation between uniform knots every few decisions
    scripted    goal seeking with the true state (data collection only), plus noise:
                reacher, dmc_reacher: PD control toward the goal joint angles; point_maze:
                descent of the corridor distance; pusht: a pusher that goes behind the T and
                pushes it (toward the goal or in a random direction), mixed with random
                moves; other tasks (pusher): sampling lookahead on a render-free copy of the
                task minimising its planning cost `task.cost`
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


class Lookahead(Policy):
    """Goal seeking by sampling lookahead on a copy of the simulator (true state, data only).

    Each decision: `candidates` constant actions (the previous one, zero, and random ones)
    are each held for `horizon` steps from the current state (a full `get_state()` vector)
    on `model` (a task made with render=False; one is made if None); the one with the lowest `model.cost` at
    the end wins, then Gaussian noise of `noise` x action scale is added. Holding the action
    over a horizon accounts for momentum. Generic but costly (candidates x horizon
    simulator steps per decision), so tasks with a cheap controller use that instead.
    """

    name = "scripted"

    def __init__(self, task, rng, hold=1, noise: float = 0.3, model=None,
                 candidates: int = 16, horizon: int = 3):
        super().__init__(task, rng, hold)
        self.model, self.noise = model if model is not None else _twin(task), noise
        self.candidates, self.horizon = candidates, horizon
        self.prev = np.zeros_like(self.low)

    def decide(self, state):
        goal = np.asarray(self.task.goal_state)
        state = np.asarray(state)
        cands = [self.prev, np.clip(np.zeros_like(self.low), self.low, self.high)]
        cands += list(self.rng.uniform(self.low, self.high, (self.candidates - 2, len(self.low))))
        best, best_cost = cands[0], np.inf
        for a in cands:
            self.model.set_state(state)
            for _ in range(self.horizon):
                self.model.step(a)
            cost = float(self.model.cost(self.model.get_state(), goal))
            if cost < best_cost:
                best, best_cost = a, cost
        self.prev = np.asarray(best, dtype=np.float32)
        return best + self.noise * self.half * self.rng.standard_normal(self.low.shape)


class ReacherPD(Policy):
    """Reacher: PD control of the joint angles toward the goal's (true state, data only).

    The goal state holds a joint configuration that puts the fingertip on the goal; torque =
    kp * angle error - kd * angular velocity (+ noise), the shoulder error wrapped to
    [-pi, pi] so the arm takes the short way round.
    """

    name = "scripted"

    def __init__(self, task, rng, hold=1, noise: float = 0.3, kp: float = 0.4, kd: float = 0.04, **_):
        super().__init__(task, rng, hold)
        self.noise, self.kp, self.kd = noise, kp, kd

    def decide(self, state):
        q, qd = state[0:2], state[4:6]  # reacher qpos = (shoulder, elbow, target x, y)
        err = np.asarray(self.task.goal_state)[:2] - q
        err[0] = (err[0] + np.pi) % (2 * np.pi) - np.pi
        a = self.kp * err - self.kd * qd
        return a + self.noise * self.half * self.rng.standard_normal(a.shape)


class DMCReacherPD(ReacherPD):
    """dm_control reacher: the same PD control (state = shoulder, wrist, their velocities, target);
    torques in [-1, 1] with gear 0.05, hence the larger gains."""

    def __init__(self, task, rng, hold=1, noise: float = 0.3, kp: float = 2.0, kd: float = 0.2, **_):
        super().__init__(task, rng, hold, noise=noise, kp=kp, kd=kd)

    def decide(self, state):
        q, qd = state[0:2], state[2:4]
        err = np.asarray(self.task.goal_state)[:2] - q
        err[0] = (err[0] + np.pi) % (2 * np.pi) - np.pi
        a = self.kp * err - self.kd * qd
        return a + self.noise * self.half * self.rng.standard_normal(a.shape)


class PushTPusher(Policy):
    """PushT: contact-rich pushing data (true state, data only). Repeats: pick a push -- toward the
    goal pose's centre (probability `goal_bias`) or in a random direction, through a point offset
    sideways from the T's centre so that pushes also turn it -- drive to a point `standoff` units
    behind the T (around it when the T is in the way), then push `push_steps` decisions through it.
    With probability `random_moves` a segment is uniform random actions instead; Gaussian noise of
    `noise` x action scale on every action. Positions in gym-pusht units (arena 512)."""

    name = "scripted"

    def __init__(self, task, rng, hold=1, noise: float = 0.3, goal_bias: float = 0.5,
                 random_moves: float = 0.15, standoff: float = 95.0, push_steps: tuple[int, int] = (3, 7), **_):
        super().__init__(task, rng, hold)
        from envs.tasks import pusht

        self.pt = pusht
        self.noise, self.goal_bias, self.random_moves = noise, goal_bias, random_moves
        self.standoff, self.push_steps = standoff, push_steps
        self.phase, self.left = "pick", 0

    def _centre(self, pose):
        return pose[:2] + self.pt._rot(pose[2]) @ self.pt.T_CENTROID

    def _toward(self, agent, point, speed):
        """The action that moves the pusher's target toward `point`, at most `speed` x scale."""
        u = (point - agent) / self.pt.DISPLACEMENT
        n = float(np.linalg.norm(u))
        cap = speed * float(self.high[0])
        return u if n <= cap else u * (cap / n)

    def decide(self, state):
        s = np.asarray(state)[: self.task.spec_.state_dim]
        agent, pose = s[:2], s[2:5]
        centre = self._centre(pose)
        if self.phase == "pick" or self.left <= 0:
            if self.rng.uniform() < self.random_moves:
                self.phase, self.left = "random", int(self.rng.integers(2, 5))
            else:
                goal = self._centre(np.asarray(self.task.goal_state)[2:5])
                d = goal - centre
                if self.rng.uniform() >= self.goal_bias or np.linalg.norm(d) < 15:
                    ang = self.rng.uniform(-np.pi, np.pi)
                    d = np.array([np.cos(ang), np.sin(ang)])
                    if np.any(np.abs(centre + 150 * d - 256) > 200):   # not into a wall (gym-pusht's are thin)
                        d = 256 - centre
                self.dir = d / max(float(np.linalg.norm(d)), 1e-9)
                self.offset = self.rng.uniform(-35, 35)   # off-centre pushes turn the T
                self.phase, self.left = "approach", 8
        if self.phase == "random":
            self.left -= 1
            return self.rng.uniform(self.low, self.high)
        perp = np.array([-self.dir[1], self.dir[0]])
        through = centre + self.offset * perp
        behind = through - self.standoff * self.dir
        if self.phase == "approach":
            self.left -= 1
            if np.linalg.norm(agent - behind) < 20:
                self.phase, self.left = "push", int(self.rng.integers(*self.push_steps))
            else:
                # around the T: if the straight way to `behind` passes near its centre, go via a side point
                seg = behind - agent
                t = np.clip(np.dot(centre - agent, seg) / max(float(np.dot(seg, seg)), 1e-9), 0, 1)
                if np.linalg.norm(agent + t * seg - centre) < 80:
                    side = np.sign(np.dot(agent - centre, perp)) or 1.0
                    behind = centre + 110 * side * perp - 40 * self.dir
                a = self._toward(agent, behind, 1.0)
                return a + self.noise * self.half * self.rng.standard_normal(a.shape)
        self.left -= 1
        a = self._toward(agent, agent + 200 * self.dir + 0.3 * (through - agent), float(self.rng.uniform(0.35, 0.7)))
        return a + self.noise * self.half * self.rng.standard_normal(a.shape)


class MazeDescent(Policy):
    """Point maze: drive the ball down the corridor distance (`task.cost`) to the goal.

    The force motors give the ball a terminal speed of 0.4 m/s per unit action with a 0.1 s
    time constant (one decision), so the action is a velocity command: the negative
    gradient of the corridor distance (a unit vector along the shortest path, by central
    differences), slowed within `brake` metres of the goal.
    """

    name = "scripted"

    def __init__(self, task, rng, hold=1, noise: float = 0.3, brake: float = 0.04, eps: float = 1e-3, **_):
        super().__init__(task, rng, hold)
        self.noise, self.brake, self.eps = noise, brake, eps

    def decide(self, state):
        goal = np.asarray(self.task.goal_state)
        s = np.asarray(state)[: len(goal)]
        probes = np.repeat(s[None], 4, 0)  # (4, S): +x, -x, +y, -y
        for k, (i, d) in enumerate(((0, 1), (0, -1), (1, 1), (1, -1))):
            probes[k, i] += d * self.eps
        c = np.asarray(self.task.cost(probes, goal))
        grad = np.array([c[0] - c[1], c[2] - c[3]]) / (2 * self.eps)
        dist = float(self.task.cost(s, goal))
        u = -grad / max(np.linalg.norm(grad), 1e-9) * min(1.0, dist / self.brake)
        return self._from_unit(u) + self.noise * self.half * self.rng.standard_normal(u.shape)


_TWINS: dict[str, object] = {}  # task name -> render=False copy, one per process


def _twin(task):
    """A render-free copy of `task`'s kind for lookahead rollouts (cached per process)."""
    name = task.spec_.name
    if name not in _TWINS:
        from envs.mujoco_tasks import make_task
        _TWINS[name] = make_task(name, render=False)
    return _TWINS[name]


SCRIPTED: dict[str, Callable[..., Policy]] = {"reacher": ReacherPD, "point_maze": MazeDescent,
                                             "dmc_reacher": DMCReacherPD, "pusht": PushTPusher}


def scripted_policy(task, rng, hold=1, noise=0.3, model=None) -> Policy:
    """The task's goal-seeking controller; sampling lookahead on `model` for tasks without one."""
    cls = SCRIPTED.get(task.spec_.name)
    if cls is not None:
        return cls(task, rng, hold, noise=noise)
    return Lookahead(task, rng, hold, noise=noise, model=model)


POLICIES: dict[str, Callable[..., Policy]] = {
    "uniform": Uniform, "ou": OrnsteinUhlenbeck, "correlated": Correlated, "scripted": scripted_policy,
}


# `lw collect`'s default per-episode policy weights for policy=mixture: broad coverage + goal reaching
DEFAULT_MIXTURE: dict[str, float] = {"uniform": 0.6, "correlated": 0.1, "ou": 0.1, "scripted": 0.2}


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
        return scripted_policy(task, rng, hold, noise=noise, model=model)
    return POLICIES[name](task, rng, hold)


def episode_policy(task, seed: int, policy: str = "mixture", mixture: dict[str, float] | None = None,
                   hold: int = 1, noise: float = 0.3) -> tuple[str, Policy]:
    """Episode `seed`'s data policy on `task`: (its name, the policy), drawn from `default_rng(seed)`
    (the mixture's pick first, then the policy's own noise from the same stream). The draw of
    `lw collect` (EpisodeCollector) and of the anchors' goals (planners.goals); make it before
    `task.reset(seed=seed)`. mixture=None: DEFAULT_MIXTURE."""
    rng = np.random.default_rng(seed)
    name = pick_policy(policy, DEFAULT_MIXTURE if mixture is None else mixture, rng)
    return name, make_policy(name, task, rng, hold=hold, noise=noise)
