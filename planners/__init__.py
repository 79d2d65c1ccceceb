"""Planners over one model protocol (planners/base.py, docs/INTERFACES.md).

    from planners import make_planner
    planner = make_planner("cem", model.action_space, horizon=5)
    result = planner.plan(model, states, goals)          # result.actions (E, H, A)

Names resolve lazily, so that importing `planners` (e.g. the oracle's worker processes,
which need only `planners.sim_worker`) does not import torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "PLANNERS": "planners.registry", "make_planner": "planners.registry",
    "PlanningModel": "planners.base", "Planner": "planners.base", "PlanResult": "planners.base",
    "RandomPolicy": "planners.base", "RandomPolicyConfig": "planners.base",
    "evaluate_costs": "planners.base", "warm_start": "planners.base",
    "CEM": "planners.cem", "CEMConfig": "planners.cem",
    "MPPI": "planners.mppi", "MPPIConfig": "planners.mppi",
    "GradientPlanner": "planners.gradient", "GradientConfig": "planners.gradient",
    "RandomShooting": "planners.random_shooting", "RandomShootingConfig": "planners.random_shooting",
    "MPCConfig": "planners.mpc", "run_mpc": "planners.mpc",
    "OracleModel": "planners.oracle", "OracleConfig": "planners.oracle",
    "LearnedModel": "planners.learned", "LearnedConfig": "planners.learned",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'planners' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = sorted(_EXPORTS)
