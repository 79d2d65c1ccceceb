"""One representation, one RAE and one world model over two tasks, end to end on tiny collected data:
lw collect (reacher, point_maze) -> lw train-encoder method=jepa data=[a,b] -> lw train-rae data=[a,b]
-> lw encode-dataset data=[a,b] -> lw pretrain data.dataset=[a,b] -> LearnedWorld-v0 and lw benchmark
on each of its tasks."""
import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from lw.cli import main as lw
from pretrain.eval_prediction import collection_policy
from worldmodel.errors import ConfigError
from worldmodel.hub import read_config
from worldmodel.world import LatentWorld, covered_tasks
try:  # tiny_overrides: test_train's tiny `lw pretrain` run
    from tests.test_train import tiny_overrides
except ImportError:  # tests/ not importable as a package: pytest put tests/ itself on sys.path
    from test_train import tiny_overrides

TASKS = ["reacher", "point_maze"]
POLICIES = {"reacher": "mixture", "point_maze": "uniform"}   # each task's data policy, told apart in the export
IMG = 16
QUIET = ["progress=false", "threads=1"]


@pytest.fixture(scope="module")
def generalist(tmp_path_factory):
    """The whole chain over two tasks with the real programs; returns (root, dataset roots)."""
    root = tmp_path_factory.mktemp("generalist")
    data = [root / task for task in TASKS]
    for task, out in zip(TASKS, data):
        assert lw(["collect", f"task={task}", "episodes=6", "episode_steps=6", f"image_size={IMG}", "workers=1",
                   f"policy={POLICIES[task]}", "progress=false", f"out={out}"]) == 0
    both = f"data=[{data[0]},{data[1]}]"
    assert lw(["train-encoder", "method=jepa", both, f"out={root / 'jepa'}", "steps=3", "eval_every=3",
               "holdout=0.34", f"image_size={IMG}", f"input_size={IMG}", "channels=[8,16]", "hidden=32",
               "latent_dim=8", "pred_hidden=32", "batch_size=8", "eval_episodes=2", "max_minutes=0", *QUIET]) == 0
    assert lw(["train-rae", both, "encoder=jepa", f"encoder_weights={root / 'jepa'}", f"out={root / 'rae_both'}",
               f"image_size={IMG}", "decoder_dim=32", "decoder_depth=1", "decoder_heads=2", "batch_size=8",
               "steps=2", "eval_every=2", "eval_frames=4", "save_every=2", "stats_frames=20", "holdout=0.34",
               "max_minutes=0", "device=cpu", *QUIET]) == 0
    assert lw(["encode-dataset", both, f"rae={root / 'rae_both'}", "device=cpu", *QUIET]) == 0
    assert lw(["pretrain", *tiny_overrides(root, "run", steps=4, **{
        "rae.path": root / "rae_both", "data.dataset": f"[{data[0]},{data[1]}]", "data.holdout": 0.34,
        "threads": 1})]) == 0
    return root, data


def test_one_representation_and_rae_over_both_datasets(generalist):
    root, data = generalist
    jepa = read_config(root / "jepa")
    assert jepa["tasks"] == TASKS and "task" not in jepa and covered_tasks(jepa) == dict.fromkeys(TASKS)
    scores = json.loads((root / "jepa" / "summary.json").read_text())
    assert sorted(scores["by_dataset"]) == sorted(TASKS)            # held-out proxy scores of each dataset
    assert all("k1" in s for s in scores["by_dataset"].values())
    rae = json.loads((root / "rae_both" / "summary.json").read_text())
    assert rae["heldout_frames"] == 2 * 2 * 7                        # 2 held-out episodes of 7 frames from each


def test_the_export_names_its_tasks_and_each_ones_data_policy(generalist):
    root, data = generalist
    extras = read_config(root / "run" / "model")
    policies = {task: collection_policy(d) for task, d in zip(TASKS, data)}
    assert policies["reacher"]["policy"] == "mixture" and policies["point_maze"]["policy"] == "uniform"
    assert extras["tasks"] == TASKS and "task" not in extras and extras["data_policy"] == policies
    assert extras["dataset"] == [str(d) for d in data]
    assert covered_tasks(extras) == policies


def test_the_export_records_each_tasks_action_scale(generalist):
    root, _ = generalist
    world = LatentWorld.from_pretrained(root / "run" / "model")
    assert world.extras["action_scales"] == {"reacher": 0.2, "point_maze": 1.0}   # each task's own bound
    assert world.model.cfg.action_scale == 1.0                                    # the model's: the largest
    assert [world.for_task(t).action_scale for t in TASKS] == [0.2, 1.0]
    world.extras["action_scales"] = {"reacher": 0.2}                             # a folder missing one
    with pytest.raises(ConfigError, match=r"task='point_maze' has no action scale in this world model's "
                                          r"action_scales \{'reacher': 0.2\}; expected one of \['reacher'\]"):
        world.for_task("point_maze")


