"""The MuJoCo oracle: exact state copies in worker processes, its two costs, and a solved episode."""
import dataclasses

import numpy as np
import pytest
import torch

from envs.mujoco_tasks import make_task
from planners import make_planner
from planners.mpc import MPCConfig, OracleObserver, run_mpc
from planners.oracle import OracleConfig, OracleModel


def sequential_states(task_name, seed, actions):
    """Reference: each candidate executed step by step in a fresh task reset with the same seed."""
    out = []
    for seq in actions:
        t = make_task(task_name, render=False)
        t.reset(seed=seed)
        out.append([t.step(a)[4]["state"] for a in seq])
    return np.array(out)


@pytest.mark.parametrize("task_name", ["reacher", "pusher"])
def test_state_copies_match_sequential_execution(task_name):
    t = make_task(task_name, render=False)
    t.reset(seed=10_000)
    rng = np.random.default_rng(0)
    actions = rng.uniform(t.action_space.low, t.action_space.high, (5, 6, t.action_space.shape[0])).astype(np.float32)
    ref = sequential_states(task_name, 10_000, actions)
    with OracleModel(OracleConfig(task=task_name, workers=2)) as oracle:
        pred = oracle.rollout(t.get_state(), actions)
        assert pred.states.shape == ref.shape
        np.testing.assert_array_equal(pred.states, ref)             # bit-exact, split over 2 workers
        # batched over episodes: episode 1 starts somewhere else, episode 0 is unchanged
        t2 = make_task(task_name, render=False)
        t2.reset(seed=10_001)
        both = oracle.rollout_batch([t.get_state(), t2.get_state()], np.stack([actions, actions]))
        np.testing.assert_array_equal(both.states[:5], ref)
        np.testing.assert_array_equal(both.states[5:], sequential_states(task_name, 10_001, actions))
        assert oracle.calls == 2 and oracle.rollouts == 15
    # the in-process path (workers=0) is the same simulator
    with OracleModel(OracleConfig(task=task_name, workers=0)) as local:
        np.testing.assert_array_equal(local.rollout(t.get_state(), actions).states, ref)


def test_state_cost_is_the_task_cost_of_the_final_or_mean_step():
    t = make_task("point_maze", render=False)
    t.reset(seed=3)
    actions = np.random.default_rng(1).uniform(-1, 1, (4, 3, 2)).astype(np.float32)
    ref = sequential_states("point_maze", 3, actions)
    for horizon_cost, want in (("final", t.cost(ref[:, -1], t.goal_state)), ("mean", t.cost(ref, t.goal_state).mean(1))):
        with OracleModel(OracleConfig(task="point_maze", workers=0, horizon_cost=horizon_cost)) as oracle:
            c = oracle.cost(oracle.rollout(t.get_state(), actions), t.goal_state)
            assert c.shape == (4,)
            np.testing.assert_allclose(c, want)


def tiny_rae():
    from worldmodel.rae import RAE, RAEConfig
    from worldmodel.vit import ViTConfig

    torch.manual_seed(0)
    vit = ViTConfig(image_size=64, patch_size=16, dim=32, depth=1, heads=2)
    spec = {"encoder": "own", "input_size": 64, "kwargs": dataclasses.asdict(vit)}
    return RAE(RAEConfig(image_size=64, decoder_dim=32, decoder_depth=1, decoder_heads=2, encoder_spec=spec)).eval()


def test_latent_cost_renders_the_final_frame_and_scores_it_against_the_goal_image(tmp_path):
    """The candidate that ends where the goal image was rendered costs 0; others cost more."""
    rae = tiny_rae()
    rae.save_pretrained(tmp_path / "rae")
    t = make_task("reacher", render=True)
    t.reset(seed=10_002)
    start = t.get_state()
    rng = np.random.default_rng(2)
    actions = rng.uniform(-0.2, 0.2, (3, 4, 2)).astype(np.float32)
    for a in actions[1]:                       # the goal image: where candidate 1 ends up
        t.step(a)
    goal_image = t.render_frame()
    with OracleModel(OracleConfig(task="reacher", cost="latent", workers=1, rae=str(tmp_path / "rae"))) as oracle:
        pred = oracle.rollout(start, actions)
        assert pred.frames.shape == (3, 1, 64, 64, 3)       # only the last frame was rendered
        np.testing.assert_array_equal(pred.frames[1, 0], goal_image)
        c = oracle.cost(pred, goal_image)
    assert c.shape == (3,) and c[1] < 1e-10 and c[0] > 1e-6 and c[2] > 1e-6


def test_oracle_cem_with_true_state_cost_solves_a_reacher_episode():
    with OracleModel(OracleConfig(task="reacher", workers=2)) as oracle:
        env = make_task("reacher", render=False)
        planner = make_planner("cem", oracle.action_space, horizon=5, samples=48, elites=6, iterations=4)
        rec, = run_mpc([env], planner, oracle, [OracleObserver("state")], MPCConfig(max_steps=25, record_frames=False),
                       seeds=[10_000])
    assert rec.success and rec.final_distance <= 0.02
    assert rec.success == bool(env.is_success(env.get_state()[:8], env.goal_state))   # judged by the real env
    assert rec.steps < 25 and all(c == 4 for c in rec.model_calls)


def test_bad_inputs_name_the_value(tmp_path):
    with pytest.raises(ValueError, match="unknown task 'reachr'"):
        OracleModel(OracleConfig(task="reachr", workers=0))
    with pytest.raises(ValueError, match="oracle cost='pixels'"):
        OracleModel(OracleConfig(cost="pixels", workers=0))
    with pytest.raises(ValueError, match="needs rae="):
        OracleModel(OracleConfig(cost="latent", workers=0))
    with OracleModel(OracleConfig(workers=0)) as oracle:
        with pytest.raises(ValueError, match=r"oracle state has shape \(8,\), expected \(21,\)"):
            oracle.rollout(np.zeros(8), np.zeros((1, 2, 2)))
        with pytest.raises(ValueError, match="actions have shape"):
            oracle.rollout(np.zeros(21), np.zeros((2, 3)))
        with pytest.raises(ValueError, match="state-cost goal has shape"):
            t = make_task("reacher", render=False)
            t.reset(seed=0)
            oracle.cost(oracle.rollout(t.get_state(), np.zeros((1, 2, 2))), np.zeros(3))
