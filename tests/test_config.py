"""Strict Hydra configs over dataclasses: unknown keys and wrong types fail with their names."""
from dataclasses import dataclass, field

import pytest

from lw import config as config_mod
from lw.config import ConfigError, compose
from pretrain.metrics import save_resolved


@dataclass
class _Inner:
    lr: float = 1e-3


@dataclass
class _Schema:
    name: str = "x"
    steps: int = 10
    optim: _Inner = field(default_factory=_Inner)


@pytest.fixture()
def conf_dir(tmp_path, monkeypatch):
    (tmp_path / "prog.yaml").write_text("name: hello\nsteps: 3\n")
    monkeypatch.setattr(config_mod, "CONF_DIR", tmp_path)
    return tmp_path


def test_compose_merges_yaml_and_overrides(conf_dir):
    cfg = compose(_Schema, "prog", ["steps=7", "optim.lr=0.5"])
    assert isinstance(cfg, _Schema) and cfg.name == "hello" and cfg.steps == 7 and cfg.optim.lr == 0.5


def test_unknown_key_names_it(conf_dir):
    with pytest.raises(ConfigError, match="stepz"):
        compose(_Schema, "prog", ["+stepz=1"])
    (conf_dir / "bad.yaml").write_text("name: a\nbogus_key: 1\n")
    with pytest.raises(ConfigError, match="bogus_key"):
        compose(_Schema, "bad", [])


def test_wrong_type_fails(conf_dir):
    with pytest.raises(ConfigError, match="steps"):
        compose(_Schema, "prog", ["steps=many"])


def test_save_resolved(conf_dir, tmp_path):
    path = save_resolved(compose(_Schema, "prog", []), tmp_path / "run")
    assert "steps: 3" in path.read_text() and (tmp_path / "run" / "config.json").is_file()


def test_group_choice_goes_to_hydra(conf_dir):
    (conf_dir / "optim").mkdir()
    (conf_dir / "optim" / "fast.yaml").write_text("lr: 0.1\n")
    (conf_dir / "prog2.yaml").write_text("defaults:\n  - optim: fast\n  - _self_\nsteps: 2\n")
    (conf_dir / "optim" / "slow.yaml").write_text("lr: 0.0001\n")
    assert compose(_Schema, "prog2", []).optim.lr == 0.1
    assert compose(_Schema, "prog2", ["optim=slow"]).optim.lr == 0.0001
    assert compose(_Schema, "prog2", ["optim=slow", "optim.lr=0.3"]).optim.lr == 0.3
    with pytest.raises(ConfigError, match="nosuch"):
        compose(_Schema, "prog2", ["optim=nosuch"])
