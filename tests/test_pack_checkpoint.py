"""Packing a model export for shipping keeps it loadable and (nearly) the same model."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lw.pack_checkpoint import pack
from tests.test_world import build_tiny_world
from worldmodel.world import LatentWorld


def test_pack_halves_matrices_and_loads_equivalently(tmp_path):
    src = build_tiny_world(tmp_path / "src")
    (src.parent / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    dst = pack(src, tmp_path / "packed")
    sd = load_file(str(dst / "model.safetensors"))
    assert any(v.dtype == torch.float16 for v in sd.values())
    assert all(v.dtype != torch.float16 for v in sd.values() if v.dim() < 2)
    assert (dst / "training_metrics.jsonl").is_file()
    a, b = LatentWorld.from_pretrained(src), LatentWorld.from_pretrained(dst)
    frames = np.random.default_rng(0).integers(0, 256, (2, a.image_size, a.image_size, 3), dtype=np.uint8)
    za, zb = a.encode_frames(frames), b.encode_frames(frames)
    assert torch.allclose(za, zb, atol=2e-2 * float(za.abs().max()))
    with pytest.raises(FileNotFoundError, match="lw pretrain"):
        pack(tmp_path / "nope", tmp_path / "x")


def test_packed_folder_is_accepted_by_every_tool(tmp_path):
    """Checksums and the RAE fingerprint describe the packed (float16) weights, not the source's."""
    from pretrain.data.latent_cache import EncodeDatasetConfig, encode_dataset, verify_latents
    from tests.test_train import make_world
    from worldmodel import hub
    from worldmodel.rae import RAE

    dst = pack(build_tiny_world(tmp_path / "src"), tmp_path / "packed")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # checksums recorded and matching
        LatentWorld.from_pretrained(dst)
    meta = hub.read_config(dst / "rae")
    assert meta["fingerprint"] == RAE.from_pretrained(dst / "rae").fingerprint()
    _, data = make_world(tmp_path / "world")  # a dataset of 16-px frames, as the tiny world's RAE
    encode_dataset(EncodeDatasetConfig(data=str(data), rae=str(dst / "rae"), device="cpu", progress=False))
    assert verify_latents(data, dst / "rae") == meta["encoder_id"]


def test_pack_ships_the_jepa_folder_for_the_jepa_row(tmp_path):
    from worldmodel.jepa import JEPA, JEPAConfig, JEPAWorld

    src = build_tiny_world(tmp_path / "src")
    jepa = JEPA(JEPAConfig(image_size=16, input_size=16, channels=(8, 16), hidden=16, latent_dim=4, action_scale=0.2))
    jepa.save_pretrained(tmp_path / "jepa", extra={"task": "reacher"})
    dst = pack(src, tmp_path / "packed", tmp_path / "jepa")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # checksums of the packed weights
        world = JEPAWorld.from_pretrained(dst / "jepa")
    assert world.extras["task"] == "reacher"
    assert load_file(str(dst / "jepa/model.safetensors"))["predictor.net.0.weight"].dtype == torch.float16
    x = torch.rand(3, 3, 16, 16)
    torch.testing.assert_close(world.model.encoder(x), jepa.eval().encoder(x), atol=1e-2, rtol=1e-2)


def test_pack_thins_a_long_metrics_log_but_keeps_every_evaluation(tmp_path):
    import json

    from lw.pack_checkpoint import _thin_metrics

    rows = [{"step": s, "loss": 1.0 / s} for s in range(1, 1001)]
    for r in rows[99::100]:
        r["val/loss"] = 0.5                                        # held-out rows at steps 100, 200, ...
    src = tmp_path / "metrics.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _thin_metrics(src, tmp_path / "out.jsonl", max_rows=250)
    kept = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in kept]
    assert steps == sorted(steps) and steps[0] == 1 and steps[-1] == 1000
    assert 250 <= len(kept) <= 265                                 # every 4th row, plus the evaluations
    assert [r["step"] for r in kept if "val/loss" in r] == list(range(100, 1001, 100))
    _thin_metrics(src, tmp_path / "all.jsonl", max_rows=5000)      # a short log is copied whole
    assert (tmp_path / "all.jsonl").read_text() == src.read_text()
