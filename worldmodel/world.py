"""LatentWorld: a pretrained Transfusion + its RAE as a batched latent simulator.

This is the one primitive that the Gymnasium env (`envs.learned`), the planners
(`planners.learned`), the prediction evaluator and the benchmarks share:

    world = LatentWorld.from_pretrained("runs/tiny_cpu/model", device="cpu")
    z_ctx = world.encode_frames(frames)                      # uint8 (B*Tc,H,W,3) -> (B*Tc,N,C)
    z = world.rollout(z_ctx.view(B, Tc, N, C), ctx_actions, actions)   # (B,H,N,C)
    z_H = world.jump(z_ctx.view(B, Tc, N, C), ctx_actions, actions)    # (B,1,N,C): step H only
    cost = world.latent_cost(z, goal_latents)                # (B,) MSE of the last frame

The simulator's defaults live here and nowhere else: `world.context_frames` and
`world.sample_steps` are the model folder's exported values (else 2 frames and the model's
`flow.sample_steps`); a caller's override is resolved against them by
`resolve_context_frames` / `resolve_sample_steps` (None, and only None, means "the
model's"). `Imagination` is a world with the caller's options fixed: what LearnedWorld-v0
steps and what the learned planners score. A world run on one task (`world.for_task(task)`)
takes that task's actions: a model of several tasks sees each task's as a fraction of its own
bound (`task_action_scale`, `model_actions`), as it did in training.

Pure model code: it imports only `worldmodel` and torch/numpy, and takes its device
from the loaded weights (no device strings here).

Legend: B batch, Tc context frames, H horizon, A action dim, N tokens per frame,
C latent channels.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from . import hub
from .defaults import DEFAULT_CONTEXT_FRAMES, fit_context, resolve_count
from .device import keep_freed_memory
from .errors import ModelFolderError
from .frames import as_tensor, frames_to_float
from .stream import ContextPrefix
from .tasks import covered_tasks, model_actions, select_task, task_action_scale  # noqa: F401 (re-exported)

# Extra fields the trainer writes into a world-model folder's config.json (a single-task model's action
# scale is the model config's `action_scale`); a model of several tasks has `tasks` instead of `task`,
# and `action_scales` {task: scale}, each task's action bound (`task_action_scale`).
EXTRA_KEYS = ("task", "tasks", "action_scales", "image_size", "context_frames", "sample_steps", "max_jump", "window")


class LatentWorld:
    """A world model in RAE latent space: encode frames, roll out actions, decode.

    `model` is a `worldmodel.transfusion.Transfusion` (anything with
    `predict_next_frames`), `rae` a `worldmodel.rae.RAE`. `extras` holds the model
    folder's extra fields (task or tasks, action_scales, image_size, context_frames, sample_steps,
    max_jump): `covered_tasks(world.extras)` says which tasks it covers. `task` is the task it is run
    on (`for_task`): its actions are that task's, each scaled by the task's own bound on the way to
    the model; None takes actions in the model's units (for a single-task model, its task's).
    """

    # rollout/jump take Bc contexts for B = r * Bc action sequences and compute each context's KV
    # cache once (the candidates of one plan share it): `Imagination` passes them unexpanded
    shares_contexts = True

    def __init__(self, model: Any, rae: Any, extras: dict[str, Any] | None = None):
        self.model = model.eval()
        self.rae = rae.eval()
        self.extras = dict(extras or {})
        self.task: str | None = None   # the task it is run on: set by for_task
        if self.device.type == "cpu":
            keep_freed_memory()   # rollouts reuse their freed buffers instead of page-faulting fresh ones
        self.n_calls = 0  # predict_next_frames calls made through rollout (batching is visible in tests/benches)

    # -- loading -------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> "LatentWorld":
        """Load a world-model folder: Transfusion at `path`, its RAE at `path/rae`."""
        path = Path(path)
        meta = hub.read_config(path)  # names the missing folder / config.json
        if meta.get("kind") != "transfusion":
            raise ModelFolderError(f"{str(path)!r} holds a {meta.get('kind')!r} model, expected a 'transfusion' "
                             f"world-model folder (exported by `lw pretrain`)")
        rae_dir = path / "rae"
        if not (rae_dir / hub.CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{str(rae_dir)!r} is missing; a world-model folder keeps the RAE it was "
                                    f"trained on in its 'rae/' subfolder")
        from .rae import RAE
        from .transfusion import Transfusion

        model = Transfusion.from_pretrained(path, device=device)
        rae = RAE.from_pretrained(rae_dir, device=device)
        extras = {k: v for k, v in meta.items() if k not in ("kind", "config")}
        return cls(model, rae, extras)

    def for_task(self, task: str | None = None) -> "LatentWorld":
        """This world run on `task` (`select_task`; None: the task it runs on already, else the model's
        only one): the same model and RAE, taking that task's actions. A model of several tasks refuses
        a task it was not trained on."""
        world = copy.copy(self)   # shares the modules: one loaded folder serves every task it covers
        world.task = select_task(self.extras, task or self.task)
        task_action_scale(self.extras, world.task, self.model.cfg.action_scale)   # a folder without its scale fails now
        return world

    # -- properties ----------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def image_size(self) -> int:
        return int(self.rae.image_size)

    @property
    def tokens(self) -> int:
        gh, gw = self.rae.grid
        return int(gh * gw)

    @property
    def latent_dim(self) -> int:
        return int(self.rae.latent_dim)

    @property
    def latent_shape(self) -> tuple[int, int]:
        return (self.tokens, self.latent_dim)

    @property
    def action_dim(self) -> int:
        return int(self.model.cfg.action_dim)

    @property
    def action_scale(self) -> float:
        """Actions lie in [-action_scale, action_scale]: the bound of the world's task (`task_action_scale`);
        for a world of no task, the model config's (the unit the model divides its actions by)."""
        model_scale = float(self.model.cfg.action_scale)
        return model_scale if self.task is None else task_action_scale(self.extras, self.task, model_scale)

    def to_model_actions(self, actions: Tensor) -> Tensor:
        """The world's task's actions in the model's units (`model_actions`); the same tensor for a
        single-task model, whose one scale is its task's."""
        return model_actions(actions, self.action_scale, float(self.model.cfg.action_scale))

    @property
    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) float32 (A,) of the action box (gym-free; `envs` builds the Box)."""
        high = np.full(self.action_dim, self.action_scale, np.float32)
        return -high, high

    @property
    def context_frames(self) -> int:
        """The model's context length: the folder's `context_frames`, else 2."""
        v = self.extras.get("context_frames")
        return int(v) if v is not None else DEFAULT_CONTEXT_FRAMES

    @property
    def sample_steps(self) -> int:
        """The model's Euler steps per imagined frame: the folder's `sample_steps`, else `flow.sample_steps`."""
        v = self.extras.get("sample_steps")
        return int(v) if v is not None else int(self.model.cfg.flow.sample_steps)

    @property
    def window(self) -> int:
        """The most frames an imagined frame sees (`Transfusion.predict_next_frames`): the folder's
        `window`, else 0 (the whole rollout)."""
        v = self.extras.get("window")
        return int(v) if v is not None else 0

    def resolve_window(self, window: int | None = None) -> int:
        v = self.window if window is None else window
        if isinstance(v, bool) or int(v) != v or int(v) < 0:
            raise ValueError(f"window={window!r}, expected an int >= 0 "
                             f"(0: the whole rollout; None: the model's {self.window})")
        return int(v)

    def resolve_context_frames(self, context_frames: int | None = None) -> int:
        return resolve_count("context_frames", context_frames, self.context_frames)

    def resolve_sample_steps(self, sample_steps: int | None = None) -> int:
        return resolve_count("sample_steps", sample_steps, self.sample_steps)

    def fit_context(self, latents: Tensor, actions: Tensor | None,
                    context_frames: int | None = None) -> tuple[Tensor, Tensor]:
        """(T,N,C) latents + (T-1,A) actions (None: zeros, a context at rest) -> exactly `context_frames`
        frames (None: the model's); see `fit_context`."""
        if actions is None:
            actions = latents.new_zeros(max(0, latents.shape[0] - 1), self.action_dim)
        return fit_context(latents, actions, self.resolve_context_frames(context_frames))

    @property
    def max_jump(self) -> int:
        """Most steps `jump` may predict ahead: the data.max_jump the model was trained with (1: none)."""
        return int(self.extras.get("max_jump") or 1)

    @property
    def uses_text_actions(self) -> bool:
        return getattr(self.model.cfg, "action_encoding", "embed") == "text"

    # -- pixels <-> latents --------------------------------------------------------
    def encoder_fingerprint(self) -> str:
        """Identity of the latent space `encode_frames` maps into (the RAE's fingerprint)."""
        if "_fingerprint" not in self.__dict__:
            self._fingerprint = self.rae.fingerprint()
        return self._fingerprint

    @torch.no_grad()
    def encode_frames(self, frames: np.ndarray | Tensor) -> Tensor:
        """uint8 frames (B, H, W, 3) (numpy or torch) -> normalised latents (B, N, C)."""
        return self.rae.encode(frames_to_float(frames, self.image_size, self.device))

    @torch.no_grad()
    def decode_float(self, latents: Tensor) -> Tensor:
        """Latents (..., N, C) -> float images (..., 3, H, W) in [0, 1]."""
        lead = latents.shape[:-2]
        x = self.rae.decode(latents.reshape(-1, *latents.shape[-2:]))
        return x.clamp(0, 1).reshape(*lead, *x.shape[1:])

    @torch.no_grad()
    def decode(self, latents: Tensor) -> np.ndarray:
        """Latents (..., N, C) -> uint8 frames (..., H, W, 3) as numpy (the gym convention)."""
        lead = latents.shape[:-2]
        x = self.rae.decode_uint8(latents.reshape(-1, *latents.shape[-2:]))
        return x.reshape(*lead, *x.shape[1:]).cpu().numpy()

    # -- dynamics ------------------------------------------------------------------
    def _inputs(self, context_latents, context_actions, actions) -> tuple[Any, Tensor | None, Tensor]:
        """rollout/jump inputs as float32 tensors on the model's device (a ContextPrefix passes
        as it is). Their shapes are checked once, by the model (Transfusion._check_rollout)."""
        dev = self.device
        act = self.to_model_actions(as_tensor(actions, dev, torch.float32))
        if isinstance(context_latents, ContextPrefix):
            return context_latents, None, act
        ctx_a = self.to_model_actions(as_tensor(context_actions, dev, torch.float32))
        return as_tensor(context_latents, dev, torch.float32), ctx_a, act

    @torch.no_grad()
    def prefill(self, context_latents: np.ndarray | Tensor, context_actions: np.ndarray | Tensor) -> ContextPrefix:
        """(Bc,Tc,N,C) context + (Bc,Tc-1,A) actions -> their KV cache, computed once
        (Transfusion.prefill): pass it as `context_latents` (context_actions None) to the rollouts
        and jumps that continue that context, e.g. every CEM iteration of one replan."""
        ctx, ctx_a = (as_tensor(x, self.device, torch.float32) for x in (context_latents, context_actions))
        return self.model.prefill(ctx, self.to_model_actions(ctx_a))

    def rollout(self, context_latents: np.ndarray | Tensor, context_actions: np.ndarray | Tensor,
                actions: np.ndarray | Tensor, sample_steps: int | None = None, pixels: bool = False,
                text: str | Sequence[str] | None = None, cfg_scale: float = 1.0,
                generator: torch.Generator | None = None,
                shared_noise: bool = False, window: int | None = None) -> Tensor | tuple[Tensor, np.ndarray]:
        """Imagine H frames for a batch of action sequences in one batched model call.

        context_latents (B,Tc,N,C), context_actions (B,Tc-1,A) (the actions between the
        context frames), actions (B,H,A) (the first one acts on the last context frame)
        -> latents (B,H,N,C); with pixels=True also uint8 frames (B,H,H_img,W_img,3).
        `sample_steps`: Euler steps per frame (None: `self.sample_steps`). `text`: a
        language command (one string for all rows, or one per row) conditioning every frame
        (text-action models only). Differentiable in
        `actions` unless called under torch.no_grad (gradient planners rely on it).
        `shared_noise`: all rows sample from one noise draw (common random numbers), so their
        predictions differ only through their actions and contexts. `generator`: one for the
        batch, or a list of B (row i's noise from generator i alone: B envs stepped together
        imagine what each would alone, see `flow.randn`). `window`: the most frames an
        imagined frame sees (0: all before it; None: `self.window`).
        """
        ctx, ctx_a, act = self._inputs(context_latents, context_actions, actions)
        if text is not None:
            if isinstance(ctx, ContextPrefix):
                raise ValueError("a language command conditions the context; a ContextPrefix was prefilled without one")
            text = [text] * ctx.shape[0] if isinstance(text, str) else list(text)
            if not self.uses_text_actions:
                raise ValueError(f"a language command needs a model with action_encoding='text', this one has "
                                 f"{getattr(self.model.cfg, 'action_encoding', None)!r}")
        self.n_calls += 1
        steps = self.resolve_sample_steps(sample_steps)
        z = self.model.predict_next_frames(ctx, ctx_a, act, steps=steps, cfg_scale=cfg_scale, generator=generator,
                                           text=text, shared_noise=shared_noise,
                                           window=self.resolve_window(window))                 # (B,H,N,C)
        if not pixels:
            return z
        return z, self.decode(z)

    def jump(self, context_latents: np.ndarray | Tensor, context_actions: np.ndarray | Tensor,
             actions: np.ndarray | Tensor, sample_steps: int | None = None, cfg_scale: float = 1.0,
             generator: torch.Generator | None = None, shared_noise: bool = False) -> Tensor:
        """The frame after all H actions, predicted in one jump (no imagined frames between):
        same inputs as `rollout` -> latents (B, 1, N, C). Needs H <= max_jump (the model saw
        jumps up to that length in pretraining, `data.max_jump`). Differentiable in `actions`
        unless called under torch.no_grad. `shared_noise` as in `rollout`.
        """
        ctx, ctx_a, act = self._inputs(context_latents, context_actions, actions)
        if act.ndim == 3 and not 1 <= act.shape[1] <= self.max_jump:  # other shapes: the model's error
            raise ValueError(f"a jump of {act.shape[1]} actions; this model was trained with jumps of 1..{self.max_jump} "
                             f"(data.max_jump); use a horizon <= {self.max_jump} or a step-by-step rollout")
        steps = self.resolve_sample_steps(sample_steps)
        self.n_calls += 1
        return self.model.predict_frame_after(ctx, ctx_a, act, steps=steps, cfg_scale=cfg_scale,
                                              generator=generator, shared_noise=shared_noise)[:, None]

    def imagine_from_text(self, texts: str | Sequence[str], sample_steps: int | None = None, cfg_scale: float = 1.0,
                          generator: torch.Generator | None = None) -> Tensor:
        """Caption -> image in latent space: one string or B strings -> (B, N, C) latents
        (the model's image-text direction; decode() them to see them). A described goal state
        becomes a goal latent for the planners."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        steps = self.resolve_sample_steps(sample_steps)
        self.n_calls += 1
        return self.model.generate_frames(texts, steps=steps, cfg_scale=cfg_scale, generator=generator)

    @staticmethod
    def latent_cost(latents: Tensor, goal_latents: Tensor) -> Tensor:
        """(B,) mean squared error between predicted and goal latents (lower is better).

        latents (B,N,C), or (B,H,N,C) (a rollout: the last frame is scored); goal_latents
        (N,C) or (B,N,C). Differentiable.
        """
        if latents.ndim == 4:
            latents = latents[:, -1]
        if latents.ndim != 3:
            raise ValueError(f"latents have shape {tuple(latents.shape)}, expected (B, N, C) or (B, H, N, C)")
        goal = as_tensor(goal_latents, latents.device, latents.dtype)
        if goal.ndim == 2:
            goal = goal.unsqueeze(0)
        if goal.shape[-2:] != latents.shape[-2:] or goal.shape[0] not in (1, latents.shape[0]):
            raise ValueError(f"goal latents have shape {tuple(goal.shape)}, expected (N, C) or (B, N, C) "
                             f"matching latents {tuple(latents.shape)}")
        return (latents - goal).pow(2).flatten(1).mean(1)


# --------------------------------------------------------------------------- imagination

IMAGINE = ("rollout", "jump", "auto")


@dataclass
class ImagineConfig:
    """How an `Imagination` samples; None: the world's default (resolved once, at construction)."""
    sample_steps: int | None = None    # Euler steps per imagined frame (None: world.sample_steps)
    context_frames: int | None = None  # context length fed to the model (None: world.context_frames)
    cfg_scale: float = 1.0             # classifier-free guidance scale of the frame sampler
    shared_noise: bool = False         # common random numbers across the rows of one call
    imagine: str = "rollout"           # "rollout": frame by frame; "jump": only the final frame, in one
                                       # jump (models pretrained with data.max_jump >= H); "auto": jump when it can
    window: int | None = None          # the most frames an imagined frame sees (0: all; None: world.window)


class Imagination:
    """A world (LatentWorld, or JEPAWorld: anything with rollout/jump, fit_context and the
    resolve_* methods) with the caller's options resolved: `LearnedWorld-v0` steps its
    episodes with one, the learned planners score their candidates with one.

        im = Imagination(world, ImagineConfig(sample_steps=2))
        z, a = im.fit_context(latents_TNC, actions_TA)              # exactly im.context_frames
        pred = im(z_BcTNC, a_BcTA, actions_BHA, generator=g)        # (B,H,N,C), or (B,1,N,C) jumping
    """

    def __init__(self, world: Any, cfg: ImagineConfig | None = None):
        cfg = cfg or ImagineConfig()
        self.world, self.cfg = world, cfg
        if cfg.imagine not in IMAGINE:
            raise ValueError(f"imagine={cfg.imagine!r}, expected one of {IMAGINE}")
        self.context_frames = world.resolve_context_frames(cfg.context_frames)
        self.sample_steps = world.resolve_sample_steps(cfg.sample_steps)
        # a world without a window (JEPAWorld: a deterministic predictor of the last frames) has none to pick
        self.window = world.resolve_window(cfg.window) if hasattr(world, "resolve_window") else None
        self.jump = cfg.imagine == "jump" or (cfg.imagine == "auto" and world.max_jump > 1)

    def fit_context(self, latents: Tensor, actions: Tensor | None) -> tuple[Tensor, Tensor]:
        """(T,N,C) + (T-1,A) -> (Tc,N,C) + (Tc-1,A): the last Tc frames, or padded at rest."""
        return self.world.fit_context(latents, actions, self.context_frames)

    def prefill(self, context: Tensor, context_actions: Tensor) -> ContextPrefix | None:
        """(Bc,Tc,N,C) + (Bc,Tc-1,A) -> their KV cache computed once, to pass as `context` (with
        context_actions None) to calls that continue them; None for a world without one (JEPAWorld)."""
        return self.world.prefill(context, context_actions) if hasattr(self.world, "prefill") else None

    def __call__(self, context: Tensor, context_actions: Tensor, actions: Tensor,
                 generator: torch.Generator | list | None = None, text: str | Sequence[str] | None = None,
                 pixels: bool = False):
        """context (Bc,Tc,N,C) or (Tc,N,C), context_actions (Bc,Tc-1,A) or (Tc-1,A), actions (B,H,A)
        with Bc dividing B (row r continues context r // (B // Bc)) -> the world's rollout
        (B,H,N,C) (+ pixels), or its jump (B,1,N,C). One model call."""
        if isinstance(context, ContextPrefix):
            B, Bc = actions.shape[0], context.rows
        else:
            if context.ndim == 3:
                context, context_actions = context[None], context_actions[None]
            B, Bc = actions.shape[0], context.shape[0]
        if B % Bc:
            raise ValueError(f"{Bc} contexts for {B} action sequences; expected a number of contexts dividing {B}")
        if Bc != B and not isinstance(context, ContextPrefix) and not getattr(self.world, "shares_contexts", False):
            context, context_actions = context.repeat_interleave(B // Bc, 0), context_actions.repeat_interleave(B // Bc, 0)
        kw = dict(sample_steps=self.sample_steps, cfg_scale=self.cfg.cfg_scale, generator=generator,
                  shared_noise=self.cfg.shared_noise)
        if self.jump:
            if pixels or text is not None:
                raise ValueError("a jump imagines latents without a language command; use imagine='rollout'")
            return self.world.jump(context, context_actions, actions, **kw)
        extra = {"pixels": True} if pixels else {}
        if self.window is not None:
            extra["window"] = self.window
        if text is not None:
            extra["text"] = text
        return self.world.rollout(context, context_actions, actions, **kw, **extra)
