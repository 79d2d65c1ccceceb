"""LearnedWorld-v0: a pretrained world model as a Gymnasium simulator.

`LearnedWorldEnv` (one episode) and `LearnedWorldVectorEnv` (B episodes stepped in one
batched model call) share `_Episodes`, which holds the ground-truth task and the state of B
imagined episodes (context latents, context actions, goal latents), and imagines with a
`worldmodel.world.Imagination` (the model with its resolved options, as the planners use it).
The kwargs are the fields of `LearnedWorldConfig`.

- reset starts from real frames: the ground-truth MuJoCo task is reset with the seed and
  `context_frames` real frames are rendered (zero actions between them), then encoded by
  the RAE; or the caller passes frames/latents in `options`. The goal image comes from
  the same task (or `options`), encoded to a goal latent.
- step(action) predicts the next latent frame with the Transfusion (few Euler steps,
  `sample_steps`), sliding the context window. Reward = -MSE(latent, goal latent);
  terminated when that distance <= goal_threshold; truncated at max_episode_steps.
- Sampling noise comes from one torch.Generator per env, seeded at reset from that env's own
  random stream: same seed + same actions -> same observations, and env i of a vector env
  reset with seed s imagines exactly what a single env reset with seed s + i imagines (as
  Gymnasium's own vector envs seed env i with s + i).

Legend: B batch (envs), Tc context frames, N tokens per frame, C latent channels,
A action dim, H horizon.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.utils import seeding
from gymnasium.vector.utils import batch_space

from envs.actions import check_action
from worldmodel.device import resolve_device
from worldmodel.world import ImagineConfig, Imagination, LatentWorld

OBS_MODES = ("pixels", "latent", "both")
# Latent MSE to the goal latent below which an episode terminates. Measured on reacher with the
# own-MAE RAE (64px, 16x192 tokens; 30 held-out scripted episodes, 1230 frames): frames within the
# true success radius (0.02 m) have median MSE 0.07-0.19; at 0.15, 58% of them count and no frame
# farther than 0.02 m does (0.2: 77% / 3.6%). RAE-specific: a model folder may set "goal_threshold".
DEFAULT_GOAL_THRESHOLD = 0.15
SEED_MAX = 2**31 - 1


def load_world(model: str | Path | LatentWorld | None, device: str | torch.device | None = None) -> LatentWorld:
    """A LatentWorld from a model folder (or an already loaded one, shared between envs)."""
    if isinstance(model, LatentWorld):
        return model
    if model is None:
        raise ValueError("LearnedWorld-v0 needs model=<folder written by `lw pretrain`> "
                         "(a Transfusion save_pretrained folder with the RAE in rae/), got model=None")
    if not isinstance(model, (str, Path)):
        raise ValueError(f"model={model!r} ({type(model).__name__}), expected a model folder path or a LatentWorld")
    return LatentWorld.from_pretrained(model, device=resolve_device(device))


def _tensor(x: Any, device: torch.device) -> torch.Tensor:
    """A float32 tensor on `device` from numpy / torch (any device) / nested lists."""
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(device=device, dtype=torch.float32)


def _batch_option(options: dict, key: str, n: int, single: bool) -> Any:
    """An option for n envs: the single env passes one item, the vector env a batch of n."""
    if key not in options or options[key] is None:
        return None
    v = options[key]
    if single:
        return [v]
    if len(v) != n:
        raise ValueError(f"options[{key!r}] has {len(v)} entries, expected one per reset env ({n})")
    return list(v)


@dataclass
class LearnedWorldConfig:
    """The kwargs of LearnedWorld-v0 (`gym.make` / `gym.make_vec`, besides render_mode and num_envs)."""
    model: str | Path | LatentWorld | None = None  # folder written by `lw pretrain`, or a loaded LatentWorld
    task: str | None = None                 # ground-truth task of starts and goals (None: the model folder's;
                                            # a model of several tasks needs one of them named)
    obs: str = "pixels"                     # "pixels" | "latent" | "both" (a Dict of the two)
    sample_steps: int | None = None         # Euler steps per imagined frame (None: LatentWorld.sample_steps)
    context_frames: int | None = None       # context length (None: LatentWorld.context_frames)
    device: str | None = None               # None: cuda if available, else cpu
    max_episode_steps: int | None = None    # None: the task's episode_steps
    goal_threshold: float | None = None     # latent MSE that terminates (None: the folder's, else 0.15)
    cfg_scale: float = 1.0                  # classifier-free guidance scale of the frame sampler

    @classmethod
    def from_kwargs(cls, kwargs: dict) -> "LearnedWorldConfig":
        names = [f.name for f in fields(cls)]
        bad = sorted(set(kwargs) - set(names))
        if bad:
            hint = " (denoise_steps is now sample_steps)" if "denoise_steps" in bad else ""
            raise TypeError(f"LearnedWorld-v0 got unknown kwargs {bad}{hint}, expected some of {names} "
                            f"(and render_mode, num_envs)")
        return cls(**kwargs)


class _Episodes:
    """The model's imagination, the ground-truth task, the spaces and the state of B imagined episodes."""

    def __init__(self, n: int, cfg: LearnedWorldConfig):
        if cfg.obs not in OBS_MODES:
            raise ValueError(f"obs={cfg.obs!r}, expected one of {OBS_MODES}")
        # run on its task: a model of several tasks needs one of its own, and takes that task's actions
        self.world = w = load_world(cfg.model, cfg.device).for_task(cfg.task)
        self.imagination = Imagination(w, ImagineConfig(sample_steps=cfg.sample_steps,
                                                        context_frames=cfg.context_frames, cfg_scale=cfg.cfg_scale))
        from envs.mujoco_tasks import make_task  # MuJoCo starts only when an env is made

        self.task_name = w.task
        self.task = make_task(self.task_name, image_size=w.image_size)
        space = self.task.action_space
        if space.shape != (w.action_dim,):
            raise ValueError(f"task {self.task_name!r} has actions of shape {space.shape}, but the model "
                             f"was trained with action_dim={w.action_dim}")
        self.n = n
        self.obs_mode = cfg.obs
        self.tc = self.imagination.context_frames
        spec = getattr(self.task, "spec_", None)
        self.max_steps = int(cfg.max_episode_steps if cfg.max_episode_steps is not None
                             else getattr(spec, "episode_steps", 50))
        if self.max_steps < 1:
            raise ValueError(f"max_episode_steps={cfg.max_episode_steps}, expected >= 1")
        self.goal_threshold = float(cfg.goal_threshold if cfg.goal_threshold is not None
                                    else w.extras.get("goal_threshold", DEFAULT_GOAL_THRESHOLD))
        self.action_space = spaces.Box(space.low.astype(np.float32), space.high.astype(np.float32), dtype=np.float32)
        s, (N, C) = w.image_size, w.latent_shape
        pix = spaces.Box(0, 255, (s, s, 3), np.uint8)
        lat = spaces.Box(-np.inf, np.inf, (N, C), np.float32)
        self.observation_space = {"pixels": pix, "latent": lat,
                                  "both": spaces.Dict({"pixels": pix, "latent": lat})}[cfg.obs]
        self.render_fps = int(self.task.metadata.get("render_fps", 10))
        # state of the B episodes (filled at reset)
        dev, A = w.device, w.action_dim
        self.ctx = torch.zeros(n, self.tc, N, C, device=dev)            # (B,Tc,N,C) context latents
        self.ctx_actions = torch.zeros(n, self.tc - 1, A, device=dev)   # (B,Tc-1,A) actions between them
        self.goal = torch.zeros(n, N, C, device=dev)                    # (B,N,C) goal latents
        self.t = np.zeros(n, np.int64)                                  # steps taken this episode
        self.latent_np = np.zeros((n, N, C), np.float32)                # current latent, numpy
        self.dist = np.zeros(n, np.float64)                             # current latent distance to goal
        self.frames: np.ndarray | None = None                           # decoded current frames (cache)
        self.command: str | None = None                                 # language command (text models)
        self.generators = [torch.Generator(device=dev) for _ in range(n)]  # env stepping noise, one per env
        self.plan_generator = torch.Generator(device=dev)               # rollout() noise (kept apart)
        self.started = False

    # -- reset ---------------------------------------------------------------------
    def seed_env(self, i: int, rng: np.random.Generator, seed: int | None) -> tuple[int, int]:
        """Seed env i for a reset from its own random stream `rng`; returns (task seed, seed for
        rollout() noise). The draws are those of a single env's reset(seed=seed), so env i of a
        vector env and a single env given the same stream start and imagine alike."""
        task_seed = int(seed) if seed is not None else int(rng.integers(SEED_MAX))
        self.generators[i].manual_seed(int(rng.integers(SEED_MAX)))
        return task_seed, int(rng.integers(SEED_MAX))

    def real_context(self, seed: int, goal_state=None) -> tuple[np.ndarray, np.ndarray, dict]:
        """Reset MuJoCo with `seed`; Tc real frames (zero actions between them) and the goal image."""
        opts = {"goal_state": goal_state} if goal_state is not None else None
        frame, info = self.task.reset(seed=int(seed), options=opts)
        frames = [frame]
        zero = np.zeros(self.action_space.shape, np.float32)
        for _ in range(self.tc - 1):
            frames.append(self.task.step(zero)[0])
        return np.stack(frames), np.asarray(self.task.goal_image), info

    def _mujoco_starts(self, seeds: Sequence[int], need_ctx: bool, need_goal: bool, goal_states) -> tuple:
        """Context frames and goal images from the ground-truth task, where the caller gave none."""
        infos, ctx_frames, goal_frames = [], [], []
        for k, seed in enumerate(seeds):
            info: dict[str, Any] = {"task_seed": int(seed)}
            if need_ctx or need_goal:
                f, g, tinfo = self.real_context(seed, goal_states[k] if goal_states else None)
                info["state"] = np.asarray(tinfo["state"], np.float64)
                info["goal_state"] = np.asarray(self.task.goal_state, np.float64)
                ctx_frames += [f] if need_ctx else []
                goal_frames += [g] if need_goal else []
            infos.append(info)
        return infos, ctx_frames, goal_frames

    def start(self, idx: np.ndarray, seeds: Sequence[int], options: dict | None, single: bool) -> list[dict]:
        """(Re)start episodes `idx` (seeds: one task seed each). Returns one info dict per env."""
        options = dict(options or {})
        known = {"frames", "latents", "actions", "goal_image", "goal_latent", "goal_state", "command", "reset_mask"}
        unknown = set(options) - known
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}, expected some of {sorted(known)}")
        w, n, dev = self.world, len(idx), self.world.device
        opt = {k: _batch_option(options, k, n, single)
               for k in ("frames", "latents", "actions", "goal_image", "goal_latent", "goal_state")}
        if opt["frames"] is not None and opt["latents"] is not None:
            raise ValueError("options hold both 'frames' and 'latents'; pass one context")
        if "command" in options:
            self.set_command(options["command"])
        need_ctx = opt["frames"] is None and opt["latents"] is None
        need_goal = opt["goal_image"] is None and opt["goal_latent"] is None
        infos, ctx_frames, goal_frames = self._mujoco_starts(seeds, need_ctx, need_goal, opt["goal_state"])
        if opt["frames"] is not None:
            ctx_frames = [np.asarray(f) for f in opt["frames"]]
            for f in ctx_frames:
                if f.ndim != 4:
                    raise ValueError(f"options['frames'] entry has shape {f.shape}, expected (T, H, W, 3) uint8")
        if opt["goal_image"] is not None:
            goal_frames = [np.asarray(g) for g in opt["goal_image"]]
        # One RAE call for every frame that needs encoding: contexts, then goals.
        to_encode = ctx_frames + ([np.stack(goal_frames)] if goal_frames else [])
        enc = w.encode_frames(np.concatenate(to_encode)) if to_encode else None
        off = 0
        for k, i in enumerate(idx):
            if opt["latents"] is not None:
                z = _tensor(opt["latents"][k], dev)
                if z.ndim != 3 or tuple(z.shape[1:]) != w.latent_shape:
                    raise ValueError(f"options['latents'] entry has shape {tuple(z.shape)}, "
                                     f"expected (T, {w.tokens}, {w.latent_dim})")
            else:
                z, off = enc[off:off + len(ctx_frames[k])], off + len(ctx_frames[k])
            a = _tensor(opt["actions"][k], dev) if opt["actions"] is not None else None
            if a is not None and tuple(a.shape) != (len(z) - 1, w.action_dim):
                raise ValueError(f"options['actions'] has shape {tuple(a.shape)}, expected (T-1, A) = "
                                 f"({len(z) - 1}, {w.action_dim}) for {len(z)} context frames")
            self.ctx[i], self.ctx_actions[i] = self.imagination.fit_context(z, a)
        if goal_frames:
            self.goal[idx] = enc[off:off + n]
        else:
            g = torch.stack([_tensor(x, dev) for x in opt["goal_latent"]])
            if tuple(g.shape[1:]) != w.latent_shape:
                raise ValueError(f"options['goal_latent'] has shape {tuple(g.shape[1:])}, expected {w.latent_shape}")
            self.goal[idx] = g
        self.t[idx] = 0
        self._update(idx, self.ctx[idx, -1])
        self.started = True
        return infos

    # -- stepping ------------------------------------------------------------------
    def set_command(self, text: str | None) -> None:
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise ValueError(f"command={text!r}, expected a short non-empty English string (or None)")
        if text is not None and not self.world.uses_text_actions:
            raise ValueError(f"command={text!r} needs a model trained with action_encoding='text'; this one uses "
                             f"{self.world.model.cfg.action_encoding!r}")
        self.command = text

    @torch.no_grad()
    def advance(self, idx: np.ndarray, actions: np.ndarray) -> None:
        """Predict the next frame of episodes `idx` under `actions` (len(idx), A): one model call."""
        a = torch.as_tensor(actions, dtype=torch.float32, device=self.world.device)
        z = self.imagination(self.ctx[idx], self.ctx_actions[idx], a[:, None], text=self.command,
                             generator=[self.generators[i] for i in idx])[:, 0]  # (b,N,C): each env its own noise
        # Slide the context window: drop the oldest frame (and the action after it).
        self.ctx[idx] = torch.cat([self.ctx[idx, 1:], z[:, None]], 1)
        if self.tc > 1:
            self.ctx_actions[idx] = torch.cat([self.ctx_actions[idx, 1:], a[:, None]], 1)
        self.t[idx] += 1
        self._update(idx, z)

    def _update(self, idx: np.ndarray, z: torch.Tensor) -> None:
        self.latent_np[idx] = z.float().cpu().numpy()
        self.dist[idx] = LatentWorld.latent_cost(z, self.goal[idx]).double().cpu().numpy()
        self.frames = None  # decoded lazily

    def current_frames(self) -> np.ndarray:
        """(B,H,W,3) uint8: the RAE decoding of the current latents (cached per step)."""
        if self.frames is None:
            self.frames = self.world.decode(torch.as_tensor(self.latent_np, device=self.world.device))
        return self.frames

    def observe(self) -> Any:
        """Batched observation of all B envs."""
        if self.obs_mode == "latent":
            return self.latent_np.copy()
        if self.obs_mode == "pixels":
            return self.current_frames().copy()
        return {"pixels": self.current_frames().copy(), "latent": self.latent_np.copy()}

    def step_results(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        reward = -self.dist
        terminated = self.dist <= self.goal_threshold
        truncated = self.t >= self.max_steps
        return reward, terminated, truncated

    # -- imagination for planners ---------------------------------------------------
    def context(self, i: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.started:
            raise gym.error.ResetNeeded("call reset() before using the env's context")
        if i is None:
            return self.ctx.clone(), self.ctx_actions.clone()
        return self.ctx[i].clone(), self.ctx_actions[i].clone()

    @torch.no_grad()
    def rollout(self, context, actions, pixels: bool = False, text: str | None = None):
        """Imagine H steps for B action sequences from `context` (None: this env's current one).

        context: None, or (latents (Tc,N,C) | (Bc,Tc,N,C), actions (Tc-1,A) | (Bc,Tc-1,A)), Bc dividing B.
        actions (B,H,A) -> latents (B,H,N,C) (+ uint8 pixels (B,H,H_img,W_img,3)).
        """
        w = self.world
        act = _tensor(actions, w.device)
        if act.ndim != 3 or act.shape[2] != w.action_dim:
            raise ValueError(f"actions have shape {tuple(act.shape)}, expected (B, H, {w.action_dim})")
        if context is None:
            if self.n != 1:
                raise ValueError("context=None is only defined for a single env; pass (latents, actions)")
            z, za = self.context(0)
        else:
            z, za = context
        return self.imagination(_tensor(z, w.device), _tensor(za, w.device), act, pixels=pixels,
                                text=text if text is not None else self.command, generator=self.plan_generator)


class LearnedWorldEnv(gym.Env):
    """One imagined episode. See the module docstring; kwargs: render_mode and the fields of `LearnedWorldConfig`."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, model: str | Path | LatentWorld | None = None, render_mode: str | None = None, **kwargs):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r}, expected one of {self.metadata['render_modes']} or None")
        self.render_mode = render_mode
        self.core = _Episodes(1, LearnedWorldConfig.from_kwargs({"model": model, **kwargs}))
        self.world = self.core.world
        self.observation_space = self.core.observation_space
        self.action_space = self.core.action_space
        self.metadata = {**self.metadata, "render_fps": self.core.render_fps}

    def _obs(self):
        o = self.core.observe()
        return {k: v[0] for k, v in o.items()} if isinstance(o, dict) else o[0]

    def _info(self) -> dict:
        c = self.core
        return {"latent": c.latent_np[0].copy(), "latent_distance": float(c.dist[0]), "step": int(c.t[0])}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        task_seed, plan_seed = self.core.seed_env(0, self.np_random, seed)
        self.core.plan_generator.manual_seed(plan_seed)
        extra = self.core.start(np.array([0]), [task_seed], options, single=True)[0]
        return self._obs(), {**self._info(), **extra}

    def step(self, action):
        if not self.core.started:
            raise gym.error.ResetNeeded("call reset() before step()")
        a = check_action(action, self.action_space)
        self.core.advance(np.array([0]), a[None])
        r, term, trunc = self.core.step_results()
        return self._obs(), float(r[0]), bool(term[0]), bool(trunc[0]), self._info()

    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called with render_mode=None; make the env with render_mode='rgb_array'")
            return None
        if not self.core.started:
            raise gym.error.ResetNeeded("call reset() before render()")
        return self.core.current_frames()[0].copy()

    # -- language and imagination ---------------------------------------------------
    def set_command(self, text: str | None) -> None:
        """Condition the following steps (and rollouts) on a language command (text-action models)."""
        self.core.set_command(text)

    def context(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Current (context latents (Tc,N,C), context actions (Tc-1,A)) — a planner's start state."""
        return self.core.context(0)

    @property
    def goal_latent(self) -> torch.Tensor:
        return self.core.goal[0].clone()

    def rollout(self, context, actions, pixels: bool = False, text: str | None = None):
        """Batched imagination (see `_Episodes.rollout`); does not change the env's state."""
        return self.core.rollout(context, actions, pixels=pixels, text=text)

    def close(self):
        self.core.task.close()
        super().close()


class LearnedWorldVectorEnv(VectorEnv):
    """`num_envs` imagined episodes stepped in ONE batched model call per step.

    Autoreset: NEXT_STEP (Gymnasium's default) — the step after an episode ends resets that
    env (its action is ignored) while the others advance.

    Seeding, as Gymnasium's vector envs: reset(seed=s) seeds env i with s + i (or seed=[s0, ...]
    one each), and env i then starts and imagines exactly as a single env after reset(seed=s + i),
    with the same actions; an unseeded reset or an autoreset continues env i's own stream.

    Kwargs: render_mode ("rgb_array") and the fields of `LearnedWorldConfig` (model, task,
    obs, sample_steps, context_frames, device, max_episode_steps, goal_threshold, cfg_scale).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 1, model: str | Path | LatentWorld | None = None,
                 render_mode: str | None = None, **kwargs):
        if int(num_envs) < 1:
            raise ValueError(f"num_envs={num_envs}, expected >= 1")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r}, expected one of {self.metadata['render_modes']} or None")
        self.num_envs = int(num_envs)
        self.render_mode = render_mode
        self.core = _Episodes(self.num_envs, LearnedWorldConfig.from_kwargs({"model": model, **kwargs}))
        self.world = self.core.world
        self.single_observation_space = self.core.observation_space
        self.single_action_space = self.core.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.metadata = {**self.metadata, "render_fps": self.core.render_fps}
        self._autoreset = np.zeros(self.num_envs, bool)
        # each env's own random stream, as a single env's np_random: reset(seed=s) seeds env i
        # with s + i; an unseeded reset (and the autoreset) continues the stream
        self._env_rngs: list[np.random.Generator | None] = [None] * self.num_envs

    def _seeds(self, seed: int | Sequence[int | None] | None, n: int) -> list[int | None]:
        """One seed (or None: continue that env's stream) per env, as Gymnasium's vector envs do."""
        if seed is None:
            return [None] * n
        if isinstance(seed, (int, np.integer)):
            return [int(seed) + i for i in range(n)]
        seeds = [None if s is None else int(s) for s in seed]
        if len(seeds) != n:
            raise ValueError(f"seed has {len(seeds)} entries, expected one per env ({n})")
        return seeds

    def _start(self, idx: np.ndarray, seeds: Sequence[int | None], options: dict | None) -> list[dict]:
        """(Re)start envs `idx`, each seeded from its own stream exactly as a single env would be."""
        task_seeds = []
        for i, seed in zip(idx, seeds):
            if seed is not None or self._env_rngs[i] is None:
                self._env_rngs[i], _ = seeding.np_random(seed)  # what gym.Env.reset(seed=seed) does
            task_seeds.append(self.core.seed_env(int(i), self._env_rngs[i], seed)[0])
        return self.core.start(idx, task_seeds, options, single=False)

    def _infos(self, idx: np.ndarray | None = None, extra: list[dict] | None = None) -> dict:
        c, n = self.core, self.num_envs
        mask = np.ones(n, bool)
        info = {"latent": c.latent_np.copy(), "_latent": mask.copy(),
                "latent_distance": c.dist.copy(), "_latent_distance": mask.copy(),
                "step": c.t.copy(), "_step": mask.copy()}
        for k, i in enumerate(idx if idx is not None else []):
            info = self._add_info(info, extra[k], int(i))
        return info

    def reset(self, *, seed: int | Sequence[int] | None = None, options: dict | None = None):
        if isinstance(seed, (int, np.integer)):
            super().reset(seed=int(seed))
        elif seed is not None and all(s is not None for s in seed):
            self._np_random = np.random.default_rng([int(s) for s in seed])
            self._np_random_seed = -1
        options = dict(options or {})
        mask = options.get("reset_mask")
        idx = np.arange(self.num_envs) if mask is None else np.flatnonzero(np.asarray(mask, bool))
        if mask is not None and np.asarray(mask).shape != (self.num_envs,):
            raise ValueError(f"options['reset_mask'] has shape {np.asarray(mask).shape}, expected ({self.num_envs},)")
        seeds = self._seeds(seed, self.num_envs)
        if mask is None:
            self.core.plan_generator.manual_seed(int(self.np_random.integers(SEED_MAX)))
        extra = self._start(idx, [seeds[i] for i in idx], options)
        self._autoreset[idx] = False
        return self.core.observe(), self._infos(idx, extra)

    def step(self, actions):
        c = self.core
        if not c.started:
            raise gym.error.ResetNeeded("call reset() before step()")
        a = check_action(actions, self.single_action_space, batch=self.num_envs)
        done = np.flatnonzero(self._autoreset)
        live = np.flatnonzero(~self._autoreset)
        extra: list[dict] = []
        if len(done):
            extra = self._start(done, [None] * len(done), None)
        if len(live):
            c.advance(live, a[live])
        reward, terminated, truncated = c.step_results()
        reward[done], terminated[done], truncated[done] = 0.0, False, False
        self._autoreset = terminated | truncated
        return c.observe(), reward.astype(np.float64), terminated, truncated, self._infos(done, extra)

    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called with render_mode=None; make the env with render_mode='rgb_array'")
            return None
        return tuple(self.core.current_frames().copy())

    def set_command(self, text: str | None) -> None:
        self.core.set_command(text)

    def context(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(context latents (B,Tc,N,C), context actions (B,Tc-1,A)) of all envs."""
        return self.core.context()

    @property
    def goal_latent(self) -> torch.Tensor:
        return self.core.goal.clone()

    def rollout(self, context, actions, pixels: bool = False, text: str | None = None):
        return self.core.rollout(context, actions, pixels=pixels, text=text)

    def close_extras(self, **kwargs):
        self.core.task.close()
