"""`lw eval-prediction` on a tiny random world model and the real reacher task."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lw.config import ConfigError
from lw.eval_prediction import main
from pretrain.eval_prediction import collection_policy, record_episodes
from pretrain.image_metrics import psnr
try:
    from tests.test_world import IMAGE, build_tiny_world
except ImportError:  # tests/ not importable as a package: pytest put tests/ itself on sys.path
    from test_world import IMAGE, build_tiny_world


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory):
    return build_tiny_world(tmp_path_factory.getbasetemp() / "tiny_worlds", "embed")


def test_held_out_episodes_are_seeded_and_policy_driven():
    f1, a1 = record_episodes("reacher", IMAGE, 2, 3, seed=1_000_000, policy="uniform")
    f2, a2 = record_episodes("reacher", IMAGE, 2, 3, seed=1_000_000, policy="uniform")
    f3, _ = record_episodes("reacher", IMAGE, 1, 3, seed=1_000_001, policy="uniform")
    assert f1.shape == (2, 4, IMAGE, IMAGE, 3) and a1.shape == (2, 3, 2)
    assert np.array_equal(f1, f2) and np.array_equal(a1, a2)
    assert np.array_equal(f1[1], f3[0])  # episode i is seed + i, whatever the batch
    assert np.all(np.abs(a1) <= 0.2) and len(np.unique(a1)) == a1.size  # uniform in the box
    assert not np.array_equal(f1[0, 0], f1[0, -1])  # the actions move the arm


def test_collection_policy_is_read_from_the_dataset_manifest(tmp_path):
    run = {"config": {"task": "reacher", "policy": "mixture", "mixture": {"uniform": 0.5, "ou": 0.5}, "hold": 2,
                      "scripted_noise": 0.3, "seed": 0}}
    (tmp_path / "manifest.json").write_text(json.dumps({"collect_runs": [run]}))
    pol = collection_policy(tmp_path)
    assert pol == {"policy": "mixture", "mixture": {"uniform": 0.5, "ou": 0.5}, "hold": 2, "scripted_noise": 0.3}
    _, acts = record_episodes("reacher", IMAGE, 2, 4, seed=1_000_000, **pol)
    assert np.array_equal(acts[:, 0], acts[:, 1]) and np.array_equal(acts[:, 2], acts[:, 3])  # hold=2
    assert not np.array_equal(acts[:, 1], acts[:, 2])
    with pytest.raises(FileNotFoundError, match="manifest"):
        collection_policy(tmp_path / "nope")


def test_eval_prediction_writes_table_json_plot(world_dir, tmp_path):
    out = tmp_path / "eval"
    rc = main([f"model={world_dir}", "episodes=3", "horizon=2", "sample_steps=1", "batch=2", f"out={out}"])
    assert rc == 0
    res = json.loads((out / "prediction.json").read_text())
    per = res["per_step"]
    assert res["context_frames"] == 2 and res["task"] == "reacher"
    for who in ("model", "copy_last", "mean_latent", "rae"):
        for m in ("psnr", "ssim", "latent_mse"):
            assert len(per[f"{who}_{m}"]) == 2 and all(np.isfinite(per[f"{who}_{m}"]))
    assert per["rae_latent_mse"] == [0.0, 0.0]  # the reference latents are the RAE's own
    assert per["mean_latent_psnr"][0] != per["copy_last_psnr"][0]
    assert all(np.isfinite(per["shuffled_latent_mse"])) and per["shuffled_latent_mse"] != per["model_latent_mse"]
    # copy-last PSNR recomputed independently from the same held-out episodes
    frames, _ = record_episodes("reacher", IMAGE, 3, 3, seed=1_000_000, policy="uniform")
    to_f = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    expect = [psnr(to_f(frames[:, 1]), to_f(frames[:, 2 + h]), reduction="none").mean().item() for h in range(2)]
    assert np.allclose(per["copy_last_psnr"], expect, rtol=1e-4)
    table = (out / "prediction.md").read_text()
    assert "| 1 |" in table and "| 2 |" in table and "PSNR copy-last" in table
    assert (out / "prediction.png").stat().st_size > 1000


def test_eval_prediction_jumps_step_h_from_h_actions(tmp_path, tmp_path_factory, monkeypatch):
    from worldmodel.world import LatentWorld
    jumper = build_tiny_world(tmp_path_factory.getbasetemp() / "tiny_worlds", max_jump=2)
    calls = []
    real = LatentWorld.jump
    monkeypatch.setattr(LatentWorld, "jump", lambda self, c, ca, a, **k: calls.append(a.shape[1]) or real(self, c, ca, a, **k))
    out = tmp_path / "eval"
    assert main([f"model={jumper}", "episodes=2", "horizon=2", "imagine=jump", "batch=2", f"out={out}"]) == 0
    assert calls == [1, 2, 1, 2]                              # true then shuffled actions, one jump per step
    per = json.loads((out / "prediction.json").read_text())["per_step"]
    assert all(np.isfinite(per["model_latent_mse"])) and all(np.isfinite(per["shuffled_latent_mse"]))
    with pytest.raises(ValueError, match="jumps of 1..2"):
        main([f"model={jumper}", "episodes=1", "horizon=3", "imagine=jump", f"out={out}"])


def test_eval_prediction_config_errors(tmp_path):
    with pytest.raises(ValueError, match="model is required"):
        main([f"out={tmp_path}"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        main([f"model={tmp_path / 'nope'}", f"out={tmp_path}"])
    with pytest.raises(ConfigError, match="horizonn"):
        main(["horizonn=3"])
