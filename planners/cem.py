"""Cross-entropy method (CEM) over action sequences.

Defaults follow DINO-WM (Zhou et al., 2024): 300 samples, top 30 elites, 30 iterations,
horizon 5 with frameskip 5 and receding horizon 5. Our tasks already hold each action for
`action_repeat` simulator steps (reacher: 5), so one of our decision steps is one DINO-WM
frameskip-5 step and horizon=5 means the same 25 simulator steps. The search runs in
normalised actions u in [-1, 1] (`base.ActionScaler`); DINO-WM's var_scale=1 is init_std=1.

Legend: E episodes, S samples, K elites, H horizon, A action dim.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from planners.base import Planner


@dataclass
class CEMConfig:
    horizon: int = 5            # decision steps planned (DINO-WM: 5, frameskip 5 == our action_repeat)
    samples: int = 300          # candidates per iteration (DINO-WM: 300)
    elites: int = 30            # best candidates the Gaussian is refit to (DINO-WM: 30)
    iterations: int = 30        # refits per plan (DINO-WM: 30)
    init_std: float = 1.0       # initial std in normalised action units (DINO-WM var_scale: 1)
    min_std: float = 0.0        # floor on the std, keeps exploring (0 = none, as DINO-WM)
    include_mean: bool = True   # sample 0 is the current mean, so a good warm start is always scored (ours)
    result: str = "mean"        # "mean": final Gaussian mean (DINO-WM); "best": best evaluated sample
    seed: int = 0               # RNG seed of the sampling stream


class CEM(Planner):
    name = "cem"

    def __init__(self, cfg: CEMConfig, action_space):
        super().__init__(cfg, action_space)
        if not 1 <= cfg.elites <= cfg.samples:
            raise ValueError(f"elites={cfg.elites} must be in [1, samples={cfg.samples}]")
        if cfg.iterations < 1:
            raise ValueError(f"iterations={cfg.iterations} must be >= 1")
        if cfg.result not in ("mean", "best"):
            raise ValueError(f"result={cfg.result!r}, expected 'mean' or 'best'")

    @torch.no_grad()
    def _plan(self, model, states, goals, init_u):
        cfg, g = self.cfg, self.generator(init_u.device)
        E, H, A = init_u.shape
        mu_EHA = init_u.clone()
        std_EHA = torch.full_like(mu_EHA, cfg.init_std)
        best_u = mu_EHA.clone()
        best_c = torch.full((E,), float("inf"), device=init_u.device)
        calls = 0
        for _ in range(cfg.iterations):
            u_ESHA, c_ES, k = self.sample_and_score(model, states, goals, mu_EHA, std_EHA, g)
            calls += k
            idx_EK = torch.topk(c_ES, cfg.elites, dim=1, largest=False).indices
            elite = torch.gather(u_ESHA, 1, idx_EK[:, :, None, None].expand(-1, -1, H, A))   # (E, K, H, A)
            mu_EHA = elite.mean(1)
            std_EHA = elite.std(1, unbiased=False).clamp_min(cfg.min_std)
            better = c_ES.gather(1, idx_EK[:, :1])[:, 0] < best_c
            best_c = torch.where(better, c_ES.gather(1, idx_EK[:, :1])[:, 0], best_c)
            best_u[better] = elite[better, 0]
        out = mu_EHA if cfg.result == "mean" else best_u
        return out, best_c, calls, cfg.iterations * cfg.samples * E
