"""The shipped checkpoint is what its recipe says: `lw pretrain experiment=reacher_jepa`, on the
latent of its shipped jepa/ representation."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from lw.config import compose
from pretrain.train import TrainConfig
from worldmodel.config import ModelConfig

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "checkpoints" / "reacher-tiny"
pytestmark = pytest.mark.skipif(not (CKPT / "config.json").is_file(), reason="embedded checkpoint not present")

DATA_DERIVED = {"latent_dim", "frame_grid", "action_dim", "action_scale"}  # set from the RAE and the dataset


def load_shipped(folder: Path):
    """A shipped folder within the 25 MiB budget, its three weight files checksummed, loaded
    without a warning: the LatentWorld."""
    import warnings

    from worldmodel import hub
    from worldmodel.world import LatentWorld

    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size <= 25 * 2**20, f"{folder.name} is {size / 2**20:.1f} MiB, budget 25 MiB"
    for sub in (folder, folder / "rae", folder / "jepa"):   # checksums recorded, so a damaged copy is refused
        assert hub.WEIGHTS_NAME in json.loads((sub / hub.CONFIG_NAME).read_text())[hub.CHECKSUMS_KEY]
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no "records no checksum" warning
        return LatentWorld.from_pretrained(folder)


# shipped folders made by the same recipe on another task: (folder, experiment, task, action scale)
SHIPPED = [(CKPT, "reacher_jepa", "reacher", 0.2),
           (ROOT / "checkpoints" / "dmc_reacher-tiny", "dmc_reacher_jepa", "dmc_reacher", 1.0)]


@pytest.mark.parametrize("ckpt, experiment, task, scale", SHIPPED, ids=[s[2] for s in SHIPPED])
def test_config_matches_the_recipe(ckpt, experiment, task, scale):
    CKPT = ckpt
    recipe = compose(TrainConfig, "pretrain", [f"experiment={experiment}"])
    meta = json.loads((CKPT / "config.json").read_text())
    want = {k: v for k, v in asdict(recipe.model).items() if k not in DATA_DERIVED}
    loaded = ModelConfig.from_dict(meta["config"]).to_dict()   # the config as loaded (older keys defaulted)
    got = {k: v for k, v in loaded.items() if k in want}
    want = json.loads(json.dumps(want))   # tuples -> lists, as stored
    assert got == want
    assert meta["train_steps"] == recipe.steps
    assert meta["seq_len"] == recipe.data.seq_len and meta["context_frames"] == recipe.data.context_frames
    assert meta.get("max_jump", 1) == recipe.data.max_jump     # folders written before max_jump: 1
    assert meta["task"] == task and meta["config"]["action_scale"] == scale and "action_scale" not in meta
    assert meta["sample_steps"] == recipe.model.flow.sample_steps   # the simulator's default, as exported
    rae = json.loads((CKPT / "rae" / "config.json").read_text())
    assert meta["config"]["latent_dim"] == rae["latent_dim"]
    assert meta["config"]["frame_grid"] == rae["grid"]
    assert f"lw pretrain experiment={experiment}" in (CKPT / "RECIPE.md").read_text()
    assert rae["encoder_id"] == "jepa" and meta["config"]["action_adaln"] is True


@pytest.mark.parametrize("ckpt, experiment, task, scale", SHIPPED, ids=[s[2] for s in SHIPPED])
def test_checkpoint_fits_the_size_budget_and_loads(ckpt, experiment, task, scale):
    CKPT = ckpt
    world = load_shipped(CKPT)
    assert world.image_size == 64 and world.context_frames == 2 and world.sample_steps == 1
    assert world.action_scale == scale and world.action_bounds[1].tolist() == pytest.approx([scale, scale])
    rows = [json.loads(l) for l in (CKPT / "training_metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == json.loads((CKPT / "config.json").read_text())["train_steps"]


def test_shipped_rae_fingerprint_matches_its_weights():
    """`lw encode-dataset rae=checkpoints/reacher-tiny/rae` recomputes this and refuses a mismatch."""
    from pretrain.data.latent_cache import rae_identity
    from worldmodel.rae import RAE

    assert rae_identity(CKPT / "rae")[1] == RAE.from_pretrained(CKPT / "rae").fingerprint()


def test_shipped_jepa_is_the_rae_encoder():
    """jepa/ (the benchmark's jepa row) holds the very encoder whose latent the model was trained in."""
    import torch

    from worldmodel.jepa import JEPAWorld
    from worldmodel.world import LatentWorld

    world, jepa = LatentWorld.from_pretrained(CKPT), JEPAWorld.from_pretrained(CKPT / "jepa")
    assert jepa.extras["task"] == "reacher" and jepa.cfg.action_scale == 0.2
    frames = torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8)
    raw = jepa.encode_frames(frames)
    torch.testing.assert_close(world.encode_frames(frames), world.rae.normalize(raw))


