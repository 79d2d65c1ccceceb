"""`lw collect` end to end on real MuJoCo, determinism across worker counts, policies, Ctrl-C."""
import numpy as np
import pytest

from lw.cli import main as lw
from lw.config import compose
from pretrain.data.collect import CollectConfig, EpisodeCollector, collect
from envs.policies import make_policy
from pretrain.data.shards import Dataset

TINY = ["task=reacher", "episode_steps=3", "image_size=32", "progress=false"]


def test_collect_end_to_end_and_deterministic_across_workers(tmp_path):
    common = TINY + ["episodes=2", "policy=mixture", "mixture.uniform=1", "mixture.scripted=1",
                     "mixture.ou=0", "mixture.correlated=0", "episodes_per_shard=1", "seed=7"]
    assert lw(["collect", *common, "workers=1", f"out={tmp_path / 'a'}"]) == 0
    assert lw(["collect", *common, "workers=2", f"out={tmp_path / 'b'}"]) == 0
    a, b = Dataset(tmp_path / "a"), Dataset(tmp_path / "b")
    assert len(a) == 2 and [s["sha256"] for s in a.shards] == [s["sha256"] for s in b.shards]
    spec = a.manifest["task_spec"]
    assert a.task == "reacher" and a.image_size == 32 and spec["action_repeat"] >= 1
    assert a.manifest["collect_runs"][0]["config"]["seed"] == 7
    for i, ep in enumerate(a.episodes()):
        assert ep.seed == 7 + i and ep.policy in ("uniform", "scripted")
        assert ep.frames.shape == (4, 32, 32, 3) and ep.frames.dtype == np.uint8
        assert ep.actions.shape == (3, a.action_dim) and ep.states.shape == (4, a.state_dim)
        assert np.all(np.abs(ep.actions) <= spec["action_scale"] + 1e-6)
        assert ep.frames.std() > 1 and not np.array_equal(ep.frames[0], ep.frames[-1])  # real, moving pixels
        assert not np.allclose(ep.states[0], ep.states[-1])
        assert all(isinstance(c, str) and len(c) > 10 for c in ep.captions) and len(ep.captions) == 4
    # a different seed gives different episodes
    assert lw(["collect", *common, "workers=1", "seed=8", f"out={tmp_path / 'c'}"]) == 0
    assert Dataset(tmp_path / "c").shards[0]["sha256"] != a.shards[0]["sha256"]


def test_append_continues_seeds_and_rejects_other_task(tmp_path, capsys):
    out = f"out={tmp_path / 'd'}"
    assert lw(["collect", *TINY, "episodes=1", "workers=1", "policy=uniform", out]) == 0
    assert lw(["collect", *TINY, "episodes=1", "workers=1", out]) == 2  # a user error: message, exit 2
    assert "already holds a dataset" in capsys.readouterr().err
    assert lw(["collect", *TINY, "episodes=1", "workers=1", "policy=ou", "append=true", out]) == 0
    ds = Dataset(tmp_path / "d")
    assert [e.seed for e in ds.episodes()] == [0, 1] and [e.policy for e in ds.episodes()] == ["uniform", "ou"]
    assert lw(["collect", "task=point_maze", "episodes=1", "append=true", out]) == 2
    assert "cannot append task 'point_maze'" in capsys.readouterr().err


