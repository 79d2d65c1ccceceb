"""The landmark graph (planners.landmarks): shortest paths, a cost that goes around walls where the
latent MSE goes through them, checksummed folders, the encoder check, and the benchmark wiring."""
import json

import numpy as np
import pytest
import torch

from planners.landmarks import LandmarkGraph, kmeans, shortest_steps
from lw.cli import main as lw
from worldmodel.errors import ModelFolderError


def test_shortest_steps_counts_edges_and_respects_direction():
    e = torch.zeros(4, 4, dtype=torch.bool)
    e[0, 1] = e[1, 2] = e[2, 3] = e[3, 2] = True
    d = shortest_steps(e)
    assert d[0, 3] == 3 and d[3, 2] == 1 and d[1, 1] == 0
    assert torch.isinf(d[2, 0]) and torch.isinf(d[3, 1])       # never observed backwards


def test_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(100, 2, generator=g) * 0.05 + c for c in (torch.tensor([0., 0.]), torch.tensor([5., 5.]))])
    c = kmeans(x, 2)
    assert sorted(c.round().sum(1).tolist()) == [0.0, 10.0]


def _u_corridor(episodes=60, steps=80, seed=0):
    """Latents of random walks along a U-shaped corridor: down the left arm (x=0), along the
    bottom, up the right arm (x=1). The arms are 1 apart in latent space, 3 apart along the corridor."""
    rng = np.random.default_rng(seed)
    s = np.clip(rng.uniform(0, 3, (episodes, 1)) + np.cumsum(rng.normal(0, 0.08, (episodes, steps)), 1), 0, 3)
    x = np.where(s < 1, 0.0, np.where(s < 2, s - 1, 1.0))
    y = np.where(s < 1, 1 - s, np.where(s < 2, 0.0, s - 2))
    return torch.tensor(np.stack([x, y], -1), dtype=torch.float32)


def test_graph_cost_goes_around_the_wall_where_latent_mse_goes_through_it():
    graph = LandmarkGraph.build(_u_corridor(), k=40)
    goal = torch.tensor([1.0, 1.0])                            # top of the right arm (corridor position 3)
    across = torch.tensor([0.0, 1.0])                          # top of the left arm: 1 away, 3 along the corridor
    around = torch.tensor([0.5, 0.0])                          # bottom middle: 1.12 away, 1.5 along the corridor
    z = torch.stack([across, around])[:, None, None, :]        # (M=2, K=1, N=1, C=2)
    cost = graph.cost(z, goal.view(1, 1, 1, 2))
    mse = (z - goal.view(1, 1, 1, 2)).pow(2).mean((1, 2, 3))
    assert mse[0] < mse[1]                                     # the straight line prefers the far arm...
    assert cost[1] < cost[0]                                   # ...the graph the way around
    # on the goal's own landmark the cost is the plain latent distance (below one step)
    near = graph.cost(torch.stack([goal, goal - 0.01])[:, None, None, :], goal.view(1, 1, 1, 2))
    assert near[0] < near[1] < 1.0


def test_cost_is_the_mean_over_scored_steps_and_checks_the_size():
    graph = LandmarkGraph.build(_u_corridor(), k=20)
    z = _u_corridor(episodes=3, steps=5, seed=1)[:, :, None, :]   # (M=3, K=5, N=1, C=2)
    goal = torch.tensor([1.0, 1.0]).view(1, 1, 1, 2)
    per_step = torch.stack([graph.cost(z[:, k:k + 1], goal) for k in range(5)], 1)
    torch.testing.assert_close(graph.cost(z, goal), per_step.mean(1))
    with pytest.raises(ValueError, match="built on 2"):
        graph.cost(torch.zeros(3, 1, 1, 3), torch.zeros(1, 1, 1, 3))


def test_folder_roundtrip_checksum_and_encoder_check(tmp_path):
    graph = LandmarkGraph.build(_u_corridor(), k=10, fingerprint="abc")
    graph.save_pretrained(tmp_path / "g")
    back = LandmarkGraph.from_pretrained(tmp_path / "g")
    torch.testing.assert_close(back.centres, graph.centres)
    torch.testing.assert_close(back.steps, graph.steps)
    assert back.fingerprint == "abc" and back.meta["k"] == 10
    with pytest.raises(ModelFolderError, match="built on latents of encoder"):
        back.check_fingerprint("xyz", "the world model")
    w = tmp_path / "g" / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-3] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ModelFolderError, match="checksum"):
        LandmarkGraph.from_pretrained(tmp_path / "g")


