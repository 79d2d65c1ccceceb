"""Atomic, resumable training checkpoints that run no code when loaded.

Layout of one checkpoint, `run_dir/checkpoints/step-00000100/`:
    state.safetensors        one process: model + optimiser (+ EMA), pickle-free (safe_state)
    *.distcp, .metadata      several processes (FSDP): the same via torch.distributed.checkpoint
                             (DCP), sharded and reshardable (an N-process checkpoint resumes on M)
    train_rank<r>.safetensors  per-rank state, pickle-free: step, scheduler, data position, RNG
                             states (torch CPU + CUDA, numpy, python)
    manifest.json            format ("single" or "dcp") and the sha256 of every file above

Trust: loading reads manifest.json (JSON) and checks every file against it before reading
any. Single-process checkpoints contain no pickle at all. DCP's `.metadata` is a pickle
(torch's format): the manifest guarantees it is the file the trainer wrote, not that whoever
handed you the folder did not rewrite both, so resume sharded checkpoints only from run
folders you trust (README, "Resuming and trust"). Folders written before this format
(train_rank<r>.pt, no manifest) are refused.

Atomicity: everything is written into `.tmp-step-XXXXXXXX/` and renamed into place by rank
0 after a barrier, the manifest last; a killed writer leaves only a dot-folder that
`latest()` ignores and the next save removes. The newest `keep_last` checkpoints are kept.
"""
from __future__ import annotations

import json
import random
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn as nn

from pretrain.distributed import barrier
from pretrain.safe_state import load_state, save_state
from worldmodel.errors import ModelFolderError
from worldmodel.hub import sha256_file

STEP_RE = re.compile(r"^step-(\d{8})$")
MANIFEST = "manifest.json"
STATE_FILE = "state.safetensors"   # single-process model + optimiser (+ EMA)
FORMATS = ("single", "dcp")


@dataclass
class CheckpointConfig:
    every: int = 100              # optimizer steps between checkpoints; 0 = only at the end; -1 = never
    keep_last: int = 2            # newest checkpoints kept on disk (older ones are deleted)


# ---------------------------------------------------------------- RNG state
def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- paths
def step_dir(root: str | Path, step: int) -> Path:
    return Path(root) / f"step-{step:08d}"


def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    root = Path(root)
    if not root.is_dir():
        return []
    out = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_RE.match(p.name))]
    return sorted(out)


def latest(root: str | Path) -> Path | None:
    ckpts = list_checkpoints(root)
    return ckpts[-1][1] if ckpts else None


# ---------------------------------------------------------------- model / optimiser state
def _app_state(model: nn.Module, optimizer: torch.optim.Optimizer | None,
               ema: dict[str, torch.Tensor] | None) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_state_dict
    if optimizer is None:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict
        state = {"model": get_model_state_dict(model)}
    else:
        msd, osd = get_state_dict(model, optimizer)
        state = {"model": msd, "optim": osd}
    if ema is not None:
        state["ema"] = ema
    return state


def _dcp(fn, state: dict, path: Path) -> None:
    # DCP warns that it runs "in a single process" when no process group exists: that is intended.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
        warnings.filterwarnings("ignore", message=".*assuming the intent is to.*")
        fn(state, checkpoint_id=str(path))


def _rank_and_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def train_file(rank: int) -> str:
    return f"train_rank{rank}.safetensors"


def save(root: str | Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
         train_state: dict[str, Any], ema: dict[str, torch.Tensor] | None = None,
         keep_last: int = 2, sharded: bool | None = None) -> Path:
    """Write checkpoint `step` atomically (collective: every rank calls it).

    `sharded`: write model/optimiser with DCP (default: only when there are several processes).
    """
    root = Path(root)
    rank, world = _rank_and_world()
    sharded = world > 1 if sharded is None else sharded
    if world > 1 and not sharded:
        raise ValueError(f"sharded=False needs one process, this run has {world}")
    tmp, final = root / f".tmp-step-{step:08d}", step_dir(root, step)
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    barrier()
    if sharded:
        _dcp(dcp.save, _app_state(model, optimizer, ema), tmp)
    else:
        save_state(tmp / STATE_FILE, _app_state(model, optimizer, ema))
    save_state(tmp / train_file(rank), {**train_state, "rng": rng_state()})
    barrier()
    if rank == 0:
        _write_manifest(tmp, "dcp" if sharded else "single")
        if final.exists():  # re-saving a step (e.g. after a resume): replace it
            shutil.rmtree(final)
        tmp.rename(final)
        for _, old in list_checkpoints(root)[:-max(1, keep_last)]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


