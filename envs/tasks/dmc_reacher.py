"""`dmc_reacher`: dm_control's suite reacher (`suite.load("reacher", "easy")`), DINO-WM's and LeWM's DMC Reacher.

The simulator is dm_control's own: its `reacher.xml` and `Physics`, stepped by `physics.step()`
after the suite task's `before_step` (which sets the controls), exactly what dm_control's
`control.Environment.step` does, minus its 20 s time limit (our episodes and the oracle's copies
keep their own clock). One decision holds the action for 5 control steps of 0.02 s (DINO-WM's
frameskip 5); actions are dm_control's own, torques in [-1, 1]^2.

Start and goal: dm_control's episode initialisation (`Reacher.initialize_episode`: random
joint angles, the target at a uniform angle and a radius in [0.05, 0.20] m), redrawn while the
start is already a success; the goal state is an arm pose with the finger on that target (the
analytic inverse kinematics, one of the two elbow solutions at random), so that the goal image
shows the goal reached. The target sphere is hidden in the pixels: the goal reaches a policy or
a model only through the goal image.

Success is dm_control's own test: the reward's tolerance, finger within target radius + finger
radius (0.05 + 0.01 m for `easy`) of the target centre; `info["is_success"]` is
`Reacher.get_reward(physics) == 1` on the live physics.

State (S = 6): `physics.get_state()` (shoulder, wrist, their velocities) and the target xy,
a model parameter in dm_control's reacher (`geom_pos`), so that a copy is exact; extra =
`qacc_warmstart`. Frames: one reused `mujoco.Renderer` (envs.rendering.FrameRenderer) at the
model's top-down `fixed` camera, with the skybox, shadows and reflections off and the floor's
texture dropped -- visual options only, the physics is untouched (bench/task_speed.py measures
the difference).
"""
from __future__ import annotations

import math

import numpy as np

from envs.tasks.base import GroundTruthTask, TaskSpec, scalar_or_array
from envs.tasks.phrases import distance_words, heading_words, motion_words, offset_words, pick, region_words

LINK0, LINK1 = 0.12, 0.12     # shoulder->wrist, wrist->finger (reacher.xml body offsets)
WRIST_LIMIT = math.radians(160)
TARGET_SIZE, FINGER_SIZE = 0.05, 0.01   # dm_control's `easy` target radius, the finger's radius
CONTROL_STEPS = 5             # dm_control control steps per decision
FLOOR_RGB = (0.15, 0.25, 0.35)  # the mean of the floor's checker texture (rgb1 .1 .2 .3, rgb2 .2 .3 .4)

SPEC = TaskSpec(
    name="dmc_reacher",
    description="dm_control suite reacher-easy (MuJoCo) seen from its top camera; torques in [-1, 1]^2 held "
                "5 control steps; success: dm_control's own test, finger within 6 cm of the target centre",
    action_dim=2, action_scale=1.0, action_repeat=CONTROL_STEPS, frame_skip=1, sim_timestep=0.02,
    episode_steps=50, success_threshold=TARGET_SIZE + FINGER_SIZE, state_dim=6, full_state_dim=15,
    camera=(), backend="dm_control",
)


def finger(q: np.ndarray) -> np.ndarray:
    """(..., 2) joint angles -> (..., 2) finger xy (forward kinematics of dm_control's reacher.xml)."""
    q0, q01 = q[..., 0], q[..., 0] + q[..., 1]
    return np.stack([LINK0 * np.cos(q0) + LINK1 * np.cos(q01), LINK0 * np.sin(q0) + LINK1 * np.sin(q01)], -1)


def reach_pose(target: np.ndarray, elbow: float) -> np.ndarray:
    """Joint angles (2,) that put the finger on `target` (2,); elbow = +1 or -1 picks the solution."""
    r2 = float(np.dot(target, target))
    c = np.clip((r2 - LINK0 ** 2 - LINK1 ** 2) / (2 * LINK0 * LINK1), -1.0, 1.0)
    q1 = elbow * math.acos(c)
    q0 = math.atan2(target[1], target[0]) - math.atan2(LINK1 * math.sin(q1), LINK0 + LINK1 * math.cos(q1))
    return np.array([math.atan2(math.sin(q0), math.cos(q0)), q1])


