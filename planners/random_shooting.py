"""Random shooting: score many uniform random action sequences once, keep the best.

Default 1000 candidates (the order used by Nagabandi et al., 2018, for MPC with learned
dynamics); the warm-start plan is scored as one more candidate.

Legend: E episodes, S samples, H horizon, A action dim.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from planners.base import Planner, evaluate_costs


@dataclass
class RandomShootingConfig:
    horizon: int = 5            # decision steps planned
    samples: int = 1000         # uniform candidates per plan
    include_init: bool = True   # also score the warm-start plan (candidate 0)
    chunk: int = 4096           # candidates per model call, bounds memory
    seed: int = 0               # RNG seed of the sampling stream


class RandomShooting(Planner):
    name = "random_shooting"

    def __init__(self, cfg: RandomShootingConfig, action_space):
        super().__init__(cfg, action_space)
        if cfg.samples < 1 or cfg.chunk < 1:
            raise ValueError(f"samples={cfg.samples} and chunk={cfg.chunk} must be >= 1")

    @torch.no_grad()
    def _plan(self, model, states, goals, init_u):
        cfg, g = self.cfg, self.generator(init_u.device)
        E, H, A = init_u.shape
        u_ESHA = torch.rand((E, cfg.samples, H, A), generator=g, device=init_u.device) * 2 - 1
        if cfg.include_init:
            u_ESHA[:, 0] = init_u
        costs, calls = [], 0
        for s in range(0, cfg.samples, cfg.chunk):
            c, k = evaluate_costs(model, states, goals, self.scaler.to_env(u_ESHA[:, s:s + cfg.chunk]))
            costs.append(c)
            calls += k
        c_ES = torch.nan_to_num(torch.cat(costs, 1), nan=float("inf"))
        best_c, idx_E = c_ES.min(1)
        return u_ESHA[torch.arange(E), idx_E], best_c, calls, cfg.samples * E
