"""Shard format: exact round trip, corruption detection, append, windows, atomic writes, latents."""
import json
import os

import numpy as np
import pytest

from pretrain.data import shards
from pretrain.data.shards import (Dataset, Episode, ShardCorruptError, ShardWriter, atomic_write,
                                  dataset_summary, latent_file, sha256_file)


def make_episode(seed, steps=6, size=8, a=2, s=4, policy="uniform"):
    rng = np.random.default_rng(seed)
    return Episode(frames=rng.integers(0, 256, (steps + 1, size, size, 3), dtype=np.uint8),
                   actions=rng.uniform(-1, 1, (steps, a)).astype(np.float32),
                   states=rng.normal(size=(steps + 1, s)).astype(np.float32),
                   rewards=rng.normal(size=steps).astype(np.float32),
                   goal_state=rng.normal(size=3).astype(np.float32),
                   goal_frame=rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
                   captions=[f"frame {t} of episode {seed}, ünïcode ok" for t in range(steps + 1)],
                   policy=policy, seed=seed)


def write(root, episodes, per_shard=2, task="reacher", **kw):
    with ShardWriter(root, task, {"policy": "test"}, task_spec={"episode_steps": 6},
                     episodes_per_shard=per_shard, **kw) as w:
        for ep in episodes:
            w.add(ep)
    return Dataset(root)


def assert_same(a: Episode, b: Episode):
    for k in ("frames", "actions", "states", "rewards", "goal_state", "goal_frame"):
        x, y = getattr(a, k), getattr(b, k)
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), k
    assert a.captions == b.captions and a.policy == b.policy and a.seed == b.seed


def test_round_trip_exact(tmp_path):
    eps = [make_episode(i, policy=["uniform", "scripted"][i % 2]) for i in range(5)]
    ds = write(tmp_path / "d", eps)
    assert len(ds) == 5 and len(ds.shards) == 3 and ds.n_frames == 5 * 7
    for i, ep in enumerate(eps):
        assert_same(ds[i], ep)
    assert [e.seed for e in ds.episodes()] == [0, 1, 2, 3, 4]
    shuffled = [e.seed for e in ds.episodes(shuffle=True, seed=3)]
    assert sorted(shuffled) == [0, 1, 2, 3, 4]
    assert shuffled == [e.seed for e in ds.episodes(shuffle=True, seed=3)]
    m = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert m["task"] == "reacher" and m["image_size"] == 8 and m["action_dim"] == 2
    assert m["collect_runs"][0]["config"] == {"policy": "test"}
    s0 = m["shards"][0]
    assert s0["file"] == "shard-00000.npz" and s0["n_episodes"] == 2 and s0["n_frames"] == 14
    assert s0["sha256"] == sha256_file(tmp_path / "d" / s0["file"])
    assert s0["bytes"] == os.path.getsize(tmp_path / "d" / s0["file"])
    assert s0["policies"] == {"uniform": 1, "scripted": 1}
    text = dataset_summary(tmp_path / "d")
    assert "reacher" in text and "5 episodes" in text and "35 frames" in text and "scripted" in text


def test_flipped_byte_detected(tmp_path):
    write(tmp_path / "d", [make_episode(i) for i in range(2)])
    path = tmp_path / "d" / "shard-00000.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ShardCorruptError, match="shard-00000.npz.*checksum"):
        Dataset(tmp_path / "d")[0]


def test_truncated_and_missing_detected(tmp_path):
    write(tmp_path / "d", [make_episode(i) for i in range(4)])
    path = tmp_path / "d" / "shard-00001.npz"
    path.write_bytes(path.read_bytes()[:1000])
    ds = Dataset(tmp_path / "d")
    ds[0]  # the intact shard still reads
    with pytest.raises(ShardCorruptError, match="shard-00001.npz.*truncated"):
        ds[2]
    # even without checksums, a truncated zip is a ShardCorruptError naming the file
    entry_fix = lambda m: m["shards"][1].update(bytes=1000)  # noqa: E731
    shards.update_manifest(tmp_path / "d", entry_fix)
    with pytest.raises(ShardCorruptError, match="shard-00001.npz"):
        Dataset(tmp_path / "d", verify=False)[2]
    path.unlink()
    with pytest.raises(ShardCorruptError, match="shard-00001.npz.*missing"):
        Dataset(tmp_path / "d")[2]


