"""Ground-truth MuJoCo tasks: real physics, real rendering, exact copies, success, checks."""
from __future__ import annotations

import json
import math
import pickle
import sys
import warnings
from dataclasses import asdict

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs import rendering
from envs.mujoco_tasks import TASK_CLASSES, TASKS, make_task
from envs.tasks import point_maze, pusher, reacher

NAMES = [name for name, spec in TASKS.items() if spec.backend == "mujoco"]   # the MJCF backend's tasks;
# the field's benchmark tasks (dmc_reacher, pusht) are tested in tests/test_benchmark_tasks.py


def _run(task, actions):
    out = None
    for a in actions:
        out = task.step(a)
    return out


def exact_copies(task) -> tuple:
    """(a new task set to task.get_state(), a pickled task, a render=False one set to it); checks the state's layout."""
    name = task.spec_.name
    state = task.get_state()
    assert state.dtype == np.float64 and state.shape == (TASKS[name].full_state_dim,)
    copy = make_task(name)
    copy.set_state(state)
    pickled = pickle.loads(pickle.dumps(task))
    blind = make_task(name, render=False)
    blind.set_state(state)
    return copy, pickled, blind


def _move_point(name: str, state: np.ndarray, d: float) -> np.ndarray:
    """A copy of `state` whose scored point (tip / puck / ball) is moved by exactly `d` metres."""
    s = np.array(state, dtype=np.float64)
    if name == "reacher":  # rotate the shoulder: the tip moves along a circle, chord = d
        radius = np.linalg.norm(reacher.fingertip(s[:2]))
        s[0] += 2 * math.asin(d / (2 * radius))
    elif name == "pusher":
        s[pusher.OBJ_X] += d
    else:
        s[0] += d
    return s


# ----------------------------------------------------------------------------- frames

@pytest.mark.parametrize("name", NAMES)
def test_frames_are_not_blank_and_follow_actions(name):
    task = make_task(name, image_size=48)
    frame, info = task.reset(seed=0)
    assert frame.shape == (48, 48, 3) and frame.dtype == np.uint8
    assert task.observation_space.contains(frame)
    assert frame.mean() > 30 and frame.std() > 5, "frame is black or constant"
    start = task.get_state()
    hi = task.action_space.high.copy()
    f_plus = _run(task, [hi] * 4)[0]
    task.set_state(start)
    f_minus = _run(task, [-hi] * 4)[0]
    assert np.abs(f_plus.astype(int) - frame).sum() > 0, "frame did not change with actions"
    assert np.abs(f_plus.astype(int) - f_minus).mean() > 0.05, "opposite actions gave the same frame"


@pytest.mark.parametrize("name", NAMES)
def test_goal_image_differs_from_start(name):
    task = make_task(name)
    for seed in range(3):
        frame, _ = task.reset(seed=seed)
        assert task.goal_image.shape == frame.shape and task.goal_image.dtype == np.uint8
        assert np.abs(task.goal_image.astype(int) - frame).mean() > 0.1


@pytest.mark.parametrize("name", NAMES)
def test_goal_marker_is_hidden_in_pixels(name):
    """Two different goals, same start: identical frames (marker invisible), different goal images."""
    frames, goals = [], []
    for show in (False, True):
        task = make_task(name, show_goal=show)
        _, info = task.reset(seed=1)
        start = info["state"]
        other = make_task(name, show_goal=show)
        _, info2 = other.reset(seed=2, options={"start_state": start})
        assert not np.array_equal(info["goal_state"], info2["goal_state"])
        frames.append(np.array_equal(task.render_frame(), other.render_frame()))
        goals.append(np.array_equal(task.goal_image, other.goal_image))
    assert frames == [True, False], "the goal marker shows in the pixels (or show_goal does nothing)"
    assert goals == [False, False]


# ----------------------------------------------------------------------------- copies

