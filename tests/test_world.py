"""LatentWorld: loading a world-model folder, pixels <-> latents, batched rollouts, cost.

`build_tiny_world` (also used by the env and eval tests) builds a TINY randomly
initialised Transfusion + RAE and saves them in the world-model folder format
(Transfusion at <dir>/, RAE at <dir>/rae/, extras in config.json).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from worldmodel.config import ModelConfig, MoEConfig
from worldmodel.encoders import encoder_from_spec
from worldmodel.rae import RAE, RAEConfig
from worldmodel.transfusion import Transfusion
from worldmodel.world import LatentWorld

IMAGE = 16   # frame side: 2x2 patches of 8 pixels -> N = 4 tokens
LATENT = 16  # C
_BUILT: dict[tuple, Path] = {}


def build_tiny_world(root: Path, action_encoding: str = "embed", ffn: str = "moe", task: str = "reacher",
                     context_frames: int = 2, max_jump: int = 1) -> Path:
    """A tiny world-model folder under `root` (built once per arguments and session); max_jump > 1:
    as pretrained with data.max_jump (no direct action input, `max_jump` in its extras)."""
    key = (str(root), action_encoding, ffn, task, context_frames, max_jump)
    if key in _BUILT:
        return _BUILT[key]
    torch.manual_seed(0)
    enc = encoder_from_spec({"encoder": "own", "input_size": IMAGE,
                             "kwargs": dict(image_size=IMAGE, patch_size=8, dim=LATENT, depth=1, heads=2)})
    rae = RAE(RAEConfig(image_size=IMAGE, decoder_dim=16, decoder_depth=1, decoder_heads=2), enc)
    moe = (MoEConfig(kind="moe", n_experts=4, top_k=2, granularity=4) if ffn == "moe" else MoEConfig(kind="dense"))
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2, latent_dim=LATENT, frame_grid=(2, 2), action_dim=2,
                      action_scale=0.2, action_encoding=action_encoding, moe=moe, direct_action=max_jump == 1)
    path = Path(root) / f"world-{action_encoding}-{ffn}-{task}-{context_frames}-{max_jump}"
    Transfusion(cfg).save_pretrained(path, extra={"task": task, "action_scale": 0.2, "image_size": IMAGE,
                                                  "context_frames": context_frames, "max_jump": max_jump})
    rae.save_pretrained(path / "rae")
    _BUILT[key] = path
    return path


@pytest.fixture(scope="session")
def world_dirs(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "tiny_worlds"
    return {enc: build_tiny_world(root, enc) for enc in ("embed", "text")}


@pytest.fixture(scope="session")
def worlds(world_dirs):
    return {enc: LatentWorld.from_pretrained(d) for enc, d in world_dirs.items()}


def _frames(b: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (b, IMAGE, IMAGE, 3), dtype=np.uint8)


def test_from_pretrained_reads_folder_and_extras(world_dirs, worlds):
    w = worlds["embed"]
    assert w.latent_shape == (4, LATENT) and w.action_dim == 2 and w.image_size == IMAGE
    assert w.extras["task"] == "reacher" and w.context_frames == 2
    assert not w.uses_text_actions and worlds["text"].uses_text_actions
    # weights really come from the folder: a second load gives the same parameters
    w2 = LatentWorld.from_pretrained(world_dirs["embed"])
    for p, q in zip(w.model.parameters(), w2.model.parameters()):
        assert torch.equal(p, q)


def test_from_pretrained_errors_name_the_problem(tmp_path, world_dirs):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LatentWorld.from_pretrained(tmp_path / "nope")
    with pytest.raises(ValueError, match="expected a 'transfusion'"):
        LatentWorld.from_pretrained(world_dirs["embed"] / "rae")  # an RAE folder is not a world model
    import shutil

    broken = tmp_path / "no_rae"
    shutil.copytree(world_dirs["embed"], broken)
    shutil.rmtree(broken / "rae")
    with pytest.raises(FileNotFoundError, match="rae"):
        LatentWorld.from_pretrained(broken)


def test_encode_decode_shapes_and_validation(worlds):
    w = worlds["embed"]
    z = w.encode_frames(_frames(3))
    assert z.shape == (3, 4, LATENT) and z.dtype == torch.float32
    assert torch.allclose(z, w.encode_frames(torch.from_numpy(_frames(3))))  # numpy and torch agree
    img = w.decode(z)
    assert img.shape == (3, IMAGE, IMAGE, 3) and img.dtype == np.uint8
    assert w.decode(z.view(1, 3, 4, LATENT)).shape == (1, 3, IMAGE, IMAGE, 3)
    with pytest.raises(ValueError, match="dtype float32, expected uint8"):
        w.encode_frames(_frames(2).astype(np.float32))
    with pytest.raises(ValueError, match=r"expected \(B, 16, 16, 3\)"):
        w.encode_frames(np.zeros((2, 8, 8, 3), np.uint8))


@pytest.mark.parametrize("enc", ["embed", "text"])
def test_rollout_shapes_one_call_and_determinism(worlds, enc):
    w = worlds[enc]
    B, Tc, H = 5, 2, 3
    ctx = w.encode_frames(_frames(B * Tc)).view(B, Tc, 4, LATENT)
    ctx_a = np.zeros((B, Tc - 1, 2), np.float32)
    acts = np.random.default_rng(1).uniform(-0.2, 0.2, (B, H, 2)).astype(np.float32)
    n0 = w.n_calls
    with torch.no_grad():
        z, pix = w.rollout(ctx, ctx_a, acts, sample_steps=2, pixels=True, generator=torch.Generator().manual_seed(0))
    assert w.n_calls == n0 + 1  # the whole batch and horizon in one model call
    assert z.shape == (B, H, 4, LATENT) and pix.shape == (B, H, IMAGE, IMAGE, 3) and pix.dtype == np.uint8
    with torch.no_grad():
        z2 = w.rollout(ctx, ctx_a, acts, sample_steps=2, generator=torch.Generator().manual_seed(0))
        z3 = w.rollout(ctx, ctx_a, acts, sample_steps=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(z, z2) and not torch.equal(z, z3)
    with pytest.raises(ValueError, match=r"actions have shape \(5, 3, 3\)"):
        w.rollout(ctx, ctx_a, np.zeros((B, H, 3), np.float32))
    with pytest.raises(ValueError, match="context actions have shape"):
        w.rollout(ctx, np.zeros((B, 2, 2), np.float32), acts)


def test_rollout_is_differentiable_in_actions(worlds):
    w = worlds["embed"]
    ctx = w.encode_frames(_frames(4)).view(2, 2, 4, LATENT)
    acts = torch.zeros(2, 2, 2, requires_grad=True)
    z = w.rollout(ctx, torch.zeros(2, 1, 2), acts, sample_steps=1, generator=torch.Generator().manual_seed(0))
    goal = torch.randn(4, LATENT)
    w.latent_cost(z, goal).sum().backward()
    assert acts.grad is not None and acts.grad.abs().sum() > 0


def test_text_command_conditions_text_models_only(worlds):
    w = worlds["text"]
    ctx = w.encode_frames(_frames(4)).view(2, 2, 4, LATENT)
    ctx_a, acts = torch.zeros(2, 1, 2), torch.zeros(2, 2, 2)
    with torch.no_grad():
        plain = w.rollout(ctx, ctx_a, acts, sample_steps=2, generator=torch.Generator().manual_seed(0))
        told = w.rollout(ctx, ctx_a, acts, sample_steps=2, text="move the tip left",
                         generator=torch.Generator().manual_seed(0))
        per_row = w.rollout(ctx, ctx_a, acts, sample_steps=2, text=["move the tip left"] * 2,
                            generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(plain, told)  # same noise, different condition -> different frames
    assert torch.equal(told, per_row)
    with pytest.raises(ValueError, match="action_encoding='text'"):
        worlds["embed"].rollout(ctx, ctx_a, acts, sample_steps=1, text="move the tip left")


def test_latent_cost_is_mse_of_last_frame():
    z = torch.randn(3, 2, 4, LATENT)
    goal = torch.randn(4, LATENT)
    c = LatentWorld.latent_cost(z, goal)
    assert c.shape == (3,)
    assert torch.allclose(c, ((z[:, -1] - goal) ** 2).mean((1, 2)))
    assert torch.allclose(LatentWorld.latent_cost(z[:, -1], goal.expand(3, 4, LATENT)), c)
    assert torch.all(LatentWorld.latent_cost(z[:, -1], z[:, -1]) == 0)
    with pytest.raises(ValueError, match="goal latents have shape"):
        LatentWorld.latent_cost(z, torch.randn(5, LATENT))


def test_jump_predicts_the_frame_after_all_actions(tmp_path_factory, worlds):
    w = LatentWorld.from_pretrained(build_tiny_world(tmp_path_factory.getbasetemp() / "tiny_worlds", max_jump=3))
    assert w.max_jump == 3 and worlds["embed"].max_jump == 1
    ctx = w.encode_frames(_frames(4)).view(2, 2, *w.latent_shape)
    ctx_a = torch.zeros(2, 1, 2)
    acts = torch.rand(2, 3, 2, generator=torch.Generator().manual_seed(0)) * 0.4 - 0.2
    with torch.no_grad():
        z = w.jump(ctx, ctx_a, acts, generator=torch.Generator().manual_seed(1))
        ref = w.model.predict_frame_after(ctx, ctx_a, acts, generator=torch.Generator().manual_seed(1))
        shorter = w.jump(ctx, ctx_a, acts[:, :2], generator=torch.Generator().manual_seed(1))
    assert z.shape == (2, 1, *w.latent_shape) and torch.equal(z[:, 0], ref)
    assert not torch.allclose(z, shorter)                    # the number of actions matters
    with pytest.raises(ValueError, match="jumps of 1..3"):
        w.jump(ctx, ctx_a, torch.zeros(2, 4, 2))
    with pytest.raises(ValueError, match="jumps of 1..1"):
        worlds["embed"].jump(ctx, ctx_a, acts)
