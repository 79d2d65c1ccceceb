"""`point_maze`: a force-driven ball in a small maze (envs/assets/point_maze.xml), seen from above.

The goal is the centre of a random free cell other than the start cell; success when the
ball's centre is within 3 cm of it. The green goal disc is hidden in the pixels; the goal
image shows the ball resting at the goal. One decision holds the force for 0.1 s, in which
the ball moves up to ~4 cm (terminal speed 0.4 m/s), so a 10 cm cell takes ~3 decisions and
the farthest pair of cells (10 cells apart along the corridors) ~30 of the 50.

Straight-line distance ignores walls, so `cost` (for planners scoring true states) is the
length of the shortest corridor path instead: breadth-first over cells, through the middle
of the shared cell edges.
"""
from __future__ import annotations

import functools
from collections import deque
from pathlib import Path

import numpy as np

from envs.tasks.base import GoalPixelTask, TaskSpec, scalar_or_array
from envs.tasks.phrases import distance_words, motion_words, offset_words, pick, region_words

XML = Path(__file__).resolve().parent.parent / "assets" / "point_maze.xml"
LAYOUT = ("#######",   # row 0 is the top of the image (+y); must match the MJCF's walls
          "#...#.#",
          "#.#.#.#",
          "#.#...#",
          "#.###.#",
          "#.....#",
          "#######")
CELL = 0.1                       # metres per cell
N = len(LAYOUT)
START_JITTER = 0.02              # start position noise around a cell centre (ball radius 0.03, corridor half-width 0.05)

SPEC = TaskSpec(
    name="point_maze",
    description="a ball pushed by x/y forces through a small maze seen from above; reach the cell the goal image shows",
    action_dim=2, action_scale=1.0, action_repeat=2, frame_skip=5, sim_timestep=0.01,
    episode_steps=50, success_threshold=0.03, state_dim=8, full_state_dim=21,
    camera=(0.88, -90.0, 90.0, 0.0, 0.0, 0.0),
)


def cell_center(r, c) -> np.ndarray:
    """Row/col (ints or int arrays) -> (..., 2) world xy of the cell centre."""
    r, c = np.asarray(r), np.asarray(c)
    return np.stack([(c - (N - 1) / 2) * CELL, ((N - 1) / 2 - r) * CELL], -1).astype(np.float64)