PM = ROOT / "checkpoints" / "point_maze-tiny"


@pytest.mark.skipif(not (PM / "landmarks" / "config.json").is_file(), reason="point_maze checkpoint not present")
def test_point_maze_landmark_graphs_belong_to_their_encoders():
    """The shipped graphs score latents of the encoders they ship beside (rebuilt after packing)."""
    from planners.landmarks import LandmarkGraph
    from worldmodel.jepa import JEPAWorld
    from worldmodel.rae import RAE

    learned, jepa = LandmarkGraph.from_pretrained(PM / "landmarks"), LandmarkGraph.from_pretrained(PM / "jepa/landmarks")
    assert learned.fingerprint == RAE.from_pretrained(PM / "rae").fingerprint()
    assert jepa.fingerprint == JEPAWorld.from_pretrained(PM / "jepa").encoder_fingerprint()
    for g in (learned, jepa):
        assert len(g) == 200 and bool(g.steps.isfinite().all())      # every landmark reaches every other


PT = ROOT / "checkpoints" / "pusht-small"


GEN = ROOT / "checkpoints" / "generalist-small"
GEN_SCALES = {"reacher": 0.2, "point_maze": 1.0, "pusht": 0.5, "dmc_reacher": 1.0}


@pytest.mark.skipif(not (PT / "config.json").is_file(), reason="pusht checkpoint not present")
def test_pusht_small_matches_its_recipe_and_loads():
    """checkpoints/pusht-small is `lw pretrain experiment=pusht_from_generalist`: the generalist fine-tuned on
    PushT alone, on the generalist's shared jepa/ latent (RECIPE.md)."""
    import torch

    from worldmodel.jepa import JEPAWorld

    recipe = compose(TrainConfig, "pretrain", ["experiment=pusht_from_generalist"])
    meta = json.loads((PT / "config.json").read_text())
    want = json.loads(json.dumps({k: v for k, v in asdict(recipe.model).items() if k not in DATA_DERIVED}))
    loaded = ModelConfig.from_dict(meta["config"]).to_dict()
    assert {k: v for k, v in loaded.items() if k in want} == want
    assert meta["train_steps"] == recipe.steps and meta["task"] == "pusht" and meta["init_from"] == recipe.init_from
    assert meta["seq_len"] == recipe.data.seq_len and meta["context_frames"] == recipe.data.context_frames
    assert meta["config"]["action_scale"] == 0.5 and meta["sample_steps"] == recipe.model.flow.sample_steps
    assert meta["data_policy"]["mixture"]["scripted"] == 0.6        # the anchors' goals come from its data policy
    rae = json.loads((PT / "rae" / "config.json").read_text())
    assert meta["config"]["latent_dim"] == rae["latent_dim"] and meta["config"]["frame_grid"] == rae["grid"]
    assert rae["encoder_id"] == "jepa" and meta["config"]["action_adaln"] is True
    assert "lw pretrain experiment=pusht_from_generalist" in (PT / "RECIPE.md").read_text()
    world = load_shipped(PT)
    assert world.image_size == 64 and world.action_bounds[1].tolist() == pytest.approx([0.5, 0.5])
    jepa = JEPAWorld.from_pretrained(PT / "jepa").for_task("pusht")   # the generalist's JEPA, run on pusht
    assert jepa.task == "pusht" and jepa.extras["action_scales"]["pusht"] == 0.5
    frames = torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8)
    torch.testing.assert_close(world.encode_frames(frames), world.rae.normalize(jepa.encode_frames(frames)))


