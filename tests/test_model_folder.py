"""A damaged or incomplete model folder is refused, naming the file (and the key), never
loaded silently: weights carry a sha256 in config.json, saved configs must be complete."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

from tests.test_world import build_tiny_world
from worldmodel import hub
from worldmodel.config import ADDED_KEYS, ModelConfig
from worldmodel.errors import ModelFolderError
from worldmodel.world import LatentWorld


@pytest.fixture
def folder(tmp_path) -> Path:
    """A fresh copy of a tiny world-model folder the test may damage."""
    src = build_tiny_world(tmp_path / "built")
    return Path(shutil.copytree(src, tmp_path / "world"))


def flip_bytes(path: Path, n: int = 4) -> None:
    data = bytearray(path.read_bytes())
    for i in range(1, n + 1):
        data[-i] ^= 0xFF  # the last bytes are tensor data: the file still parses as safetensors
    path.write_bytes(bytes(data))


def edit_config(path: Path, fn) -> None:
    meta = json.loads((path / hub.CONFIG_NAME).read_text())
    fn(meta)
    (path / hub.CONFIG_NAME).write_text(json.dumps(meta))


@pytest.mark.parametrize("sub", ["", "rae"])
def test_flipped_weight_bytes_are_refused_naming_the_file(folder, sub):
    weights = folder / sub / hub.WEIGHTS_NAME
    flip_bytes(weights)
    with pytest.raises(ModelFolderError, match=f"{weights}.*fails its checksum"):
        LatentWorld.from_pretrained(folder)


@pytest.mark.parametrize("key", ["action_scale", "d_model", "action_dim", "moe.top_k"])
def test_missing_config_key_is_an_error_naming_key_and_file(folder, key):
    def drop(meta):
        *parents, leaf = key.split(".")
        node = meta["config"]
        for p in parents:
            node = node[p]
        del node[leaf]
    edit_config(folder, drop)
    with pytest.raises(ModelFolderError, match=rf"{folder / hub.CONFIG_NAME}.*'config\.{key}'"):
        LatentWorld.from_pretrained(folder)


def test_missing_rae_config_key_is_an_error(folder):
    edit_config(folder / "rae", lambda meta: meta["config"].pop("image_size"))
    with pytest.raises(ModelFolderError, match=rf"{folder / 'rae' / hub.CONFIG_NAME}.*'config\.image_size'"):
        LatentWorld.from_pretrained(folder)


def test_added_keys_load_as_older_folders_meant():
    d = ModelConfig().to_dict()
    for key in ADDED_KEYS:
        d.pop(key)
    cfg = ModelConfig.from_dict(d)
    assert {k: getattr(cfg, k) for k in ADDED_KEYS} == ADDED_KEYS


@pytest.mark.parametrize("sub", ["", "rae"])
def test_invalid_config_json_names_the_file(folder, sub):
    cfg = folder / sub / hub.CONFIG_NAME
    cfg.write_text(cfg.read_text()[:-20])  # truncated
    with pytest.raises(ModelFolderError, match=f"{cfg}.*is not valid JSON"):
        LatentWorld.from_pretrained(folder)


def test_folder_without_checksums_loads_with_a_warning(folder):
    for sub in ("", "rae"):
        edit_config(folder / sub, lambda meta: meta.pop(hub.CHECKSUMS_KEY))
    with pytest.warns(UserWarning, match="records no checksum"):
        LatentWorld.from_pretrained(folder)


def test_intact_folder_loads_without_warnings(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LatentWorld.from_pretrained(folder)
