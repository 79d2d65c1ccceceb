"""The oracle: the true MuJoCo task as a PlanningModel.

Candidates are rolled out on exact copies of the current simulator state (`set_state` of a
`get_state()` vector, which includes the solver warm start, so a copy steps bit-exactly like
the original) in a pool of persistent worker processes, each with its own task instance.
The B candidates (x E episodes) are split into contiguous chunks, one per worker; only numpy
arrays cross the pipes.

Two costs (`OracleConfig.cost`):
- "state": the task's true-state planning cost `task.cost(state, goal_state)` (the distance,
  or the task's shaped version: pusher adds gripper-to-puck, point_maze follows the
  corridors), of the FINAL state of the horizon (`horizon_cost="final"`, the default, as
  DINO-WM's final-frame objective) or its mean over the horizon ("mean"). No rendering.
- "latent": the learned planner's cost with a perfect model: the predicted frames are
  rendered, encoded by the RAE (`worldmodel.rae.RAE`) and scored by MSE to the goal image's
  latent (or, given a `planners.landmarks.LandmarkGraph`, by its cost-to-go: the same
  `planners.landmarks.latent_cost` as the learned model). Rendering is the CPU bottleneck
  (~100-250 frames/s at 64x64), so only the frames the cost needs are rendered: the last one
  ("final") or every step ("mean").

    oracle = OracleModel(OracleConfig(task="reacher", cost="state", workers=2))
    preds = oracle.rollout(task.get_state(), actions)      # actions (B, H, A)
    costs = oracle.cost(preds, task.goal_state)             # (B,)
    oracle.close()

Workers are spawned (no forked GL or torch thread state), so a script that builds an
OracleModel with workers > 0 needs the usual `if __name__ == "__main__":` guard.

Legend: E episodes, B candidates, M = E*B rollouts, H horizon, A action dim, S state dim.
"""
from __future__ import annotations

import hashlib
import multiprocessing as mp
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from planners.landmarks import latent_cost
from planners.sim_worker import rollout_chunk, worker

COSTS = ("state", "latent")
HORIZON_COSTS = ("final", "mean")


@dataclass
class OracleConfig:
    task: str = "reacher"           # key of envs.mujoco_tasks.TASKS
    cost: str = "state"             # "state": true-state task cost; "latent": RAE latent MSE to the goal image
    horizon_cost: str = "final"     # "final": score the last step of the horizon; "mean": average over steps
    workers: int = 2                # persistent worker processes (0 = roll out in this process)
    image_size: int = 64            # frame size for the latent cost (must match the RAE)
    rae: str = ""                   # RAE folder (worldmodel.rae.RAE.from_pretrained) for cost="latent"
    encode_batch: int = 256         # frames per RAE encode call
    task_kwargs: dict[str, Any] = field(default_factory=dict)   # extra make_task keywords


@dataclass
class OraclePredictions:
    """What a batch of oracle rollouts produced: true states and, for the latent cost, frames."""
    states: np.ndarray                 # (M, H, S) physics states after each decision step
    frames: np.ndarray | None = None   # (M, K, h, w, 3) uint8: the K steps the cost needs (latent cost)
    lead: tuple[int, ...] = ()         # leading shape of the candidates: (B,) or (E, B)


# ---------------------------------------------------------------------------- the model

