"""Gradient-based planning: Adam on the action sequence through a differentiable rollout.

Actions are reparametrised as u = tanh(z), a = center + half * u, so every iterate lies in
the action Box and gradients never vanish at a clamp. Several starts run in parallel
(start 0 is the warm-start plan, the others perturb it); the best scored one is returned.
Needs a model whose cost() is a torch tensor with a graph back to the actions (the
learned model); the MuJoCo oracle is not differentiable and is refused with a ValueError.

Defaults are ours (no single literature standard): 16 starts, 100 Adam steps, lr 0.1 on z.

Legend: E episodes, S starts, H horizon, A action dim.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from planners.base import Planner, evaluate_costs


@dataclass
class GradientConfig:
    horizon: int = 5            # decision steps planned
    starts: int = 16            # parallel initialisations (start 0 = warm start)
    iterations: int = 100       # Adam steps
    lr: float = 0.1             # Adam learning rate on the pre-tanh parameters z
    init_noise: float = 0.5     # std of the perturbation of z for starts 1..S-1
    seed: int = 0               # RNG seed of the start perturbations


class GradientPlanner(Planner):
    name = "gradient"

    def __init__(self, cfg: GradientConfig, action_space):
        super().__init__(cfg, action_space)
        if cfg.starts < 1 or cfg.iterations < 1 or cfg.lr <= 0:
            raise ValueError(f"starts={cfg.starts}, iterations={cfg.iterations} must be >= 1 and lr={cfg.lr} > 0")

    def _plan(self, model, states, goals, init_u):
        cfg, g = self.cfg, self.generator(init_u.device)
        E, H, A = init_u.shape
        z0 = torch.atanh(init_u.clamp(-0.995, 0.995))
        noise = cfg.init_noise * torch.randn((E, cfg.starts, H, A), generator=g, device=init_u.device)
        noise[:, 0] = 0
        z_ESHA = (z0[:, None] + noise).requires_grad_(True)
        opt = torch.optim.Adam([z_ESHA], lr=cfg.lr)
        best_u = init_u.clone()
        best_c = torch.full((E,), float("inf"), device=init_u.device)
        calls = 0
        for it in range(cfg.iterations + 1):            # the last pass only scores the final iterate
            with torch.enable_grad():
                u = torch.tanh(z_ESHA)
                c_ES, k = evaluate_costs(model, states, goals, self.scaler.to_env(u))
                calls += k
                if it == 0 and not c_ES.requires_grad:
                    raise ValueError(f"model {type(model).__name__} cost() carries no gradient to the actions; "
                                     "the gradient planner needs a differentiable model (use cem/mppi for the oracle)")
            with torch.no_grad():
                c = torch.nan_to_num(c_ES.detach(), nan=float("inf"))
                cmin, idx = c.min(1)
                better = cmin < best_c
                best_c = torch.where(better, cmin, best_c)
                best_u[better] = u.detach()[better, idx[better]]
            if it == cfg.iterations:
                break
            opt.zero_grad(set_to_none=True)
            c_ES.sum().backward()                       # starts and episodes are independent
            opt.step()
        return best_u, best_c, calls, (cfg.iterations + 1) * cfg.starts * E
