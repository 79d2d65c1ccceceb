"""The learned world model as a PlanningModel (over `worldmodel.world.LatentWorld`).

state = `mpc.PixelContext`: the last RGB observations and the actions between them, as
        given by `mpc.PixelObserver` (pixels only: never the simulator state). The frames
        are encoded by the model's RAE (`LatentWorld.encode_frames`).
goal  = the goal IMAGE (H, W, 3) uint8, encoded once to its latent.
rollout(state, actions (B,H,A)) -> imagined latents (B,H,N,C) (one batched model call), or
        only the final frame (B,1,N,C) when the model jumps (`imagine`, `LatentWorld.jump`);
cost(latents, goal) -> (B,) latent MSE of the final predicted frame ("final", the default)
        or its mean over the horizon ("mean"); with a `planners.landmarks.LandmarkGraph`, its
        cost-to-go instead (`planners.landmarks.latent_cost`). Differentiable in the actions
        (gradient planner) when the model encodes actions with `action_encoding="embed"`
        (the graph term has no gradient).

The imagining itself (sampling steps, context length, padding, rollout or jump) is a
`worldmodel.world.Imagination`, the same object `LearnedWorld-v0` steps its episodes with.
At the first replan only one frame exists; with `pad_context` the context is filled to the
model's `context_frames` by repeating it with centre (zero) actions (`Imagination.fit_context`,
the padding `LearnedWorld-v0` uses, applied here to the frames before they are encoded), which
is what a task at rest looks like and how `LearnedWorld-v0` starts its own episodes.

Legend: E episodes, B candidates, Tc context frames, H horizon, A action dim, N tokens, C channels.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
import torch

from planners.landmarks import LandmarkGraph, latent_cost
from planners.mpc import PixelContext, PixelObserver
from worldmodel.world import ImagineConfig, Imagination


@dataclass
class LearnedConfig:
    sample_steps: int | None = None  # Euler steps per imagined frame (None: the model's, LatentWorld.sample_steps)
    cfg_scale: float = 1.0        # classifier-free guidance scale of the frame sampler
    horizon_cost: str = "final"   # "final": last predicted frame; "mean": every horizon step equally
    imagine: str = "auto"         # "rollout": frame by frame; "jump": only the final frame, in one jump
                                  # (models pretrained with data.max_jump >= H); "auto": jump when the model can
    context_frames: int | None = None  # context length fed to the model (None: the model's own)
    window: int | None = None     # the most frames an imagined frame sees (0: all; None: the model's own)
    pad_context: bool = True      # fill a short context by repeating the first frame with zero actions
    shared_noise: bool = True     # common random numbers: all candidates of a model call share the sampling
                                  # noise, so the cost ranks their actions, not their noise draws
    seed: int = 0                 # seed of the sampling-noise generator


class LearnedModel:
    """PlanningModel over a LatentWorld; see the module docstring."""

    differentiable = True

    def __init__(self, world: Any, action_space: gym.spaces.Box, cfg: LearnedConfig | None = None,
                 landmarks: LandmarkGraph | None = None):
        self.world = world
        self.landmarks = landmarks
        if landmarks is not None:
            landmarks.check_fingerprint(world.encoder_fingerprint(), "the world model")
        self.cfg = cfg = cfg or LearnedConfig()
        if cfg.horizon_cost not in ("final", "mean"):
            raise ValueError(f"horizon_cost={cfg.horizon_cost!r}, expected 'final' or 'mean'")
        self.imagination = Imagination(world, ImagineConfig(
            sample_steps=cfg.sample_steps, context_frames=cfg.context_frames, cfg_scale=cfg.cfg_scale,
            shared_noise=cfg.shared_noise, imagine=cfg.imagine, window=cfg.window))
        self.jump = self.imagination.jump
        if self.jump and cfg.horizon_cost != "final":
            raise ValueError(f"horizon_cost={cfg.horizon_cost!r} scores every imagined step, but a jump imagines only "
                             f"the final frame; use horizon_cost='final' or imagine='rollout'")
        if action_space.shape != (world.action_dim,):
            raise ValueError(f"action_space has shape {action_space.shape}, expected ({world.action_dim},) "
                             "to match the world model's action_dim")
        self.action_space = action_space
        self.context_frames = self.imagination.context_frames
        self._generator = torch.Generator(device=world.device)
        self._generator.manual_seed(int(cfg.seed))
        self._cache: dict[str, torch.Tensor] = {}
        self._prefix: tuple | None = None          # (contexts, their actions, their KV cache): the last observation
        self.calls = 0

    @property
    def device(self) -> torch.device:
        return self.world.device

    def observer(self) -> PixelObserver:
        """The observer that feeds this model: pixels, the actions between them, the goal image."""
        return PixelObserver(self.context_frames)

    # -- encoding (memoised: a plan scores many candidates from one observation) ------------
    def _encode(self, frames: np.ndarray) -> torch.Tensor:
        key = hashlib.sha1(np.ascontiguousarray(frames).tobytes() + str(frames.shape).encode()).hexdigest()
        if key not in self._cache:
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[key] = self.world.encode_frames(frames)
        return self._cache[key]

    def context(self, state: PixelContext) -> tuple[torch.Tensor, torch.Tensor]:
        """PixelContext -> (latents (Tc,N,C), actions (Tc-1,A)) on the model's device."""
        if not isinstance(state, PixelContext):
            raise ValueError(f"learned-model state is a {type(state).__name__}, expected a planners.mpc.PixelContext "
                             "(pixels and actions only)")
        frames, acts = np.asarray(state.frames), np.asarray(state.actions, np.float32)
        if frames.dtype != np.uint8 or frames.ndim != 4 or len(acts) != len(frames) - 1:
            raise ValueError(f"PixelContext has frames {frames.shape} {frames.dtype} and actions {acts.shape}, "
                             "expected uint8 (Tc, H, W, 3) frames and (Tc-1, A) actions")
        frames = torch.from_numpy(np.ascontiguousarray(frames[-self.context_frames:]))   # (T, H, W, 3), T <= Tc
        acts = torch.as_tensor(acts[len(acts) - (len(frames) - 1):]).reshape(len(frames) - 1, self.world.action_dim)
        if self.cfg.pad_context:   # padded as pixels, then encoded: the RAE sees Tc frames, whatever T was
            frames, acts = self.imagination.fit_context(frames, acts)              # (Tc, H, W, 3), (Tc-1, A)
        z = self._encode(frames.numpy())                                           # (Tc, N, C)
        return z, acts.to(z.device)

    def goal_latent(self, goal: Any) -> torch.Tensor:
        g = np.asarray(goal)
        if g.dtype != np.uint8 or g.ndim != 3 or g.shape[-1] != 3:
            raise ValueError(f"learned-model goal has shape {g.shape} dtype {g.dtype}, expected an (H, W, 3) uint8 goal image")
        return self._encode(g[None])[0]

    # -- protocol ------------------------------------------------------------------------
    def _imagine(self, ctx_BcTNC, ctx_a_BcTA, actions_BHA):
        """(B, H, N, C) imagined latents, or (B, 1, N, C) (the final frame) when jumping; Bc divides B."""
        self.calls += 1
        return self.imagination(ctx_BcTNC, ctx_a_BcTA, actions_BHA, generator=self._generator)

    def _prefill(self, z: torch.Tensor, za: torch.Tensor):
        """The contexts' KV cache, computed once per observation: every iteration of a plan scores
        its candidates against the same contexts (None: no grad-free world prefill, or gradients on)."""
        if torch.is_grad_enabled():
            return None
        cached = self._prefix
        if cached is not None and cached[0].shape == z.shape and torch.equal(cached[0], z) and torch.equal(cached[1], za):
            return cached[2]
        prefix = self.imagination.prefill(z, za)
        self._prefix = (z, za, prefix)
        return prefix

    def rollout(self, state: PixelContext, actions) -> torch.Tensor:
        a = torch.as_tensor(actions, dtype=torch.float32, device=self.device)
        if a.ndim != 3:
            raise ValueError(f"actions have shape {tuple(a.shape)}, expected (B, H, A)")
        z, za = self.context(state)
        return self._imagine(z[None], za[None], a)                                   # (B, H, N, C)

    def rollout_batch(self, states: Sequence[PixelContext], actions) -> torch.Tensor:
        """(E, B, H, A) -> (E, B, H, N, C) in one model call (all contexts share Tc after padding)."""
        a = torch.as_tensor(actions, dtype=torch.float32, device=self.device)
        if a.ndim != 4 or a.shape[0] != len(states):
            raise ValueError(f"actions have shape {tuple(a.shape)}, expected (E={len(states)}, B, H, A)")
        E, B = a.shape[:2]
        ctx = [self.context(s) for s in states]
        if len({c[0].shape for c in ctx}) != 1:                                         # mixed lengths: one call each
            return torch.stack([self.rollout(s, a[e]) for e, s in enumerate(states)])
        z = torch.stack([c[0] for c in ctx])                                            # (E, Tc, N, C)
        za = torch.stack([c[1] for c in ctx])                                           # (E, Tc-1, A)
        prefix = self._prefill(z, za)
        out = self._imagine(z if prefix is None else prefix, za if prefix is None else None,
                            a.reshape(E * B, *a.shape[2:]))                             # row e*B+b: context e
        return out.reshape(E, B, *out.shape[1:])

    def _score(self, z: torch.Tensor, goal_NC: torch.Tensor) -> torch.Tensor:
        """(..., H, N, C) -> (...) latent MSE, or the landmark cost-to-go."""
        if self.cfg.horizon_cost == "final":
            z = z[..., -1:, :, :]
        return latent_cost(z, goal_NC, self.landmarks)

    def cost(self, predictions: torch.Tensor, goal: Any) -> torch.Tensor:
        return self._score(predictions, self.goal_latent(goal))

    def cost_batch(self, predictions: torch.Tensor, goals: Sequence[Any]) -> torch.Tensor:
        g = torch.stack([self.goal_latent(x) for x in goals])                            # (E, N, C)
        return self._score(predictions, g[:, None, None])