def test_build_command_and_the_benchmark_rows_plan_with_it(tmp_path):
    import gymnasium as gym

    from planners.benchmark import BenchmarkConfig, build_row
    from planners.learned import LearnedModel
    from worldmodel.jepa import JEPA, JEPAConfig, JEPAWorld

    data = tmp_path / "maze"
    assert lw(["collect", "task=point_maze", "episodes=6", "episode_steps=10", "image_size=64", "workers=1",
               "policy=uniform", "progress=false", f"out={data}"]) == 0
    d = tmp_path / "jepa"
    torch.manual_seed(0)
    JEPA(JEPAConfig(image_size=64, input_size=16, channels=(8, 16), hidden=32, latent_dim=6,
                    action_scale=1.0)).save_pretrained(d, extra={"task": "point_maze"})
    assert lw(["build-landmarks", f"model={d}", f"data={data}", "k=8", "holdout=0.34", "pairs=50", "threads=1"]) == 0
    graph = LandmarkGraph.from_pretrained(d / "landmarks")
    world = JEPAWorld.from_pretrained(d)
    assert len(graph) == 8 and graph.fingerprint == world.encoder_fingerprint()
    assert "spearman_graph" in graph.meta["heldout_scores"]

    rm = build_row(BenchmarkConfig(tasks=["point_maze"], rows=["jepa"], jepa=str(d), device="cpu"), "point_maze", "jepa")
    assert rm.model.landmarks is not None and rm.note == "landmark cost (8 landmarks)"
    z = torch.randn(4, 1, 1, 6)
    goal = torch.randn(1, 6)
    torch.testing.assert_close(rm.model._score(z, goal), graph.cost(z, goal))
    plain = build_row(BenchmarkConfig(tasks=["point_maze"], rows=["jepa"], jepa=str(d), device="cpu", landmarks=False),
                     "point_maze", "jepa")
    assert plain.model.landmarks is None and plain.note == ""
    # a graph of another encoder is refused, not silently scored in the wrong latent space
    other = JEPAWorld(JEPA(JEPAConfig(image_size=64, input_size=16, channels=(8, 16), hidden=32, latent_dim=6)))
    space = gym.spaces.Box(-np.float32(1), np.float32(1), (2,), np.float32)
    with pytest.raises(ModelFolderError, match="rebuild it"):
        LearnedModel(other, space, landmarks=graph)
    assert lw(["benchmark", "tasks=[point_maze]", "rows=[jepa]", f"jepa={d}", "episodes=1", "lockstep=1",
               "max_steps=3", "learned_budget.samples=8", "learned_budget.iterations=1", "progress=false",
               f"out={tmp_path / 'bench'}"]) == 0
    res = json.loads((tmp_path / "bench/results.json").read_text())["results"]
    assert res[0]["note"] == "landmark cost (8 landmarks)" and res[0]["episodes"] == 1


def test_a_model_folder_keeps_one_graph_per_task_and_never_lends_one_to_another_task(tmp_path):
    from planners.landmarks import find_graph, graph_dir

    assert graph_dir(tmp_path, "point_maze", multi_task=False) == tmp_path / "landmarks"
    assert graph_dir(tmp_path, "point_maze", multi_task=True) == tmp_path / "landmarks" / "point_maze"
    assert find_graph(tmp_path, "point_maze") is None
    LandmarkGraph.build(_u_corridor(), k=6, meta={"task": "point_maze"}).save_pretrained(tmp_path / "landmarks")
    assert find_graph(tmp_path, "point_maze") == tmp_path / "landmarks"
    assert find_graph(tmp_path, "reacher") is None            # point_maze's corridors mean nothing on reacher
    LandmarkGraph.build(_u_corridor(), k=6, meta={"task": "reacher"}).save_pretrained(tmp_path / "landmarks" / "reacher")
    assert find_graph(tmp_path, "reacher") == tmp_path / "landmarks" / "reacher"