class DMCReacherTask(GroundTruthTask):
    """dm_control's reacher behind the ground-truth task protocol (module docstring)."""

    spec_ = SPEC

    def _build(self, render: bool, show_goal: bool) -> None:
        import mujoco

        from envs.rendering import FrameRenderer, _load_triton_first

        _load_triton_first()   # dm_control's import opens its GL backend (EGL: an LLVM); triton must come first
        from dm_control import suite

        self._env = suite.load("reacher", "easy", task_kwargs={"random": 0})
        self._env.reset()  # dm_control's own initialisation (sets the target size of `easy`)
        self.physics, self._task = self._env.physics, self._env.task
        self._substeps = int(round(self._env.control_timestep() / self.physics.timestep()))
        m = self.physics.model.ptr
        size = self.physics.named.model.geom_size[["target", "finger"], 0]
        if (abs(float(size.sum()) - SPEC.success_threshold) > 1e-12 or self._substeps * SPEC.frame_skip != 1
                or abs(self.physics.timestep() - SPEC.sim_timestep) > 1e-12):
            raise RuntimeError(f"dm_control's reacher differs from SPEC (radii {size}, timestep "
                               f"{self.physics.timestep()}, substeps {self._substeps})")
        self._target = m.geom("target").id
        if not show_goal:
            m.geom_matid[self._target] = -1      # the material's colour would override the geom's alpha
            m.geom_rgba[self._target, 3] = 0.0  # alpha 0: not drawn at all
        self._renderer = None
        if render:
            for mat in range(m.nmat):           # visual only: no textures (the checkered floor), no reflections
                if m.mat_texid[mat].max() >= 0:  # a textured material: its texture's mean colour instead
                    m.mat_rgba[mat, :3] = FLOOR_RGB
                m.mat_texid[mat] = -1
                m.mat_reflectance[mat] = 0.0
            cam = mujoco.MjvCamera()
            cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
            cam.fixedcamid = m.camera("fixed").id
            self._renderer = FrameRenderer(m, self.image_size, self.image_size, cam)
            self._scratch = mujoco.MjData(m)    # for drawing the goal image without touching the physics

    # -- simulator ---------------------------------------------------------------
    def _physics_state(self) -> np.ndarray:
        target = self.physics.named.model.geom_pos["target", :2]
        return np.concatenate([self.physics.get_state(), target]).astype(np.float64)

    def _restore_physics(self, state: np.ndarray) -> None:
        with self.physics.reset_context():  # mj_resetData, then dm_control's after_reset (mj_forward)
            self.physics.set_state(np.asarray(state[:4], np.float64))
            self.physics.named.model.geom_pos["target", :2] = state[4:6]

    def _extra_state(self) -> np.ndarray:
        return self.physics.data.qacc_warmstart

    def _set_extra(self, extra: np.ndarray) -> None:
        self.physics.data.qacc_warmstart[:] = extra

    def _advance(self, action: np.ndarray) -> None:
        for _ in range(SPEC.action_repeat):  # what control.Environment.step does, without its time limit
            self._task.before_step(action, self.physics)
            self.physics.step(self._substeps)
            self._task.after_step(self.physics)

    def _success_now(self, state: np.ndarray, distance: float) -> bool:
        return float(self._task.get_reward(self.physics)) >= 1.0   # dm_control's own tolerance test

    def _draw(self) -> np.ndarray:
        return self._renderer.render(self.physics.data.ptr)

    def _draw_state(self, state: np.ndarray) -> np.ndarray:
        import mujoco

        m, d = self.physics.model.ptr, self._scratch
        mujoco.mj_resetData(m, d)
        d.qpos[:], d.qvel[:] = state[:2], state[2:4]
        mujoco.mj_forward(m, d)   # the target is hidden: its position does not change the frame
        return self._renderer.render(d)

    def _close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self.renders = False

    # -- task ----------------------------------------------------------------------
    def _sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        from dm_control.suite.utils import randomizers

        rs = np.random.RandomState(int(rng.integers(2 ** 32)))
        # dm_control's Reacher.initialize_episode, with our episode's random stream
        with self.physics.reset_context():
            randomizers.randomize_limited_and_rotational_joints(self.physics, rs)
        angle, radius = rs.uniform(0, 2 * np.pi), rs.uniform(.05, .20)
        target = np.array([radius * np.sin(angle), radius * np.cos(angle)])
        start = np.concatenate([self.physics.get_state(), target])
        while self.is_success(start, start):   # not already solved: redraw the arm
            with self.physics.reset_context():
                randomizers.randomize_limited_and_rotational_joints(self.physics, rs)
            start[:4] = self.physics.get_state()
        goal = np.zeros(6)
        goal[:2] = reach_pose(target, 1.0 if rs.uniform() < 0.5 else -1.0)
        return start, self._normalize_goal(goal)

    def _normalize_goal(self, goal: np.ndarray) -> np.ndarray:
        goal = np.array(goal, dtype=np.float64)
        goal[4:6] = finger(goal[:2])   # the (hidden) target sits at the goal pose's finger
        goal[2:4] = 0.0
        return goal

    def _with_goal(self, start: np.ndarray, goal: np.ndarray) -> np.ndarray:
        start = np.array(start, dtype=np.float64)
        start[4:6] = goal[4:6]
        return start

    @classmethod
    def distance(cls, state, goal_state):
        """Finger-to-target distance in metres (dm_control's `finger_to_target_dist`), the goal's target."""
        s, g = cls._split(state), cls._split(goal_state)
        d = np.linalg.norm(finger(s[..., :2]) - g[..., 4:6], axis=-1)
        return scalar_or_array(d)

    @classmethod
    def caption_of(cls, state) -> str:
        s = cls._split_one(state)
        q, qd, target = s[:2], s[2:4], s[4:6]
        tip = finger(q)
        q0, q01 = q[0], q[0] + q[1]
        vel = np.array([-LINK0 * np.sin(q0) * qd[0] - LINK1 * np.sin(q01) * (qd[0] + qd[1]),
                        LINK0 * np.cos(q0) * qd[0] + LINK1 * np.cos(q01) * (qd[0] + qd[1])])
        rel = target - tip
        dist = float(np.linalg.norm(rel))
        shoulder = math.degrees(math.atan2(math.sin(q0), math.cos(q0)))
        bend = abs(q[1])
        wrist = ("is nearly straight" if bend < 0.25 else
                 f"bends {'slightly ' if bend < 1.0 else ('sharply ' if bend > 2.0 else '')}to the "
                 f"{'left' if q[1] > 0 else 'right'}")
        first = (f"The arm points {heading_words(q0)} (about {15 * round(shoulder / 15):.0f} degrees) "
                 f"and the wrist {wrist}.")
        where = f"The finger is {region_words(tip[0], tip[1], 0.24)} the arena"
        if dist <= SPEC.success_threshold:
            goal = pick(("it is on the target", "it has reached the target"), *q)
            return f"{first} {where}; {goal} and {motion_words(vel, None, 0.05, 0.5)}."
        return (f"{first} {where}, {distance_words(dist)} {offset_words(-rel[0], -rel[1])} the target; "
                f"it {motion_words(vel, rel, 0.05, 0.5)}.")
