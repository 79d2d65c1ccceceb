"""The representation for control (worldmodel.jepa): training, anti-collapse, the RAE encoder,
the jepa benchmark row, the proxy scores and resume."""
import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lw.cli import main as lw
from pretrain.latent_probe import action_gain, load_episodes
from worldmodel.jepa import JEPA, JEPAConfig, JEPAWorld, sigreg, vicreg

# constant LR after warm-up: the resume test stands in for a kill with a shorter separate run (steps=10),
# whose decay schedule would differ from the full run's; 150 steps are too few to decay and still learn
TINY_MODEL = ["image_size=32", "input_size=16", "channels=[8,16]", "hidden=32", "latent_dim=8", "pred_hidden=64",
              "batch_size=32", "eval_episodes=4", "progress=false", "threads=1", "max_minutes=0", "min_lr_frac=1.0"]


@pytest.fixture(scope="module")
def reacher_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("jepa") / "reacher"
    assert lw(["collect", "task=reacher", "episodes=12", "episode_steps=12", "image_size=32", "workers=1",
               "policy=uniform", "progress=false", f"out={out}"]) == 0
    return out


def test_loss_falls_and_latent_does_not_collapse(reacher_data, tmp_path):
    out = tmp_path / "jepa"
    assert lw(["train-encoder", "method=jepa", f"data={reacher_data}", f"out={out}", "steps=150", "eval_every=150",
               "holdout=0.25", *TINY_MODEL]) == 0
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r and "k1" not in r]
    assert np.mean(losses[-3:]) < 0.7 * losses[0], losses
    final = [r for r in log if "k1" in r][-1]
    assert final["latent_std_min"] > 0.05, final   # VICReg keeps every dimension alive
    for key in ("probe_r2", "spearman", "k1", "k5"):
        assert key in final
    m = JEPA.from_pretrained(out)
    assert m.cfg.latent_dim == 8 and m.cfg.action_scale == pytest.approx(0.2, rel=1e-3)


def test_reconstruction_head_trains_saves_and_is_checked(reacher_data, tmp_path):
    out = tmp_path / "jepa_rec"
    assert lw(["train-encoder", "method=jepa", f"data={reacher_data}", f"out={out}", "steps=150", "eval_every=150",
               "holdout=0.25", "recon_weight=1.0", *TINY_MODEL]) == 0
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    recon = [r["recon"] for r in log if "recon" in r]
    assert len(recon) >= 3 and np.mean(recon[-2:]) < 0.5 * recon[0], recon
    m = JEPA.from_pretrained(out)
    assert m.cfg.reconstruct and m.decoder is not None
    frames = torch.rand(3, 4, 3, 32, 32)
    assert m.decoder(m.encode(frames[:, 0])).shape == (3, 3, 16, 16)   # the pooled input_size frame
    plain = JEPA(JEPAConfig(image_size=32, input_size=16, channels=(8, 16), hidden=32, latent_dim=8))
    assert plain.decoder is None and not any(k.startswith("decoder") for k in plain.state_dict())
    # the head is training-only: the same encoder weights without it name the same latent space
    bare = JEPA(JEPAConfig(**{**m.cfg.to_dict(), "reconstruct": False}))
    bare.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("decoder")})
    assert JEPAWorld(bare).encoder_fingerprint() == JEPAWorld(m).encoder_fingerprint()
    with pytest.raises(ValueError, match="reconstruct=True"):
        plain.loss(frames, torch.zeros(3, 2, 2), recon_weight=1.0)
    assert lw(["train-encoder", "method=jepa", f"data={reacher_data}", f"out={tmp_path / 'bad'}", "steps=2",
               "recon_weight=-1", *TINY_MODEL]) == 2


def test_without_regulariser_the_latent_collapses_and_vicreg_prevents_it():
    torch.manual_seed(0)
    z = torch.randn(256, 8) * 1e-3                    # a collapsed embedding
    assert vicreg(z) > 0.9 and vicreg(torch.randn(256, 8)) < 0.2
    g = torch.Generator().manual_seed(0)
    assert sigreg(z, generator=g) > 10 * sigreg(torch.randn(256, 8), generator=torch.Generator().manual_seed(0))


