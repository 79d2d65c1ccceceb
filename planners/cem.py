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

from planners.base import GaussianSearch


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


class CEM(GaussianSearch):
    name = "cem"

    def __init__(self, cfg: CEMConfig, action_space):
        super().__init__(cfg, action_space)
        if not 1 <= cfg.elites <= cfg.samples:
            raise ValueError(f"elites={cfg.elites} must be in [1, samples={cfg.samples}]")

    def _refit(self, u_ESHA, c_ES):
        """The Gaussian refit to the elites (unweighted mean and std)."""
        _, _, H, A = u_ESHA.shape
        idx_EK = torch.topk(c_ES, self.cfg.elites, dim=1, largest=False).indices
        elite = torch.gather(u_ESHA, 1, idx_EK[:, :, None, None].expand(-1, -1, H, A))   # (E, K, H, A)
        std_EHA = elite.std(1, unbiased=False).clamp_min(self.cfg.min_std)
        return elite.mean(1), std_EHA, c_ES.gather(1, idx_EK[:, :1])[:, 0], elite[:, 0]
