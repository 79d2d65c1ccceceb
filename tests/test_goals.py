"""planners.goals: the anchors' goals (the state 25 environment steps later on a held-out trajectory of
the data policy), through the real simulators."""
from __future__ import annotations

import numpy as np
import pytest

from envs.mujoco_tasks import TASKS, make_task
from planners.goals import (GOAL_OFFSET_STEPS, anchor_episode, anchor_goal, anchor_goals, data_trajectory,
                            decisions_for)


def test_offset_is_25_environment_steps_in_decisions():
    assert GOAL_OFFSET_STEPS == 25
    assert decisions_for("dmc_reacher") == 5 and decisions_for("pusht") == 5   # 5 decisions x 5 steps
    with pytest.raises(ValueError, match="multiple"):
        decisions_for("dmc_reacher", 12)
    with pytest.raises(ValueError, match="unknown task"):
        decisions_for("nope")


@pytest.mark.parametrize("name", ["dmc_reacher", "pusht"])
def test_goal_is_the_state_k_decisions_later_on_the_data_trajectory(name):
    ep = anchor_episode(name, 10003)
    S, T, k = TASKS[name].state_dim, TASKS[name].episode_steps, decisions_for(name)
    assert ep.trajectory.shape == (T + 1, S) and ep.offset == k and 0 <= ep.start_step <= T - k
    assert np.array_equal(ep.start_state, ep.trajectory[ep.start_step])
    assert np.array_equal(ep.goal_state, ep.trajectory[ep.start_step + k])
    start, goal = anchor_goal(name, 10003)               # deterministic in the seed
    assert np.array_equal(start, ep.start_state) and np.array_equal(goal, ep.goal_state)
    assert not np.array_equal(anchor_goal(name, 10004)[0], start)
    # the start steps spread over the trajectory, and the same helper on one task instance agrees
    seeds = range(10000, 10012)
    pairs = anchor_goals(name, seeds)
    assert [np.array_equal(p[0], anchor_goal(name, s)[0]) for p, s in zip(pairs, seeds)] == [True] * 12
    steps = {anchor_episode(name, s).start_step for s in seeds}
    assert len(steps) >= 6


def test_trajectory_is_the_collected_episode(tmp_path):
    """The held-out trajectory is exactly the episode `lw collect` records for that seed."""
    from pretrain.data.collect import CollectConfig, collect
    from pretrain.data.shards import Dataset

    out = tmp_path / "d"
    collect(CollectConfig(task="dmc_reacher", episodes=3, workers=1, out=str(out), progress=False, seed=10000))
    ds = Dataset(str(out))
    for i in range(3):
        traj, policy = data_trajectory("dmc_reacher", 10000 + i)
        assert policy == ds[i].policy
        assert np.array_equal(traj.astype(np.float32), ds[i].states)   # the shards store float32


def test_reset_from_the_anchors_goal_starts_there_and_judges_against_it():
    start, goal = anchor_goal("dmc_reacher", 10001)
    env = make_task("dmc_reacher", render=False)
    _, info = env.reset(seed=10001, options={"start_state": start, "goal_state": goal})
    assert np.array_equal(info["state"][:4], start[:4])
    # dmc_reacher's goal: the (hidden) target sits at the goal pose's finger
    from envs.tasks.dmc_reacher import finger
    assert np.allclose(info["goal_state"][4:6], finger(goal[:2]))
    assert np.isclose(info["distance"], np.linalg.norm(finger(start[:2]) - finger(goal[:2])))
    # replaying the trajectory's own actions from the start reaches the goal: success by the simulator's rule
    ep = anchor_episode("dmc_reacher", 10001)
    assert env.is_success(ep.goal_state, env.goal_state)
