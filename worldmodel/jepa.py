"""A representation made for control: an encoder trained with an action-conditioned latent predictor.

    encoder:   frame (B, 3, H, W) in [0, 1] -> average-pooled to `input_size` -> strided CNN
               -> MLP -> latent vector of N*C dims, shown as (B, N, C) tokens (N = grid cells)
    predictor: (z[t-h+1..t], a[t]) -> z[t+1] = z[t] + MLP(...)   (residual, deterministic)
    inverse:   (z[t-1], z[t], z[t+1]) -> a[t]                      (inverse dynamics, training only)
    decoder:   z[t] -> the pooled input frame                       (reconstruction, optional, training only)

Trained jointly (JEPA / PLDM style, `lw train-encoder method=jepa`): multi-step latent
prediction + an anti-collapse regulariser on the embeddings (VICReg or SIGReg) + inverse
dynamics. Why: an MAE latent spends its capacity on pixels, and on Reacher the part of it no
predictor can explain dwarfs what one action changes, so a world model in it ignores its
actions (action gain 1.00, docs/EXPERIMENTS.md). A latent trained to be *predictable from
actions* carries the action's effect. But only that: on PushT such a latent localises the pusher
(which the actions move) and barely sees the block it must push (probe error ~30 units, no angle,
docs/EXPERIMENTS.md 19); `reconstruct=True` adds a small pixel decoder whose loss (the fraction of
the batch's pixel variance left unexplained) makes the latent keep what is visible as well.

The encoder is then frozen and used as the RAE's representation encoder (`encoder="jepa"`:
`worldmodel.encoders.JEPAEncoder`), and the predictor is a deterministic world model of its own
(`JEPAWorld`: the `jepa` baseline row of the planning benchmark).

Legend: B batch, T frames, h history, R unrolled steps, N tokens per frame, C channels per
token, D = N*C latent size, A action dim.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import hub
from .frames import frames_to_float
from .defaults import fit_context, resolve_count
from .tasks import model_actions, select_task, task_action_scale, task_index

REGULARIZERS = ("vicreg", "sigreg")


# config fields that shape training, not the encoder's map from frames to latents
_TRAINING_ONLY_FIELDS = ("reconstruct",)


@dataclass
class JEPAConfig:
    image_size: int = 64                 # frames given to the encoder (square)
    input_size: int = 32                 # frames are average-pooled to this first (the arm is visible at 32 px)
    channels: tuple[int, ...] = (32, 64, 64)  # widths of the stride-2 4x4 convolutions
    hidden: int = 256                    # width of the MLP after the convolutions
    grid: tuple[int, int] = (1, 1)       # latent tokens per frame, as (grid_h, grid_w)
    latent_dim: int = 32                 # C: channels per token (latent size D = gh * gw * C)
    action_dim: int = 2                  # A
    action_scale: float = 1.0            # actions are divided by this (the task's bound) before the predictor
    history: int = 2                     # h: frames the predictor reads (z[t-1], z[t]: velocity)
    pred_hidden: int = 512               # predictor MLP width
    pred_layers: int = 2                 # predictor hidden layers
    reconstruct: bool = False            # a pixel decoder head (training only): the latent must keep the scene
    head_norm: str = "batch"             # batch | layer | none: the norm in the encoder's MLP head. BatchNorm
                                         # mixes the frames of a batch, of every task in a shared one (EXPERIMENTS 41)
    task_heads: int = 0                  # > 0: the predictor and inverse head also read the task (a one-hot of this
                                         # many tasks); the encoder stays one shared map that never sees it

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.grid = tuple(int(g) for g in self.grid)
        if len(self.grid) != 2 or min(self.grid) < 1:
            raise ValueError(f"grid={self.grid}, expected (grid_h, grid_w) with both >= 1")
        if self.image_size % self.grid[0] or self.image_size % self.grid[1]:
            raise ValueError(f"image_size={self.image_size} is not divisible by grid={self.grid}")
        if self.input_size > self.image_size or self.image_size % self.input_size:
            raise ValueError(f"input_size={self.input_size}, expected a divisor of image_size={self.image_size}")
        if self.input_size % (2 ** len(self.channels)):
            raise ValueError(f"input_size={self.input_size} is not divisible by 2**{len(self.channels)} "
                             f"(one halving per conv in channels={self.channels})")
        if self.history < 1:
            raise ValueError(f"history={self.history}, expected >= 1")
        if self.action_scale <= 0:
            raise ValueError(f"action_scale={self.action_scale}, expected > 0")
        if self.task_heads < 0:
            raise ValueError(f"task_heads={self.task_heads}, expected >= 0 (0: the heads do not read the task)")
        if self.head_norm not in HEAD_NORMS:
            raise ValueError(f"head_norm={self.head_norm!r}, expected one of {HEAD_NORMS}")
        for name in ("hidden", "latent_dim", "action_dim", "pred_hidden", "pred_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}, expected >= 1")

    @property
    def tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def size(self) -> int:
        """D: the latent vector's length (all tokens of a frame)."""
        return self.tokens * self.latent_dim

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"], d["grid"] = list(self.channels), list(self.grid)
        for name, default in (("head_norm", "batch"), ("task_heads", 0)):   # fields added later: at their
            if d[name] == default:      # defaults they are left out, so older configs and the fingerprints
                del d[name]             # hashed from them stay as they were
        return d


