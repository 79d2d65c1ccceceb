"""The receding-horizon loop on real task envs, and the learned planner's pixels-only view."""
import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs.mujoco_tasks import make_task
from planners import make_planner, warm_start
from planners.learned import LearnedConfig, LearnedModel
from planners.mpc import MPCConfig, OracleObserver, PixelContext, PixelObserver, run_mpc
from planners.oracle import OracleConfig, OracleModel
# The model stack is imported before any renderer exists: importing triton (via torch.compile)
# after Mesa's EGL context is created crashes the process (two LLVMs in one process).
from worldmodel.config import ModelConfig, MoEConfig
from worldmodel.rae import RAE, RAEConfig
from worldmodel.transfusion import Transfusion
from worldmodel.vit import ViTConfig
from worldmodel.world import LatentWorld


class ActionRecorder(gym.Wrapper):
    """Records every action the real env receives."""

    def __init__(self, env):
        super().__init__(env)
        self.sent = []

    def step(self, action):
        self.sent.append(np.array(action, copy=True))
        return self.env.step(action)


@pytest.mark.parametrize("receding", [1, 3])
def test_mpc_executes_exactly_the_first_receding_actions_and_warm_starts(receding):
    with OracleModel(OracleConfig(task="reacher", workers=0)) as oracle:
        env = ActionRecorder(make_task("reacher", render=False))
        planner = make_planner("cem", oracle.action_space, horizon=4, samples=12, elites=3, iterations=2)
        cfg = MPCConfig(receding_horizon=receding, max_steps=7, stop_on_success=False, record_frames=False)
        rec, = run_mpc([env], planner, oracle, [OracleObserver("state")], cfg, seeds=[10_005])
    n_plans = -(-7 // receding)
    assert len(rec.plans) == n_plans == len(rec.model_calls) == len(rec.replan_seconds)
    want = np.concatenate([p[:receding] for p in rec.plans])[:7]
    np.testing.assert_array_equal(np.stack(env.sent), want)          # exactly those, in order
    np.testing.assert_array_equal(rec.actions, want)
    assert rec.steps == 7 and rec.inits[0] is None
    for prev, init in zip(rec.plans[:-1], rec.inits[1:]):           # warm start = previous plan shifted, centre-padded
        np.testing.assert_array_equal(init, warm_start(prev, receding, np.zeros(2, np.float32)))
        np.testing.assert_array_equal(init[: 4 - receding], prev[receding:])


def test_mpc_lockstep_episodes_match_their_real_envs():
    """Two episodes planned together: each record's success/distance is its own real env's."""
    with OracleModel(OracleConfig(task="reacher", workers=2)) as oracle:
        envs = [make_task("reacher", render=True) for _ in range(2)]
        planner = make_planner("cem", oracle.action_space, horizon=5, samples=32, elites=4, iterations=3)
        recs = run_mpc(envs, planner, oracle, [OracleObserver("state"), OracleObserver("state")],
                       MPCConfig(max_steps=10, record_states=True), seeds=[10_000, 10_001])
    for env, rec in zip(envs, recs):
        s = env.get_state()[:8]
        assert rec.success == bool(env.is_success(s, env.goal_state))
        assert rec.final_distance == pytest.approx(env.distance(s, env.goal_state))
        np.testing.assert_array_equal(rec.final_state[:8], s)      # where the episode ended, for diagnosis
        assert rec.frames.shape == (rec.steps + 1, 64, 64, 3) and rec.frames.dtype == np.uint8
        np.testing.assert_array_equal(rec.frames[-1], env.render_frame())
    replans = max(len(r.plans) for r in recs)
    assert oracle.calls == 3 * replans            # one call per CEM iteration covers both episodes


# ---------------------------------------------------------------- the learned planner sees pixels only

class Poison:
    """Any use of a poisoned value fails the test."""

    def _leak(self, *a, **k):
        raise AssertionError("the learned planner touched privileged simulator state")

    __array__ = __getitem__ = __float__ = __iter__ = __len__ = __eq__ = __add__ = __sub__ = __mul__ = _leak

    def __getattr__(self, name):
        self._leak()


class PoisonedTask(gym.Wrapper):
    """The real task, but its true state is unreachable: get_state/set_state/goal_state raise, info's are poisoned."""

    def _clean(self, info):
        return {**info, "state": Poison(), "goal_state": Poison()}

    def reset(self, **kw):
        obs, info = self.env.reset(**kw)
        return obs, self._clean(info)

    def step(self, action):
        obs, r, term, trunc, info = self.env.step(action)
        return obs, r, term, trunc, self._clean(info)

    @property
    def unwrapped(self):
        return self                                  # no way around the wrapper

    def get_wrapper_attr(self, name):
        if name == "goal_image":
            return self.env.get_wrapper_attr(name)
        raise AssertionError(f"the learned planner asked the env for {name!r}")

    def get_state(self):
        raise AssertionError("get_state() called on the learned planner's env")

    def set_state(self, state):
        raise AssertionError("set_state() called on the learned planner's env")

    @property
    def goal_state(self):
        raise AssertionError("goal_state read on the learned planner's env")


def tiny_world(context_frames=2, max_jump=1):
    torch.manual_seed(0)
    vit = ViTConfig(image_size=64, patch_size=16, dim=32, depth=1, heads=2)
    spec = {"encoder": "own", "input_size": 64, "kwargs": dataclasses.asdict(vit)}
    rae = RAE(RAEConfig(image_size=64, decoder_dim=32, decoder_depth=1, decoder_heads=2, encoder_spec=spec))
    model = Transfusion(ModelConfig(d_model=32, n_layers=1, n_heads=2, latent_dim=32, frame_grid=(4, 4),
                                    action_dim=2, action_scale=0.2, moe=MoEConfig(kind="dense"),
                                    direct_action=max_jump == 1))
    return LatentWorld(model, rae, {"context_frames": context_frames, "task": "reacher", "max_jump": max_jump})


class SpyLearned(LearnedModel):
    """Records every state the planner hands the model."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.seen = []

    def context(self, state):
        self.seen.append(state)
        return super().context(state)


def test_oracle_observer_on_the_poisoned_env_fails():
    """The poison is real: a planner reading the simulator would fail the next test."""
    env = PoisonedTask(make_task("reacher", render=True))
    obs, info = env.reset(seed=0)
    ob = OracleObserver("state")
    ob.reset(env, obs, info)
    with pytest.raises(AssertionError, match="learned planner's env"):
        ob()
    with pytest.raises(AssertionError, match="privileged"):
        np.asarray(info["state"])


@pytest.mark.parametrize("planner_name", ["cem", "gradient"])
def test_learned_planner_gets_only_pixels_and_the_goal_image(planner_name):
    world = tiny_world()
    env = PoisonedTask(make_task("reacher", render=True))
    model = SpyLearned(world, env.action_space, LearnedConfig(sample_steps=2))
    kw = dict(samples=8, elites=2, iterations=2) if planner_name == "cem" else dict(starts=2, iterations=2)
    planner = make_planner(planner_name, env.action_space, horizon=3, **kw)
    rec, = run_mpc([env], planner, model, [model.observer()], MPCConfig(receding_horizon=2, max_steps=4,
                                                                         stop_on_success=False), seeds=[10_000])
    assert rec.steps == 4 and len(rec.plans) == 2
    assert model.seen and all(isinstance(s, PixelContext) for s in model.seen)
    last = model.seen[-1]                              # the 2nd replan: the last 2 observed frames + the action between
    np.testing.assert_array_equal(last.frames, rec.frames[1:3])
    np.testing.assert_array_equal(last.actions, rec.actions[1:2])
    assert model.calls == sum(rec.model_calls)


def test_learned_model_protocol_shapes_padding_and_gradient():
    world = tiny_world(context_frames=3)
    task = make_task("reacher", render=True)
    frame, _ = task.reset(seed=1)
    model = LearnedModel(world, task.action_space, LearnedConfig(sample_steps=1))
    state = PixelContext(frame[None], np.zeros((0, 2), np.float32))       # one frame: padded to 3
    z, za = model.context(state)
    assert z.shape == (3, 16, 32) and za.shape == (2, 2) and torch.all(za == 0)
    torch.testing.assert_close(z[0], z[2])
    a = torch.zeros(4, 2, 2, requires_grad=True)
    pred = model.rollout(state, a)
    assert pred.shape == (4, 2, 16, 32)
    c = model.cost(pred, task.goal_image)
    assert c.shape == (4,)
    c.sum().backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    with torch.no_grad():
        pb = model.rollout_batch([state, state], torch.zeros(2, 3, 2, 2))
        assert pb.shape == (2, 3, 2, 16, 32)
        assert model.cost_batch(pb, [task.goal_image, frame]).shape == (2, 3)
    with pytest.raises(ValueError, match="expected a planners.mpc.PixelContext"):
        model.rollout(np.zeros(21), a)
    with pytest.raises(ValueError, match="goal image"):
        model.cost(pred, task.goal_state)


def test_learned_model_jumps_when_the_model_was_pretrained_to():
    world = tiny_world(max_jump=3)
    task = make_task("reacher", render=True)
    frame, _ = task.reset(seed=1)
    state = PixelContext(frame[None], np.zeros((0, 2), np.float32))
    a = torch.rand(4, 3, 2, generator=torch.Generator().manual_seed(0)) * 0.4 - 0.2
    auto = LearnedModel(world, task.action_space, LearnedConfig(sample_steps=1))
    stepwise = LearnedModel(world, task.action_space, LearnedConfig(sample_steps=1, imagine="rollout"))
    with torch.no_grad():
        z_jump, z_roll = auto.rollout(state, a), stepwise.rollout(state, a)
        assert z_jump.shape == (4, 1, 16, 32) and z_roll.shape == (4, 3, 16, 32)
        ctx, ctx_a = auto.context(state)
        ref = world.model.predict_frame_after(ctx.expand(4, -1, -1, -1), ctx_a.expand(4, -1, -1), a,
                                              steps=1, generator=torch.Generator().manual_seed(0), shared_noise=True)
        torch.testing.assert_close(z_jump[:, 0], ref)          # the same seed, the same jump (noise shared by rows)
        assert auto.cost(z_jump, task.goal_image).shape == (4,)
        assert auto.rollout_batch([state, state], a.expand(2, -1, -1, -1)).shape == (2, 4, 1, 16, 32)
    with pytest.raises(ValueError, match="horizon_cost='mean'"):
        LearnedModel(world, task.action_space, LearnedConfig(horizon_cost="mean"))
    with pytest.raises(ValueError, match="imagine="):
        LearnedModel(world, task.action_space, LearnedConfig(imagine="leap"))
    with pytest.raises(ValueError, match="jumps of 1..3"):
        auto.rollout(state, torch.zeros(2, 4, 2))


def test_pixel_observer_keeps_the_last_frames_and_the_actions_between_them():
    env = make_task("reacher", render=True)
    ob = PixelObserver(context=2)
    obs, info = env.reset(seed=0)
    ob.reset(env, obs, info)
    frames = [obs]
    for a in ([0.1, 0.0], [0.0, -0.1], [0.2, 0.2]):
        obs, *_ = env.step(np.array(a, np.float32))
        ob.step(np.array(a, np.float32), obs, None)
        frames.append(obs)
    ctx, goal = ob()
    np.testing.assert_array_equal(ctx.frames, np.stack(frames[-2:]))
    np.testing.assert_array_equal(ctx.actions, np.array([[0.2, 0.2]], np.float32))
    np.testing.assert_array_equal(goal, env.goal_image)


# ---------------------------------------------------------------- the benchmark harness end to end

def test_lw_benchmark_and_lw_plan_write_their_outputs(tmp_path):
    import json

    from lw.benchmark import main
    from lw.plan import main as plan_main

    small = ["oracle_state_budget.samples=32", "oracle_state_budget.elites=4", "oracle_state_budget.iterations=3"]
    rc = main(["tasks=[reacher]", "rows=[learned,oracle_state,random]", "episodes=2", "lockstep=2", "max_steps=10",
               "video=true", "video_episodes=1", "workers=1", "progress=false", f"out={tmp_path / 'bench'}", *small])
    assert rc == 0
    res = json.loads((tmp_path / "bench" / "results.json").read_text())["results"]
    by_row = {r["row"]: r for r in res}
    assert by_row["learned"]["episodes"] == 0 and "no model" in by_row["learned"]["note"]
    for row in ("oracle_state", "random"):
        r = by_row[row]
        assert r["episodes"] == 2 and [e["seed"] for e in r["per_episode"]] == [10_000, 10_001]
        lo, hi = r["ci95"]
        assert 0 <= lo <= r["success_rate"] <= hi <= 1
    assert by_row["oracle_state"]["settings"]["samples"] == 32 and by_row["oracle_state"]["model_calls_per_replan"] == 3
    assert by_row["random"]["model_calls_per_replan"] == 0
    md = (tmp_path / "bench" / "results.md").read_text()
    assert "| reacher | oracle_state | cem |" in md and "skipped: no model" in md
    assert (tmp_path / "bench" / "success.png").stat().st_size > 1000
    gifs = sorted(p.name for p in (tmp_path / "bench" / "videos").iterdir())
    assert gifs == ["reacher_oracle_state_cem_seed10000.gif", "reacher_random_random_seed10000.gif"]
    assert (tmp_path / "bench" / "config.yaml").is_file()

    assert plan_main(["task=point_maze", "row=random", "seed=10003", "bench.max_steps=6", f"out={tmp_path / 'plan'}"]) == 0
    ep = json.loads((tmp_path / "plan" / "episode.json").read_text())
    assert ep["seed"] == 10_003 and ep["steps"] <= 6 and len(ep["actions"]) == ep["steps"]
    assert (tmp_path / "plan" / "episode.gif").stat().st_size > 0
    with pytest.raises(ValueError, match="unknown row 'oracle'"):
        main(["rows=[oracle]", f"out={tmp_path / 'bad'}"])


def test_benchmark_loads_one_model_per_task(tmp_path):
    import json

    from lw.benchmark import main
    from tests.test_world import build_tiny_world

    for task in ("reacher", "point_maze"):
        build_tiny_world(tmp_path, task=task)
    model = str(tmp_path / "world-embed-moe-{task}-2-1")   # build_tiny_world's folder name, {task} left open
    rc = main(["tasks=[reacher,point_maze]", "rows=[learned]", f"model={model}", "episodes=1", "max_steps=2",
               "learned_budget.samples=4", "learned_budget.elites=2", "learned_budget.iterations=1",
               "learned.sample_steps=1", "progress=false", f"out={tmp_path / 'bench'}"])
    assert rc == 0
    res = json.loads((tmp_path / "bench" / "results.json").read_text())["results"]
    assert [(r["task"], r["episodes"]) for r in res] == [("reacher", 1), ("point_maze", 1)], res
