"""`reacher`: Gymnasium Reacher-v5's two-link arm, seen from above, reaching a goal image.

Dynamics are Reacher-v5's exactly: its own `reacher.xml` from the gymnasium package and
`mj_step` with its frame_skip (2); one decision holds the torque for 5 Reacher-v5 steps.
Torques are limited to [-0.2, 0.2] (Reacher-v5 allows [-1, 1], with gear 200 that spins the
arm at ~37 rad/s and leaves nothing learnable; CALIBRATION.md).

The goal is a random joint configuration, so the goal image (the arm drawn there) is
exactly reachable; Reacher-v5's target joints hold the goal fingertip position and its red
sphere is hidden in the pixels. Success: fingertip within 2 cm of the goal fingertip (either
elbow solution counts).
"""
from __future__ import annotations

import math
from pathlib import Path

import gymnasium
import numpy as np

from envs.tasks.base import GoalPixelTask, TaskSpec, scalar_or_array
from envs.tasks.phrases import distance_words, heading_words, motion_words, offset_words, pick, region_words

XML = Path(gymnasium.__file__).parent / "envs" / "mujoco" / "assets" / "reacher.xml"
LINK0, LINK1 = 0.1, 0.11   # shoulder->elbow, elbow->fingertip (reacher.xml body offsets)
ELBOW_LIMIT = 2.8          # goal/start elbow angles stay inside the joint range [-3, 3]

SPEC = TaskSpec(
    name="reacher",
    description="Reacher-v5 two-link arm seen from above; move the fingertip to where the goal image shows it",
    action_dim=2, action_scale=0.2, action_repeat=5, frame_skip=2, sim_timestep=0.01,
    episode_steps=50, success_threshold=0.02, state_dim=8, full_state_dim=21,
    camera=(0.62, -90.0, 90.0, 0.0, 0.0, 0.0),
)


def fingertip(q: np.ndarray) -> np.ndarray:
    """(..., 2) joint angles -> (..., 2) fingertip xy (forward kinematics of reacher.xml)."""
    q0, q01 = q[..., 0], q[..., 0] + q[..., 1]
    return np.stack([LINK0 * np.cos(q0) + LINK1 * np.cos(q01), LINK0 * np.sin(q0) + LINK1 * np.sin(q01)], -1)


def fingertip_velocity(q: np.ndarray, qd: np.ndarray) -> np.ndarray:
    """(..., 2) angles and angular velocities -> (..., 2) fingertip velocity (the Jacobian times qd)."""
    q0, q01 = q[..., 0], q[..., 0] + q[..., 1]
    w0, w01 = qd[..., 0], qd[..., 0] + qd[..., 1]
    return np.stack([-LINK0 * np.sin(q0) * w0 - LINK1 * np.sin(q01) * w01,
                     LINK0 * np.cos(q0) * w0 + LINK1 * np.cos(q01) * w01], -1)


def _elbow_words(q1: float) -> str:
    a = abs(q1)
    if a < 0.25:
        return pick(("is nearly straight", "is almost fully stretched"), q1)
    side = "left" if q1 > 0 else "right"  # a counter-clockwise bend turns the forearm left
    amount = "slightly" if a < 1.0 else ("sharply" if a > 2.0 else "")
    return f"is bent {amount} to the {side}".replace("  ", " ")


class ReacherTask(GoalPixelTask):
    spec_ = SPEC
    xml = XML
    goal_joints = (2, 3)   # target_x, target_y
    goal_geoms = ("target",)

    def _sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        goal = np.zeros(8)
        goal[:2] = [rng.uniform(-math.pi, math.pi), rng.uniform(-ELBOW_LIMIT, ELBOW_LIMIT)]
        goal = self._normalize_goal(goal)
        while True:  # a start that is not already a success (by a margin)
            q = np.array([rng.uniform(-math.pi, math.pi), rng.uniform(-ELBOW_LIMIT, ELBOW_LIMIT)])
            if np.linalg.norm(fingertip(q) - goal[2:4]) > 2.5 * SPEC.success_threshold:
                break
        start = np.zeros(8)
        start[:2] = q
        start[4:6] = rng.uniform(-0.005, 0.005, 2)  # Reacher-v5's initial velocity noise
        return start, goal

    def _marker(self, goal: np.ndarray) -> np.ndarray:
        return fingertip(goal[:2])  # the (hidden) target sits at the goal fingertip

    @classmethod
    def distance(cls, state, goal_state):
        s, g = cls._split(state), cls._split(goal_state)
        d = np.linalg.norm(fingertip(s[..., :2]) - fingertip(g[..., :2]), axis=-1)
        return scalar_or_array(d)

    @classmethod
    def caption_of(cls, state) -> str:
        s = cls._split_one(state)
        q, target, qd = s[:2], s[2:4], s[4:6]
        tip, vel = fingertip(q), fingertip_velocity(q, qd)
        rel = target - tip
        dist = float(np.linalg.norm(rel))
        shoulder = math.degrees(math.atan2(math.sin(q[0]), math.cos(q[0])))
        upper = (f"The upper arm points {heading_words(q[0])} (about {15 * round(shoulder / 15):.0f} degrees) "
                 f"and the elbow {_elbow_words(math.atan2(math.sin(q[1]), math.cos(q[1])))}.")
        where = f"The fingertip is {region_words(tip[0], tip[1], 0.21)} the arena"
        if dist <= SPEC.success_threshold:
            goal = pick(("it rests on the target", "it has reached the target", "it is on the target"), *q)
            return f"{upper} {where}; {goal} and {motion_words(vel, None, 0.05, 0.5)}."
        side = offset_words(-rel[0], -rel[1])
        goal = f"{distance_words(dist)} {side} the target"
        verb = pick(("it", "the tip"), *q)
        return f"{upper} {where}, {goal}; {verb} {motion_words(vel, rel, 0.05, 0.5)}."
