"""The planning-model protocol and what every planner shares.

A model is anything with `action_space`, `rollout(state, actions (B,H,A))` and
`cost(predictions, goal) -> (B,)` (docs/INTERFACES.md). Planners never look inside
`state`, `goal` or `predictions`: the oracle passes MuJoCo states, the learned model
passes pixel-derived latents, and the tests pass points of a linear system.

A model may also offer `rollout_batch(states, actions (E,B,H,A))` and
`cost_batch(predictions, goals) -> (E,B)`: one call for E episodes planned together
(the learned model batches them through the network, the oracle spreads them over its
workers). Without them the planner loops over episodes.

Planners search in a normalised action space u in [-1, 1]^A and hand the model
env-unit actions a = center + half * u, so one set of hyper-parameters fits any Box.

Legend: E episodes planned together, B candidates, H horizon, A action dim.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

import gymnasium as gym
import numpy as np
import torch


@runtime_checkable
class PlanningModel(Protocol):
    action_space: gym.spaces.Box

    def rollout(self, state: Any, actions: np.ndarray | torch.Tensor) -> Any: ...

    def cost(self, predictions: Any, goal: Any) -> np.ndarray | torch.Tensor: ...


@dataclass
class PlanResult:
    actions: np.ndarray      # (E, H, A) env units: the plan to execute (float32)
    cost: np.ndarray         # (E,) model cost of the returned plan's best evaluated sample
    model_calls: int         # calls made to the model (a batched call over E episodes counts once)
    rollouts: int            # candidate sequences evaluated, summed over episodes
    seconds: float           # wall time of the whole plan() call


class ActionScaler:
    """Maps between env actions in Box(low, high) and normalised u in [-1, 1]."""

    def __init__(self, space: gym.spaces.Box):
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"action_space {space!r} is not supported, expected a 1-D gymnasium Box")
        low, high = np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(high > low)):
            raise ValueError(f"action bounds low={low}, high={high} must be finite with high > low")
        self.dim = space.shape[0]
        self.center_np = ((high + low) / 2).astype(np.float32)
        self.half_np = ((high - low) / 2).astype(np.float32)

    def to_env(self, u: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.center_np, device=u.device) + torch.as_tensor(self.half_np, device=u.device) * u

    def to_unit(self, a: np.ndarray | torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        a = torch.as_tensor(np.asarray(a, np.float32) if not torch.is_tensor(a) else a, dtype=torch.float32, device=device)
        u = (a - torch.as_tensor(self.center_np, device=a.device)) / torch.as_tensor(self.half_np, device=a.device)
        return u.clamp(-1.0, 1.0)


def warm_start(plan: np.ndarray, executed: int, pad: np.ndarray | float | None = None) -> np.ndarray:
    """Shift a plan (..., H, A) left by the `executed` steps and pad the tail.

    The pad is the action-space centre (or zero) by default: the planners' prior mean.
    """
    plan = np.asarray(plan)
    H = plan.shape[-2]
    if not 0 <= executed:
        raise ValueError(f"executed={executed} must be >= 0")
    out = np.empty_like(plan)
    k = min(executed, H)
    out[..., : H - k, :] = plan[..., k:, :]
    out[..., H - k:, :] = 0.0 if pad is None else pad
    return out


def model_device(model: Any) -> torch.device:
    """Where the planner's tensors should live: the model's device when it has one."""
    dev = getattr(model, "device", None)
    return torch.device(dev) if dev is not None else torch.device("cpu")


def evaluate_costs(model: Any, states: Sequence[Any], goals: Sequence[Any], actions_EBHA: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Costs (E, B) of candidate env-unit action sequences; returns (costs, model calls).

    Keeps the autograd graph when the model is differentiable (the gradient planner).
    """
    E = actions_EBHA.shape[0]
    if hasattr(model, "rollout_batch") and hasattr(model, "cost_batch"):
        c = model.cost_batch(model.rollout_batch(states, actions_EBHA), goals)
        c = torch.as_tensor(c, device=actions_EBHA.device) if not torch.is_tensor(c) else c
        calls = 1
    else:
        cs = []
        for e in range(E):
            ce = model.cost(model.rollout(states[e], actions_EBHA[e]), goals[e])
            cs.append(torch.as_tensor(ce, device=actions_EBHA.device) if not torch.is_tensor(ce) else ce)
        c = torch.stack(cs)
        calls = E
    if c.shape != actions_EBHA.shape[:2]:
        raise ValueError(f"model cost has shape {tuple(c.shape)}, expected (E, B) = {tuple(actions_EBHA.shape[:2])}")
    return c.float(), calls