@pytest.mark.parametrize("name", NAMES)
def test_state_copies_step_identically(name):
    task = make_task(name)
    task.reset(seed=3)
    task.action_space.seed(3)
    for _ in range(6):
        task.step(task.action_space.sample())
    copy, pickled, blind = exact_copies(task)
    assert np.array_equal(copy.goal_image, task.goal_image)
    action = task.action_space.sample()
    ref = task.step(action)
    for other in (copy, pickled, blind):
        out = other.step(action)
        assert np.array_equal(out[4]["state"], ref[4]["state"])
        assert out[1] == ref[1] and out[3] == ref[3] and out[4]["elapsed"] == ref[4]["elapsed"]
        assert np.array_equal(other.get_state(), task.get_state())
        if other is blind:
            assert out[0] is None and other.goal_image is None
        else:
            assert np.array_equal(out[0], ref[0])


@pytest.mark.parametrize("name", NAMES)
def test_set_state_rejects_bad_states(name):
    task = make_task(name, render=False)
    task.reset(seed=0)
    with pytest.raises(ValueError, match="expected"):
        task.set_state(np.zeros(5))
    bad = task.get_state()
    bad[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        task.set_state(bad)


@pytest.mark.parametrize("name", ["reacher", "pusher"])
def test_dynamics_match_gymnasium(name):
    """One decision = action_repeat steps of the Gymnasium -v5 env, bit for bit."""
    task = make_task(name, render=False)
    task.reset(seed=0)
    env = gym.make({"reacher": "Reacher-v5", "pusher": "Pusher-v5"}[name]).unwrapped
    env.reset(seed=0)
    nq, nv = task.model.nq, task.model.nv
    s = task.get_state()
    env.set_state(s[:nq], s[nq:nq + nv])
    rng = np.random.default_rng(0)
    for _ in range(8):
        a = rng.uniform(-1, 1, task.action_space.shape).astype(np.float32) * task.action_space.high
        task.step(a)
        for _ in range(task.spec_.action_repeat):
            env.step(a)
    np.testing.assert_array_equal(task.get_state()[:nq + nv], np.concatenate([env.data.qpos, env.data.qvel]))
    env.close()


# ----------------------------------------------------------------------------- success

@pytest.mark.parametrize("name", NAMES)
def test_success_on_constructed_states(name):
    task = make_task(name, render=False)
    _, info = task.reset(seed=4)
    goal, thr = info["goal_state"], task.spec_.success_threshold
    assert task.distance(goal, goal) == pytest.approx(0.0, abs=1e-12)
    assert task.is_success(goal, goal) and not task.is_success(info["state"], goal)
    assert not info["is_success"] and info["distance"] == pytest.approx(task.distance(info["state"], goal))
    near, far = _move_point(name, goal, 0.6 * thr), _move_point(name, goal, 1.4 * thr)
    assert task.distance(near, goal) == pytest.approx(0.6 * thr, rel=1e-6)
    assert task.is_success(near, goal) and not task.is_success(far, goal)
    # batched, and from full get_state() vectors
    batch = np.stack([near, far, goal])
    np.testing.assert_array_equal(task.is_success(batch, goal), [True, False, True])
    full = task.get_state()
    assert task.distance(full, goal) == pytest.approx(info["distance"])
    # a state inside the success region is reported in info (a zero action keeps it at rest there)
    task.set_state(near)
    info = task.step(np.zeros(task.action_space.shape, np.float32))[4]
    assert info["is_success"] and info["distance"] == pytest.approx(0.6 * thr, rel=1e-3)


def test_reacher_kinematics_and_mirror_elbow():
    task = make_task("reacher", render=False)
    task.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        s = task.get_state()[:8]
        s[:2] = rng.uniform(-2.5, 2.5, 2)
        task.set_state(s)
        np.testing.assert_allclose(reacher.fingertip(s[:2]), task.data.body("fingertip").xpos[:2], atol=1e-12)
        # the (hidden) target body sits where the goal fingertip is
        np.testing.assert_allclose(task.data.body("target").xpos[:2], reacher.fingertip(task.goal_state[:2]), atol=1e-12)
    goal = task.goal_state
    q0, q1 = goal[:2]
    mirror = goal.copy()  # the other elbow solution reaches the same tip
    mirror[1] = -q1
    mirror[0] = q0 + 2 * math.atan2(reacher.LINK1 * math.sin(q1), reacher.LINK0 + reacher.LINK1 * math.cos(q1))
    assert not np.allclose(mirror[:2], goal[:2])
    assert task.is_success(mirror, goal)


def test_pusher_cost_adds_gripper_distance():
    task = make_task("pusher", render=False)
    _, info = task.reset(seed=0)
    s = info["state"]
    gap = np.linalg.norm(task.data.body("tips_arm").xpos - task.data.body("object").xpos)
    assert task.cost(s, task.goal_state) == pytest.approx(info["distance"] + pusher.NEAR_WEIGHT * gap)
    np.testing.assert_allclose(task.cost(np.stack([s, s]), task.goal_state), [task.cost(s, task.goal_state)] * 2)


# ----------------------------------------------------------------------------- actions

@pytest.mark.parametrize("name", NAMES)
def test_bad_actions_are_rejected(name):
    task = make_task(name, render=False)
    task.reset(seed=0)
    A, hi = task.action_space.shape[0], float(task.action_space.high[0])
    bad = {
        "shape": np.zeros(A + 1, np.float32),
        "batch": np.zeros((1, A), np.float32),
        "string": "left",
        "strings": ["a"] * A,
        "complex": np.zeros(A, np.complex64),
        "nan": np.full(A, np.nan),
        "inf": np.full(A, np.inf),
        "bounds": np.full(A, 1.5 * hi),
    }
    for why, action in bad.items():
        with pytest.raises(ValueError, match="expected"):
            task.step(action)
    # tiny float overshoot and python lists (of floats or ints) are fine; an integer array is not
    # (envs.actions: Gymnasium's float-Box semantics, one rule for every env)
    task.step(np.full(A, hi + 1e-7, np.float64))
    task.step([0.0] * A)
    task.step([0] * A)
    with pytest.raises(ValueError, match="dtype int64, expected a float"):
        task.step(np.zeros(A, np.int64))


# ----------------------------------------------------------------------------- reset

@pytest.mark.parametrize("name", NAMES)
def test_reset_is_deterministic(name):
    a, b = make_task(name), make_task(name)
    fa, ia = a.reset(seed=7)
    a.step(a.action_space.sample())
    fb, ib = b.reset(seed=7)
    assert np.array_equal(fa, fb) and np.array_equal(a.goal_image, b.goal_image)
    assert np.array_equal(ia["state"], ib["state"]) and np.array_equal(ia["goal_state"], ib["goal_state"])
    fa2, ia2 = a.reset(seed=7)
    assert np.array_equal(fa, fa2) and np.array_equal(ia["state"], ia2["state"])
    _, ic = a.reset(seed=8)
    assert not np.array_equal(ia["goal_state"], ic["goal_state"])


@pytest.mark.parametrize("name", NAMES)
def test_reset_options_and_truncation(name):
    task = make_task(name, render=False, max_steps=3)
    _, info = task.reset(seed=0)
    _, info2 = task.reset(seed=1, options={"goal_state": info["goal_state"], "start_state": info["state"]})
    np.testing.assert_array_equal(info2["goal_state"], info["goal_state"])
    np.testing.assert_array_equal(info2["state"], info["state"])
    with pytest.raises(ValueError, match="unknown reset options"):
        task.reset(options={"goal": 1})
    with pytest.raises(ValueError, match="expected a finite"):
        task.reset(options={"goal_state": np.zeros(3)})
    zero = np.zeros(task.action_space.shape, np.float32)
    assert [task.step(zero)[3] for _ in range(3)] == [False, False, True]


@pytest.mark.parametrize("name", NAMES)
def test_gymnasium_env_checker(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "use a normalised action space": advice, not errors
        check_env(make_task(name), skip_render_check=True)


# ----------------------------------------------------------------------------- captions

@pytest.mark.parametrize("name", NAMES)
def test_captions_follow_the_state(name):
    task = make_task(name, render=False)
    _, info = task.reset(seed=0)
    s = info["state"].copy()
    # put the goal marker 10 cm to the right of the scored point: the point is "left of" it
    if name == "reacher":
        s[2:4] = reacher.fingertip(s[:2]) + [0.10, 0.0]
    elif name == "pusher":
        s[pusher.GOAL_X], s[pusher.GOAL_Y] = s[pusher.OBJ_X] + 0.10, s[pusher.OBJ_Y]
    else:
        s[2:4] = s[:2] + [0.10, 0.0]
    text = task.caption(s)
    assert isinstance(text, str) and text.endswith(".") and "to the left of" in text and "10 cm" in text
    assert text == task.caption(s) == TASKS[name].caption(s) == task.caption(np.concatenate([s, s, [0.0], np.zeros(task.model.nv)]))
    s_right = s.copy()
    s_right[{"reacher": 2, "pusher": pusher.GOAL_X, "point_maze": 2}[name]] -= 0.20
    assert "to the right of" in task.caption(s_right)
    assert task.caption(info["goal_state"]) != text
    if name == "reacher":
        assert "degrees" in text and "elbow" in text


def test_specs_are_plain_data():
    for name, spec in TASKS.items():
        d = asdict(spec)
        json.dumps(d)
        assert d["name"] == name and TASK_CLASSES[name].spec_ is spec
        if name in NAMES:
            assert spec.decision_seconds == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown task"):
        make_task("cartpole")
    with pytest.raises(ValueError, match="image_size"):
        make_task("reacher", image_size=0)


# ----------------------------------------------------------------------------- maze

def test_maze_mjcf_walls_match_layout():
    task = make_task("point_maze", render=False)
    m = task.model
    walls = [i for i in range(m.ngeom) if m.geom(i).name.startswith("wall")]
    for r in range(point_maze.N):
        for c in range(point_maze.N):
            x, y = point_maze.cell_center(r, c)
            inside = any(np.all(np.abs([x, y] - m.geom_pos[i][:2]) < m.geom_size[i][:2]) for i in walls)
            assert inside == (point_maze.LAYOUT[r][c] == "#"), (r, c)


def test_maze_walls_block_the_ball():
    task = make_task("point_maze", render=False)
    start = np.zeros(8)
    start[:2] = point_maze.cell_center(1, 3)  # the wall cell (1, 4) is to its right
    task.reset(seed=0, options={"start_state": start})
    for _ in range(15):
        task.step(np.array([1.0, 0.0], np.float32))
    wall_face = point_maze.cell_center(1, 4)[0] - point_maze.CELL / 2
    ball_radius = task.model.geom("ball").size[0]
    assert task.data.qpos[0] < wall_face - ball_radius + 0.005  # stopped at the wall (soft contact)
    assert task.data.qpos[0] > point_maze.cell_center(1, 3)[0] + 0.01  # but it did move right


def test_maze_corridor_cost():
    task = make_task("point_maze", render=False)
    steps, _ = point_maze._corridor_tables()
    a, b = point_maze.cell_center(1, 3), point_maze.cell_center(1, 5)  # neighbours through a wall
    goal = np.zeros(8)
    goal[:2] = goal[2:4] = b
    s = goal.copy()
    s[:2] = a
    k = steps[1 * point_maze.N + 3, 1 * point_maze.N + 5]
    assert k == 6
    assert task.cost(s, goal) == pytest.approx(point_maze.CELL * k)
    assert task.distance(s, goal) == pytest.approx(0.2)
    # moving toward the corridor lowers the cost, even though it does not lower the straight distance
    s2 = s.copy()
    s2[1] -= 0.03  # down, toward (2, 3), the way out
    assert task.cost(s2, goal) < task.cost(s, goal) and task.distance(s2, goal) > task.distance(s, goal)


# ----------------------------------------------------------------------------- rendering backend

def test_backend_keeps_user_choice_and_names_packages(monkeypatch):
    def no_probe(backend):
        raise AssertionError("must not probe when MUJOCO_GL is set")

    monkeypatch.setattr(rendering, "_selection_error", None)
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    monkeypatch.setattr(rendering, "_probe", no_probe)
    assert rendering.select_gl_backend() == "osmesa"

    monkeypatch.delenv("MUJOCO_GL")
    monkeypatch.delitem(sys.modules, "mujoco")  # as if MuJoCo were not imported yet (restored after)
    tried = []
    monkeypatch.setattr(rendering, "_probe", lambda b: tried.append(b) or f"cannot open lib for {b}")
    with pytest.raises(RuntimeError) as err:
        rendering.select_gl_backend()
    assert tried == ["egl", "osmesa"]
    for needle in ("libegl1", "libgl1-mesa-dri", "libosmesa6", "MUJOCO_GL"):
        assert needle in str(err.value)


def test_a_headless_backend_really_works():
    assert rendering._probe("egl") is None or rendering._probe("osmesa") is None