def test_missing_key_detected(tmp_path):
    write(tmp_path / "d", [make_episode(0)], per_shard=1)
    path = tmp_path / "d" / "shard-00000.npz"
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "captions"}
    np.savez(path, **arrays)  # a shard without captions, with a matching manifest entry

    def fix(m):
        m["shards"][0].update(sha256=sha256_file(path), bytes=path.stat().st_size)
    shards.update_manifest(tmp_path / "d", fix)
    with pytest.raises(ShardCorruptError, match=r"shard-00000.npz.*lacks keys \['captions'\]"):
        Dataset(tmp_path / "d")[0]


def test_append_and_mismatch(tmp_path):
    root = tmp_path / "d"
    write(root, [make_episode(i) for i in range(3)])
    with pytest.raises(ValueError, match="already holds a dataset"):
        write(root, [make_episode(9)])
    ds = write(root, [make_episode(10 + i) for i in range(2)], append=True)
    assert len(ds) == 5 and len(ds.shards) == 3  # shards: 2+1 then 2
    assert [e.seed for e in ds.episodes()] == [0, 1, 2, 10, 11]
    assert ds.shards[2]["first_episode"] == 3
    assert len(ds.manifest["collect_runs"]) == 2 and ds.manifest["collect_runs"][1]["first_shard"] == 2
    with pytest.raises(ValueError, match="cannot append task 'pusher'.*'reacher'"):
        write(root, [make_episode(20)], task="pusher", append=True)
    with pytest.raises(ValueError, match="image_size=8"):
        write(root, [make_episode(20, size=16)], append=True)
    with pytest.raises(ValueError, match="action_dim=3.*action_dim=2"):
        write(root, [make_episode(20, a=3)], append=True)
    assert len(Dataset(root)) == 5  # failed appends left the data alone
    ds = write(root, [make_episode(30)], overwrite=True)
    assert len(ds) == 1 and not (root / "shard-00001.npz").exists()


def test_windows_shapes_and_provenance(tmp_path):
    # two lengths: a shard stacks equal-length episodes only, so 3 shards come out
    eps = [make_episode(0, steps=6), make_episode(1, steps=6), make_episode(2, steps=3),
           make_episode(3, steps=9)]
    ds = write(tmp_path / "d", eps, per_shard=4)
    assert [s["episode_steps"] for s in ds.shards] == [6, 3, 9]
    L, stride = 4, 2
    fields = ("frames", "actions", "states", "rewards", "captions", "episode", "start")
    wins = list(ds.windows(L, stride=stride, fields=fields))
    # episode 2 (3 steps) is too short; 6 steps -> starts 0,2 ; 9 steps -> 0,2,4
    assert [(w[5], w[6]) for w in wins] == [(0, 0), (0, 2), (1, 0), (1, 2), (3, 0), (3, 2), (3, 4)]
    for frames, actions, states, rewards, captions, e, s in wins:
        assert frames.shape == (L + 1, 8, 8, 3) and frames.dtype == np.uint8
        assert actions.shape == (L, 2) and actions.dtype == np.float32
        assert states.shape == (L + 1, 4) and rewards.shape == (L,) and len(captions) == L + 1
        ep = eps[e]
        assert np.array_equal(frames, ep.frames[s:s + L + 1])
        assert np.array_equal(actions, ep.actions[s:s + L])
        assert captions == ep.captions[s:s + L + 1]
    default = next(iter(ds.windows(L)))
    assert len(default) == 2 and default[0].shape == (L + 1, 8, 8, 3)
    a = [(w[0], w[1]) for w in ds.windows(L, 1, shuffle=True, seed=1, fields=("episode", "start"))]
    b = [(w[0], w[1]) for w in ds.windows(L, 1, shuffle=True, seed=1, fields=("episode", "start"))]
    c = [(w[0], w[1]) for w in ds.windows(L, 1, fields=("episode", "start"))]
    assert a == b and a != c and sorted(a) == sorted(c) and len(c) == 3 + 3 + 6
    with pytest.raises(ValueError, match="unknown window fields"):
        next(ds.windows(2, fields=("pixels",)))


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def bad(f):
        f.write(b"partial data")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        atomic_write(target, bad)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]


