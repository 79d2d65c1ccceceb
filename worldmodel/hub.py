"""save_pretrained / from_pretrained: a folder with `config.json` + `model.safetensors`.

Writes are atomic (temp file + rename) so a killed process never leaves a half
written model that loads. Loading checks the folder and names what is missing.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_pretrained(path: str | Path, kind: str, config: dict[str, Any],
                    state_dict: dict[str, torch.Tensor], extra: dict[str, Any] | None = None) -> Path:
    """Save a model folder. `kind` names the class so loading can check it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    fd, tmp = tempfile.mkstemp(dir=path, prefix=f".{WEIGHTS_NAME}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"kind": kind})
        os.replace(tmp, path / WEIGHTS_NAME)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    meta = {"kind": kind, "config": config, **(extra or {})}
    atomic_write_bytes(path / CONFIG_NAME, json.dumps(meta, indent=2).encode())
    return path


def read_config(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Return the full config.json dict of a model folder, checking it exists and its kind."""
    path = Path(path)
    cfg_file = path / CONFIG_NAME
    if not path.is_dir():
        raise FileNotFoundError(f"model folder {str(path)!r} does not exist; expected a folder "
                                f"with {CONFIG_NAME} and {WEIGHTS_NAME} written by save_pretrained")
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{str(cfg_file)!r} is missing; {str(path)!r} is not a save_pretrained folder")
    meta = json.loads(cfg_file.read_text())
    if kind is not None and meta.get("kind") != kind:
        raise ValueError(f"{str(path)!r} holds a {meta.get('kind')!r} model, expected {kind!r}")
    return meta


def load_state_dict(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    weights = Path(path) / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{str(weights)!r} is missing; expected weights written by save_pretrained")
    try:
        return load_file(str(weights), device=str(device))
    except Exception as e:
        raise ValueError(f"{str(weights)!r} is not a readable safetensors file (corrupt or truncated?): {e}") from e
