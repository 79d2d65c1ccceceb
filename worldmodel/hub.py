"""save_pretrained / from_pretrained: a folder with `config.json` + `model.safetensors`.

Writes are atomic (temp file + rename) so a killed process never leaves a half
written model that loads. config.json records the sha256 of the weights file
(`"sha256": {"model.safetensors": ...}`); loading verifies it, so a damaged or
swapped weights file is refused, naming it. Folders written before checksums
existed load with a warning. Loading checks the folder and names what is missing.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .errors import ModelFolderError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CHECKSUMS_KEY = "sha256"  # config.json entry: {weights file name: sha256 hex}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


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
        digest = sha256_file(tmp)
        os.replace(tmp, path / WEIGHTS_NAME)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    # written after the weights: a kill in between leaves a checksum that refuses the new weights
    meta = {"kind": kind, "config": config, **(extra or {}), CHECKSUMS_KEY: {WEIGHTS_NAME: digest}}
    atomic_write_bytes(path / CONFIG_NAME, json.dumps(meta, indent=2).encode())
    return path


def read_config(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """The config.json dict of a model folder (without its checksums), checking it exists and its kind."""
    meta = _read_meta(path, kind)
    meta.pop(CHECKSUMS_KEY, None)  # for verify_weights only; callers pass the rest on as extras
    return meta


def _read_meta(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    path = Path(path)
    cfg_file = path / CONFIG_NAME
    if not path.is_dir():
        raise FileNotFoundError(f"model folder {str(path)!r} does not exist; expected a folder "
                                f"with {CONFIG_NAME} and {WEIGHTS_NAME} written by save_pretrained")
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{str(cfg_file)!r} is missing; {str(path)!r} is not a save_pretrained folder")
    try:
        meta = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFolderError(f"{str(cfg_file)!r} is not valid JSON ({e}); the model folder is damaged, "
                               f"re-export or re-download it") from e
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise ModelFolderError(f"{str(cfg_file)!r} has no 'config' object; expected a config.json written "
                               f"by save_pretrained")
    if kind is not None and meta.get("kind") != kind:
        raise ModelFolderError(f"{str(path)!r} holds a {meta.get('kind')!r} model, expected {kind!r}")
    return meta


def verify_weights(path: str | Path) -> None:
    """Check the weights file against the sha256 that config.json records for it."""
    path = Path(path)
    weights, sums = path / WEIGHTS_NAME, _read_meta(path).get(CHECKSUMS_KEY)
    if sums is None:  # saved before checksums existed: loadable, but nothing can vouch for it
        warnings.warn(f"{str(path / CONFIG_NAME)!r} records no checksum, so {str(weights)!r} cannot be "
                      f"verified (folder saved before checksums existed); re-save it to add them",
                      stacklevel=3)
        return
    if not isinstance(sums, dict) or not isinstance(sums.get(WEIGHTS_NAME), str):
        raise ModelFolderError(f"{str(path / CONFIG_NAME)!r}: '{CHECKSUMS_KEY}' has no entry for "
                               f"{WEIGHTS_NAME!r}")
    got = sha256_file(weights)
    if got != sums[WEIGHTS_NAME]:
        raise ModelFolderError(f"{str(weights)!r} fails its checksum: sha256 {got[:16]}..., {CONFIG_NAME} "
                               f"records {sums[WEIGHTS_NAME][:16]}... (damaged or modified file); re-export or "
                               f"re-download the model folder")


def load_state_dict(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The verified weights of a save_pretrained folder (see verify_weights)."""
    weights = Path(path) / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{str(weights)!r} is missing; expected weights written by save_pretrained")
    verify_weights(path)
    try:
        return load_file(str(weights), device=str(device))
    except Exception as e:
        raise ModelFolderError(f"{str(weights)!r} is not a readable safetensors file (corrupt or truncated?): "
                               f"{e}") from e