def test_every_consumer_hands_the_model_each_tasks_actions_as_a_fraction_of_its_bound(generalist, monkeypatch):
    """A full-scale action of reacher (0.2) and of point_maze (1.0) reaches the model as the same input, the
    model's full scale, from LearnedWorld-v0, the benchmark's learned planner and lw eval-prediction."""
    from planners.benchmark import BenchmarkConfig, action_space, build_row
    from planners.mpc import PixelContext
    from pretrain.eval_prediction import EvalPredictionConfig, predict
    from worldmodel.transfusion import Transfusion

    root, _ = generalist
    model = str(root / "run" / "model")
    fed, predict_next_frames = [], Transfusion.predict_next_frames

    def spy(self, ctx, ctx_a, act, **kw):   # the context's actions and the imagined ones, as the model gets them
        fed.append((task, ctx_a, act))
        return predict_next_frames(self, ctx, ctx_a, act, **kw)

    def full_scale_episodes(task_name, image_size, n, steps, seed, **policy):   # eval-prediction's ground truth
        frames = np.zeros((n, steps + 1, image_size, image_size, 3), np.uint8)
        return frames, np.broadcast_to(action_space(task_name).high, (n, steps, 2)).copy()
    monkeypatch.setattr(Transfusion, "predict_next_frames", spy)
    monkeypatch.setattr("pretrain.eval_prediction.record_episodes", full_scale_episodes)
    world = LatentWorld.from_pretrained(model)
    for task in TASKS:
        full = action_space(task).high
        env = gym.make("LearnedWorld-v0", model=world, task=task, obs="latent", sample_steps=1)
        env.reset(seed=0)
        env.step(full)
        env.close()
        planner = build_row(BenchmarkConfig(tasks=[task], rows=["learned"], model=model, device="cpu"), task,
                            "learned", world).model
        start = PixelContext(np.zeros((1, IMG, IMG, 3), np.uint8), np.zeros((0, 2), np.float32))
        planner.rollout(start, full[None, None])
        predict(EvalPredictionConfig(model=model, task=task, episodes=1, horizon=1, device="cpu"), log=lambda _: None)
    assert [t for t, *_ in fed] == [t for t in TASKS for _ in range(3)]
    for task, ctx_a, act in fed:
        assert torch.allclose(act, torch.ones_like(act)), (task, act)              # 1.0: the model's full scale
    assert all(torch.allclose(ctx_a, torch.ones_like(ctx_a)) for *_, ctx_a, _ in fed[2::3])   # eval's real context


def test_the_shared_jepa_takes_each_tasks_actions_as_a_fraction_of_its_bound(generalist, monkeypatch):
    """The JEPA's training and its benchmark row scale each task by its own bound: reacher's full 0.2 and
    point_maze's full 1.0 both reach the predictor as 1.0 (reacher at 0.2 would be drowned in point_maze's range)."""
    from planners.benchmark import BenchmarkConfig, action_space, build_row
    from planners.mpc import PixelContext
    from worldmodel.jepa import JEPAWorld, LatentPredictor

    root, _ = generalist
    assert read_config(root / "jepa")["action_scales"] == {"reacher": 0.2, "point_maze": 1.0}
    fed, unroll = [], LatentPredictor.unroll

    def spy(self, z, actions, task=None):
        fed.append(actions)
        return unroll(self, z, actions, task)
    monkeypatch.setattr(LatentPredictor, "unroll", spy)
    world = JEPAWorld.from_pretrained(root / "jepa")
    for task in TASKS:
        full = action_space(task).high
        planner = build_row(BenchmarkConfig(tasks=[task], rows=["jepa"], jepa=str(root / "jepa"), device="cpu"),
                            task, "jepa", world).model
        start = PixelContext(np.zeros((1, IMG, IMG, 3), np.uint8), np.zeros((0, 2), np.float32))
        planner.rollout(start, full[None, None])
    assert len(fed) == 2 and all(torch.allclose(a, torch.ones_like(a)) for a in fed), fed


def test_learned_world_runs_each_task_and_refuses_others(generalist):
    root, _ = generalist
    model = str(root / "run" / "model")
    world = LatentWorld.from_pretrained(model)
    for task in TASKS:
        env = gym.make("LearnedWorld-v0", model=world, task=task, obs="latent", sample_steps=1)
        obs, _ = env.reset(seed=0)
        obs, reward, *_ = env.step(env.action_space.sample())
        assert env.unwrapped.core.task_name == task and obs.shape == world.latent_shape and np.isfinite(reward)
        env.close()
    with pytest.raises(ConfigError, match=r"task='pusht', but this world model was trained on the tasks "
                                          r"\['reacher', 'point_maze'\]"):
        gym.make("LearnedWorld-v0", model=world, task="pusht")
    with pytest.raises(ConfigError, match=r"several tasks, \['reacher', 'point_maze'\]; pass task="):
        gym.make("LearnedWorld-v0", model=model)


