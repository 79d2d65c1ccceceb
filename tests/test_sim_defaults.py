"""The simulator's defaults are decided once, by LatentWorld: a folder's exported `sample_steps`,
`context_frames` and `window` reach the model the same way through LearnedWorld-v0, the planners and
`lw eval-prediction`; `fit_context` is the one padding; the benchmark rows are a registry."""
from __future__ import annotations

import json
import shutil

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs  # noqa: F401  (registers LearnedWorld-v0)
from worldmodel.transfusion import Transfusion
from worldmodel.defaults import fit_context
from worldmodel.world import ImagineConfig, Imagination, LatentWorld
try:
    from tests.test_world import IMAGE, build_tiny_world
except ImportError:  # tests/ not importable as a package: pytest put tests/ itself on sys.path
    from test_world import IMAGE, build_tiny_world


@pytest.fixture(scope="module")
def folder3(tmp_path_factory):
    """A tiny world folder that exports sample_steps=3, context_frames=3 and window=2 (its flow default is 25)."""
    src = build_tiny_world(tmp_path_factory.getbasetemp() / "tiny_worlds", "embed")
    dst = tmp_path_factory.mktemp("defaults") / "world3"
    shutil.copytree(src, dst)
    meta = json.loads((dst / "config.json").read_text())
    assert meta["config"]["flow"]["sample_steps"] != 3
    meta.update(sample_steps=3, context_frames=3, window=2)
    (dst / "config.json").write_text(json.dumps(meta))
    return dst


@pytest.fixture
def calls(monkeypatch):
    """The (steps, context length, window) of every predict_next_frames call, whoever makes it."""
    seen: list[tuple] = []
    orig = Transfusion.predict_next_frames

    def spy(self, context, context_actions, actions, steps=None, **kw):
        seen.append((steps, context.shape[1], kw.get("window")))
        return orig(self, context, context_actions, actions, steps=steps, **kw)

    monkeypatch.setattr(Transfusion, "predict_next_frames", spy)
    return seen


def test_world_resolves_the_folder_defaults(folder3, tmp_path):
    w = LatentWorld.from_pretrained(folder3)
    assert (w.sample_steps, w.context_frames) == (3, 3)
    assert w.resolve_sample_steps(None) == 3 and w.resolve_sample_steps(2) == 2
    for bad in (0, -1, 1.5):            # None, and only None, means "the model's"
        with pytest.raises(ValueError, match=f"sample_steps={bad}"):
            w.resolve_sample_steps(bad)
    with pytest.raises(ValueError, match="context_frames=0"):
        w.resolve_context_frames(0)
    assert w.window == 2 and w.resolve_window(None) == 2 and w.resolve_window(0) == 0   # 0: the whole rollout
    for bad in (-1, 1.5):
        with pytest.raises(ValueError, match=f"window={bad}"):
            w.resolve_window(bad)
    bare = LatentWorld(w.model, w.rae, {})   # a folder that exports nothing: the model's own
    assert bare.sample_steps == w.model.cfg.flow.sample_steps and bare.context_frames == 2 and bare.window == 0
    assert bare.action_scale == 0.2 and bare.action_bounds[0].tolist() == pytest.approx([-0.2, -0.2])


