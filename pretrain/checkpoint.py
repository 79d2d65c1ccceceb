"""Atomic, resumable training checkpoints.

Layout of one checkpoint, `run_dir/checkpoints/step-00000100/`:
    *.distcp, .metadata   model + optimiser (+ EMA) via torch.distributed.checkpoint (DCP):
                          sharded under FSDP, reshardable (a 1-process checkpoint resumes on N)
    train_rank<r>.pt      per-rank state: step, scheduler, data position, RNG states
                          (torch CPU + CUDA, numpy, python)

Atomicity: everything is written into `.tmp-step-XXXXXXXX/` and renamed into place by rank
0 after a barrier; a killed writer leaves only a dot-folder that `latest()` ignores and the
next save removes. The newest `keep_last` checkpoints are kept.
"""
from __future__ import annotations

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

STEP_RE = re.compile(r"^step-(\d{8})$")


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


def save(root: str | Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
         train_state: dict[str, Any], ema: dict[str, torch.Tensor] | None = None,
         keep_last: int = 2) -> Path:
    """Write checkpoint `step` atomically (collective: every rank calls it)."""
    root = Path(root)
    rank = dist.get_rank() if dist.is_initialized() else 0
    tmp, final = root / f".tmp-step-{step:08d}", step_dir(root, step)
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    barrier()
    _dcp(dcp.save, _app_state(model, optimizer, ema), tmp)
    torch.save({**train_state, "rng": rng_state()}, tmp / f"train_rank{rank}.pt")
    barrier()
    if rank == 0:
        if final.exists():  # re-saving a step (e.g. after a resume): replace it
            shutil.rmtree(final)
        tmp.rename(final)
        for _, old in list_checkpoints(root)[:-max(1, keep_last)]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def load(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None,
         ema: dict[str, torch.Tensor] | None = None, restore_rng: bool = True) -> dict[str, Any]:
    """Load a checkpoint into model / optimizer / ema in place; returns this rank's train state.

    A rank without its own train file (resuming on more ranks than saved) takes rank 0's.
    """
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_state_dict
    path = Path(path)
    if not (path / ".metadata").is_file():
        raise FileNotFoundError(f"{str(path)!r} is not a complete checkpoint (no .metadata); "
                                f"expected a folder written by pretrain.checkpoint.save")
    state = _app_state(model, optimizer, ema)
    _dcp(dcp.load, state, path)
    if optimizer is None:
        set_model_state_dict(model, state["model"])
    else:
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    if ema is not None:  # loaded in place by dcp.load; the tensors are the EMA's own
        for k, v in state["ema"].items():
            if v is not ema[k]:
                ema[k].copy_(v)
    rank = dist.get_rank() if dist.is_initialized() else 0
    f = path / f"train_rank{rank}.pt"
    if not f.is_file():
        f = path / "train_rank0.pt"
    train_state = torch.load(f, map_location="cpu", weights_only=False)  # our own file, holds numpy RNG state
    if restore_rng:
        set_rng_state(train_state["rng"])
    return train_state
