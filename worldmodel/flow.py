"""Rectified flow on RAE latents, kept apart from the network (a DiT-style "transport").

Convention (the paper's): z_t = t * x + (1 - t) * eps, so t = 1 is clean data and t = 0
is pure noise. One t per frame. The network predicts either the clean latent x
(x-prediction, default: beats v-prediction on high-dimensional RAE latents) or the
velocity v = dz/dt = x - eps.

Training times come from a logit-normal distribution, shifted toward noise by the
resolution-dependent factor s = sqrt(tokens * dim / 4096) (RAE, SD3): a frame with many
latent values stays recognisable at moderate noise, so it needs more time near t = 0.

Sampling uses diffusers' FlowMatchEulerDiscreteScheduler (its sigma = 1 - t, its model
output is the velocity eps - x), so the step schedule and shift are not rewritten here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

# Sampling noise: one generator for the whole batch, or one per row (see `randn`).
Generators = torch.Generator | Sequence[torch.Generator] | None


def randn(shape: Sequence[int], generator: Generators, device: torch.device | str | None,
          dtype: torch.dtype | None = None) -> Tensor:
    """Standard normal noise of `shape`, from one generator (or torch's default) or from one
    generator per row: row i then comes from generator i alone, exactly as a batch of one would
    draw it, so B episodes stepped in one batch see the noise of B separate ones."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    gens = list(generator)
    if len(gens) != shape[0]:
        raise ValueError(f"{len(gens)} generators for noise of shape {tuple(shape)}; expected one per row")
    return torch.stack([torch.randn(tuple(shape[1:]), generator=g, device=device, dtype=dtype) for g in gens])


@dataclass
class FlowConfig:
    prediction: str = "x"        # "x": predict the clean latent; "v": predict velocity x - eps
    shift: float | None = None   # time shift; None -> sqrt(tokens * dim / 4096)
    logit_mean: float = 0.0      # logit-normal location of t before the shift
    logit_std: float = 1.0       # logit-normal scale
    sample_steps: int = 25       # default Euler steps at inference
    min_sigma: float = 1e-4      # x-pred -> velocity divides by sigma = 1 - t (> 0 on every
                                 # evaluated step); the floor only guards against division by 0

    def __post_init__(self) -> None:
        if self.prediction not in ("x", "v"):
            raise ValueError(f"flow prediction must be 'x' or 'v', got {self.prediction!r}")
        if self.shift is not None and self.shift <= 0:
            raise ValueError(f"flow shift must be > 0, got {self.shift}")


def resolution_shift(tokens: int, dim: int) -> float:
    """The RAE/SD3 time shift sqrt(tokens * dim / 4096) for a frame of `tokens` x `dim` latents."""
    return math.sqrt(tokens * dim / 4096.0)


def _shift_sigma(sigma: Tensor, shift: float) -> Tensor:
    # SD3: sigma' = s*sigma / (1 + (s-1)*sigma); s > 1 moves mass toward noise (sigma -> 1).
    return shift * sigma / (1.0 + (shift - 1.0) * sigma)


class RectifiedFlow:
    """Noising, losses and sampling for one latent frame shape (tokens x dim)."""

    def __init__(self, cfg: FlowConfig, tokens: int, dim: int):
        self.cfg = cfg
        self.tokens, self.dim = tokens, dim
        self.shift = cfg.shift if cfg.shift is not None else resolution_shift(tokens, dim)

    # -- training -----------------------------------------------------------------
    def sample_t(self, n: int, device: torch.device | str | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        """(n,) times in (0, 1): logit-normal, then shifted toward noise."""
        u = torch.randn(n, generator=generator, device=device) * self.cfg.logit_std + self.cfg.logit_mean
        sigma = _shift_sigma(torch.sigmoid(u), self.shift)
        return 1.0 - sigma

    @staticmethod
    def interpolate(x: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """z_t = t x + (1 - t) eps; t broadcasts from the leading dims of x."""
        t = t.reshape(t.shape + (1,) * (x.dim() - t.dim())).to(x.dtype)
        return t * x + (1.0 - t) * eps

    def target(self, x: Tensor, eps: Tensor) -> Tensor:
        return x if self.cfg.prediction == "x" else x - eps

    def loss(self, pred: Tensor, x: Tensor, eps: Tensor) -> Tensor:
        """Per-element squared error against the configured target (reduce it yourself)."""
        return (pred.float() - self.target(x, eps).float()).pow(2)

    # -- sampling -----------------------------------------------------------------
    def to_clean(self, pred: Tensor, z: Tensor, t: Tensor) -> Tensor:
        """The model's estimate of x, whatever it predicts."""
        if self.cfg.prediction == "x":
            return pred
        t = t.reshape(t.shape + (1,) * (z.dim() - t.dim())).to(z.dtype)
        # v = x - eps and z = t x + (1-t) eps  =>  x = z + (1-t) v
        return z + (1.0 - t) * pred

    def to_diffusers_velocity(self, x_hat: Tensor, z: Tensor, t: Tensor) -> Tensor:
        """Diffusers' velocity d z / d sigma = eps - x from a clean estimate: (z - x_hat) / sigma.

        Exact for v-prediction (x_hat = z + sigma v); for x-prediction sigma is clamped at
        min_sigma (a guard against dividing by zero, not a schedule change).
        """
        sigma = 1.0 - t
        if self.cfg.prediction == "x":
            sigma = sigma.clamp_min(self.cfg.min_sigma)
        sigma = sigma.reshape(sigma.shape + (1,) * (z.dim() - sigma.dim())).to(z.dtype)
        return (z - x_hat) / sigma

    def scheduler(self, steps: int):
        from diffusers import FlowMatchEulerDiscreteScheduler

        sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=self.shift)
        sched.set_timesteps(steps)
        return sched

    def sample(self, predict: Callable[[Tensor, Tensor], Tensor], noise: Tensor,
               steps: int | None = None, cfg_scale: float = 1.0,
               predict_uncond: Callable[[Tensor, Tensor], Tensor] | None = None,
               first: Callable[[Tensor, Tensor], Tensor] | None = None) -> Tensor:
        """Euler-integrate from noise (t=0) to data (t=1).

        predict(z, t) -> the network's prediction for a batch of frames, t of shape (1,) (one time
        for the whole batch). `first`: a predict for the first step only (a caller that runs that
        step together with other work), called before predict_uncond.
        With cfg_scale != 1, predict_uncond gives the unconditional prediction and the two
        are mixed in clean-latent space (equivalent to velocity space for a fixed z, t).
        Differentiable: no torch.no_grad here, callers choose.
        """
        steps = steps or self.cfg.sample_steps
        if steps < 1:
            raise ValueError(f"sampling needs at least 1 step, got {steps}")
        if cfg_scale != 1.0 and predict_uncond is None:
            raise ValueError("cfg_scale != 1 needs predict_uncond")
        sched = self.scheduler(steps)
        z = noise
        for i, timestep in enumerate(sched.timesteps):
            t = torch.full((1,), 1.0 - float(sched.sigmas[i]), device=z.device)
            x_hat = self.to_clean((first if i == 0 and first is not None else predict)(z, t), z, t)
            if cfg_scale != 1.0:
                x_unc = self.to_clean(predict_uncond(z, t), z, t)
                x_hat = x_unc + cfg_scale * (x_hat - x_unc)
            if i == len(sched.timesteps) - 1:
                # Last step lands on sigma = 0, where z equals the clean estimate.
                return x_hat
            u = self.to_diffusers_velocity(x_hat, z, t)
            z = sched.step(u, timestep, z, return_dict=False)[0]
        return z
