"""Resuming runs no code from the run folder: train state and single-process checkpoints are
pickle-free (safetensors + JSON), and every file is checked against the manifest the trainer
wrote before anything is read (DCP's pickled .metadata included)."""
from __future__ import annotations

import json
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from pretrain import checkpoint as ckpt
from pretrain.safe_state import load_state, save_state
from worldmodel.errors import ModelFolderError
from worldmodel.sequence import Action, Document, Frame, Text


class Payload:
    """Unpickling this creates `marker`: the stand-in for arbitrary code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def plant(path: Path, marker: Path) -> None:
    """Replace `path` with a pickle that runs the payload (as torch.load or pickle.load would read)."""
    if path.name == ".metadata":
        path.write_bytes(pickle.dumps(Payload(marker)))
    else:
        torch.save({"step": Payload(marker)}, path)


def tiny_setup(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95))
    ema = {n: p.detach().clone() for n, p in model.named_parameters()}
    return model, opt, ema


def train_step(model, opt) -> None:
    x = torch.linspace(-1, 1, 12).reshape(3, 4)  # independent of the RNG state load restores
    model(x).square().mean().backward()
    opt.step()
    opt.zero_grad()


def train_state() -> dict:
    pending = Document([Text([1, 2, 3]), Frame(torch.randn(4, 2), loss=False), Action(torch.randn(2))], 3)
    return {"step": 7, "tokens_seen": 2**70, "scheduler": {"base_lrs": [0.1, 1e-3], "lr_lambdas": [None]},
            "data": {"rng": np.random.default_rng(1).bit_generator.state, "tokens": {0: 5, 3: 9},
                     "pending": pending, "rows": np.int64(4), "text": None}}


def saved(tmp_path: Path, sharded: bool) -> Path:
    model, opt, ema = tiny_setup()
    train_step(model, opt)
    np.random.seed(3)
    random.seed(3)
    return ckpt.save(tmp_path / "ckpts", 7, model, opt, train_state(), ema=ema, sharded=sharded)


def resume(path: Path) -> dict:
    model, opt, ema = tiny_setup(seed=1)
    return ckpt.load(path, model, opt, ema=ema)


def test_safe_state_round_trips_exactly(tmp_path):
    state = {**train_state(), "rng": ckpt.rng_state(), "weird": {"__tensor__": (1, "x")}, 1.5: [float("inf")]}
    save_state(tmp_path / "s.safetensors", state)
    back = load_state(tmp_path / "s.safetensors")
    assert back["tokens_seen"] == 2**70 and back["data"]["tokens"] == {0: 5, 3: 9}
    assert back["data"]["rows"] == 4 and type(back["data"]["rows"]) is np.int64
    assert back["weird"] == {"__tensor__": (1, "x")} and back[1.5] == [float("inf")]
    assert back["data"]["rng"] == train_state()["data"]["rng"]
    doc = back["data"]["pending"]
    assert isinstance(doc, Document) and doc.segments[0] == Text([1, 2, 3]) and doc.source == 3
    assert torch.equal(doc.segments[1].latents, state["data"]["pending"].segments[1].latents)
    np_state, py_state = back["rng"]["numpy"], back["rng"]["python"]
    assert np_state[0] == "MT19937" and np.array_equal(np_state[1], np.random.get_state()[1])
    assert py_state == random.getstate()  # tuples stay tuples (random.setstate needs them)
    with pytest.raises(TypeError, match=r"state at state\.x: a .*Payload cannot be stored without pickle"):
        save_state(tmp_path / "bad.safetensors", {"x": Payload(tmp_path / "m")})


@pytest.mark.parametrize("sharded", [False, True])
def test_resume_restores_model_optimizer_ema_rng_and_state(tmp_path, sharded):
    path = saved(tmp_path, sharded)
    assert json.loads((path / ckpt.MANIFEST).read_text())["format"] == ("dcp" if sharded else "single")
    assert not list(path.glob("*.pt")) and (path / ckpt.STATE_FILE).is_file() != sharded
    want_np, want_py = np.random.get_state(), random.getstate()
    ref_model, ref_opt, ref_ema = tiny_setup()
    train_step(ref_model, ref_opt)
    np.random.seed(99)
    random.seed(99)
    model, opt, ema = tiny_setup(seed=1)
    state = ckpt.load(path, model, opt, ema=ema)
    assert state["step"] == 7 and state["data"]["tokens"] == {0: 5, 3: 9}
    assert np.array_equal(np.random.get_state()[1], want_np[1]) and random.getstate() == want_py
    for a, b in zip(ref_model.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    assert all(torch.equal(ref_ema[k], ema[k]) for k in ema)
    train_step(ref_model, ref_opt)
    train_step(model, opt)  # same Adam moments and step count -> the same update
    assert all(torch.equal(a, b) for a, b in zip(ref_model.parameters(), model.parameters()))


@pytest.mark.parametrize("sharded", [False, True])
def test_payload_in_any_file_resume_reads_does_not_run(tmp_path, sharded):
    marker = tmp_path / "PWNED"
    src = saved(tmp_path, sharded)
    names = sorted(p.name for p in src.iterdir())
    assert ckpt.MANIFEST in names and len(names) >= 3
    for name in names:
        path = Path(shutil.copytree(src, tmp_path / f"copy-{name}"))
        if name == ckpt.MANIFEST:
            plant(path / name, marker)
            match = "not valid JSON"
        else:
            plant(path / name, marker)
            match = f"{path / name}' fails its checksum"
        with pytest.raises(ModelFolderError, match=match):
            resume(path)
        assert not marker.exists(), name


def test_single_process_checkpoint_is_pickle_free_even_with_a_rewritten_manifest(tmp_path):
    marker = tmp_path / "PWNED"
    path = saved(tmp_path, sharded=False)
    for name in (ckpt.STATE_FILE, "train_rank0.safetensors"):
        plant(path / name, marker)
    ckpt._write_manifest(path, "single")  # whoever crafted the folder also re-hashed it
    with pytest.raises(ModelFolderError, match="not a readable state file"):
        resume(path)
    assert not marker.exists()


def test_legacy_pickle_files_are_never_read(tmp_path):
    marker = tmp_path / "PWNED"
    path = saved(tmp_path, sharded=False)
    plant(path / "train_rank0.pt", marker)  # the files older versions read, dropped beside ours
    plant(path / ".metadata", marker)
    assert resume(path)["step"] == 7
    legacy = tmp_path / "legacy"  # a folder in the old layout: refused, not unpickled
    legacy.mkdir()
    plant(legacy / "train_rank0.pt", marker)
    plant(legacy / ".metadata", marker)
    with pytest.raises(ModelFolderError, match="written before checkpoints were pickle-free"):
        resume(legacy)
    assert not marker.exists()


def test_lw_pretrain_resume_does_not_run_a_planted_payload(tmp_path):
    from lw.pretrain import main
    from tests.test_train import tiny_overrides

    marker = tmp_path / "PWNED"
    over = tiny_overrides(tmp_path, "run", steps=4, **{"checkpoint.every": 2, "eval_rows": 0})
    assert main(over + ["max_steps_this_run=2"]) == 0
    last = ckpt.latest(tmp_path / "run" / "checkpoints")
    plant(last / "train_rank0.pt", marker)  # what resume read before it was pickle-free
    plant(last / ".metadata", marker)
    assert main(over + ["resume=true"]) == 0
    assert not marker.exists()
    last = ckpt.latest(tmp_path / "run" / "checkpoints")
    plant(last / "train_rank0.safetensors", marker)  # what it reads now: refused by the manifest
    with pytest.raises(ModelFolderError, match="train_rank0.safetensors' fails its checksum"):
        main(over + ["resume=true", "steps=6"])
    assert not marker.exists()