HEAD_NORMS = ("batch", "layer", "none")


class ConvEncoder(nn.Module):
    """Frames (B, 3, H, W) in [0, 1] -> latents (B, N, C). Trainable (the JEPA's online encoder)."""

    def __init__(self, cfg: JEPAConfig):
        super().__init__()
        self.cfg = cfg
        widths = (3, *cfg.channels)
        self.conv = nn.Sequential(*[m for i in range(len(cfg.channels))
                                    for m in (nn.Conv2d(widths[i], widths[i + 1], 4, 2, 1), nn.GELU())])
        cells = (cfg.input_size // 2 ** len(cfg.channels)) ** 2
        # BatchNorm in the head: measured to train faster than none on one task (shared/experiments/jepa_probe.py);
        # frozen afterwards, it uses its running statistics (eval mode). LayerNorm normalises each frame on its
        # own: over several tasks a frame's latent does not depend on which tasks share its batch.
        norm = {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm, "none": lambda n: nn.Identity()}[cfg.head_norm]
        self.head = nn.Sequential(nn.Linear(cfg.channels[-1] * cells, cfg.hidden), norm(cfg.hidden),
                                  nn.GELU(), nn.Linear(cfg.hidden, cfg.size))

    def forward(self, images: Tensor) -> Tensor:
        cfg = self.cfg
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images have shape {tuple(images.shape)}, expected (B, 3, H, W)")
        x = images.float() - 0.5
        if x.shape[-1] != cfg.input_size or x.shape[-2] != cfg.input_size:
            x = F.adaptive_avg_pool2d(x, cfg.input_size)  # box filter: exact 2x2 means at 64 -> 32
        z = self.head(self.conv(x).flatten(1))
        return z.view(len(z), cfg.tokens, cfg.latent_dim)


class ConvDecoder(nn.Module):
    """Latents (B, D) -> the encoder's pooled input (B, 3, input_size, input_size), centred at 0: the
    mirror of `ConvEncoder` (MLP, then stride-2 transposed convolutions). Training only."""

    def __init__(self, cfg: JEPAConfig):
        super().__init__()
        self.side = cfg.input_size // 2 ** len(cfg.channels)
        widths = (*reversed(cfg.channels), 3)
        self.c0 = widths[0]
        self.head = nn.Sequential(nn.Linear(cfg.size, cfg.hidden), nn.GELU(),
                                  nn.Linear(cfg.hidden, self.c0 * self.side ** 2), nn.GELU())
        layers: list[nn.Module] = []
        for i in range(len(cfg.channels)):
            layers.append(nn.ConvTranspose2d(widths[i], widths[i + 1], 4, 2, 1))
            if i < len(cfg.channels) - 1:
                layers.append(nn.GELU())
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.deconv(self.head(z).view(len(z), self.c0, self.side, self.side))


def _mlp(d_in: int, hidden: int, layers: int, d_out: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(d_in if i == 0 else hidden, hidden), nn.GELU()]
    return nn.Sequential(*mods, nn.Linear(hidden, d_out))


def task_onehot(task: Tensor | int | None, n_tasks: int, batch: int, device) -> Tensor:
    """The task input of task-conditioned heads: (B, n_tasks) one-hot of `task` (an index, or (B,) indices);
    (B, 0) when the heads read no task (n_tasks 0)."""
    if n_tasks == 0:
        return torch.zeros(batch, 0, device=device)
    if task is None:
        raise ValueError(f"this JEPA's heads read the task (task_heads={n_tasks}); pass its index in [0, {n_tasks})")
    idx = torch.as_tensor(task, dtype=torch.long, device=device).expand(batch)
    if int(idx.min()) < 0 or int(idx.max()) >= n_tasks:
        raise ValueError(f"task index {idx.unique().tolist()} out of range: expected [0, {n_tasks})")
    return F.one_hot(idx, n_tasks).float()


class LatentPredictor(nn.Module):
    """(z history (B, h, D), action (B, A) already scaled[, task]) -> z[t+1] (B, D) = z[t] + MLP(...).
    With `n_tasks` > 0 the MLP also reads the task as a one-hot: one predictor holds each task's dynamics
    without having to tell the tasks apart from the latent."""

    def __init__(self, size: int, history: int, action_dim: int, hidden: int, layers: int, n_tasks: int = 0):
        super().__init__()
        self.history, self.n_tasks = history, n_tasks
        self.net = _mlp(history * size + action_dim + n_tasks, hidden, layers, size)

    def forward(self, z_hist: Tensor, action: Tensor, task: Tensor | int | None = None) -> Tensor:
        return self._step(z_hist, action, task_onehot(task, self.n_tasks, len(z_hist), z_hist.device))

    def _step(self, z_hist: Tensor, action: Tensor, onehot: Tensor) -> Tensor:
        return z_hist[:, -1] + self.net(torch.cat([z_hist.flatten(1), action, onehot], -1))

    def unroll(self, z_hist: Tensor, actions: Tensor, task: Tensor | int | None = None) -> Tensor:
        """Open loop: z history (B, h, D), actions (B, H, A) scaled -> predictions (B, H, D)."""
        onehot = task_onehot(task, self.n_tasks, len(z_hist), z_hist.device)   # checked once, not every step
        out = []
        for k in range(actions.shape[1]):  # H is a handful of steps; each step needs the last
            z_next = self._step(z_hist, actions[:, k], onehot)
            out.append(z_next)
            z_hist = torch.cat([z_hist[:, 1:], z_next[:, None]], 1)
        return torch.stack(out, 1)


# ----------------------------------------------------------------------------- regularisers

def vicreg(z: Tensor, eps: float = 1e-4) -> Tensor:
    """VICReg's variance (hinge at std 1) + covariance (off-diagonal) terms on embeddings (M, D)."""
    z = z - z.mean(0)
    std = torch.sqrt(z.var(0) + eps)
    cov = (z.T @ z) / (len(z) - 1)
    off = cov - torch.diag(torch.diag(cov))
    return F.relu(1 - std).mean() + off.pow(2).sum() / z.shape[1]


def regularise(z: Tensor, regularizer: str = "vicreg", groups: Tensor | None = None) -> Tensor:
    """The regulariser on window embeddings (B, T, D): over the whole batch, or (groups (B,), each
    window's dataset) within each group, averaged: each task must spread on its own."""
    reg = vicreg if regularizer == "vicreg" else sigreg
    if groups is None:
        return reg(z.flatten(0, 1))
    return torch.stack([reg(z[groups == g].flatten(0, 1)) for g in groups.unique()]).mean()   # a few datasets


PRED_LOSSES = ("mse", "relative")


def relative_error(pred: Tensor, z: Tensor, h: int, groups: Tensor | None = None) -> Tensor:
    """The prediction MSE as a fraction of the targets' variance, within each group (task) and averaged:
    scale-free, so no task lowers it by shrinking its latent (the plain MSE rewards shrinking, which
    only the regulariser resists). pred (B, R, D), z (B, h+R, D) -> scalar."""
    err = (pred - z[:, h:]).pow(2).mean((1, 2))                       # (B,)
    if groups is None:                                                # one task: one group
        groups = torch.zeros(len(z), dtype=torch.long, device=z.device)
    return torch.stack([err[groups == g].mean() / z[groups == g].flatten(0, 1).var(0).mean().clamp_min(1e-6)
                        for g in groups.unique()]).mean()


def sigreg(z: Tensor, projections: int = 256, knots: int = 17, generator: torch.Generator | None = None) -> Tensor:
    """SIGReg (LeJEPA): embeddings (M, D) pushed towards an isotropic standard Gaussian.

    Epps-Pulley statistic on random 1-D projections: the weighted squared distance between
    each projection's empirical characteristic function and exp(-t^2/2), integrated over
    t in [0, 5] (the integrand is even) with a Gaussian window, averaged over projections.
    Its scale differs from VICReg's: LeJEPA weighs it ~0.05 against the prediction loss.
    """
    dirs = torch.randn(z.shape[1], projections, device=z.device, generator=generator)
    p = z.float() @ (dirs / dirs.norm(dim=0, keepdim=True))                  # (M, P)
    t = torch.linspace(0, 5, knots, device=z.device)
    tp = p[None] * t[:, None, None]                                          # (knots, M, P)
    err = (tp.cos().mean(1) - torch.exp(-t ** 2 / 2)[:, None]) ** 2 + tp.sin().mean(1) ** 2
    weighted = err * torch.exp(-t ** 2 / 2)[:, None]                         # (knots, P)
    # x2: the integral over [-5, 5]; x M: the test statistic scales with the sample (LeJEPA)
    return torch.trapezoid(weighted, t, dim=0).mean() * 2 * len(z)


# ----------------------------------------------------------------------------- the model

class JEPA(nn.Module):
    """Encoder + latent predictor + inverse-dynamics head, trained together."""

    KIND = "jepa"

    def __init__(self, cfg: JEPAConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = ConvEncoder(cfg)
        self.predictor = LatentPredictor(cfg.size, cfg.history, cfg.action_dim, cfg.pred_hidden, cfg.pred_layers,
                                         cfg.task_heads)
        self.inverse = _mlp(3 * cfg.size + cfg.task_heads, 256, 1, cfg.action_dim)
        self.decoder = ConvDecoder(cfg) if cfg.reconstruct else None

    def encode(self, frames: Tensor) -> Tensor:
        """(..., 3, H, W) in [0, 1] -> (..., D) latent vectors."""
        lead = frames.shape[:-3]
        return self.encoder(frames.reshape(-1, *frames.shape[-3:])).reshape(*lead, self.cfg.size)

    def scale_actions(self, actions: Tensor) -> Tensor:
        return actions / self.cfg.action_scale

    def loss(self, frames: Tensor, actions: Tensor, regularizer: str = "vicreg", reg_weight: float = 1.0,
             inverse_weight: float = 1.0, recon_weight: float = 0.0,
             groups: Tensor | None = None, pred_loss: str = "mse") -> tuple[Tensor, dict[str, float]]:
        """One training loss on windows: frames (B, h+R, 3, H, W) in [0, 1], raw actions (B, R, A)
        (actions[:, k] moves frame h-1+k to h+k) -> (loss, its parts).

        `groups` (B,) (the dataset of each window, several tasks): the regulariser is taken within
        each group and averaged, so each task's frames must spread on their own. Task-conditioned heads
        (`task_heads`) read `groups` as each window's task index. Over the pooled
        batch, the gaps between tasks alone would satisfy it and a task's own state could collapse
        (measured: a 4-task JEPA's reacher latent at min std 0.01, action gain 1.00).

        Predictions are unrolled R steps on their own outputs (multi-step loss), the targets are
        the encoder's embeddings of the true frames (no stop-gradient: the regulariser is what
        keeps them from collapsing, as in VICReg/LeJEPA)."""
        h, (B, T) = self.cfg.history, frames.shape[:2]
        R = T - h
        if R < 1 or tuple(actions.shape) != (B, R, self.cfg.action_dim):
            raise ValueError(f"frames {tuple(frames.shape)} and actions {tuple(actions.shape)}: expected "
                             f"(B, h+R, 3, H, W) and (B, R, {self.cfg.action_dim}) with h={h}, R >= 1")
        if regularizer not in REGULARIZERS:
            raise ValueError(f"regularizer={regularizer!r}, expected one of {REGULARIZERS}")
        if pred_loss not in PRED_LOSSES:
            raise ValueError(f"pred_loss={pred_loss!r}, expected one of {PRED_LOSSES}")
        a = self.scale_actions(actions)
        z = self.encode(frames)                                          # (B, T, D)
        task = groups if groups is not None else (0 if self.cfg.task_heads else None)
        pred = self.predictor.unroll(z[:, :h], a, task)                  # (B, R, D)
        l_pred = F.mse_loss(pred, z[:, h:])
        parts: dict[str, float] = {"pred": l_pred.item()}
        if pred_loss == "relative":
            l_pred = relative_error(pred, z, h, groups)
            parts["pred_relative"] = l_pred.item()
        l_reg = regularise(z, regularizer, groups)
        loss = l_pred + reg_weight * l_reg
        parts["reg"] = l_reg.item()
        if inverse_weight > 0:
            if h < 2:
                raise ValueError("the inverse-dynamics loss reads (z[t-1], z[t], z[t+1]); it needs history >= 2")
            onehot = task_onehot(task, self.cfg.task_heads, B, z.device)
            l_inv = F.mse_loss(self.inverse(torch.cat([z[:, h - 2], z[:, h - 1], z[:, h], onehot], -1)), a[:, 0])
            loss = loss + inverse_weight * l_inv
            parts["inverse"] = l_inv.item()
        if recon_weight > 0:
            if self.decoder is None:
                raise ValueError("recon_weight > 0 needs the pixel decoder: build the JEPA with reconstruct=True")
            x = frames.flatten(0, 1).float() - 0.5
            x = F.adaptive_avg_pool2d(x, self.cfg.input_size)       # what the encoder sees
            err = (self.decoder(z.flatten(0, 1)) - x).pow(2).mean()
            # the fraction of the batch's pixel variance left unexplained: scale-free, so a mostly
            # white PushT frame weighs its block as much as a textured scene weighs its objects
            l_rec = err / x.var(0).mean().clamp_min(1e-6)
            loss = loss + recon_weight * l_rec
            parts["recon"] = l_rec.item()
        parts["loss"] = loss.item()
        return loss, parts

    # -- save / load ---------------------------------------------------------------
    def save_pretrained(self, path: str | Path, extra: dict[str, Any] | None = None) -> None:
        hub.save_pretrained(path, self.KIND, self.cfg.to_dict(), self.state_dict(), extra=extra)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> "JEPA":
        meta = hub.read_config(path, cls.KIND)
        model = cls(JEPAConfig(**meta["config"]))
        model.load_state_dict(hub.load_state_dict(path))
        model.extra = {k: v for k, v in meta.items() if k not in ("kind", "config")}
        return model.to(device).eval()


# ----------------------------------------------------------------------------- as a world

class JEPAWorld:
    """The JEPA's encoder + deterministic predictor as a batched latent world (the protocol
    `planners.learned.LearnedModel` plans in): the baseline a generative world model in the
    same latent must match. It sees pixels only, like every learned row."""

    max_jump = 1

    def __init__(self, model: JEPA):
        self.model = model.eval()
        self.cfg = model.cfg
        self.extras = dict(getattr(model, "extra", {}))
        self.n_calls = 0
        self.task: str | None = None   # the task it is run on: set by for_task
        self.task_id: int | None = None  # its index, for task-conditioned heads (cfg.task_heads): set by for_task

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> "JEPAWorld":
        return cls(JEPA.from_pretrained(path, device))

    def for_task(self, task: str | None = None) -> "JEPAWorld":
        """As `LatentWorld.for_task`: the same JEPA taking `task`'s actions (a JEPA of several tasks was
        trained on each task's actions as a fraction of its own bound, its `action_scales`)."""
        world = copy.copy(self)   # shares the model
        world.task = select_task(self.extras, task or self.task)
        task_action_scale(self.extras, world.task, self.cfg.action_scale)   # a folder without its scale fails now
        world.task_id = task_index(self.extras, world.task) if self.cfg.task_heads else None
        return world

    def _model_actions(self, actions: Tensor) -> Tensor:
        """The running task's actions in the JEPA's units (`worldmodel.tasks.model_actions`)."""
        if self.task is None:
            return actions
        return model_actions(actions, task_action_scale(self.extras, self.task, self.cfg.action_scale),
                             self.cfg.action_scale)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def action_dim(self) -> int:
        return self.cfg.action_dim

    @property
    def context_frames(self) -> int:
        return self.cfg.history

    def resolve_context_frames(self, context_frames: int | None = None) -> int:
        return resolve_count("context_frames", context_frames, self.context_frames)

    def resolve_sample_steps(self, sample_steps: int | None = None) -> None:
        """Deterministic: there is no sampler, so no sampling steps (any value is ignored)."""
        return None

    def fit_context(self, latents: Tensor, actions: Tensor, context_frames: int | None = None) -> tuple[Tensor, Tensor]:
        """As `LatentWorld.fit_context`: exactly `context_frames` (None: the history) frames."""
        return fit_context(latents, actions, self.resolve_context_frames(context_frames))

    @property
    def image_size(self) -> int:
        return self.cfg.image_size

    @property
    def latent_shape(self) -> tuple[int, int]:
        return (self.cfg.tokens, self.cfg.latent_dim)

    def encoder_fingerprint(self) -> str:
        """Identity of the latent space `encode_frames` maps into: sha256 of the encoder's config and weights.
        Training-only fields (the reconstruction head) do not change the map, so they stay out of the hash
        and graphs built before the field existed still match."""
        if "_fingerprint" not in self.__dict__:
            cfg = {k: v for k, v in self.cfg.to_dict().items() if k not in _TRAINING_ONLY_FIELDS}
            h = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode())
            for k, v in sorted(self.model.encoder.state_dict().items()):
                h.update(k.encode())
                h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    @torch.no_grad()
    def encode_frames(self, frames: np.ndarray | Tensor) -> Tensor:
        """uint8 frames (B, H, W, 3) -> latents (B, N, C)."""
        return self.model.encoder(frames_to_float(frames, self.cfg.image_size, self.device))

    def rollout(self, context_latents: Tensor, context_actions: Tensor, actions: Tensor, **_ignored) -> Tensor:
        """context (B, Tc, N, C), context actions (B, Tc-1, A), actions (B, H, A) -> (B, H, N, C).
        Deterministic: sampling options (steps, noise, cfg) of generative worlds do not apply."""
        dev = self.device
        ctx = torch.as_tensor(context_latents, dtype=torch.float32, device=dev)
        act = torch.as_tensor(actions, dtype=torch.float32, device=dev)
        B, Tc = ctx.shape[:2]
        h = self.cfg.history
        if ctx.ndim != 4 or Tc < h or tuple(ctx.shape[2:]) != self.latent_shape:
            raise ValueError(f"context latents have shape {tuple(ctx.shape)}, expected (B, Tc >= {h}, "
                             f"{self.latent_shape[0]}, {self.latent_shape[1]})")
        if act.ndim != 3 or act.shape[0] != B or act.shape[2] != self.action_dim:
            raise ValueError(f"actions have shape {tuple(act.shape)}, expected (B, H, {self.action_dim})")
        if self.cfg.task_heads and self.task_id is None:
            raise ValueError("this JEPA's predictor reads the task (task_heads > 0); run it through "
                             "for_task(<task>) first")
        self.n_calls += 1
        z = self.model.predictor.unroll(ctx[:, -h:].flatten(2), self.model.scale_actions(self._model_actions(act)),
                                        self.task_id)
        return z.view(B, act.shape[1], *self.latent_shape)