def test_resume_is_exact(reacher_data, tmp_path):
    common = ["method=jepa", f"data={reacher_data}", "holdout=0.25", "eval_every=10", *TINY_MODEL]
    assert lw(["train-encoder", *common, "steps=20", f"out={tmp_path / 'full'}"]) == 0
    assert lw(["train-encoder", *common, "steps=10", f"out={tmp_path / 'part'}"]) == 0
    assert lw(["train-encoder", *common, "steps=20", "resume=true", f"out={tmp_path / 'part'}"]) == 0
    a, b = load_file(str(tmp_path / "full/model.safetensors")), load_file(str(tmp_path / "part/model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert lw(["train-encoder", *common, "resume=true", f"out={tmp_path / 'nothing'}"]) == 2   # nothing to resume


def test_jepa_encoder_inside_an_rae(reacher_data, tmp_path):
    from worldmodel.rae import RAE, RAEConfig

    jepa_dir = tmp_path / "jepa"
    JEPA(JEPAConfig(image_size=32, input_size=16, channels=(8, 16), hidden=32, grid=(2, 2), latent_dim=4,
                    action_scale=0.2)).save_pretrained(jepa_dir)
    rae = RAE.build(RAEConfig(image_size=32, decoder_dim=32, decoder_depth=1, decoder_heads=2), "jepa", str(jepa_dir))
    x = torch.rand(3, 3, 32, 32)
    z = rae.encode(x)
    assert z.shape == (3, 4, 4) and rae.grid == (2, 2) and rae.decode(z).shape == (3, 3, 32, 32)
    rae.save_pretrained(tmp_path / "rae")
    back = RAE.from_pretrained(tmp_path / "rae")
    torch.testing.assert_close(back.encode(x), z)
    assert back.fingerprint() == rae.fingerprint()
    # the frozen encoder is the JEPA's encoder, in eval mode (BatchNorm running statistics)
    ref = JEPA.from_pretrained(jepa_dir).encoder(x)
    torch.testing.assert_close(z, rae.normalize(ref))


def test_jepa_world_rollout_and_pixels_only_planning():
    from planners.learned import LearnedModel
    from planners.mpc import PixelContext

    torch.manual_seed(0)
    cfg = JEPAConfig(image_size=32, input_size=16, channels=(8, 16), hidden=32, latent_dim=6, action_scale=0.2)
    world = JEPAWorld(JEPA(cfg).eval())
    frames = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    ctx = world.encode_frames(frames)[None].expand(5, -1, -1, -1)        # (B, Tc, N, C)
    acts = torch.rand(5, 4, 2) * 0.4 - 0.2
    z = world.rollout(ctx, torch.zeros(5, 1, 2), acts)
    assert z.shape == (5, 4, 1, 6)
    ref = world.model.predictor.unroll(ctx.flatten(2), acts / 0.2)
    torch.testing.assert_close(z.flatten(2), ref)
    assert not torch.allclose(z[0], z[1])                              # different actions, different futures
    with pytest.raises(ValueError, match="expected \\(B, H, 2\\)"):
        world.rollout(ctx, torch.zeros(5, 1, 2), torch.zeros(5, 4, 3))
    space = gym.spaces.Box(-np.float32(0.2), np.float32(0.2), (2,), np.float32)
    model = LearnedModel(world, space)
    assert model.rollout(PixelContext(frames, np.zeros((1, 2), np.float32)), acts).shape == (5, 4, 1, 6)
    # the jepa row cannot read simulator state: a state vector is refused, only pixels are accepted
    with pytest.raises(ValueError, match="PixelContext"):
        model.rollout(np.zeros(8), acts)


def test_jepa_benchmark_row_plans_in_mujoco(tmp_path):
    from planners.benchmark import BenchmarkConfig, build_row

    d = tmp_path / "jepa"
    JEPA(JEPAConfig(image_size=64, input_size=16, channels=(8, 16), hidden=32, latent_dim=6,
                    action_scale=0.2)).save_pretrained(d, extra={"task": "reacher"})
    cfg = BenchmarkConfig(tasks=["reacher"], rows=["jepa"], jepa=str(d), device="cpu")
    rm = build_row(cfg, "reacher", "jepa")
    assert rm.skip == "" and isinstance(rm.model.world, JEPAWorld)
    assert type(rm.observer()).__name__ == "PixelObserver"            # pixels and actions, never the state
    assert lw(["benchmark", "tasks=[reacher]", "rows=[jepa]", f"jepa={d}", "episodes=1", "lockstep=1",
               "max_steps=4", "learned_budget.samples=8", "learned_budget.iterations=1", "progress=false",
               f"out={tmp_path / 'bench'}"]) == 0
    res = json.loads((tmp_path / "bench/results.json").read_text())
    row = [r for r in (res["results"] if isinstance(res, dict) else res) if r["row"] == "jepa"][0]
    assert row["episodes"] == 1
    missing = build_row(BenchmarkConfig(rows=["jepa"], jepa=str(tmp_path / "none")), "reacher", "jepa")
    assert "no JEPA" in missing.skip


def test_action_gain_sees_ignored_actions():
    """The proxy's action gain is 1 for a predictor that ignores actions and > 1 for one that uses them."""
    g = torch.Generator().manual_seed(0)
    E, T = 16, 10
    a = torch.rand(E, T, 2, generator=g) - 0.5
    z = torch.zeros(E, T + 1, 2)
    for t in range(T):
        z[:, t + 1] = z[:, t] + a[:, t]                             # the latent integrates the actions
    uses = lambda zh, acts: zh[:, -1:] + acts.cumsum(1)              # noqa: E731
    ignores = lambda zh, acts: zh[:, -1:].expand(-1, acts.shape[1], -1)  # noqa: E731
    assert action_gain(z, a, uses, 2)["k1"]["mse_true"] < 1e-10
    assert action_gain(z, a, ignores, 2)["k5"]["action_gain"] == pytest.approx(1.0)


def test_probe_latent_command(reacher_data, tmp_path):
    d = tmp_path / "jepa"
    JEPA(JEPAConfig(image_size=32, input_size=16, channels=(8, 16), hidden=32, latent_dim=6,
                    action_scale=0.2)).save_pretrained(d)
    out = tmp_path / "scores.json"
    assert lw(["probe-latent", f"data={reacher_data}", f"rep={d}", "minutes=0.02", "holdout=0.25",
               f"out={out}"]) == 0
    res = json.loads(out.read_text())
    for who in ("own", "mlp"):
        assert set(res[who]) >= {"probe_r2", "spearman", "k1", "k5"}
    eps = load_episodes(str(reacher_data), 0.25)
    assert res["heldout_episodes"] == len(eps.frames) - eps.n_train == 3


def test_the_regulariser_of_several_tasks_is_taken_within_each_task():
    from worldmodel.jepa import regularise

    torch.manual_seed(0)
    spread = torch.randn(16, 3, 8)                         # one task's windows, spread in every dimension
    collapsed = torch.full((16, 3, 8), 5.0)                # another's: one point, far from the first
    z, groups = torch.cat([spread, collapsed]), torch.tensor([0] * 16 + [1] * 16)
    within = regularise(z, groups=groups)
    # within its task, the collapsed one pays the full variance hinge (1), whatever the gap to the other
    torch.testing.assert_close(regularise(collapsed), torch.tensor(1.0), atol=0.02, rtol=0)
    torch.testing.assert_close(within, (regularise(spread) + regularise(collapsed)) / 2)
    assert not torch.isclose(within, regularise(z))          # not the pooled batch's
    torch.testing.assert_close(regularise(spread, groups=torch.zeros(16, dtype=torch.long)), regularise(spread))


def test_dataset_weights_set_each_datasets_share_of_a_batch(reacher_data):
    from pretrain.data.datasets import dataset_shares
    from pretrain.train_jepa import TrainJEPAConfig, _windows, train
    from worldmodel.errors import ConfigError

    eps = load_episodes(str(reacher_data), 0.25)
    gen = torch.Generator().manual_seed(0)
    _, _, groups = _windows([eps, eps], 4000, 2, 2, gen, "cpu", dataset_shares([3, 1], 2))
    assert abs((groups == 0).float().mean().item() - 0.75) < 0.03
    _, _, groups = _windows([eps, eps], 64, 2, 2, gen, "cpu", dataset_shares([0, 2], 2))
    assert (groups == 1).all()
    _, _, groups = _windows([eps, eps], 4000, 2, 2, gen, "cpu")           # [] = by windows: equal datasets, half each
    assert abs((groups == 0).float().mean().item() - 0.5) < 0.03
    assert dataset_shares([], 2) is None
    never = reacher_data.parent / "never"
    for bad in ([1.0], [1.0, -1.0], [0.0, 0.0]):
        with pytest.raises(ConfigError, match=r"dataset_weights=.*expected 2 weights >= 0"):
            train(TrainJEPAConfig(data=[str(reacher_data), "data/other"], dataset_weights=bad, image_size=32,
                                  steps=1, progress=False, out=str(never)))
    assert not never.exists()                                          # refused before anything is written


def test_head_norm_layer_keeps_a_frames_latent_independent_of_its_batch(tmp_path):
    torch.manual_seed(0)
    frames = torch.rand(6, 3, 32, 32)
    others = torch.rand(6, 3, 32, 32) * 0.2                    # another "task": darker frames
    for norm, independent in (("layer", True), ("none", True), ("batch", False)):
        model = JEPA(JEPAConfig(image_size=32, input_size=16, channels=(8, 16), hidden=32, latent_dim=8,
                                pred_hidden=32, head_norm=norm)).train()
        alone = model.encode(frames[:, None])[:, 0]
        mixed = model.encode(torch.cat([frames, others])[:, None])[:6, 0]
        assert torch.allclose(alone, mixed, atol=1e-5) == independent, norm
    layer = JEPA(JEPAConfig(image_size=32, input_size=16, channels=(8, 16), head_norm="layer"))
    layer.save_pretrained(tmp_path / "l")
    loaded = JEPA.from_pretrained(tmp_path / "l")
    assert loaded.cfg.head_norm == "layer"
    torch.testing.assert_close(loaded.encode(frames[:, None]), layer.eval().encode(frames[:, None]))
    with pytest.raises(ValueError, match=r"head_norm='group', expected one of \('batch', 'layer', 'none'\)"):
        JEPAConfig(head_norm="group")


def test_relative_prediction_loss_is_scale_free_within_each_task():
    from worldmodel.jepa import relative_error

    torch.manual_seed(0)
    pred, z = torch.randn(8, 2, 4), torch.randn(8, 4, 4)
    groups = torch.tensor([0] * 4 + [1] * 4)
    # a task that shrinks its latent (targets and predictions alike) gains nothing, unlike the MSE
    small = torch.cat([torch.ones(4), torch.full((4,), 0.1)])[:, None, None]
    torch.testing.assert_close(relative_error(pred * small, z * small, 2, groups), relative_error(pred, z, 2, groups))
    assert (pred * small - (z * small)[:, 2:]).pow(2).mean() < (pred - z[:, 2:]).pow(2).mean()
    # each task's error over its own variance, averaged over tasks
    per = [((pred[s] - z[s, 2:]).pow(2).mean() / z[s].flatten(0, 1).var(0).mean()) for s in (slice(0, 4), slice(4, 8))]
    torch.testing.assert_close(relative_error(pred, z, 2, groups), torch.stack(per).mean())
    model = JEPA(JEPAConfig(image_size=32, input_size=16, channels=(8, 16), hidden=32, latent_dim=8, pred_hidden=32))
    frames, actions = torch.rand(8, 4, 3, 32, 32), torch.rand(8, 2, 2)
    loss, parts = model.loss(frames, actions, groups=groups, pred_loss="relative")
    assert set(parts) >= {"pred", "pred_relative", "reg"} and torch.isfinite(loss)
    with pytest.raises(ValueError, match=r"pred_loss='huber', expected one of \('mse', 'relative'\)"):
        model.loss(frames, actions, pred_loss="huber")


def test_task_heads_read_the_task_and_the_encoder_never_does(tmp_path):
    torch.manual_seed(0)
    cfg = JEPAConfig(image_size=32, input_size=16, channels=(8, 16), hidden=32, latent_dim=6, pred_hidden=32,
                     action_scale=0.2, task_heads=2)
    model = JEPA(cfg)
    z, a = torch.randn(3, 2, 6), torch.rand(3, 4, 2)
    one, other = model.predictor.unroll(z, a, 0), model.predictor.unroll(z, a, 1)
    assert not torch.allclose(one, other)                               # the task changes the dynamics
    mixed = model.predictor.unroll(z, a, torch.tensor([0, 1, 0]))       # per-window tasks, as in training
    torch.testing.assert_close(mixed[1], other[1])
    torch.testing.assert_close(mixed[2], one[2])
    for bad, match in ((None, "pass its index"), (2, r"out of range: expected \[0, 2\)")):
        with pytest.raises(ValueError, match=match):
            model.predictor.unroll(z, a, bad)
    # the loss reads each window's task from its group; the encoder's map does not depend on it
    frames, acts = torch.rand(4, 4, 3, 32, 32), torch.rand(4, 2, 2) * 0.4 - 0.2
    loss, _ = model.loss(frames, acts, groups=torch.tensor([0, 0, 1, 1]))
    swapped, _ = model.loss(frames, acts, groups=torch.tensor([1, 1, 0, 0]))
    assert torch.isfinite(loss) and not torch.allclose(loss, swapped)
    model.save_pretrained(tmp_path / "j", extra={"tasks": ["reacher", "point_maze"],
                                                 "action_scales": {"reacher": 0.2, "point_maze": 1.0}})
    world = JEPAWorld.from_pretrained(tmp_path / "j")
    assert world.cfg.task_heads == 2
    ctx = torch.randn(3, 2, 1, 6)
    with pytest.raises(ValueError, match="for_task"):
        world.rollout(ctx, torch.zeros(3, 1, 2), a)
    for tid, task in enumerate(["reacher", "point_maze"]):
        w = world.for_task(task)
        assert w.task_id == tid
        scaled = w.model.scale_actions(w._model_actions(a))
        torch.testing.assert_close(w.rollout(ctx, torch.zeros(3, 1, 2), a).flatten(2),
                                   w.model.predictor.unroll(ctx.flatten(2), scaled, tid))
    # a JEPA without task heads writes no such field: older configs and fingerprints stay as they were
    assert "task_heads" not in JEPAConfig().to_dict() and JEPAConfig(task_heads=3).to_dict()["task_heads"] == 3
    with pytest.raises(ValueError, match="task_heads=-1"):
        JEPAConfig(task_heads=-1)


def test_train_with_task_heads_gives_each_dataset_its_task(reacher_data, tmp_path):
    from pretrain.train_jepa import TrainJEPAConfig, train
    from worldmodel.errors import ConfigError

    common = dict(image_size=32, input_size=16, channels=[8, 16], hidden=32, latent_dim=6, pred_hidden=32,
                  batch_size=8, steps=2, eval_every=2, eval_episodes=2, holdout=0.25, max_minutes=0,
                  progress=False, threads=1, task_heads=True)
    out = tmp_path / "one"
    summary = train(TrainJEPAConfig(data=str(reacher_data), out=str(out), **common))
    assert JEPA.from_pretrained(out).cfg.task_heads == 1 and "probe_r2" in summary
    import shutil
    again = shutil.copytree(reacher_data, tmp_path / "reacher_again")   # two datasets of one task
    with pytest.raises(ConfigError, match="repeats a task"):
        train(TrainJEPAConfig(data=[str(reacher_data), str(again)], out=str(tmp_path / "two"), **common))


def test_init_from_starts_a_run_from_another_jepas_weights(reacher_data, tmp_path):
    from pretrain.train_jepa import TrainJEPAConfig, train
    from worldmodel.errors import ConfigError

    common = dict(data=str(reacher_data), image_size=32, input_size=16, channels=[8, 16], hidden=32, latent_dim=6,
                  pred_hidden=32, batch_size=8, eval_every=100, eval_episodes=2, holdout=0.25, max_minutes=0,
                  progress=False, threads=1)
    train(TrainJEPAConfig(out=str(tmp_path / "a"), steps=3, **common))
    train(TrainJEPAConfig(out=str(tmp_path / "b"), steps=1, lr=0.0, init_from=str(tmp_path / "a"), **common))
    a, b = JEPA.from_pretrained(tmp_path / "a").state_dict(), JEPA.from_pretrained(tmp_path / "b").state_dict()
    for k in a:
        if "running" not in k and "num_batches" not in k:    # BatchNorm statistics move without the optimiser
            torch.testing.assert_close(a[k], b[k], msg=k)
    fresh = JEPA.from_pretrained(tmp_path / "a")
    assert not torch.equal(fresh.state_dict()["predictor.net.0.weight"],
                           JEPA(fresh.cfg).state_dict()["predictor.net.0.weight"])   # not a fresh init by chance
    with pytest.raises(ConfigError, match=r"another architecture.*other shapes: encoder\.head\.3\.bias \(6,\) vs \(8,\).*"
                                          r"`lw train-encoder method=jepa`"):
        train(TrainJEPAConfig(out=str(tmp_path / "c"), steps=1, init_from=str(tmp_path / "a"),
                              **{**common, "latent_dim": 8}))
