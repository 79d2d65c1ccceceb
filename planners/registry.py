"""Planners by name: `make_planner("cem", action_space, horizon=5, samples=300)`."""
from __future__ import annotations

import dataclasses
from typing import Any

from planners.base import Planner, RandomPolicy, RandomPolicyConfig
from planners.cem import CEM, CEMConfig
from planners.gradient import GradientConfig, GradientPlanner
from planners.mppi import MPPI, MPPIConfig
from planners.random_shooting import RandomShooting, RandomShootingConfig

# name -> (planner class, config dataclass)
PLANNERS: dict[str, tuple[type[Planner], type]] = {
    "cem": (CEM, CEMConfig),
    "mppi": (MPPI, MPPIConfig),
    "gradient": (GradientPlanner, GradientConfig),
    "random_shooting": (RandomShooting, RandomShootingConfig),
    "random": (RandomPolicy, RandomPolicyConfig),
}


def make_planner(name: str, action_space, cfg: Any = None, **overrides) -> Planner:
    """Build a planner by name; `cfg` (its dataclass or a dict) and `overrides` set fields."""
    if name not in PLANNERS:
        raise ValueError(f"unknown planner {name!r}, expected one of {sorted(PLANNERS)}")
    cls, schema = PLANNERS[name]
    fields = {f.name for f in dataclasses.fields(schema)}
    values = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg or {})
    values.update(overrides)
    bad = sorted(set(values) - fields)
    if bad:
        raise ValueError(f"unknown {name} planner option(s) {bad}, expected some of {sorted(fields)}")
    return cls(schema(**values), action_space)

