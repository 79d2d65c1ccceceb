"""lw train-encoder / train-rae / encode-dataset end to end on a tiny dataset; latent cache integrity."""
import json
import shutil

import numpy as np
import pytest
import torch

from lw.encode_dataset import main as encode_main
from pretrain.data.latent_cache import load_latents, verify_latents
from pretrain.data.shards import Dataset, Episode, ShardCorruptError, ShardWriter
from pretrain.frames import load_frame_split
from lw.train_encoder import main as train_encoder_main
from lw.train_rae import main as train_rae_main
from worldmodel.rae import RAE

torch.set_num_threads(1)
IMG, STEPS, EPISODES = 32, 5, 10


def write_dataset(root):
    """A disc moving over a grey gradient, one shard per 4 episodes."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:IMG, 0:IMG]
    with ShardWriter(root, "reacher", {}, episodes_per_shard=4) as w:
        for i in range(EPISODES):
            pos = rng.uniform(8, 24, 2) + np.cumsum(rng.uniform(-2, 2, (STEPS + 1, 2)), 0)
            color = rng.uniform(0, 255, 3)
            frames = np.empty((STEPS + 1, IMG, IMG, 3), np.uint8)
            for t, (x, y) in enumerate(pos):
                f = np.repeat((120 + 2 * yy)[..., None], 3, -1).astype(np.float32)
                f[(xx - x) ** 2 + (yy - y) ** 2 < 20] = color
                frames[t] = f.clip(0, 255)
            w.add(Episode(frames=frames, actions=np.zeros((STEPS, 2)), states=np.zeros((STEPS + 1, 2)),
                          rewards=np.zeros(STEPS), goal_state=np.zeros(2), goal_frame=frames[-1],
                          captions=["a disc."] * (STEPS + 1), seed=i))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Dataset + MAE + RAE made by the real CLI programs with tiny configs."""
    root = tmp_path_factory.mktemp("lc")
    data, mae, rae = root / "data", root / "mae", root / "rae"
    write_dataset(data)
    common = [f"data={data}", "holdout=0.2", f"image_size={IMG}", "eval_every=10", "eval_frames=8",
              "save_every=10", "device=cpu", "progress=false", "max_minutes=0"]
    assert train_encoder_main(common + [f"out={mae}", "patch_size=8", "dim=32", "depth=1", "heads=2",
                                        "decoder_dim=32", "decoder_depth=1", "decoder_heads=2",
                                        "batch_size=16", "steps=20", "lr=2e-3", "warmup_steps=2"]) == 0
    assert train_rae_main(common + [f"out={rae}", f"encoder_weights={mae}", "decoder_dim=32",
                                    "decoder_depth=1", "decoder_heads=2", "batch_size=16", "steps=30",
                                    "lr=3e-3", "warmup_steps=2", "stats_frames=40"]) == 0
    return data, mae, rae


def test_holdout_split_is_by_episode(trained):
    data, _, _ = trained
    train, held, info = load_frame_split(str(data), 0.2, IMG)
    assert info["heldout_episodes"] == 2 and info["train_episodes"] == 8
    assert len(train) == 8 * (STEPS + 1) and len(held) == 2 * (STEPS + 1)
    ds = Dataset(data)
    last_two = np.concatenate([ds[8].frames, ds[9].frames])  # the last episodes are held out
    assert np.array_equal(held.permute(0, 2, 3, 1).numpy(), last_two)


