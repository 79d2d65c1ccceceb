"""`pusher`: Gymnasium Pusher-v5's 7-DoF arm pushing a puck to a goal shown in an image.

Dynamics are Pusher-v5's exactly: its own `pusher_v5.xml` and `mj_step` with its
frame_skip (5); one decision holds the torques for 2 Pusher-v5 steps (0.1 s) over the full
Pusher-v5 range [-2, 2]: with random torques the gripper then moves ~6 cm (~4 px) per
decision, about as far as Reacher's learnable setting moves its fingertip in pixels.
Episodes last 100 decisions (10 s): a plain CEM oracle on the true state (H=10, 64
samples x 3 iterations, `cost` below) reaches the gripper to the puck in ~10 decisions but
then pushes slowly; it ended 0.09-0.11 m from the goal after 50 decisions and succeeded in
3/3 seeds after 100.

Pusher-v5 always puts the goal at one spot; here the goal is sampled like the puck (the
same region, at least 17 cm apart, Pusher-v5's own start rule) so that it must be read
from the goal image. The red goal disc is hidden in the pixels. Success: puck centre
within 5 cm of the goal.

Goal image: the puck at the goal and the arm in its home pose (all joints 0, the pose every
episode starts from). At home the arm lies along y = -0.6, outside the region where pucks
and goals are (y in [-0.35, -0.05]), so it never hides the puck; a goal pose touching the
puck would instead tell the planner which side to push from, which the goal does not fix.
"""
from __future__ import annotations

import functools
from pathlib import Path

import gymnasium
import mujoco
import numpy as np

from envs.tasks.base import GoalPixelTask, TaskSpec, scalar_or_array
from envs.tasks.phrases import distance_words, motion_words, offset_words, pick, region_words, side_words

XML = Path(gymnasium.__file__).parent / "envs" / "mujoco" / "assets" / "pusher_v5.xml"
OBJ_Y, OBJ_X, GOAL_Y, GOAL_X = 7, 8, 9, 10  # qpos indices of the puck and goal slide joints
OBJECT_HOME = np.array([0.45, -0.05])        # world xy of the puck/goal bodies at joint value 0
NEAR_WEIGHT = 0.5                            # Pusher-v5's reward_near_weight, used by `cost`
MIN_SEPARATION = 0.17                        # Pusher-v5: puck starts at least this far from the goal
TABLE_Z = -0.325

SPEC = TaskSpec(
    name="pusher",
    description="Pusher-v5 7-DoF arm seen from above; push the white puck to where the goal image shows it",
    action_dim=7, action_scale=2.0, action_repeat=2, frame_skip=5, sim_timestep=0.01,
    episode_steps=100, success_threshold=0.05, state_dim=22, full_state_dim=56,
    camera=(1.2, -90.0, 90.0, 0.45, -0.3, TABLE_Z),
)


def _sample_offset(rng: np.random.Generator) -> np.ndarray:
    """(slide y, slide x) offsets in Pusher-v5's puck start region."""
    return np.array([rng.uniform(-0.3, 0.0), rng.uniform(-0.2, 0.2)])


@functools.lru_cache(maxsize=1)
def _kinematics() -> tuple[mujoco.MjModel, mujoco.MjData]:
    model = mujoco.MjModel.from_xml_path(str(XML))
    return model, mujoco.MjData(model)


def gripper_position(state: np.ndarray) -> np.ndarray:
    """(..., S) states -> (..., 3) world position of Pusher-v5's `tips_arm` body."""
    model, data = _kinematics()
    bid = model.body("tips_arm").id
    qpos = np.asarray(state)[..., :model.nq]
    flat = qpos.reshape(-1, model.nq)
    out = np.empty((flat.shape[0], 3))
    for i, q in enumerate(flat):
        data.qpos[:] = q
        mujoco.mj_kinematics(model, data)
        out[i] = data.xpos[bid]
    return out.reshape(*qpos.shape[:-1], 3)


def puck_xy(state: np.ndarray) -> np.ndarray:
    """(..., S) -> (..., 2) world xy of the puck."""
    return OBJECT_HOME + np.stack([state[..., OBJ_X], state[..., OBJ_Y]], -1)


class PusherTask(GoalPixelTask):
    spec_ = SPEC
    xml = XML
    goal_joints = (GOAL_Y, GOAL_X)
    goal_bodies = ("goal",)

    def _sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        goal_off = _sample_offset(rng)
        while True:
            obj_off = _sample_offset(rng)
            if np.linalg.norm(obj_off - goal_off) > MIN_SEPARATION:
                break
        start = np.zeros(22)
        start[OBJ_Y:OBJ_X + 1] = obj_off
        start[11:18] = rng.uniform(-0.005, 0.005, 7)  # Pusher-v5's initial arm velocity noise
        goal = np.zeros(22)
        goal[OBJ_Y:OBJ_X + 1] = goal_off
        return start, self._normalize_goal(goal)

    def _marker(self, goal: np.ndarray) -> np.ndarray:
        return goal[[OBJ_Y, OBJ_X]]  # the (hidden) disc under the puck

    @classmethod
    def distance(cls, state, goal_state):
        s, g = cls._split(state), cls._split(goal_state)
        d = np.linalg.norm(puck_xy(s) - puck_xy(g), axis=-1)
        return scalar_or_array(d)

    def cost(self, state, goal_state):
        """Pusher-v5's shaping: puck-goal distance + 0.5 * gripper-puck distance (3-D)."""
        s = self._split(state)
        puck = np.concatenate([puck_xy(s), np.full(s.shape[:-1] + (1,), -0.275)], -1)
        near = np.linalg.norm(gripper_position(s) - puck, axis=-1)
        c = np.asarray(self.distance(s, goal_state)) + NEAR_WEIGHT * near
        return scalar_or_array(c)

    @classmethod
    def caption_of(cls, state) -> str:
        s = cls._split_one(state)
        puck = puck_xy(s)
        goal = OBJECT_HOME + np.array([s[GOAL_X], s[GOAL_Y]])
        vel = np.array([s[11 + OBJ_X], s[11 + OBJ_Y]])
        rel = goal - puck
        dist = float(np.linalg.norm(rel))
        lx, ly = np.array(SPEC.camera[3:5])
        name = pick(("The white puck", "The puck"), *puck)
        if dist <= SPEC.success_threshold:
            first = f"{name} sits on the goal spot {region_words(puck[0] - lx, puck[1] - ly, 0.5)} the view"
        else:
            first = (f"{name} is {distance_words(dist)} {offset_words(-rel[0], -rel[1])} the goal spot "
                     f"and {motion_words(vel, rel, 0.02, 0.3)}")
        grip = gripper_position(s)
        to_puck = grip[:2] - puck
        gap = float(np.linalg.norm(to_puck))
        height = grip[2] - TABLE_Z
        if gap < 0.09:
            second = pick(("The gripper touches the puck", "The gripper is right at the puck"), *grip)
            second += f" on its {side_words(to_puck[0], to_puck[1])} side"
        else:
            second = f"The gripper is {distance_words(gap)} {offset_words(to_puck[0], to_puck[1])} the puck"
        second += ", low over the table" if height < 0.12 else ", high above the table"
        return f"{first}. {second}."
