"""Ground-truth goal-conditioned tasks with pixel observations: the task registry (docs/INTERFACES.md).

    from envs.mujoco_tasks import TASKS, make_task
    task = make_task("reacher", image_size=64)
    frame, info = task.reset(seed=0)          # frame (64, 64, 3) uint8; info["state"], ["goal_state"], ...
    frame, reward, terminated, truncated, info = task.step(task.action_space.sample())
    task.goal_image                            # (64, 64, 3) uint8: the goal, as the only goal signal
    copy = make_task("reacher"); copy.set_state(task.get_state())   # steps exactly like `task`

Tasks: `reacher` (Reacher-v5), `pusher` (Pusher-v5), `point_maze` (our MJCF), and the field's
benchmarks `dmc_reacher` (dm_control's suite reacher-easy, MuJoCo) and `pusht` (gym-pusht's PushT,
pymunk physics: not MuJoCo). All are backends of one protocol, `envs.tasks.base.GroundTruthTask`
(MuJoCo-MJCF: `GoalPixelTask`); dm_control and gym-pusht are imported only when such a task is
made. `render=False` builds a task without a renderer (frames are None): for planners that score
true states.

MuJoCo is imported here, not in `envs/__init__.py`; the headless GL backend (MUJOCO_GL) is
chosen first, since MuJoCo reads it at import.
"""
from __future__ import annotations

from envs.rendering import import_mujoco, select_gl_backend

select_gl_backend(strict=False)  # before the first `import mujoco`; errors surface when rendering
import_mujoco()  # a MUJOCO_GL whose library is missing fails here: say which, not PyOpenGL's error

from envs.actions import check_action  # noqa: E402
from envs.tasks.base import GoalPixelTask, GroundTruthTask, TaskSpec  # noqa: E402
from envs.tasks.dmc_reacher import DMCReacherTask  # noqa: E402
from envs.tasks.point_maze import PointMazeTask  # noqa: E402
from envs.tasks.pusher import PusherTask  # noqa: E402
from envs.tasks.pusht import PushTTask  # noqa: E402
from envs.tasks.reacher import ReacherTask  # noqa: E402

TASK_CLASSES: dict[str, type[GroundTruthTask]] = {
    "reacher": ReacherTask,
    "pusher": PusherTask,
    "point_maze": PointMazeTask,
    "dmc_reacher": DMCReacherTask,
    "pusht": PushTTask,
}
TASKS: dict[str, TaskSpec] = {name: cls.spec_ for name, cls in TASK_CLASSES.items()}


def make_task(name: str, *, image_size: int = 64, max_steps: int | None = None, render: bool = True,
              **kw) -> GroundTruthTask:
    """Build a task by name. Extra keywords: show_goal (draw the goal marker, for debugging),
    terminate_on_success, render_mode; pusht also success="coverage" (gym-pusht's, default) |
    "anchors" (DINO-WM's rule). `make_task(name, **task.task_kwargs)` rebuilds a task."""
    if name not in TASK_CLASSES:
        raise ValueError(f"unknown task {name!r}, expected one of {sorted(TASK_CLASSES)}")
    return TASK_CLASSES[name](image_size=image_size, max_steps=max_steps, render=render, **kw)


__all__ = ["TASKS", "TASK_CLASSES", "TaskSpec", "GroundTruthTask", "GoalPixelTask", "make_task", "check_action"]
