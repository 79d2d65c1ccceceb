"""Typed, strict Hydra configs.

Every program has a dataclass schema. `compose` reads `pretrain/conf/<name>.yaml`
(with its defaults list / config groups), applies CLI overrides, and merges the
result into the schema in struct mode: an unknown key fails with its name, a value
of the wrong type fails with the field. The result is a plain dataclass instance.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf

from worldmodel.errors import ConfigError  # noqa: F401  (re-exported: `from pretrain.config import ConfigError`)

CONF_DIR = Path(__file__).parent / "conf"
T = TypeVar("T")


def _plain_fields(schema: type | None) -> set[str]:
    """Schema fields holding a plain value (not a nested dataclass): never config groups."""
    if schema is None or not dataclasses.is_dataclass(schema):
        return set()
    out = set()
    for f in dataclasses.fields(schema):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if not dataclasses.is_dataclass(default):
            out.add(f.name)
    return out


def _split_overrides(overrides: list[str], schema: type | None = None) -> tuple[list[str], list[str]]:
    """Config-group choices (`model=small`, a folder in conf/) go to Hydra; values go to the schema.

    A key that is a plain-valued field of `schema` is a value even when conf/ has a group
    folder of that name (e.g. `lw eval-prediction model=<folder>` vs `lw pretrain model=tiny`).
    """
    groups, values = [], []
    plain = _plain_fields(schema)
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"override {o!r} is not of the form key=value")
        key = o.split("=", 1)[0].lstrip("+~")
        is_group = (CONF_DIR / key).is_dir() and key not in plain
        (groups if is_group else values).append(o.lstrip("+"))
    return groups, values


def compose(schema: type[T], name: str, overrides: list[str] | None = None) -> T:
    """Load config `name` from pretrain/conf, apply `overrides`, validate against `schema`.

    Group choices (e.g. `experiment=tiny_cpu`) are resolved by Hydra's defaults list;
    value overrides (`optim.lr=1e-3`) are merged into the schema, so every schema field can
    be overridden even when no YAML mentions it, and a misspelt key fails with its name.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    groups, values = _split_overrides(list(overrides or []), schema)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            raw = hydra_compose(config_name=name, overrides=groups)
    except Exception as e:  # hydra's own errors already name the bad config or choice
        raise ConfigError(f"bad config or override for '{name}': {e}") from e
    finally:
        GlobalHydra.instance().clear()
    base = OmegaConf.structured(schema)
    OmegaConf.set_struct(base, True)
    try:
        merged = OmegaConf.merge(base, raw, OmegaConf.from_dotlist(values))
    except ConfigKeyError as e:
        raise ConfigError(f"unknown config key for '{name}': {e.full_key!s} "
                          f"(valid top-level keys: {', '.join(f.name for f in dataclasses.fields(schema))})") from e
    except OmegaConfBaseException as e:
        raise ConfigError(f"invalid config for '{name}': {e}") from e
    try:
        return OmegaConf.to_object(merged)
    except ValueError as e:  # a schema's __post_init__ rejected a value; its message names the key
        raise ConfigError(f"invalid config for '{name}': {e}") from e


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)


def save_resolved(cfg: Any, run_dir: str | Path) -> Path:
    """Write the resolved config as YAML (and JSON) into the run folder."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    d = to_dict(cfg)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(d)))
    (run_dir / "config.json").write_text(json.dumps(d, indent=2))
    return run_dir / "config.yaml"


def wants_print(overrides: list[str]) -> tuple[bool, list[str]]:
    """`lw <cmd> --cfg` prints the resolved config instead of running."""
    return ("--cfg" in overrides), [o for o in overrides if o != "--cfg"]
