"""Model-predictive path integral control (MPPI), iterated, with elites.

Defaults follow TD-MPC2 (Hansen et al., 2024): 512 samples, 64 elites, 6 iterations,
temperature 0.5, std from 2.0 down to a floor of 0.05 in normalised action units. One
deliberate change: costs are divided by their spread over the elites before the softmax,
so `temperature` means the same for a cost in metres and a latent MSE (TD-MPC2 weights
raw values). The plan is the weighted mean (classic MPPI, Williams et al., 2017).

Legend: E episodes, S samples, K elites, H horizon, A action dim.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from planners.base import GaussianSearch


@dataclass
class MPPIConfig:
    horizon: int = 5            # decision steps planned
    samples: int = 512          # candidates per iteration (TD-MPC2: 512)
    elites: int = 64            # candidates that get a weight (TD-MPC2: 64); 0 = all samples
    iterations: int = 6         # weighted refits per plan (TD-MPC2: 6)
    temperature: float = 0.5    # softmax temperature on elite costs scaled to [0, 1] (ours: scale-free)
    init_std: float = 2.0       # initial std in normalised units (TD-MPC2 max_std: 2)
    min_std: float = 0.05       # std floor (TD-MPC2 min_std: 0.05)
    include_mean: bool = True   # sample 0 is the current mean (keeps a good warm start)
    result: str = "mean"        # "mean": weighted mean; "best": best evaluated sample
    seed: int = 0               # RNG seed of the sampling stream


class MPPI(GaussianSearch):
    name = "mppi"

    def __init__(self, cfg: MPPIConfig, action_space):
        super().__init__(cfg, action_space)
        if not 0 <= cfg.elites <= cfg.samples or cfg.samples < 1:
            raise ValueError(f"elites={cfg.elites} must be in [0, samples={cfg.samples}] with samples >= 1")
        if cfg.temperature <= 0:
            raise ValueError(f"temperature={cfg.temperature} must be > 0")

    def _refit(self, u_ESHA, c_ES):
        """The Gaussian refit to the elites weighted by a softmax of their spread-scaled costs."""
        cfg = self.cfg
        _, _, H, A = u_ESHA.shape
        c_EK, idx_EK = torch.topk(c_ES, cfg.elites or cfg.samples, dim=1, largest=False)   # ascending costs
        elite = torch.gather(u_ESHA, 1, idx_EK[:, :, None, None].expand(-1, -1, H, A))
        finite = torch.isfinite(c_EK)
        c_EK = torch.where(finite, c_EK, c_EK[:, :1])                     # inf costs get no weight below
        spread = (c_EK.max(1, keepdim=True).values - c_EK[:, :1]).clamp_min(1e-12)
        logits = -(c_EK - c_EK[:, :1]) / (spread * cfg.temperature)
        w_EK = torch.softmax(logits.masked_fill(~finite, float("-inf")), dim=1)
        mu_EHA = (w_EK[:, :, None, None] * elite).sum(1)
        var = (w_EK[:, :, None, None] * (elite - mu_EHA[:, None]) ** 2).sum(1)
        return mu_EHA, var.sqrt().clamp(cfg.min_std, cfg.init_std), c_EK[:, 0], elite[:, 0]