def cell_of(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., 2) world xy -> (row, col) integer arrays (clipped to the grid)."""
    c = np.clip(np.round(xy[..., 0] / CELL + (N - 1) / 2), 0, N - 1).astype(int)
    r = np.clip(np.round((N - 1) / 2 - xy[..., 1] / CELL), 0, N - 1).astype(int)
    return r, c


FREE = tuple((r, c) for r in range(N) for c in range(N) if LAYOUT[r][c] == ".")


@functools.lru_cache(maxsize=1)
def _corridor_tables() -> tuple[np.ndarray, np.ndarray]:
    """Cell-to-cell path lengths (N*N, N*N) in cells and, per (from, to), the portal (edge midpoint)
    towards `to` (N*N, N*N, 2, 2), NaN where unused. Unreachable or wall cells: inf."""
    free = set(FREE)
    steps = np.full((N * N, N * N), np.inf)
    for src in FREE:
        steps[src[0] * N + src[1], src[0] * N + src[1]] = 0
        queue = deque([src])
        while queue:
            r, c = queue.popleft()
            for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                nb = (r + dr, c + dc)
                if nb in free and np.isinf(steps[src[0] * N + src[1], nb[0] * N + nb[1]]):
                    steps[src[0] * N + src[1], nb[0] * N + nb[1]] = steps[src[0] * N + src[1], r * N + c] + 1
                    queue.append(nb)
    portals = np.full((N * N, N * N, 2, 2), np.nan)
    for r, c in FREE:
        for dst in FREE:
            k = steps[r * N + c, dst[0] * N + dst[1]]
            nbs = [(r + dr, c + dc) for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1))
                   if (r + dr, c + dc) in free and steps[(r + dr) * N + c + dc, dst[0] * N + dst[1]] == k - 1]
            for j, (nr, nc) in enumerate(nbs[:2]):  # at most two shortest first moves in a grid
                portals[r * N + c, dst[0] * N + dst[1], j] = (cell_center(r, c) + cell_center(nr, nc)) / 2
    return steps, portals


def corridor_distance(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    """(..., 2) ball and goal xy -> (...) shortest path length in metres (straight line when in the same cell)."""
    steps, portals = _corridor_tables()
    p, g = np.broadcast_arrays(np.asarray(p, np.float64), np.asarray(g, np.float64))
    rp, cp = cell_of(p)
    rg, cg = cell_of(g)
    k = steps[rp * N + cp, rg * N + cg]
    m = portals[rp * N + cp, rg * N + cg]                          # (..., 2 portals, 2)
    d_portal = np.linalg.norm(p[..., None, :] - m, axis=-1)        # (..., 2), NaN for unused portals
    to_portal = np.fmin(d_portal[..., 0], d_portal[..., 1])
    goal_off = np.linalg.norm(g - cell_center(rg, cg), axis=-1)
    via = to_portal + CELL * (k - 0.5) + goal_off
    direct = np.linalg.norm(p - g, axis=-1)
    # same cell: straight line; a cell off the maze graph (walls): straight line as a fallback
    return np.where((k == 0) | ~np.isfinite(k), direct, via)


class PointMazeTask(GoalPixelTask):
    spec_ = SPEC
    xml = XML
    goal_joints = (2, 3)   # goal_x, goal_y
    goal_geoms = ("goal",)

    def _sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        i_start, i_goal = rng.choice(len(FREE), size=2, replace=False)
        start = np.zeros(8)
        start[:2] = cell_center(*FREE[i_start]) + rng.uniform(-START_JITTER, START_JITTER, 2)
        goal = np.zeros(8)
        goal[:2] = cell_center(*FREE[i_goal])
        return start, self._normalize_goal(goal)

    def _marker(self, goal: np.ndarray) -> np.ndarray:
        return goal[:2]  # the (hidden) marker under the ball

    @classmethod
    def distance(cls, state, goal_state):
        s, g = cls._split(state), cls._split(goal_state)
        d = np.linalg.norm(s[..., :2] - g[..., :2], axis=-1)
        return scalar_or_array(d)

    def cost(self, state, goal_state):
        """Shortest corridor path from the ball to the goal, in metres."""
        s, g = self._split(state), self._split(goal_state)
        c = corridor_distance(s[..., :2], g[..., :2])
        return scalar_or_array(c)

    @classmethod
    def caption_of(cls, state) -> str:
        s = cls._split_one(state)
        ball, goal, vel = s[:2], s[2:4], s[4:6]
        rel = goal - ball
        dist = float(np.linalg.norm(rel))
        steps, _ = _corridor_tables()
        rb, cb = cell_of(ball)
        rg, cg = cell_of(goal)
        cells = steps[rb * N + cb, rg * N + cg]
        name = pick(("The orange ball", "The ball"), *ball)
        where = f"{name} is {region_words(ball[0], ball[1], 0.25)} the maze"
        if dist <= SPEC.success_threshold:
            return f"{where}, on the goal, and {motion_words(vel, None, 0.03, 0.25)}."
        if not np.isfinite(cells):  # a goal off the maze graph (only from hand-made states)
            path = f"{distance_words(dist)} {offset_words(-rel[0], -rel[1])} the goal"
        elif cells == 0:
            path = f"in the goal's cell, {distance_words(dist)} {offset_words(-rel[0], -rel[1])} the goal"
        else:
            path = (f"{int(cells)} cell{'s' if cells > 1 else ''} from the goal along the corridors, "
                    f"{distance_words(dist)} {offset_words(-rel[0], -rel[1])} it")
        return f"{where}, {path}. It {motion_words(vel, None, 0.03, 0.25)}."
