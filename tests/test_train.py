"""`lw pretrain` end to end on a tiny real world: a real (untrained) RAE, a shard dataset with
its cached latents, the real Transfusion MoE. Losses fall, the export loads, configs are strict."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lw.config import ConfigError, compose
from lw.pretrain import main
from pretrain.train import TrainConfig, Trainer

STEPS, IMG = 6, 16


def make_world(root: Path, episodes: int = 12, seed: int = 0) -> tuple[Path, Path]:
    """A tiny RAE (own ViT encoder, random weights) and a dataset whose latents it cached."""
    from pretrain.data.shards import Dataset, Episode, ShardWriter, latent_file, sha256_file
    from worldmodel.encoders import encoder_from_spec
    from worldmodel.rae import RAE, RAEConfig
    from worldmodel.vit import ViTConfig

    rae_dir, data_dir = root / "rae", root / "data"
    if (data_dir / "manifest.json").is_file():
        return rae_dir, data_dir
    torch.manual_seed(seed)
    vit = ViTConfig(image_size=IMG, patch_size=4, dim=16, depth=1, heads=2)
    enc = encoder_from_spec({"encoder": "own", "input_size": IMG, "kwargs": vars(vit).copy()})
    rae = RAE(RAEConfig(image_size=IMG, decoder_dim=32, decoder_depth=1, decoder_heads=2), enc)
    rae.save_pretrained(rae_dir)
    rng = np.random.default_rng(seed)
    with ShardWriter(data_dir, "reacher", {}, task_spec={"action_scale": 0.2}, episodes_per_shard=6) as w:
        for i in range(episodes):
            # a dot moving by the actions: frames that actually depend on the actions
            acts = rng.uniform(-0.2, 0.2, (STEPS, 2)).astype(np.float32)
            pos = np.cumsum(np.vstack([rng.uniform(4, 12, (1, 2)), acts * 10]), 0).clip(1, IMG - 2)
            frames = np.zeros((STEPS + 1, IMG, IMG, 3), np.uint8)
            for t, (x, y) in enumerate(pos.astype(int)):
                frames[t, y - 1:y + 2, x - 1:x + 2] = (255, 80, 0)
            w.add(Episode(frames=frames, actions=acts, states=pos.astype(np.float32),
                          rewards=np.zeros(STEPS, np.float32), goal_state=np.zeros(2, np.float32),
                          goal_frame=frames[-1], seed=i,
                          captions=[f"the dot is at x={x}, y={y}." for x, y in pos.astype(int)]))
    ds = Dataset(data_dir)
    for i in range(len(ds.shards)):
        frames = torch.from_numpy(ds.load_shard(i)["frames"]).float().div(255)  # (E, T+1, H, W, 3)
        e, t1 = frames.shape[:2]
        lat = rae.encode(frames.flatten(0, 1).permute(0, 3, 1, 2)).reshape(e, t1, 16, 16).numpy()
        rel = latent_file(i, rae.encoder_id)
        (data_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        np.save(data_dir / rel, lat)
        ds.record_latents(i, rae.encoder_id, rel, sha256_file(data_dir / rel), lat.shape)
    return rae_dir, data_dir


def tiny_overrides(root: Path, run: str, steps: int = 12, **extra) -> list[str]:
    rae_dir, data_dir = make_world(root)
    o = {"run_dir": str(root / run), "device": "cpu", "steps": steps, "batch_size": 4, "eval_rows": 4,
         "rae.path": str(rae_dir), "data.dataset": str(data_dir), "data.seq_len": 128,
         "data.text_sources": "[pydoc]", "data.holdout": 0.2, "data.predict_frames": 1, "data.video_frames": 3,
         "model.d_model": 32, "model.n_layers": 2, "model.n_heads": 2, "model.moe.n_experts": 4,
         "model.moe.top_k": 1, "model.moe.granularity": 4, "optim.lr": 3e-3, "optim.warmup_steps": 2,
         "checkpoint.every": 4, "metrics.tensorboard": False, "metrics.progress": False}
    o.update(extra)
    return [f"{k}={v}" for k, v in o.items()]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    make_world(root)
    return root


def test_config_strict_and_presets():
    with pytest.raises(ConfigError, match="optim.lrr"):
        compose(TrainConfig, "pretrain", ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="bogus"):
        compose(TrainConfig, "pretrain", ["model.moe.bogus=1"])
    with pytest.raises(ConfigError, match="nosuch"):
        compose(TrainConfig, "pretrain", ["experiment=nosuch"])
    cfg = compose(TrainConfig, "pretrain", ["experiment=tiny_cpu"])
    assert cfg.model.d_model == 128 and cfg.data.action_video == 0.6 and cfg.device == "cpu"
    assert compose(TrainConfig, "pretrain", ["data=paper"]).data.text == 0.5
    assert compose(TrainConfig, "pretrain", ["optim=wsd"]).optim.schedule == "wsd"
    with pytest.raises(ValueError, match="divisible by world_size\\*grad_accum=3"):
        Trainer(compose(TrainConfig, "pretrain", ["grad_accum=3", "batch_size=8", "rae=none",
                                                  "data=text_only", "device=cpu"]))


def test_losses_fall_and_export_loads(world):
    from worldmodel.transfusion import Transfusion
    from worldmodel.world import LatentWorld

    assert main(tiny_overrides(world, "run", steps=40, **{"optim.lr": 1e-2, "batch_size": 8})) == 0
    run = world / "run"
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "lr" in r]
    assert [r["step"] for r in steps] == list(range(1, 41))
    head, tail = steps[:5], steps[-5:]
    for key in ("loss", "group/text", "group/frames", "group/action_video"):
        first = np.mean([r[key] for r in head])
        last = np.mean([r[key] for r in tail])
        assert last < 0.8 * first, (key, first, last)
    assert any("val/loss" in r for r in rows)
    assert (run / "config.yaml").is_file() and "seq_len: 128" in (run / "config.yaml").read_text()
    # export: a from_pretrained folder with the task spec and the RAE beside it
    model = Transfusion.from_pretrained(run / "model")
    assert model.extra["task"] == "reacher" and model.cfg.action_scale == 0.2 and "action_scale" not in model.extra
    assert model.extra["context_frames"] == 2 and model.extra["image_size"] == IMG
    assert model.extra["window"] == 2           # the longest history an action-video target had (2 + 1 - 1)
    assert model.extra["sample_steps"] == model.cfg.flow.sample_steps   # the simulator's default, exported
    assert model.extra["data_policy"] is None      # a dataset made without `lw collect` records no data policy
    assert "tasks" not in model.extra              # one dataset, one task: the single-task export, as ever
    assert model.cfg.latent_dim == 16 and model.cfg.frame_grid == (4, 4) and model.cfg.action_dim == 2
    world_model = LatentWorld.from_pretrained(run / "model")
    ctx = torch.randn(2, 2, 16, 16)
    with torch.no_grad():
        pred = world_model.model.predict_next_frames(ctx, torch.zeros(2, 1, 2), torch.zeros(2, 1, 2), steps=2)
    assert pred.shape == (2, 1, 16, 16) and torch.isfinite(pred).all()
    # analyze-experts on the exported model: heatmap + table from held-out rows
    from lw.analyze_experts import main as analyze_main
    assert analyze_main([f"model_dir={run / 'model'}", "rows=8", "batch_size=4", "device=cpu",
                         "data.seq_len=128", "data.video_frames=3", "data.holdout=0.2"]) == 0
    out = run / "experts"
    assert (out / "experts.png").stat().st_size > 1000
    saved = json.loads((out / "experts.json").read_text())
    assert len(saved["layers"]) == 2 and np.array(saved["s"]).shape == (2, 4)
    counts = np.array(saved["counts"])  # (layers, 2, experts): both modalities were routed
    assert (counts[:, 0].sum(-1) > 0).all() and (counts[:, 1].sum(-1) > 0).all()
    assert "| 0 (trunk.blocks.0.ffn)" in (out / "experts.md").read_text()
    assert "by_task" not in saved and not (out / "experts_by_task.md").exists()   # one dataset: no by-task files
    # a second run into the same folder must not silently overwrite it
    with pytest.raises(ValueError, match="resume=true"):
        main(tiny_overrides(world, "run", steps=40))


def test_specialisation_score():
    from pretrain.analyze_experts import specialisation
    counts = np.array([[[10, 0, 5, 5], [0, 10, 5, 5]]])  # expert 0 text-only, 1 vision-only, 2-3 shared
    s = specialisation(counts)["s"]
    np.testing.assert_allclose(s, [[1.0, -1.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="expected \\(layers, 2, experts\\)"):
        specialisation(np.zeros((2, 3)))


def test_task_specialisation_score():
    from pretrain.analyze_experts import task_specialisation
    disjoint = np.array([[[6, 2, 0, 0, 0]], [[0, 0, 1, 3, 0]]])    # (tasks, layers, experts): none shared, e4 unused
    res = task_specialisation(disjoint)
    np.testing.assert_allclose(res["shares"], [[[0.75, 0.25, 0, 0, 0]], [[0, 0, 0.25, 0.75, 0]]])
    np.testing.assert_allclose(res["s"], [[[1, 1, -1, -1, 0]], [[-1, -1, 1, 1, 0]]])
    np.testing.assert_allclose(res["summary"], [1.0])
    same = np.array([[[2, 2, 0, 4], [1, 0, 0, 0]]]) * np.array([1, 5, 10])[:, None, None]   # (3, 2, 4)
    res = task_specialisation(same)                                  # 3 tasks routed alike at any scale
    np.testing.assert_allclose(res["shares"].sum(-1), np.ones((3, 2)))
    np.testing.assert_allclose(res["s"], 0.0, atol=1e-12)
    np.testing.assert_allclose(res["summary"], [0.0, 0.0], atol=1e-12)
    res = task_specialisation(np.array([[[1, 1]], [[1, 0]], [[1, 0]]]))   # R_rest: the mean of the others
    np.testing.assert_allclose(res["s"][0, 0], [(0.5 - 1) / 1.5, 1.0])
    np.testing.assert_allclose(res["s"][1, 0], [(1 - 0.75) / 1.75, -1.0])
    assert 0 < res["summary"][0] < 1
    with pytest.raises(ValueError, match="expected \\(tasks >= 2, layers, experts\\)"):
        task_specialisation(np.ones((1, 2, 4)))


def test_split_half_noise_floor_separates_sampling_noise_from_task_routing():
    """The floor: 0 for halves routed alike, the mean over tasks of their halves' JS / log 2; tasks routed alike
    read at most the floor (it errs high: half the rows), tasks on disjoint experts far above it."""
    from pretrain.analyze_experts import split_half_noise_floor, task_specialisation
    rng = np.random.default_rng(0)

    def routed_rows(p: list[float]) -> np.ndarray:        # 32 rows of 40 vision tokens routed by p, at 16 layers
        return rng.multinomial(40, p, size=(32, 16))       # (rows, L, E): the layers are 16 independent repeats

    def halves(*rows_per_task: np.ndarray) -> np.ndarray:  # (T, 2, L, E): even rows, odd rows
        return np.stack([[r[0::2].sum(0), r[1::2].sum(0)] for r in rows_per_task])

    same = np.array([[3, 1, 0, 4]])                       # (L=1, E=4)
    np.testing.assert_allclose(split_half_noise_floor(np.stack([[same, same], [same, 2 * same]])), [0.0], atol=1e-12)
    apart = [np.array([[2, 2, 0, 0]]), np.array([[0, 0, 1, 3]])]
    floor = split_half_noise_floor(np.stack([[same, same], apart, [same, same]]))   # halves of 1 of 3 tasks disjoint
    np.testing.assert_allclose(floor, [1 / 3])            # / log 2 per task, not / log T

    alike = halves(routed_rows([0.4, 0.3, 0.2, 0.1]), routed_rows([0.4, 0.3, 0.2, 0.1]))
    js, floor = task_specialisation(alike.sum(1))["summary"], split_half_noise_floor(alike)
    assert floor.shape == (16,) and (floor < 0.01).all()
    assert 0.1 * floor.mean() < js.mean() < floor.mean()  # pure sampling noise: near the floor, below on average
    disjoint = halves(routed_rows([0.5, 0.5, 0, 0]), routed_rows([0, 0, 0.5, 0.5]))
    js, floor = task_specialisation(disjoint.sum(1))["summary"], split_half_noise_floor(disjoint)
    np.testing.assert_allclose(js, 1.0)
    assert (js > 100 * floor).all()
    with pytest.raises(ValueError, match="expected \\(tasks, 2, layers, experts\\)"):
        split_half_noise_floor(np.ones((2, 3, 1, 4)))


def test_init_from_fine_tunes_an_exported_model_and_refuses_another_architecture(world):
    """init_from: a new run starts from a model folder's weights (fine-tuning), records it in
    its export, and refuses a folder of another shape, naming what differs."""
    from worldmodel import hub

    assert main(tiny_overrides(world, "ft_base", steps=8)) == 0
    base = world / "ft_base" / "model"
    trainer = Trainer(compose(TrainConfig, "pretrain", tiny_overrides(world, "ft_run", steps=4,
                                                                       init_from=str(base))))
    theirs = hub.load_state_dict(base)
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, theirs[k]), k             # step 0 = the base model, not a fresh init
    fresh = Trainer(compose(TrainConfig, "pretrain", tiny_overrides(world, "ft_fresh", steps=4)))
    assert any(not torch.equal(v, theirs[k]) for k, v in fresh.model.state_dict().items())
    trainer.run()
    assert hub.read_config(world / "ft_run" / "model")["init_from"] == str(base)
    with pytest.raises(ConfigError, match="another architecture.*other shapes"):
        Trainer(compose(TrainConfig, "pretrain", tiny_overrides(world, "ft_wide", steps=4, init_from=str(base),
                                                                **{"model.d_model": 48})))
    with pytest.raises(Exception, match="holds a .rae. model, expected .transfusion."):  # the RAE beside it
        Trainer(compose(TrainConfig, "pretrain", tiny_overrides(world, "ft_kind", steps=4,
                                                                init_from=str(base / "rae"))))