def test_training_programs_write_their_outputs(trained):
    _, mae, rae = trained
    for run in (mae, rae):
        for name in ("config.json", "model.safetensors", "metrics.jsonl", "samples.png", "summary.json",
                     "config.yaml"):
            assert (run / name).is_file(), (run, name)
    recs = [json.loads(line) for line in (rae / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in recs if "heldout_psnr" in r]
    assert [r["step"] for r in evals][:3] == [10, 20, 30] and evals[-1].get("final")
    assert all(np.isfinite(r["heldout_psnr"]) and 0 < r["heldout_ssim"] <= 1 for r in evals)
    losses = [r["l1"] for r in recs if "l1" in r]
    assert losses[-1] < losses[0]  # the decoder learns
    mae_losses = [r["loss"] for r in json.loads("[" + ",".join(
        (mae / "metrics.jsonl").read_text().splitlines()) + "]") if "loss" in r]
    assert mae_losses[-1] < mae_losses[0]
    model = RAE.from_pretrained(rae)
    assert model.grid == (4, 4) and model.latent_dim == 32 and model.encoder_id == "own"


def test_encode_dataset_cache_and_skip(trained, capsys):
    data, _, rae_dir = trained
    assert encode_main([f"data={data}", f"rae={rae_dir}", "dtype=float32", "device=cpu", "progress=false"]) == 0
    ds = Dataset(data)
    rae = RAE.from_pretrained(rae_dir)
    assert verify_latents(data, rae_dir) == "own"
    lat = load_latents(ds, 1, rae_dir)
    frames = torch.from_numpy(ds.load_shard(1)["frames"]).float().div(255)  # (E, T+1, H, W, 3)
    expect = rae.encode(frames.flatten(0, 1).permute(0, 3, 1, 2)).reshape(*frames.shape[:2], 16, 32)
    assert lat.shape == (4, STEPS + 1, 16, 32)
    assert np.allclose(lat, expect.numpy(), atol=1e-5)  # in the shard's episode/frame order
    rec = ds.shards[1]["latents"]["own"]
    assert rec["fingerprint"] == rae.fingerprint() and rec["file"] == "latents/own/shard-00001.npy"
    # other readers of the dataset see them too
    assert ds.has_latents("own") and Dataset(data).load_latents(0, "own").shape[0] == 4
    # a re-run skips every valid shard and writes nothing
    mtime = (data / rec["file"]).stat().st_mtime_ns
    capsys.readouterr()
    encode_main([f"data={data}", f"rae={rae_dir}", "dtype=float32", "device=cpu", "progress=false"])
    assert "0 shards encoded, 3 already valid" in capsys.readouterr().out
    assert (data / rec["file"]).stat().st_mtime_ns == mtime


def test_corrupt_cache_detected_and_repaired(trained, capsys):
    data, _, rae_dir = trained
    encode_main([f"data={data}", f"rae={rae_dir}", "device=cpu", "progress=false"])
    path = data / "latents/own/shard-00002.npy"
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # flip one byte of the payload
    path.write_bytes(bytes(raw))
    with pytest.raises(ShardCorruptError, match="shard-00002.npy"):
        verify_latents(data, rae_dir)
    with pytest.raises(ShardCorruptError, match="shard-00002.npy"):
        load_latents(Dataset(data), 2, rae_dir)
    capsys.readouterr()
    encode_main([f"data={data}", f"rae={rae_dir}", "device=cpu", "progress=false"])
    assert "1 shards encoded, 2 already valid" in capsys.readouterr().out
    verify_latents(data, rae_dir)


def test_cache_of_another_rae_is_rejected(trained, tmp_path):
    data, _, rae_dir = trained
    encode_main([f"data={data}", f"rae={rae_dir}", "device=cpu", "progress=false"])
    other = RAE.from_pretrained(rae_dir)
    other.latent_std.mul_(1.5)  # different normalisation -> different latents
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="fingerprint"):
        verify_latents(data, tmp_path / "other")
    with pytest.raises(ValueError, match="fingerprint"):
        load_latents(Dataset(data), 0, tmp_path / "other")
    # a tampered RAE folder (weights no longer match its recorded fingerprint) is refused
    cfg = json.loads((tmp_path / "other" / "config.json").read_text())
    cfg["fingerprint"] = "0" * 64
    (tmp_path / "other" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="modified or corrupt"):
        encode_main([f"data={data}", f"rae={tmp_path / 'other'}", "device=cpu", "progress=false"])


def test_corrupt_shard_under_valid_latents_is_an_error(trained, tmp_path, capsys):
    data, _, rae_dir = trained
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    encode_main([f"data={copy}", f"rae={rae_dir}", "device=cpu", "progress=false"])  # latents valid
    path = copy / "shard-00001.npz"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # inside the frames: the latents cached from them stay valid
    path.write_bytes(bytes(raw))
    capsys.readouterr()
    with pytest.raises(ShardCorruptError, match="shard-00001.npz' fails its checksum"):
        encode_main([f"data={copy}", f"rae={rae_dir}", "device=cpu", "progress=false"])
    assert "already valid" not in capsys.readouterr().out