def test_benchmark_plans_each_task_of_the_model(generalist, tmp_path):
    from planners.benchmark import BenchmarkConfig, build_row, goal_policy

    root, data = generalist
    model = str(root / "run" / "model")
    assert lw(["benchmark", "tasks=[]", f"model={model}", "rae=", "rows=[learned]", "episodes=1", "lockstep=1",
               "max_steps=2", "learned_budget.samples=4", "learned_budget.elites=2", "learned_budget.iterations=1",
               "learned.sample_steps=1", f"out={tmp_path}", *QUIET]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["results"]
    assert [(r["task"], r["row"], r["episodes"]) for r in rows] == [(t, "learned", 1) for t in TASKS]
    cfg = BenchmarkConfig(tasks=["pusht"], rows=["learned"], model=model, device="cpu")
    for task, d in zip(TASKS, data):    # goal_policy=auto: the task's own data policy
        assert goal_policy(cfg, task) == collection_policy(d)
    assert goal_policy(cfg, "pusht") == {"policy": "mixture"}
    skipped = build_row(cfg, "pusht", "learned", LatentWorld.from_pretrained(model))
    assert skipped.skip == "the model was trained on 'reacher', 'point_maze'"


def test_analyze_experts_reports_routing_by_task_from_each_dataset_alone(generalist, monkeypatch):
    """lw analyze-experts on the generalist: the text-vs-vision analysis on the mixture, then each task's vision
    routing from rows of its own dataset alone: shares (T, L, E) summing to 1, S_t, a JS summary per layer and
    its split-half noise floor."""
    import pretrain.analyze_experts as ae
    import pretrain.data.mixture as mixture

    root, _ = generalist
    drawn, routed = [], []                  # the datasets whose frames each route_counts call saw
    latent, route_counts = mixture._latent, ae.route_counts

    def spy_latent(part, e, t):
        drawn.append(part.dataset)
        return latent(part, e, t)

    def spy_route_counts(*args):
        routed.append(sorted(set(drawn)))
        drawn.clear()
        return route_counts(*args)
    monkeypatch.setattr(mixture, "_latent", spy_latent)
    monkeypatch.setattr(ae, "route_counts", spy_route_counts)
    assert lw(["analyze-experts", f"model_dir={root / 'run' / 'model'}", "rows=4", "batch_size=4", "device=cpu",
               "data.seq_len=128", "data.video_frames=3", "data.holdout=0.34"]) == 0
    assert routed == [[0, 1], [0], [1]]     # the mixture, then reacher alone, then point_maze alone
    out = root / "run" / "experts"
    saved = json.loads((out / "experts.json").read_text())
    assert np.array(saved["s"]).shape == (2, 4)                                # modality S: unchanged
    by_task = saved["by_task"]
    shares, s, counts = (np.array(by_task[k]) for k in ("shares", "s", "counts"))
    assert by_task["tasks"] == TASKS and shares.shape == s.shape == counts.shape == (2, 2, 4)
    np.testing.assert_allclose(shares.sum(-1), 1.0)
    np.testing.assert_allclose(shares, counts / counts.sum(-1, keepdims=True))
    np.testing.assert_allclose(s, ae.task_specialisation(counts)["s"])
    assert np.array(by_task["summary"]).shape == (2,) and 0 <= min(by_task["summary"]) <= max(by_task["summary"]) <= 1
    floor = np.array(by_task["noise_floor"])      # one value per MoE layer, from each task's even vs odd rows
    assert floor.shape == (2,) and ((0 <= floor) & (floor <= 1)).all()
    table = (out / "experts_by_task.md").read_text()
    assert "## layer 1 (trunk.blocks.1.ffn)" in table and "| point_maze | " in table
    assert "the noise floor |" in table
    assert f"| 1 (trunk.blocks.1.ffn) | {by_task['summary'][1]:.3f} | {floor[1]:.3f} |" in table   # JS beside its floor
    assert (out / "experts_by_task.png").stat().st_size > 1000


def test_the_generalist_presets_compose_the_four_task_recipe():
    """lw pretrain experiment=generalist_small (and its GPU twin): four tasks' data on one shared RAE,
    pusht_jepa's width and mixture, pusht the largest share of the episode windows."""
    from lw.config import compose
    from pretrain.train import TrainConfig

    small, gpu, pusht = (compose(TrainConfig, "pretrain", [f"experiment={e}"])
                         for e in ("generalist_small", "generalist_gpu_small", "pusht_jepa"))
    four = ["data/reacher", "data/point_maze", "data/pusht", "data/dmc_reacher"]
    for cfg in (small, gpu):
        assert cfg.data.roots() == four and cfg.rae.path == "runs/rae_generalist"
        shares = cfg.data.dataset_shares()
        assert max(shares) == shares[2] and shares.count(shares[2]) == 1            # pusht, the hardest task
        assert cfg.data.weights() == pusht.data.weights() and cfg.model.action_adaln   # 85% action video
    assert small.model.d_model == 192 == pusht.model.d_model and small.device == "cpu"
    assert gpu.device == "cuda" and gpu.precision == "bf16" and gpu.model.d_model > small.model.d_model
    assert gpu.steps > small.steps and gpu.model.n_layers > small.model.n_layers and gpu.run_dir != small.run_dir