class Planner:
    """Base class: normalises inputs, keeps the RNG, times the call.

    Subclasses implement `_plan(model, states, goals, init_u (E,H,A)) -> (u (E,H,A), cost (E,), calls, rollouts)`.
    """

    name = "planner"

    def __init__(self, cfg: Any, action_space: gym.spaces.Box):
        if cfg.horizon < 1:
            raise ValueError(f"horizon={cfg.horizon} must be >= 1")
        self.cfg = cfg
        self.action_space = action_space
        self.scaler = ActionScaler(action_space)
        self.horizon = cfg.horizon
        self._generators: dict[torch.device, torch.Generator] = {}

    def generator(self, device: torch.device) -> torch.Generator:
        """One seeded stream per device, continued across plan() calls."""
        if device not in self._generators:
            g = torch.Generator(device=device)
            g.manual_seed(int(self.cfg.seed))
            self._generators[device] = g
        return self._generators[device]

    def sample_and_score(self, model: Any, states: Sequence[Any], goals: Sequence[Any], mu_EHA: torch.Tensor,
                         std_EHA: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Gaussian candidates around mu (the mean itself first when cfg.include_mean), clamped to the
        normalised box and scored: (u (E,S,H,A), costs (E,S) with NaN -> inf, model calls)."""
        E, H, A = mu_EHA.shape
        eps = torch.randn((E, self.cfg.samples, H, A), generator=g, device=mu_EHA.device)
        u_ESHA = (mu_EHA[:, None] + std_EHA[:, None] * eps).clamp(-1, 1)
        if self.cfg.include_mean:
            u_ESHA[:, 0] = mu_EHA
        c_ES, calls = evaluate_costs(model, states, goals, self.scaler.to_env(u_ESHA))
        return u_ESHA, torch.nan_to_num(c_ES, nan=float("inf")), calls

    def plan(self, model: Any, states: Sequence[Any], goals: Sequence[Any], init: np.ndarray | None = None) -> PlanResult:
        """Plan E episodes at once. `init` (E, H, A) env units warm-starts the search."""
        t0 = time.perf_counter()
        E = len(states)
        if len(goals) != E:
            raise ValueError(f"got {E} states but {len(goals)} goals, expected one goal per state")
        if E < 1:
            raise ValueError("plan() needs at least one state")
        dev = model_device(model)
        shape = (E, self.horizon, self.scaler.dim)
        if init is None:
            init_u = torch.zeros(shape, device=dev)
        else:
            init = np.asarray(init, np.float32)
            if init.shape != shape:
                raise ValueError(f"init has shape {init.shape}, expected (E, H, A) = {shape}")
            init_u = self.scaler.to_unit(init, device=dev)
        u, cost, calls, rollouts = self._plan(model, list(states), list(goals), init_u)
        actions = self.scaler.to_env(u.detach().clamp(-1, 1)).cpu().numpy().astype(np.float32)
        return PlanResult(actions, np.asarray(torch.as_tensor(cost).detach().cpu(), np.float64), calls, rollouts,
                          time.perf_counter() - t0)

    def plan_one(self, model: Any, state: Any, goal: Any, init: np.ndarray | None = None) -> PlanResult:
        """One episode: `init` (H, A); the result keeps the leading E=1 dim."""
        return self.plan(model, [state], [goal], None if init is None else np.asarray(init)[None])

    def _plan(self, model, states, goals, init_u):  # pragma: no cover - abstract
        raise NotImplementedError


class GaussianSearch(Planner):
    """Iterated Gaussian search in normalised actions (CEM, MPPI): sample around (mu, std), score,
    refit; keeps the best evaluated sample. Subclasses implement `_refit`.

    cfg needs horizon, samples, iterations, init_std, include_mean, result ("mean" | "best"), seed.
    """

    def __init__(self, cfg: Any, action_space: gym.spaces.Box):
        super().__init__(cfg, action_space)
        if cfg.iterations < 1:
            raise ValueError(f"iterations={cfg.iterations} must be >= 1")
        if cfg.result not in ("mean", "best"):
            raise ValueError(f"result={cfg.result!r}, expected 'mean' or 'best'")

    def _refit(self, u_ESHA: torch.Tensor, c_ES: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(new mu (E,H,A), new std (E,H,A), the iteration's best cost (E,) and its sample (E,H,A))."""
        raise NotImplementedError

    @torch.no_grad()
    def _plan(self, model, states, goals, init_u):
        cfg, g = self.cfg, self.generator(init_u.device)
        E = init_u.shape[0]
        mu_EHA = init_u.clone()
        std_EHA = torch.full_like(mu_EHA, cfg.init_std)
        best_u = mu_EHA.clone()
        best_c = torch.full((E,), float("inf"), device=init_u.device)
        calls = 0
        for _ in range(cfg.iterations):
            u_ESHA, c_ES, k = self.sample_and_score(model, states, goals, mu_EHA, std_EHA, g)
            calls += k
            mu_EHA, std_EHA, top_c, top_u = self._refit(u_ESHA, c_ES)
            better = top_c < best_c
            best_c = torch.where(better, top_c, best_c)
            best_u[better] = top_u[better]
        out = mu_EHA if cfg.result == "mean" else best_u
        return out, best_c, calls, cfg.iterations * cfg.samples * E


class RandomPolicy(Planner):
    """The benchmark's floor: uniform random actions, no model calls."""

    name = "random"

    def _plan(self, model, states, goals, init_u):
        g = self.generator(init_u.device)
        u = torch.rand(init_u.shape, generator=g, device=init_u.device) * 2 - 1
        return u, torch.full((len(states),), float("nan")), 0, 0


@dataclass
class RandomPolicyConfig:
    horizon: int = 5   # actions drawn per "plan"; the MPC loop executes its receding part
    seed: int = 0      # RNG seed for the action stream