# ---------------------------------------------------------------- manifest
def _write_manifest(folder: Path, fmt: str) -> None:
    files = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    (folder / MANIFEST).write_text(json.dumps({"format": fmt, "files": files}, indent=1))


def verify(path: str | Path) -> dict[str, Any]:
    """The checkpoint's manifest, after checking every file it lists; raises naming a bad file."""
    path = Path(path)
    mf = path / MANIFEST
    if not mf.is_file():
        if (path / ".metadata").is_file() or list(path.glob("train_rank*.pt")):
            raise ModelFolderError(
                f"{str(path)!r} was written before checkpoints were pickle-free (train_rank<r>.pt, no "
                f"{MANIFEST}); loading it could run code from the folder, so it is refused. Start a new "
                f"run, or resume it with the version that wrote it if you trust the folder")
        raise ModelFolderError(f"{str(path)!r} is not a complete checkpoint (no {MANIFEST}); expected a "
                               f"folder written by pretrain.checkpoint.save")
    try:
        manifest = json.loads(mf.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelFolderError(f"{str(mf)!r} is not valid JSON ({e})") from e
    if not (isinstance(manifest, dict) and manifest.get("format") in FORMATS
            and isinstance(manifest.get("files"), dict)):
        raise ModelFolderError(f"{str(mf)!r} is not a checkpoint manifest: expected {{'format': one of "
                               f"{FORMATS}, 'files': {{name: sha256}}}}")
    files = manifest["files"]
    for name, digest in files.items():
        f = path / name
        if Path(name).name != name or name in (".", ".."):  # a plain file of this folder
            raise ModelFolderError(f"{str(mf)!r} lists {name!r}, which is not a file of the checkpoint")
        if not f.is_file():
            raise ModelFolderError(f"{str(f)!r} is missing (listed in {MANIFEST})")
        if sha256_file(f) != digest:
            raise ModelFolderError(f"{str(f)!r} fails its checksum in {MANIFEST} (damaged or replaced "
                                   f"since the save); refusing to load the checkpoint")
    return manifest


def load(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None,
         ema: dict[str, torch.Tensor] | None = None, restore_rng: bool = True) -> dict[str, Any]:
    """Load a checkpoint into model / optimizer / ema in place; returns this rank's train state.

    Every file is verified against the manifest first. A rank without its own train file
    (resuming on more ranks than saved) takes rank 0's.
    """
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_state_dict)
    path = Path(path)
    manifest = verify(path)
    rank, world = _rank_and_world()
    if manifest["format"] == "dcp":
        if ".metadata" not in manifest["files"]:  # DCP unpickles it: only ever a verified one
            raise ModelFolderError(f"{str(path / MANIFEST)!r} does not list .metadata; incomplete checkpoint")
        state = _app_state(model, optimizer, ema)
        _dcp(dcp.load, state, path)  # in place
    else:
        state = _read(path, STATE_FILE, manifest)
        if ema is not None and "ema" not in state:
            raise ModelFolderError(f"{str(path / STATE_FILE)!r} holds no EMA weights, but this run keeps an EMA")
    # a single-process checkpoint holds full tensors: with several processes, shard them here
    options = StateDictOptions(full_state_dict=True) if manifest["format"] == "single" and world > 1 else None
    if optimizer is None:
        set_model_state_dict(model, state["model"], options=options)
    else:
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"],
                       options=options)
    if ema is not None:
        for k, v in state["ema"].items():
            if v is not ema[k]:  # dcp.load fills the EMA's own tensors in place
                _copy_into(ema[k], v)
    name = train_file(rank) if train_file(rank) in manifest["files"] else train_file(0)
    train_state = _read(path, name, manifest)
    if restore_rng:
        set_rng_state(train_state["rng"])
    return train_state


def _read(path: Path, name: str, manifest: dict[str, Any]) -> Any:
    if name not in manifest["files"]:  # only files the manifest vouches for are read
        raise ModelFolderError(f"{str(path / name)!r} is not listed in {MANIFEST}; incomplete checkpoint")
    try:
        return load_state(path / name)
    except ValueError as e:
        raise ModelFolderError(str(e)) from e


def _copy_into(dst: torch.Tensor, src: torch.Tensor) -> None:
    """Copy a full tensor into `dst`, which may be an FSDP-sharded DTensor."""
    from torch.distributed.tensor import DTensor, distribute_tensor
    if isinstance(dst, DTensor) and not isinstance(src, DTensor):
        src = distribute_tensor(src.to(dst.device), dst.device_mesh, dst.placements)
    dst.copy_(src)
