"""AdamW, the learning-rate schedule (warmup + cosine / WSD / constant), the run budget and weight EMA.

The schedule is one pure function, `lr_factor(step, progress, ...)`. `lw pretrain` measures
progress in optimizer steps (`schedule_progress`, wrapped in a LambdaLR so its state is
saved and restored with the checkpoint); the encoder trainers measure it in their
wall-clock budget (`Budget.frac`), so the cosine ends when the time does.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn as nn

SCHEDULES = ("cosine", "wsd", "constant")


@dataclass
class OptimConfig:
    lr: float = 3e-3              # peak learning rate (after warmup)
    weight_decay: float = 0.1     # decoupled (AdamW) decay, applied to matrices only
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0        # max global grad norm; <= 0 disables clipping
    schedule: str = "cosine"      # cosine | wsd (warmup-stable-decay) | constant
    warmup_steps: int = 20        # linear warmup from ~0 to lr
    min_lr_ratio: float = 0.1     # final lr = lr * min_lr_ratio (cosine and wsd)
    decay_fraction: float = 0.2   # wsd: last fraction of the run spent decaying (linear)
    ema_decay: float = 0.0        # EMA of weights (e.g. 0.999); 0 disables
    fused: bool = False           # fused AdamW kernel (CUDA only)

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule={self.schedule!r}, expected one of {SCHEDULES}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"optim.min_lr_ratio={self.min_lr_ratio}, expected a value in [0, 1]")
        if not 0.0 < self.decay_fraction <= 1.0:
            raise ValueError(f"optim.decay_fraction={self.decay_fraction}, expected a value in (0, 1]")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"optim.ema_decay={self.ema_decay}, expected a value in [0, 1)")
        if self.warmup_steps < 0:
            raise ValueError(f"optim.warmup_steps={self.warmup_steps}, expected >= 0")


def lr_factor(step: int, progress: float, warmup_steps: int, min_ratio: float, schedule: str = "cosine") -> float:
    """Multiplier of the peak lr at step `step` (0-based): a linear warmup over `warmup_steps`
    steps, times the decay at `progress` (clamped to [0, 1]) from 1 to `min_ratio`:
    cosine, linear ("wsd", whose progress runs over its decay phase only) or none ("constant")."""
    warm = min(1.0, (step + 1) / max(1, warmup_steps))
    p = min(1.0, max(0.0, progress))
    if schedule == "constant":
        return warm
    if schedule == "cosine":
        return warm * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p)))
    return warm * (1.0 - (1.0 - min_ratio) * p)


def schedule_progress(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """`lr_factor`'s progress at step `step` of a `total_steps` run: 0 until the decay starts."""
    if cfg.schedule == "wsd":  # flat at the peak, then a linear decay over the last decay_fraction of the run
        decay_steps = max(1, int(round(cfg.decay_fraction * total_steps)))
        decay_start = max(cfg.warmup_steps, total_steps - decay_steps)
        return (step - decay_start + 1) / max(1, total_steps - decay_start)
    span = max(1, total_steps - 1 - cfg.warmup_steps)  # cosine reaches the minimum at the last step
    return (step - cfg.warmup_steps) / span


class Budget:
    """Stop at `steps` or after `max_minutes`; `frac()` is the schedule position in [0, 1]."""

    def __init__(self, steps: int, max_minutes: float):
        if steps < 1:
            raise ValueError(f"steps={steps}, expected >= 1")
        self.steps, self.seconds = steps, max_minutes * 60 if max_minutes > 0 else math.inf
        self.t0, self.cpu0 = time.monotonic(), time.process_time()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def cpu(self) -> float:
        """CPU seconds of this process (all threads) since the start: shows how busy the machine was."""
        return time.process_time() - self.cpu0

    def frac(self, step: int) -> float:
        return min(1.0, max(step / self.steps, self.elapsed() / self.seconds))

    def done(self, step: int) -> bool:
        return step >= self.steps or self.elapsed() >= self.seconds


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices (linear / embedding weights); never norms, biases or scalars (nanoGPT)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    groups = param_groups(model, cfg.weight_decay)
    if not any(g["params"] for g in groups):
        raise ValueError("model has no trainable parameters; expected at least one with requires_grad=True")
    kw = {"fused": True} if cfg.fused else {}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, **kw)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    if total_steps <= 0:
        raise ValueError(f"total_steps={total_steps}, expected a positive number of optimizer steps")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(
        s, schedule_progress(s, cfg, total_steps), cfg.warmup_steps, cfg.min_lr_ratio, cfg.schedule))


# ---------------------------------------------------------------- EMA (DiT style)
class EMA:
    """Exponential moving average of the trainable parameters, kept beside the model.

    A dict of tensors rather than a module copy, so it works unchanged on FSDP-sharded
    parameters (each rank averages its own shards) and saves through the same checkpoint.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay={decay}, expected a value in (0, 1)")
        self.decay = decay
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        names = list(self.shadow)
        torch._foreach_lerp_([self.shadow[n] for n in names], [params[n].detach() for n in names],
                             1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise ValueError(f"EMA state lacks {sorted(missing)[:3]}...; expected every trainable parameter")
        for n, t in self.shadow.items():
            t.copy_(state[n])