def test_shard_write_failure_keeps_dataset_valid(tmp_path, monkeypatch):
    root = tmp_path / "d"
    write(root, [make_episode(i) for i in range(2)])
    before = (root / "manifest.json").read_bytes()
    real = np.savez

    def failing(f, **arrays):
        real(f, **arrays)  # the bytes hit the temp file ...
        raise KeyboardInterrupt  # ... then the process is interrupted before the rename
    monkeypatch.setattr(np, "savez", failing)
    w = ShardWriter(root, "reacher", append=True, episodes_per_shard=1)
    with pytest.raises(KeyboardInterrupt):
        w.add(make_episode(5))
    monkeypatch.setattr(np, "savez", real)
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".manifest.lock")) == [
        "manifest.json", "shard-00000.npz"]
    assert json.loads(before)["shards"] == json.loads((root / "manifest.json").read_text())["shards"]
    assert len(Dataset(root)) == 2


def test_interrupt_flushes_complete_episodes(tmp_path):
    root = tmp_path / "d"
    with pytest.raises(KeyboardInterrupt):
        with ShardWriter(root, "reacher", episodes_per_shard=10) as w:
            for i in range(3):
                w.add(make_episode(i))
            raise KeyboardInterrupt
    ds = Dataset(root)
    assert len(ds) == 3 and ds.shards[0]["n_episodes"] == 3
    assert_same(ds[2], make_episode(2))


def test_latents_record_and_verify(tmp_path):
    root = tmp_path / "d"
    ds = write(root, [make_episode(i) for i in range(3)])
    enc = "timm:vit/small"
    for i, entry in enumerate(ds.shards):
        lat = np.full((entry["n_episodes"], 7, 4, 5), i, dtype=np.float32)  # (E, T+1, N, C)
        rel = latent_file(i, enc)
        atomic_write(root / rel, lambda f: np.save(f, lat))
        ds.record_latents(i, enc, rel, sha256_file(root / rel), lat.shape)
    assert ds.has_latents(enc) and not ds.has_latents("other")
    assert latent_file(0, enc) == "latents/timm_vit_small/shard-00000.npy"  # no nested folders
    wins = list(ds.windows(3, stride=3, fields=("latents", "episode"), encoder_id=enc))
    assert wins[0][0].shape == (4, 4, 5) and float(wins[-1][0][0, 0, 0]) == 1.0  # episode 2 is in shard 1
    # a new writer appending keeps the latent records of old shards
    write(root, [make_episode(9)], append=True)
    assert Dataset(root).shards[0]["latents"][enc]["shape"] == [2, 7, 4, 5]
    (root / latent_file(1, enc)).write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ShardCorruptError, match="shard-00001.npy"):
        Dataset(root).load_latents(1, enc)
    with pytest.raises(KeyError, match="no latents for encoder 'other'"):
        Dataset(root).load_latents(0, "other")


def test_bad_episode_rejected():
    good = make_episode(0)
    with pytest.raises(ValueError, match="frames must be uint8"):
        Episode(**{**vars(good), "frames": good.frames.astype(np.float32)})
    with pytest.raises(ValueError, match="captions has 3 entries, expected 7"):
        Episode(**{**vars(good), "captions": ["a", "b", "c"]})
    with pytest.raises(ValueError, match=r"actions has shape \(5, 2\), expected \(6, A\)"):
        Episode(**{**vars(good), "actions": good.actions[:5]})
