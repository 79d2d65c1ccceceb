"""The anchors' published figures and protocol, in one place: what `lw benchmark` prints beside its own.

These are numbers from papers, NOT measured here (their protocol on a GPU, 224 px frames, large
pretrained encoders and data sets of thousands of trajectories); the benchmark table prints them
marked "published, not measured here". The protocol is what their figures were measured under
(LeWM's eval configs; DINO-WM section 4 and Tables 1, 5, 8, 10, 11); `planners.goals` draws its
goals and `lw benchmark goals=anchors budget=anchors` plans under it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

MARK = "published, not measured here"


@dataclass(frozen=True)
class Published:
    """One published success rate on one of the field's tasks."""

    task: str                       # the task of this project it stands beside (envs.mujoco_tasks.TASKS)
    method: str                     # the paper's model
    source: str                     # where the figure is printed
    success: tuple[float, float]    # success rate (low, high); low == high for a single figure
    note: str = ""                  # what the figure was measured with, and how it differs from ours

    def rate(self) -> str:
        lo, hi = self.success
        return f"{lo:.2f}" if lo == hi else f"{lo:.2f}-{hi:.2f}"

    def to_dict(self) -> dict:
        return {**asdict(self), "success": list(self.success), "measured_here": False}


PUBLISHED: tuple[Published, ...] = (
    Published("pusht", "DINO-WM", "arXiv 2411.04983, Table 1", (0.90, 0.90),
              "18.5k training trajectories; state success rule (eval_state)"),
    Published("pusht", "LeWM", "arXiv 2603.19312", (0.90, 0.96), ""),
    Published("dmc_reacher", "DINO-WM", "arXiv 2411.04983, Table 1", (0.92, 0.92), "3,000 training trajectories"),
    Published("dmc_reacher", "LeWM", "arXiv 2603.19312", (0.84, 0.86), ""),
    Published("point_maze", "DINO-WM", "arXiv 2411.04983, Table 1", (0.98, 0.98),
              "D4RL's PointMaze, another maze than this project's point_maze; 2,000 training trajectories"),
)


def published_for(tasks) -> list[Published]:
    """The published figures of `tasks`, in the order of `tasks`."""
    return [p for t in tasks for p in PUBLISHED if p.task == t]


@dataclass(frozen=True)
class AnchorsProtocol:
    """The protocol the published figures were measured under."""

    episodes: int = 50              # evaluation episodes
    goal_offset_steps: int = 25     # goal = the state this many environment steps later on a held-out data trajectory
    budget_steps: int = 50          # environment steps per episode
    samples: int = 300              # CEM candidates
    iterations: int = 30            # CEM refits
    elites: int = 30                # CEM top-k
    horizon: int = 5                # decisions planned (each action held frameskip = 5 environment steps)
    receding_horizon: int = 5       # decisions executed per plan

    def describe(self) -> str:
        return (f"{self.episodes} episodes; goal = the state {self.goal_offset_steps} environment steps later on a "
                f"held-out trajectory of the data policy; {self.budget_steps}-step budget; CEM {self.samples} samples x "
                f"{self.iterations} iterations, top {self.elites}, horizon {self.horizon}, receding horizon "
                f"{self.receding_horizon}")


ANCHORS = AnchorsProtocol()
