"""`lw benchmark`'s protocol (issue 21, item 3): the anchors' goals reach every row's real simulator
identically, `goals=random` gives the task's own, `budget=anchors` reaches the CEM planner, pusht is
judged by DINO-WM's rule, and the table states the protocol beside the published figures."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lw.benchmark import main
from planners.goals import anchor_goal
from worldmodel.errors import ConfigError

QUIET = ["progress=false", "workers=1"]
TINY = ["learned_budget.samples=4", "learned_budget.elites=2", "learned_budget.iterations=1", "learned.sample_steps=1",
        "oracle_latent_budget.samples=4", "oracle_latent_budget.elites=2", "oracle_latent_budget.iterations=1",
        "oracle_state_budget.samples=8", "oracle_state_budget.elites=2", "oracle_state_budget.iterations=1"]


def _jepa(root, image_size=32, task="dmc_reacher", action_scale=1.0):
    from worldmodel.jepa import JEPA, JEPAConfig

    d = root / f"jepa-{task}-{image_size}"
    JEPA(JEPAConfig(image_size=image_size, input_size=16, channels=(8, 16), hidden=32, latent_dim=6,
                    action_scale=action_scale)).save_pretrained(d, extra={"task": task})
    return d


def _results(out):
    return json.loads((out / "results.json").read_text())


def _episodes(res, row):
    return next(r for r in res["results"] if r["row"] == row)["per_episode"]


def test_anchors_goals_reach_every_row_identically_and_the_table_says_so(tmp_path):
    from tests.test_world import IMAGE, build_tiny_world

    model = build_tiny_world(tmp_path, task="dmc_reacher")          # its rae/ serves oracle_latent (rae=)
    jepa = _jepa(tmp_path, IMAGE)
    rows = ["learned", "jepa", "oracle_latent", "oracle_state", "random"]
    out = tmp_path / "anchors"
    assert main(["tasks=[dmc_reacher]", f"rows=[{','.join(rows)}]", f"model={model}", "rae=", f"jepa={jepa}",
                 "episodes=2", "lockstep=2", f"out={out}", *QUIET, *TINY]) == 0
    res = _results(out)
    assert [r["row"] for r in res["results"]] == rows and all(r["episodes"] == 2 for r in res["results"])
    proto = res["protocol"]["dmc_reacher"]
    assert proto["goals"] == "anchors" and proto["max_steps"] == 10 and proto["env_steps"] == 50
    for i, seed in enumerate((10_000, 10_001)):
        start, goal = anchor_goal("dmc_reacher", seed)
        eps = [_episodes(res, row)[i] for row in rows]
        assert all(e["seed"] == seed and e["steps"] <= 10 for e in eps)
        assert all(e["start_state"] == eps[0]["start_state"] and e["goal_state"] == eps[0]["goal_state"] for e in eps)
        # the anchors' start reached the simulator (its joints; the target slot holds the goal's finger)
        np.testing.assert_allclose(eps[0]["start_state"][:4], start[:4])
        np.testing.assert_allclose(eps[0]["goal_state"][:2], goal[:2])
    md = (out / "results.md").read_text()
    head = md.split("| task |")[0]
    assert "2 episodes per row (seeds 10000..10001)" in head
    assert "Protocol dmc_reacher: goals the anchors' (start and goal = the state 25 environment steps later" in head
    assert "10 decisions = 50 environment steps" in head and "dm_control's own target test" in head
    assert "budget=cpu" in head and "learned, jepa, oracle_latent: cem 4 samples x 1 iterations, top 2, horizon 5" in head
    pub = md.split("Published figures")[1]
    assert "published, not measured here" in pub
    assert "| dmc_reacher | DINO-WM (published, not measured here) | 0.92 | arXiv 2411.04983, Table 1 |" in pub
    assert "| dmc_reacher | LeWM (published, not measured here) | 0.84-0.86 | arXiv 2603.19312 |" in pub
    assert "pusht" not in pub                                          # only the tasks that ran
    assert {(p["method"], p["measured_here"]) for p in res["published"]} == {("DINO-WM", False), ("LeWM", False)}

    # goals=random: the task's own reset(seed) goals, the same for every row, not the anchors'
    out = tmp_path / "random"
    assert main(["tasks=[dmc_reacher]", "rows=[oracle_state,random]", "goals=random", "episodes=2", "lockstep=2",
                 f"out={out}", *QUIET, *TINY]) == 0
    res = _results(out)
    assert res["protocol"]["dmc_reacher"]["goals"] == "random" and res["protocol"]["dmc_reacher"]["max_steps"] == 50
    from envs.mujoco_tasks import make_task

    env = make_task("dmc_reacher", render=False)
    for i, seed in enumerate((10_000, 10_001)):
        a, b = _episodes(res, "oracle_state")[i], _episodes(res, "random")[i]
        assert a["start_state"] == b["start_state"] and a["goal_state"] == b["goal_state"]
        _, info = env.reset(seed=seed)
        np.testing.assert_allclose(a["start_state"], info["state"])
        assert not np.allclose(a["start_state"][:4], anchor_goal("dmc_reacher", seed)[0][:4])
    env.close()
    assert "the task's own random goals" in (out / "results.md").read_text()


def test_budget_anchors_reaches_the_cem_planner(tmp_path):
    from lw.config import compose
    from planners.benchmark import BenchmarkConfig, describe_budget, planner_settings

    cfg = compose(BenchmarkConfig, "benchmark", ["budget=anchors"])
    assert {k: planner_settings(cfg, "jepa", "cem")[k] for k in ("samples", "iterations", "elites", "horizon")} == \
        dict(samples=300, iterations=30, elites=30, horizon=5)
    assert planner_settings(cfg, "oracle_state", "cem")["samples"] == 100          # the oracles keep the CPU budget
    assert planner_settings(compose(BenchmarkConfig, "benchmark", []), "learned", "cem")["samples"] == 64
    assert "learned, jepa: cem 300 samples x 30 iterations, top 30, horizon 5, receding horizon 5" in describe_budget(cfg)
    out = tmp_path / "b"
    assert main(["tasks=[dmc_reacher]", "rows=[jepa]", f"jepa={_jepa(tmp_path, 64)}", "budget=anchors", "episodes=1",
                 "lockstep=1", "max_steps=5", "stop_on_success=false", "learned_budget.samples=4",   # ignored
                 f"out={out}", *QUIET]) == 0
    r = _results(out)["results"][0]
    assert r["settings"]["samples"] == 300 and r["settings"]["iterations"] == 30 and r["settings"]["elites"] == 30
    assert r["model_calls_per_replan"] == 30 and r["rollouts_per_replan"] == 300 * 30   # one replan of the full CEM
    assert "budget=anchors" in (out / "results.md").read_text()


def test_pusht_is_judged_by_the_anchors_rule(tmp_path, monkeypatch):
    import envs.mujoco_tasks as mt
    from lw.config import compose
    from planners.benchmark import BenchmarkConfig, protocol

    made = []
    real = mt.make_task

    def recording(name, **kw):
        made.append((name, kw.get("success")))
        return real(name, **kw)

    monkeypatch.setattr(mt, "make_task", recording)
    out = tmp_path / "p"
    assert main(["tasks=[pusht]", "rows=[random]", "episodes=1", f"out={out}", *QUIET]) == 0
    assert ("pusht", "anchors") in made and ("pusht", "coverage") not in made and ("pusht", None) not in made[1:]
    res = _results(out)
    assert res["protocol"]["pusht"]["success"] == "anchors" and res["protocol"]["pusht"]["task_kwargs"] == \
        {"success": "anchors"}
    md = (out / "results.md").read_text()
    assert "success: DINO-WM's state rule" in md and "gym-pusht's coverage stays in info" in md
    assert "| pusht | LeWM (published, not measured here) | 0.90-0.96 |" in md
    # the task's own goals are judged by gym-pusht's own coverage rule; success= forces either
    assert protocol(compose(BenchmarkConfig, "benchmark", ["goals=random"]), "pusht").task_kwargs == \
        {"success": "coverage"}
    assert protocol(compose(BenchmarkConfig, "benchmark", ["success=task"]), "pusht").success_rule.startswith(
        "gym-pusht's own")
    # our own tasks keep their goals and 50 decisions under goals=auto
    p = protocol(compose(BenchmarkConfig, "benchmark", []), "reacher")
    assert (p.goals, p.max_steps, p.task_kwargs) == ("random", 50, {})


def test_anchors_goals_come_from_the_models_data_policy(tmp_path):
    # goal_policy=auto: the goals are states reached by the policy the model's data was collected with
    # (its folder's data_policy, written by lw pretrain); lw collect's default mixture without one
    import shutil

    from lw.config import compose
    from planners.benchmark import BenchmarkConfig, episode_options, protocol
    from planners.goals import anchor_goals
    from tests.test_world import build_tiny_world
    from worldmodel.hub import CONFIG_NAME

    plain = build_tiny_world(tmp_path, task="dmc_reacher")
    scripted = tmp_path / "scripted"
    shutil.copytree(plain, scripted)
    meta = json.loads((scripted / CONFIG_NAME).read_text())
    meta["data_policy"] = {"policy": "scripted", "hold": 1, "scripted_noise": 0.3}
    (scripted / CONFIG_NAME).write_text(json.dumps(meta))
    seeds = range(10_000, 10_003)

    def goals(*overrides):
        cfg = compose(BenchmarkConfig, "benchmark", list(overrides))
        return protocol(cfg, "dmc_reacher"), [o["goal_state"] for o in episode_options(cfg, "dmc_reacher", seeds)]

    proto, got = goals(f"model={scripted}")
    assert proto.goal_policy == meta["data_policy"] and "data policy (scripted)" in proto.describe()
    want = [g for _, g in anchor_goals("dmc_reacher", seeds, policy="scripted", hold=1, scripted_noise=0.3)]
    default = [g for _, g in anchor_goals("dmc_reacher", seeds, policy="mixture")]
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(want, default)                       # the policy changes the goals
    for overrides in ([f"model={plain}"], [], [f"model={scripted}", "goal_policy=mixture"]):
        proto, got = goals(*overrides)
        assert proto.goal_policy == {"policy": "mixture"}
        np.testing.assert_array_equal(got, default)


@pytest.mark.parametrize("override, match", [
    ("goals=nope", r"goals='nope', expected one of \['auto', 'anchors', 'random'\]"),
    ("budget=gpu", r"budget='gpu', expected one of \['cpu', 'anchors'\]"),
    ("success=maybe", r"success='maybe', expected one of \['auto', 'task', 'anchors'\]"),
    ("goal_policy=expert", r"goal_policy='expert', expected one of \["),
])
def test_unknown_protocol_values_are_clear_errors(tmp_path, override, match):
    with pytest.raises(ConfigError, match=match):
        main(["tasks=[dmc_reacher]", "rows=[random]", override, f"out={tmp_path}", *QUIET])


def test_anchors_goals_on_a_task_they_do_not_fit_is_a_clear_error(tmp_path):
    # point_maze holds each action 2 environment steps: 25 steps are no whole number of decisions
    with pytest.raises(ConfigError, match="goals=anchors does not fit point_maze.*action_repeat=2"):
        main(["tasks=[point_maze]", "rows=[random]", "goals=anchors", f"out={tmp_path}", *QUIET])
