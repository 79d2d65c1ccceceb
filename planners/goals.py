"""The anchors' goals: the state 25 environment steps later on a held-out trajectory of the data policy.

DINO-WM (`plan.py`, `sample_traj_segment_from_dset(traj_len=frameskip * goal_H + 1)`) and LeWM
(stable-worldmodel's `World.evaluate_from_dataset(start_steps, goal_offset_steps=25)`) evaluate a
world model on goals that the data policy itself reached: pick a trajectory that was not trained
on, a start step on it uniformly among those that leave room for the goal, and take as goal the
state `goal_offset_steps` = 25 environment steps later (DINO-WM: 5 planning steps x frameskip 5;
DINO-WM replays the recorded actions from the start state in the simulator to get the goal,
stable-worldmodel reads the recorded row; in a deterministic simulator both are the same state).
The episode starts at the start state and has a budget of 50 environment steps.

Here the held-out trajectory is the episode that `lw collect` would record for the benchmark's
episode seed (the same policy draw from the same rng: `envs.policies.episode_policy`, which
`pretrain.data.collect.EpisodeCollector` draws too), made without frames. The benchmark's seeds (10000+, 20000+) are disjoint from the collection's
(0..episodes-1), so the trajectory is held out by construction. One decision of our tasks holds
its action `spec.action_repeat` environment steps (dmc_reacher: 5 dm_control control steps;
pusht: 5 gym-pusht steps), so 25 environment steps are 25 / action_repeat = 5 decisions. The
start step is drawn from a stream of its own (`SeedSequence([seed, START_STREAM])`), uniform in
[0, T - k] decisions, T the trajectory's decisions and k the goal offset in decisions.

    from planners.goals import anchor_goal
    start, goal = anchor_goal("dmc_reacher", 10000)
    frame, info = env.reset(seed=10000, options={"start_state": start, "goal_state": goal})

The goal passes through the task's own goal normalisation at reset (dmc_reacher: the hidden
target moves to the goal pose's finger, velocities zeroed in the goal), so success is the
simulator's own rule against that goal.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from planners.published import ANCHORS

GOAL_OFFSET_STEPS = ANCHORS.goal_offset_steps   # 25 environment steps between start and goal (DINO-WM goal_H 5
                                                # x frameskip 5; LeWM's goal_offset_steps)
START_STREAM = 0x60A1    # the start step's own random stream, independent of the trajectory's


@dataclass(frozen=True)
class AnchorGoal:
    """One anchors' episode: where it starts, what it must reach, and where they came from."""

    start_state: np.ndarray    # (S,) the trajectory's state at `start_step`
    goal_state: np.ndarray     # (S,) the trajectory's state `offset` decisions later
    seed: int                  # the episode seed (trajectory + start step)
    start_step: int            # decision index of the start on the trajectory
    offset: int                # decisions between start and goal (= goal_offset_steps / action_repeat)
    policy: str                # the data policy the trajectory came from (a mixture's draw)
    trajectory: np.ndarray = field(repr=False)   # (T + 1, S) the whole held-out trajectory


def decisions_for(task, goal_offset_steps: int = GOAL_OFFSET_STEPS) -> int:
    """Environment steps -> decisions of `task` (each decision holds `spec.action_repeat` steps)."""
    spec = _spec(task)
    k, rem = divmod(int(goal_offset_steps), int(spec.action_repeat))
    if rem or k < 1:
        raise ValueError(f"goal_offset_steps={goal_offset_steps} is not a positive multiple of {spec.name}'s "
                         f"action_repeat={spec.action_repeat} (environment steps per decision)")
    return k


def _spec(task):
    if isinstance(task, str):
        from envs.mujoco_tasks import TASKS
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}, expected one of {sorted(TASKS)}")
        return TASKS[task]
    return task.spec_


def data_trajectory(task, seed: int, *, policy: str = "mixture", mixture: dict[str, float] | None = None,
                    hold: int = 1, scripted_noise: float = 0.3, steps: int | None = None) -> tuple[np.ndarray, str]:
    """The states (T + 1, S) of the data policy's episode `seed` from the task's start, and the policy's name.

    Exactly the episode `lw collect task=<task> seed=<seed> episodes=1` (with the same policy,
    mixture, hold and noise) records, without frames. `task` is a task name (a render-free task
    is made and closed) or a task instance (reset here). mixture=None: `lw collect`'s default.
    """
    from envs.policies import episode_policy

    own = isinstance(task, str)
    if own:
        from envs.mujoco_tasks import make_task
        task = make_task(task, render=False, max_steps=steps)
    try:
        T = int(steps or task.spec_.episode_steps)
        name, pol = episode_policy(task, seed, policy, mixture, hold=hold, noise=scripted_noise)
        _, info = task.reset(seed=seed)
        low = task.action_space.low.astype(np.float32)
        high = task.action_space.high.astype(np.float32)
        states = [info["state"]]
        for _ in range(T):
            action = np.clip(np.asarray(pol(task.get_state()), dtype=np.float32), low, high)
            _, _, _, _, info = task.step(action)
            states.append(info["state"])
        return np.stack(states), name
    finally:
        if own:
            task.close()


def anchor_episode(task, seed: int, *, goal_offset_steps: int = GOAL_OFFSET_STEPS, policy: str = "mixture",
                   mixture: dict[str, float] | None = None, hold: int = 1, scripted_noise: float = 0.3,
                   steps: int | None = None) -> AnchorGoal:
    """The anchors' episode for `seed`, with its provenance (module docstring)."""
    k = decisions_for(task, goal_offset_steps)
    traj, name = data_trajectory(task, seed, policy=policy, mixture=mixture, hold=hold,
                                 scripted_noise=scripted_noise, steps=steps)
    T = len(traj) - 1
    if T < k:
        raise ValueError(f"the trajectory has {T} decisions, fewer than the goal offset of {k} decisions")
    start_step = int(np.random.default_rng(np.random.SeedSequence([int(seed), START_STREAM])).integers(0, T - k + 1))
    return AnchorGoal(start_state=traj[start_step].copy(), goal_state=traj[start_step + k].copy(), seed=int(seed),
                      start_step=start_step, offset=k, policy=name, trajectory=traj)


def anchor_goal(task, seed: int, *, goal_offset_steps: int = GOAL_OFFSET_STEPS, policy: str = "mixture",
                mixture: dict[str, float] | None = None, hold: int = 1, scripted_noise: float = 0.3,
                steps: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(start_state, goal_state), each (S,), for episode `seed`: a start on the data policy's held-out
    trajectory `seed` and the state `goal_offset_steps` environment steps later; pass them to
    `env.reset(seed=seed, options={"start_state": start, "goal_state": goal})`."""
    ep = anchor_episode(task, seed, goal_offset_steps=goal_offset_steps, policy=policy, mixture=mixture,
                        hold=hold, scripted_noise=scripted_noise, steps=steps)
    return ep.start_state, ep.goal_state


def anchor_goals(task, seeds, **kw) -> list[tuple[np.ndarray, np.ndarray]]:
    """`anchor_goal` for each seed, on one render-free task instance."""
    if isinstance(task, str):
        from envs.mujoco_tasks import make_task
        inst = make_task(task, render=False, max_steps=kw.get("steps"))
        try:
            return [anchor_goal(inst, int(s), **kw) for s in seeds]
        finally:
            inst.close()
    return [anchor_goal(task, int(s), **kw) for s in seeds]
