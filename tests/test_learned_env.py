"""LearnedWorld-v0: registration, the Gymnasium contract, batching, determinism, validation.

Runs a tiny randomly initialised world model (tests/test_world.py::build_tiny_world) on the
real reacher task (rendered at 16x16).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import envs
from envs.learned import LearnedWorldEnv, LearnedWorldVectorEnv
try:  # world_dirs: the session's tiny world folders (a fixture shared with test_world)
    from tests.test_world import IMAGE, LATENT, world_dirs  # noqa: F401
except ImportError:  # tests/ not importable as a package: pytest put tests/ itself on sys.path
    from test_world import IMAGE, LATENT, world_dirs  # noqa: F401
from worldmodel.world import LatentWorld

REPO = Path(__file__).resolve().parents[1]
STEPS = 1  # Euler steps per frame: the tests check plumbing, not quality


@pytest.fixture(scope="session")
def world(world_dirs):
    return LatentWorld.from_pretrained(world_dirs["embed"])


def _count_calls(monkeypatch, world: LatentWorld) -> list[int]:
    """Count real predict_next_frames calls (the model still runs)."""
    calls = [0]
    real = world.model.predict_next_frames

    def counted(*a, **kw):
        calls[0] += 1
        return real(*a, **kw)

    monkeypatch.setattr(world.model, "predict_next_frames", counted)
    return calls


def test_import_envs_is_light():
    code = ("import sys, envs, gymnasium as gym; assert 'LearnedWorld-v0' in gym.registry; "
            "heavy = [m for m in ('mujoco', 'worldmodel.transfusion', 'worldmodel.rae', 'envs.learned', "
            "'envs.mujoco_tasks') if m in sys.modules]; assert not heavy, heavy")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_gym_make_with_module_prefix_needs_no_import(world_dirs, monkeypatch):
    # Forget that `envs` was ever imported (restored after the test): gym.make must import it.
    monkeypatch.delitem(gym.registry, "LearnedWorld-v0")
    monkeypatch.delitem(sys.modules, "envs")
    env = gym.make("envs:LearnedWorld-v0", model=str(world_dirs["embed"]), sample_steps=STEPS)
    assert "LearnedWorld-v0" in gym.registry and sys.modules["envs"] is not envs  # imported afresh
    obs, _ = env.reset(seed=0)
    obs, *_ = env.step(env.action_space.sample())
    assert type(env.unwrapped).__name__ == "LearnedWorldEnv" and obs.shape == (IMAGE, IMAGE, 3)
    env.close()


def test_make_after_import_and_register_envs(world_dirs):
    gym.register_envs(envs)
    env = gym.make("LearnedWorld-v0", model=str(world_dirs["embed"]), sample_steps=STEPS, render_mode="rgb_array")
    assert isinstance(env.unwrapped, LearnedWorldEnv)
    assert env.unwrapped.core.task_name == "reacher"  # default task from the model folder
    obs, info = env.reset(seed=3)
    assert obs.shape == (IMAGE, IMAGE, 3) and obs.dtype == np.uint8
    assert info["latent"].shape == (4, LATENT) and info["task_seed"] == 3
    frame = env.render()
    assert frame.shape == (IMAGE, IMAGE, 3) and frame.dtype == np.uint8
    env.close()


@pytest.mark.parametrize("obs", ["pixels", "latent", "both"])
def test_check_env(world, obs):
    env = LearnedWorldEnv(model=world, obs=obs, sample_steps=STEPS, render_mode="rgb_array")
    check_env(env, skip_render_check=False)
    o, _ = env.reset(seed=0)
    assert env.observation_space.contains(o)
    env.close()


def test_step_reward_termination_truncation(world):
    env = LearnedWorldEnv(model=world, obs="latent", sample_steps=STEPS, max_episode_steps=2)
    o, info = env.reset(seed=0)
    o, r, term, trunc, info = env.step(np.zeros(2, np.float32))
    assert r == pytest.approx(-info["latent_distance"])
    assert r == pytest.approx(-float(((o - env.goal_latent.numpy()) ** 2).mean()), rel=1e-5)
    assert not trunc and info["step"] == 1
    *_, trunc, info = env.step(np.zeros(2, np.float32))
    assert trunc and info["step"] == 2
    # a goal equal to the current latent and a loose threshold terminates
    env2 = LearnedWorldEnv(model=world, obs="latent", sample_steps=STEPS, goal_threshold=1e6)
    env2.reset(seed=0)
    assert env2.step(np.zeros(2, np.float32))[2]
    env3 = LearnedWorldEnv(model=world, obs="latent", sample_steps=STEPS, goal_threshold=1e-12)
    env3.reset(seed=0)
    assert not env3.step(np.zeros(2, np.float32))[2]


def test_same_seed_same_actions_same_observations(world):
    acts = np.random.default_rng(0).uniform(-0.2, 0.2, (4, 2)).astype(np.float32)

    def run(seed):
        env = LearnedWorldEnv(model=world, obs="both", sample_steps=STEPS)
        out = [env.reset(seed=seed)[0]["latent"]]
        out += [env.step(a)[0]["latent"] for a in acts]
        return np.stack(out)

    a, b, c = run(7), run(7), run(8)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_bad_actions_are_rejected(world):
    env = LearnedWorldEnv(model=world, obs="latent", sample_steps=STEPS)
    with pytest.raises(gym.error.ResetNeeded):
        env.step(np.zeros(2, np.float32))
    env.reset(seed=0)
    bad = {
        r"shape \(3,\), expected \(2,\)": np.zeros(3, np.float32),
        r"dtype int64, expected a float": np.zeros(2, np.int64),
        r"non-finite": np.array([np.nan, 0.0], np.float32),
        r"out of bounds, expected values in \[\[-0.2": np.array([0.5, 0.0], np.float32),
    }
    for msg, a in bad.items():
        with pytest.raises(ValueError, match=msg):
            env.step(a)
    venv = LearnedWorldVectorEnv(num_envs=2, model=world, obs="latent", sample_steps=STEPS)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(2,\), expected \(2, 2\)"):
        venv.step(np.zeros(2, np.float32))


def test_missing_model_is_a_clear_error(tmp_path, world_dirs):
    with pytest.raises(ValueError, match="needs model="):
        gym.make("LearnedWorld-v0")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gym.make("LearnedWorld-v0", model=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        gym.make("LearnedWorld-v0", model=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="expected a 'transfusion'"):
        gym.make("LearnedWorld-v0", model=str(world_dirs["embed"] / "rae"))
    with pytest.raises(ValueError, match="obs='rgb'"):
        LearnedWorldEnv(model=str(world_dirs["embed"]), obs="rgb")


def test_make_vec_steps_all_envs_in_one_model_call(world_dirs, monkeypatch):
    venv = gym.make_vec("LearnedWorld-v0", num_envs=4, model=str(world_dirs["embed"]), obs="both",
                        sample_steps=STEPS, max_episode_steps=2, render_mode="rgb_array")
    assert isinstance(venv.unwrapped, LearnedWorldVectorEnv)
    assert venv.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    obs, info = venv.reset(seed=0)
    assert obs["pixels"].shape == (4, IMAGE, IMAGE, 3) and obs["latent"].shape == (4, 4, LATENT)
    assert venv.observation_space.contains(obs)
    assert list(info["task_seed"]) == [0, 1, 2, 3]
    assert len({o.tobytes() for o in obs["latent"]}) == 4  # different seeds, different starts
    calls = _count_calls(monkeypatch, venv.unwrapped.world)
    for t in range(2):
        obs, r, term, trunc, info = venv.step(venv.action_space.sample())
        assert calls[0] == t + 1  # one batched model call per vector step
        assert r.shape == term.shape == trunc.shape == (4,) and np.allclose(r, -info["latent_distance"])
    assert trunc.all() and list(info["step"]) == [2, 2, 2, 2]
    # NEXT_STEP autoreset: the step after the episode ends resets (no model call, reward 0)
    obs, r, term, trunc, info = venv.step(venv.action_space.sample())
    assert calls[0] == 2 and list(info["step"]) == [0, 0, 0, 0] and np.all(r == 0) and not trunc.any()
    assert len(venv.render()) == 4
    venv.close()


def test_vector_partial_autoreset_keeps_one_call(world, monkeypatch):
    venv = LearnedWorldVectorEnv(num_envs=3, model=world, obs="latent", sample_steps=STEPS, goal_threshold=-1.0)
    venv.reset(seed=0, options={"reset_mask": np.array([True, True, True])})
    venv.core.t[1] = venv.core.max_steps - 1  # env 1 ends on the next step
    calls = _count_calls(monkeypatch, world)
    _, _, _, trunc, _ = venv.step(np.zeros((3, 2), np.float32))
    assert list(trunc) == [False, True, False] and calls[0] == 1
    _, r, _, trunc, info = venv.step(np.zeros((3, 2), np.float32))
    assert calls[0] == 2 and list(info["step"]) == [2, 0, 2] and r[1] == 0.0


def test_reset_from_given_frames_latents_and_goal(world):
    env = LearnedWorldEnv(model=world, obs="latent", sample_steps=STEPS)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, IMAGE, IMAGE, 3), dtype=np.uint8)
    goal = rng.integers(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8)
    o, info = env.reset(seed=0, options={"frames": frames, "goal_image": goal})
    z = world.encode_frames(frames)
    assert np.allclose(o, z[-1].numpy(), atol=1e-5)  # the last given frame is the observation
    ctx, _ = env.context()
    assert torch.allclose(ctx, z[1:], atol=1e-5)  # context_frames=2: the last two frames
    assert torch.allclose(env.goal_latent, world.encode_frames(goal[None])[0], atol=1e-5)
    o, info = env.reset(options={"latents": z[:1], "goal_latent": z[0]})
    assert info["latent_distance"] == pytest.approx(0.0, abs=1e-10)
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"frame": frames})


def test_env_rollout_is_batched_and_leaves_state_alone(world, monkeypatch):
    env = LearnedWorldEnv(model=world, obs="latent", sample_steps=STEPS)
    o, _ = env.reset(seed=0)
    calls = _count_calls(monkeypatch, world)
    acts = np.random.default_rng(0).uniform(-0.2, 0.2, (8, 3, 2)).astype(np.float32)
    z, pix = env.rollout(None, acts, pixels=True)
    assert z.shape == (8, 3, 4, LATENT) and pix.shape == (8, 3, IMAGE, IMAGE, 3) and calls[0] == 1
    z2 = env.rollout(env.context(), acts)
    assert z2.shape == (8, 3, 4, LATENT)
    assert np.array_equal(env.unwrapped.core.latent_np[0], o)  # imagining does not move the env


def test_language_command(world_dirs):
    text_world = LatentWorld.from_pretrained(world_dirs["text"])
    acts = np.zeros((3, 2), np.float32)

    def run(command):
        env = LearnedWorldEnv(model=text_world, obs="latent", sample_steps=2)
        env.reset(seed=0, options={"command": command} if command else None)
        return np.stack([env.step(a)[0] for a in acts])

    plain, told = run(None), run("move the tip left")
    assert not np.allclose(plain, told)  # the command conditions the imagined frames
    assert np.array_equal(told, run("move the tip left"))
    env = LearnedWorldEnv(model=text_world, obs="latent", sample_steps=2)
    env.reset(seed=0)
    env.set_command("move the tip left")
    assert np.allclose(env.step(acts[0])[0], told[0])
    with pytest.raises(ValueError, match="action_encoding='text'"):
        LearnedWorldEnv(model=str(world_dirs["embed"]), sample_steps=1).set_command("move the tip left")


EMBEDDED = REPO / "checkpoints" / "reacher-tiny"


@pytest.mark.skipif(not (EMBEDDED / "config.json").is_file(), reason="embedded checkpoint not present")
def test_record_video_of_the_learned_env(tmp_path):
    """gym.wrappers.RecordVideo writes an mp4 of the imagined episode (it needs MoviePy, a dependency)."""
    import imageio.v2 as iio

    env = gym.make("LearnedWorld-v0", model=str(EMBEDDED), render_mode="rgb_array")
    env = gym.wrappers.RecordVideo(env, str(tmp_path / "videos"), episode_trigger=lambda i: True,
                                   disable_logger=True)
    env.reset(seed=0)
    for _ in range(3):
        env.step(env.action_space.sample())
    env.close()
    videos = list((tmp_path / "videos").glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 0, videos
    frames = [f for f in iio.get_reader(str(videos[0]), format="ffmpeg")]
    size = env.unwrapped.world.image_size
    assert len(frames) == 4 and frames[0].shape == (size, size, 3)  # the reset frame + 3 imagined ones


def _assert_same_obs(a: dict, b: dict, what: str):
    np.testing.assert_allclose(a["latent"], b["latent"], atol=1e-5, err_msg=what)
    assert np.abs(a["pixels"].astype(int) - b["pixels"].astype(int)).max() <= 1, what


def test_vector_env_i_imagines_as_a_single_env_seeded_s_plus_i(world_dirs):
    """Gymnasium's convention: env i of make_vec(...).reset(seed=s) is a single env reset(seed=s + i).
    The first frames always matched; the imagined ones did not (one noise generator for the batch)."""
    n, s = 4, 7
    kw = dict(model=str(world_dirs["embed"]), obs="both", sample_steps=STEPS)
    venv = gym.make_vec("LearnedWorld-v0", num_envs=n, **kw)
    acts = np.random.default_rng(0).uniform(-0.2, 0.2, (3, n, 2)).astype(np.float32)
    vec = [venv.reset(seed=s)[0]] + [venv.step(a)[0] for a in acts]
    env = gym.make("LearnedWorld-v0", **kw)
    for i in range(n):
        single = [env.reset(seed=s + i)[0]] + [env.step(a[i])[0] for a in acts]
        for t, (v, o) in enumerate(zip(vec, single)):
            _assert_same_obs({k: x[i] for k, x in v.items()}, o, f"env {i}, step {t}")
    # a list of seeds gives env i its own seed
    venv.reset(seed=[s + 2, s, s + 5, s + 9])
    first = venv.step(acts[0])[0]
    env.reset(seed=s)
    _assert_same_obs({k: x[1] for k, x in first.items()}, env.step(acts[0, 1])[0], "seed list, env 1")


def test_vector_autoreset_continues_each_envs_stream_like_a_single_env(world):
    """After an autoreset, env i goes on as a single env would after an unseeded reset()."""
    kw = dict(model=world, obs="both", sample_steps=STEPS, max_episode_steps=2)
    venv = LearnedWorldVectorEnv(num_envs=2, **kw)
    acts = np.random.default_rng(1).uniform(-0.2, 0.2, (5, 2, 2)).astype(np.float32)
    venv.reset(seed=3)
    vec = [venv.step(a) for a in acts]   # steps 1-2, autoreset (action ignored), steps 1-2
    for i in range(2):
        env = LearnedWorldEnv(**kw)
        env.reset(seed=3 + i)
        single = [env.step(acts[0, i]), env.step(acts[1, i]), env.reset(), env.step(acts[3, i]),
                  env.step(acts[4, i])]
        assert vec[2][4]["task_seed"][i] == single[2][1]["task_seed"]
        for t, (v, o) in enumerate(zip(vec, single)):
            _assert_same_obs({k: x[i] for k, x in v[0].items()}, o[0], f"env {i}, call {t}")