class OracleModel:
    """The true simulator behind the planning protocol (see module docstring)."""

    differentiable = False

    def __init__(self, cfg: OracleConfig, rae: Any = None, landmarks: Any = None):
        from envs.mujoco_tasks import TASKS, make_task

        if cfg.task not in TASKS:
            raise ValueError(f"unknown task {cfg.task!r}, expected one of {sorted(TASKS)}")
        if cfg.cost not in COSTS:
            raise ValueError(f"oracle cost={cfg.cost!r}, expected one of {COSTS}")
        if cfg.horizon_cost not in HORIZON_COSTS:
            raise ValueError(f"horizon_cost={cfg.horizon_cost!r}, expected one of {HORIZON_COSTS}")
        if cfg.workers < 0:
            raise ValueError(f"workers={cfg.workers}, expected >= 0")
        self.cfg = cfg
        self.spec = TASKS[cfg.task]
        self.task_kwargs = {**cfg.task_kwargs, "image_size": cfg.image_size}
        self._scorer = make_task(cfg.task, **{**self.task_kwargs, "render": False})   # task.cost() here
        self.action_space = self._scorer.action_space
        self.rae = None
        if cfg.cost == "latent":
            self.rae = rae if rae is not None else self._load_rae(cfg.rae)
            if int(self.rae.image_size) != cfg.image_size:
                raise ValueError(f"RAE image_size={self.rae.image_size}, expected the oracle's image_size={cfg.image_size}")
        self.landmarks = landmarks          # planners.landmarks.LandmarkGraph: cost-to-go instead of latent MSE
        if landmarks is not None:
            if self.rae is None:
                raise ValueError("a landmark graph scores latents: it needs cost='latent'")
            landmarks.check_fingerprint(self.rae.fingerprint(), "the oracle's RAE")
        self._goal_cache: dict[str, torch.Tensor] = {}
        self._local = None      # (sim, cam) when workers == 0
        self._conns: list = []
        self._procs: list = []
        self.calls = 0          # rollout calls (a batched call over episodes counts once)
        self.rollouts = 0       # candidate sequences simulated
        if cfg.workers > 0:
            self._start_workers()

    @staticmethod
    def _load_rae(path: str):
        if not path:
            raise ValueError("oracle cost='latent' needs rae=<RAE folder> (worldmodel.rae.RAE.save_pretrained), got ''")
        from worldmodel.rae import RAE

        from worldmodel.device import resolve_device

        return RAE.from_pretrained(path, device=resolve_device("auto")).eval()

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")   # planner tensors: the simulator reads numpy

    # -- workers -------------------------------------------------------------------
    def _start_workers(self) -> None:
        ctx = mp.get_context("spawn")  # no forked GL / torch thread state in the workers
        for _ in range(self.cfg.workers):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=worker, args=(child, self.cfg.task, self.task_kwargs), daemon=True)
            p.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(p)
        for c in self._conns:
            try:
                tag, payload = c.recv()
            except EOFError:
                tag, payload = "error", ("the worker process exited during start-up (workers are spawned: a script "
                                         "that builds an OracleModel needs an `if __name__ == '__main__':` guard)")
            if tag != "ready":
                self.close()
                raise RuntimeError(f"oracle worker failed to start:\n{payload}")

    def close(self) -> None:
        for c in self._conns:
            try:
                c.send(None)
            except (BrokenPipeError, OSError):
                pass
        for p in self._procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
        self._conns, self._procs = [], []
        if self._local is not None:
            for t in self._local:
                if t is not None:
                    t.close()
            self._local = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # -- rollouts ------------------------------------------------------------------
    def _frame_steps(self, H: int) -> tuple[int, ...]:
        if self.cfg.cost != "latent":
            return ()
        return (H - 1,) if self.cfg.horizon_cost == "final" else tuple(range(H))

    def _simulate(self, starts_MF: np.ndarray, actions_MHA: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        frame_steps = self._frame_steps(actions_MHA.shape[1])
        if not self._conns:
            if self._local is None:
                from envs.mujoco_tasks import make_task

                sim = make_task(self.cfg.task, **{**self.task_kwargs, "render": False})
                cam = make_task(self.cfg.task, **{**self.task_kwargs, "render": True}) if frame_steps else None
                self._local = (sim, cam)
            return rollout_chunk(*self._local, starts_MF, actions_MHA, frame_steps)
        M = len(actions_MHA)
        bounds = np.linspace(0, M, len(self._conns) + 1).round().astype(int)
        used = []
        for c, lo, hi in zip(self._conns, bounds[:-1], bounds[1:]):
            if hi > lo:
                c.send((starts_MF[lo:hi], actions_MHA[lo:hi], frame_steps))
                used.append(c)
        parts, errors = [], []
        for c in used:                      # drain every pipe, even after an error
            tag, payload = c.recv()
            (parts if tag == "ok" else errors).append(payload)
        if errors:
            raise RuntimeError(f"oracle worker failed:\n{errors[0]}")
        states = np.concatenate([p[0] for p in parts])
        frames = None if not frame_steps else np.concatenate([p[1] for p in parts])
        return states, frames

    def _check(self, state: Any) -> np.ndarray:
        s = np.asarray(state, np.float64)
        if s.shape != (self.spec.full_state_dim,):
            raise ValueError(f"oracle state has shape {s.shape}, expected ({self.spec.full_state_dim},): "
                             f"{self.cfg.task} task.get_state()")
        return s

    def _actions(self, actions: np.ndarray | torch.Tensor, ndim: int) -> np.ndarray:
        a = actions.detach().cpu().numpy() if torch.is_tensor(actions) else np.asarray(actions)
        if a.ndim != ndim or a.shape[-1] != self.spec.action_dim:
            want = "(B, H, A)" if ndim == 3 else "(E, B, H, A)"
            raise ValueError(f"actions have shape {a.shape}, expected {want} with A={self.spec.action_dim}")
        return np.clip(a.astype(np.float64), self.action_space.low, self.action_space.high)

    def rollout(self, state: np.ndarray, actions: np.ndarray | torch.Tensor) -> OraclePredictions:
        """state: a get_state() vector; actions (B, H, A) -> predictions for B candidates."""
        a = self._actions(actions, 3)
        starts = np.broadcast_to(self._check(state), (a.shape[0], self.spec.full_state_dim))
        states, frames = self._simulate(np.ascontiguousarray(starts), a)
        self.calls += 1
        self.rollouts += a.shape[0]
        return OraclePredictions(states, frames, (a.shape[0],))

    def rollout_batch(self, states: Sequence[np.ndarray], actions: np.ndarray | torch.Tensor) -> OraclePredictions:
        """E episodes at once: actions (E, B, H, A), one start state per episode."""
        a = self._actions(actions, 4)
        E, B = a.shape[:2]
        if len(states) != E:
            raise ValueError(f"got {len(states)} states for actions with E={E} episodes")
        starts = np.repeat(np.stack([self._check(s) for s in states]), B, axis=0)      # (E*B, F)
        out_states, frames = self._simulate(starts, a.reshape(E * B, *a.shape[2:]))
        self.calls += 1
        self.rollouts += E * B
        return OraclePredictions(out_states, frames, (E, B))

    # -- costs ---------------------------------------------------------------------
    def _goal_latent(self, goal_image: np.ndarray) -> torch.Tensor:
        g = np.asarray(goal_image)
        s = self.cfg.image_size
        if g.shape != (s, s, 3) or g.dtype != np.uint8:
            raise ValueError(f"latent-cost goal has shape {g.shape} dtype {g.dtype}, expected a ({s}, {s}, 3) uint8 goal image")
        key = hashlib.sha1(g.tobytes()).hexdigest()
        if key not in self._goal_cache:
            if len(self._goal_cache) > 64:
                self._goal_cache.clear()
            self._goal_cache[key] = self._encode(g[None])[0]
        return self._goal_cache[key]

    @torch.no_grad()
    def _encode(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (n, h, w, 3) -> (n, N, C) normalised latents, in chunks."""
        dev = self.rae.latent_mean.device
        out = []
        for i in range(0, len(frames), self.cfg.encode_batch):
            x = torch.from_numpy(np.ascontiguousarray(frames[i:i + self.cfg.encode_batch])).to(dev)
            out.append(self.rae.encode(x.permute(0, 3, 1, 2).float() / 255.0).float())
        return torch.cat(out)

    def _costs(self, preds: OraclePredictions, goals: Sequence[Any]) -> np.ndarray:
        """(M,) costs; goals one per episode (len 1 for rollout, E for rollout_batch)."""
        M, H = preds.states.shape[:2]
        per = M // len(goals)
        if self.cfg.cost == "state":
            steps = preds.states[:, -1:] if self.cfg.horizon_cost == "final" else preds.states
            c = np.empty((M, steps.shape[1]))
            for e, g in enumerate(goals):
                g = np.asarray(g, np.float64)
                if g.shape not in ((self.spec.state_dim,), (self.spec.full_state_dim,)):
                    raise ValueError(f"state-cost goal has shape {g.shape}, expected ({self.spec.state_dim},): "
                                     f"the task's goal_state")
                c[e * per:(e + 1) * per] = self._scorer.cost(steps[e * per:(e + 1) * per], g[: self.spec.state_dim])
            return c.mean(1)
        K = preds.frames.shape[1]
        z = self._encode(preds.frames.reshape(M * K, *preds.frames.shape[2:]))           # (M*K, N, C)
        z = z.reshape(M, K, *z.shape[1:])
        goal = torch.stack([self._goal_latent(g) for g in goals]).repeat_interleave(per, 0)  # (M, N, C)
        return latent_cost(z, goal[:, None], self.landmarks).cpu().numpy().astype(np.float64)

    def cost(self, predictions: OraclePredictions, goal: Any) -> np.ndarray:
        """(B,) cost of each candidate; goal = goal_state (state cost) or goal image (latent cost)."""
        return self._costs(predictions, [goal]).reshape(predictions.lead)

    def cost_batch(self, predictions: OraclePredictions, goals: Sequence[Any]) -> np.ndarray:
        """(E, B) costs; one goal per episode."""
        return self._costs(predictions, list(goals)).reshape(predictions.lead)

    def goal_of(self, task) -> Any:
        """The goal this oracle's cost compares with: the goal state or the goal image."""
        return np.asarray(task.goal_state) if self.cfg.cost == "state" else np.asarray(task.goal_image)