def test_bad_config_is_a_clear_error(tmp_path, capsys):
    for argv, needle in (([*TINY, "policy=greedy"], "policy='greedy'"), (["task=walker"], "task='walker'"),
                         ([*TINY, "mixture.uniform=-1"], "mixture")):
        assert lw(["collect", *argv, f"out={tmp_path}"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("lw collect: error: ") and needle in err, err


def test_interrupt_keeps_finished_episodes(tmp_path, monkeypatch):
    real = EpisodeCollector.__call__

    def interrupted(self, index):
        if index == 2:
            raise KeyboardInterrupt
        return real(self, index)
    monkeypatch.setattr(EpisodeCollector, "__call__", interrupted)
    cfg = compose(CollectConfig, "collect", TINY + ["episodes=5", "workers=1", "episodes_per_shard=4",
                                                      f"out={tmp_path / 'd'}"])
    with pytest.raises(KeyboardInterrupt):
        collect(cfg)
    ds = Dataset(tmp_path / "d")
    ds.verify_all()
    assert len(ds) == 2 and [e.seed for e in ds.episodes()] == [0, 1]


@pytest.fixture(scope="module")
def reacher():
    cfg = compose(CollectConfig, "collect", TINY)
    return EpisodeCollector(cfg)


def _actions(collector, name, n=40, hold=1, seed=0):
    task = collector.task
    task.reset(seed=seed)
    pol = make_policy(name, task, np.random.default_rng(seed), hold=hold)
    return np.stack([pol(np.asarray(task.get_state())) for _ in range(n)])


def test_noise_policies_stay_in_box_and_differ_in_smoothness(reacher):
    box = reacher.task.action_space
    lag1 = {}
    for name in ("uniform", "ou", "correlated"):
        a = _actions(reacher, name, n=200)
        assert a.shape == (200, box.shape[0]) and np.all(a >= box.low) and np.all(a <= box.high)
        x = a[:, 0] - a[:, 0].mean()
        lag1[name] = float((x[1:] * x[:-1]).mean() / (x * x).mean())
    assert abs(lag1["uniform"]) < 0.2 and lag1["ou"] > 0.6 and lag1["correlated"] > 0.6
    held = _actions(reacher, "uniform", n=12, hold=3)
    assert np.array_equal(held[0], held[2]) and not np.array_equal(held[2], held[3])


@pytest.mark.parametrize("task_name,steps,seeds", [("reacher", 30, 3), ("point_maze", 30, 3), ("pusher", 10, 2)])
def test_scripted_policy_reaches_toward_goal(task_name, steps, seeds):
    """Noise-free scripted episodes end with a much lower task cost than uniform ones
    (reacher: PD, maze: corridor descent, pusher: lookahead, which brings the gripper to the puck)."""
    from envs.mujoco_tasks import make_task

    task = make_task(task_name, render=False)
    final = {}
    for name in ("scripted", "uniform"):
        costs = []
        for seed in range(seeds):
            task.reset(seed=seed)
            pol = make_policy(name, task, np.random.default_rng(seed), noise=0.0)
            for _ in range(steps):
                task.step(pol(task.get_state()))
            costs.append(task.cost(task.get_state(), task.goal_state))
        final[name] = float(np.mean(costs))
    assert final["scripted"] < 0.6 * final["uniform"], final


def test_episode_seed_independent_of_order(reacher):
    """Episode i is a function of seed + i alone, not of what the process collected before."""
    a = reacher(3)
    reacher(0)
    b = reacher(3)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.actions, b.actions)


def test_sigint_during_parallel_collection_leaves_valid_dataset(tmp_path):
    """A real Ctrl-C (SIGINT to the `lw collect` process) with 2 workers: finished shards stay valid."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "d"
    proc = subprocess.Popen([sys.executable, "-m", "lw.cli", "collect", "task=reacher", "episodes=400",
                             "episode_steps=3", "image_size=16", "workers=2", "episodes_per_shard=2",
                             "progress=false", f"out={out}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"},
                            # a background job (nohup, `cmd &`) starts with SIGINT ignored, and Python
                            # then installs no KeyboardInterrupt handler: give the child the default
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(list(out.glob("shard-*.npz"))) < 2:
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        log = proc.communicate(timeout=60)[0]
    finally:
        proc.kill()
    assert proc.returncode == 130, log
    assert "interrupted" in log
    ds = Dataset(out)
    ds.verify_all()
    assert 4 <= len(ds) < 400 and [e.seed for e in ds.episodes()] == list(range(len(ds)))
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