@pytest.mark.skipif(not (GEN / "config.json").is_file(), reason="generalist checkpoint not present")
def test_generalist_small_matches_its_recipe_and_serves_each_task():
    """checkpoints/generalist-small is `lw pretrain experiment=generalist_small` then
    `experiment=generalist_small_stage2` (from the first's weights) on its shipped shared jepa/ latent; one folder runs each of its four tasks with that task's action bound and, on point_maze, the
    landmark graph built for point_maze alone."""
    import torch

    from planners.landmarks import LandmarkGraph, find_graph
    from worldmodel.jepa import JEPAWorld
    from worldmodel.world import covered_tasks

    recipe = compose(TrainConfig, "pretrain", ["experiment=generalist_small_stage2"])
    meta = json.loads((GEN / "config.json").read_text())
    recipe_md = (GEN / "RECIPE.md").read_text()
    want = json.loads(json.dumps({k: v for k, v in asdict(recipe.model).items() if k not in DATA_DERIVED}))
    loaded = ModelConfig.from_dict(meta["config"]).to_dict()
    assert {k: v for k, v in loaded.items() if k in want} == want
    assert meta["train_steps"] == recipe.steps and "task" not in meta
    assert f"init_from={meta['init_from']}" in recipe_md   # the stage-1 run it started from
    assert list(covered_tasks(meta)) == list(GEN_SCALES) and meta["action_scales"] == GEN_SCALES
    assert meta["config"]["action_scale"] == 1.0                  # the largest bound; each task a fraction of its own
    assert all(f"lw pretrain experiment={e} " in recipe_md for e in ("generalist_small", "generalist_small_stage2"))
    world = load_shipped(GEN)
    jepa = JEPAWorld.from_pretrained(GEN / "jepa")
    assert jepa.extras["action_scales"] == GEN_SCALES
    jepa_train = json.loads((GEN / "jepa" / "config.json").read_text())["train_config"]
    jepa_cmd = f"out={jepa_train['out']} init_from={jepa_train['init_from']} steps={jepa_train['steps']} "
    assert jepa_cmd in " ".join(recipe_md.replace("\\\n", " ").split()) + " "  # the shared JEPA's own command, continuations joined
    for task, scale in GEN_SCALES.items():
        assert world.for_task(task).action_bounds[1].tolist() == pytest.approx([scale, scale])
    frames = torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8)
    torch.testing.assert_close(world.encode_frames(frames), world.rae.normalize(jepa.encode_frames(frames)))
    for folder, fingerprint in ((GEN, world.rae.fingerprint()), (GEN / "jepa", jepa.encoder_fingerprint())):
        assert find_graph(folder, "point_maze") == folder / "landmarks" / "point_maze"
        assert find_graph(folder, "reacher") is None
        graph = LandmarkGraph.from_pretrained(find_graph(folder, "point_maze"))
        assert graph.fingerprint == fingerprint and graph.meta["task"] == "point_maze"


RECIPES = {"reacher-tiny": "reacher_jepa", "point_maze-tiny": "point_maze_jepa", "pusht-small": "pusht_from_generalist",
           "dmc_reacher-tiny": "dmc_reacher_jepa", "generalist-small": "generalist_small_stage2"}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_shipped_models_roll_out_within_the_history_they_were_trained_on(name):
    """Each folder's `window` is the longest history an action-video target had in its recipe
    (context + predicted frames - 1), and LatentWorld rolls out with it (docs/EXPERIMENTS.md entry 38)."""
    from worldmodel.world import LatentWorld

    folder = ROOT / "checkpoints" / name
    if not (folder / "config.json").is_file():
        pytest.skip(f"{name} not present")
    recipe = compose(TrainConfig, "pretrain", [f"experiment={RECIPES[name]}"])
    meta = json.loads((folder / "config.json").read_text())
    assert meta["window"] == recipe.data.context_frames + recipe.data.predict_frames - 1
    assert LatentWorld.from_pretrained(folder).window == meta["window"]