def test_env_planner_and_eval_prediction_follow_the_folder(folder3, calls, tmp_path):
    env = gym.make("LearnedWorld-v0", model=str(folder3), obs="latent")
    env.reset(seed=0)
    env.step(np.zeros(2, np.float32))
    assert env.unwrapped.context()[0].shape[0] == 3
    assert calls[-1] == (3, 3, 2)
    env.close()
    env = gym.make("LearnedWorld-v0", model=str(folder3), obs="latent", sample_steps=2, context_frames=1)
    env.reset(seed=0)
    env.step(np.zeros(2, np.float32))
    assert calls[-1] == (2, 1, 2)                                  # the caller's values win
    env.close()
    with pytest.raises(TypeError, match="denoise_steps is now sample_steps"):
        gym.make("LearnedWorld-v0", model=str(folder3), denoise_steps=2)

    from planners.learned import LearnedConfig, LearnedModel
    from planners.mpc import PixelContext

    world = LatentWorld.from_pretrained(folder3)
    space = gym.spaces.Box(-np.float32(0.2), np.float32(0.2), (2,), np.float32)
    model = LearnedModel(world, space, LearnedConfig(imagine="rollout", window=0))
    assert model.imagination.window == 0                           # the caller's window wins
    model = LearnedModel(world, space, LearnedConfig(imagine="rollout"))
    assert model.observer().context == 3
    frame = np.random.default_rng(0).integers(0, 256, (1, IMAGE, IMAGE, 3), dtype=np.uint8)
    with torch.no_grad():
        model.rollout(PixelContext(frame, np.zeros((0, 2), np.float32)), torch.zeros(4, 2, 2))
    assert calls[-1] == (3, 3, 2)                                     # padded to the folder's 3 frames

    from lw.eval_prediction import main

    out = tmp_path / "eval"
    assert main([f"model={folder3}", "episodes=2", "horizon=1", "batch=2", f"out={out}"]) == 0
    assert calls[-1] == (3, 3, 2) and json.loads((out / "prediction.json").read_text())["window"] == 2


def test_fit_context_pads_at_rest_and_keeps_the_last_frames():
    z = torch.arange(2 * 3 * 1, dtype=torch.float32).view(2, 3, 1)       # (T=2, N=3, C=1)
    a = torch.tensor([[0.5, -0.5]])                                       # (T-1=1, A=2)
    zp, ap = fit_context(z, a, 4)
    assert zp.shape == (4, 3, 1) and ap.shape == (3, 2)
    assert torch.equal(zp[:3], z[:1].expand(3, -1, -1)) and torch.equal(zp[3], z[1])
    assert torch.equal(ap, torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.5, -0.5]]))   # zero = the box centre
    zt, at = fit_context(zp, ap, 2)
    assert torch.equal(zt, zp[2:]) and torch.equal(at, ap[2:])
    z1, a1 = fit_context(zp, ap, 1)
    assert torch.equal(z1, zp[3:]) and a1.shape == (0, 2)
    with pytest.raises(ValueError, match=r"expected \(T-1, A\) = \(1, A\)"):
        fit_context(z, torch.zeros(2, 2), 3)


def test_imagination_continues_each_of_fewer_contexts(folder3):
    world = LatentWorld.from_pretrained(folder3)
    im = Imagination(world, ImagineConfig(shared_noise=True))
    ctx = torch.randn(2, 3, *world.latent_shape)
    ctx_a = torch.zeros(2, 2, 2)
    acts = torch.rand(6, 2, 2) * 0.4 - 0.2
    with torch.no_grad():
        shared = im(ctx, ctx_a, acts, generator=torch.Generator().manual_seed(0))
        full = im(ctx.repeat_interleave(3, 0), ctx_a.repeat_interleave(3, 0), acts,
                  generator=torch.Generator().manual_seed(0))
    # row r continues context r // 3; the shared context's KV cache is computed once (other batching)
    torch.testing.assert_close(shared, full, atol=1e-5, rtol=1e-5)
    assert world.model.cfg.n_layers and not torch.equal(shared[0], shared[1])      # rows differ by their actions
    with pytest.raises(ValueError, match="dividing 6"):
        im(torch.randn(4, 3, *world.latent_shape), torch.zeros(4, 2, 2), acts)


def test_benchmark_rows_are_a_registry():
    from planners.benchmark import ROWS, BenchmarkConfig, action_space, benchmark, build_row

    assert list(ROWS) == ["learned", "jepa", "oracle_latent", "oracle_state", "random"]
    with pytest.raises(ValueError, match=r"unknown benchmark row 'nope', expected one of \['learned'"):
        build_row(BenchmarkConfig(), "reacher", "nope")
    with pytest.raises(ValueError, match="unknown row 'nope' in rows"):
        benchmark(BenchmarkConfig(tasks=["reacher"], rows=["nope"]))
    row = build_row(BenchmarkConfig(model=""), "reacher", "learned")
    assert row.model is None and "no model given" in row.skip
    space = action_space("reacher")
    assert space.shape == (2,) and space.high.tolist() == pytest.approx([0.2, 0.2]) and space.dtype == np.float32
