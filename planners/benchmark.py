"""The planning benchmark as a library: plan in a model, execute in real MuJoCo, score there.

    rows = benchmark(BenchmarkConfig(tasks=["reacher"], rows=["oracle_state", "random"], episodes=4))

Rows (what the planner plans in): learned (the world model), jepa (the JEPA's deterministic
latent predictor), oracle_latent (MuJoCo with the same latent cost), oracle_state (MuJoCo with
the true-state cost, the upper bound), random: `ROWS`, a registry of named builders
(cfg, task, world) -> `Row`, so a new row is one function. Every episode: seed `seed + i`, start and goal
from the ground-truth task, success and final distance judged by the real task after executing,
`lockstep` episodes planned together. `benchmark` returns one summary dict per (task, row,
planner) (`summarise`); `lw benchmark` and `lw plan` (lw/benchmark.py, lw/plan.py) add the
command line, the Markdown table, the bar plot and the GIFs.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from planners.base import RandomPolicyConfig
from planners.cem import CEMConfig
from planners.gradient import GradientConfig
from planners.learned import LearnedConfig
from planners.mpc import EpisodeResult, MPCConfig, NullObserver, OracleObserver, run_mpc
from planners.mppi import MPPIConfig
from planners.random_shooting import RandomShootingConfig
from planners.stats import mean_sem, wilson_interval

@dataclass
class PlannerConfigs:
    cem: CEMConfig = field(default_factory=CEMConfig)
    mppi: MPPIConfig = field(default_factory=MPPIConfig)
    gradient: GradientConfig = field(default_factory=GradientConfig)
    random_shooting: RandomShootingConfig = field(default_factory=RandomShootingConfig)
    random: RandomPolicyConfig = field(default_factory=RandomPolicyConfig)


@dataclass
class Budget:
    """A row's overrides of the planner sizes (None = keep the planner's value; fields a planner lacks are ignored)."""
    horizon: int | None = None      # decision steps planned
    samples: int | None = None      # cem / mppi / random_shooting candidates
    elites: int | None = None       # cem / mppi
    iterations: int | None = None   # cem / mppi refits
    starts: int | None = None       # gradient: parallel starts
    steps: int | None = None        # gradient: Adam steps (its `iterations`)


@dataclass
class BenchmarkConfig:
    tasks: list[str] = field(default_factory=lambda: ["reacher", "point_maze", "pusher"])
    rows: list[str] = field(default_factory=lambda: list(ROWS))   # learned | jepa | oracle_latent | oracle_state | random
    planners: list[str] = field(default_factory=lambda: ["cem"])  # for the model rows (random uses no planner)
    episodes: int = 20               # evaluation episodes per (task, row, planner)
    seed: int = 10_000               # episode i uses seed + i, disjoint from collection seeds 0..
    max_steps: int = 50              # env decision steps per episode (the tasks' episode length)
    receding_horizon: int = 5        # actions executed per plan (DINO-WM: 5)
    stop_on_success: bool = True     # end an episode once the real task reports success (success = reached in budget)
    lockstep: int = 4                # episodes planned together
    model: str = ""                  # learned world-model folder (`lw pretrain`; {task} filled in); "" skips the learned row
    rae: str | None = "runs/rae_{task}"  # RAE for oracle_latent ({task} filled in); "" or empty (rae=) = <model>/rae; missing -> row skipped
    jepa: str | None = ""            # JEPA folder for the jepa row ({task} filled in); "" = <model>/jepa; missing -> row skipped
    workers: int = 2                 # oracle worker processes
    device: str = ""                 # torch device of the learned model / RAE; "" = cuda if available, else cpu
    image_size: int = 0              # frame size; 0 = the model's (64 without a model); must match the RAE
    plan: PlannerConfigs = field(default_factory=PlannerConfigs)   # planner hyper-parameters (literature defaults)
    oracle_latent_budget: Budget = field(default_factory=Budget)   # planner sizes for oracle_latent (rendering is slow)
    oracle_state_budget: Budget = field(default_factory=Budget)    # planner sizes for oracle_state
    learned_budget: Budget = field(default_factory=Budget)         # planner sizes for learned and jepa
    learned: LearnedConfig = field(default_factory=LearnedConfig)        # learned-model cost / sampling
    landmarks: bool = True           # latent rows plan with the landmark graph beside their model (<model>/landmarks,
                                     # <jepa>/landmarks; `lw build-landmarks`) when there is one; false = latent MSE
    oracle_horizon_cost: str = "final"   # oracle cost over the horizon: final step or mean
    out: str = "runs/benchmark"      # results folder: results.json, results.md, success.png, videos/
    video: bool = False              # write GIFs of executed episodes
    video_episodes: int = 2          # GIFs per (task, row, planner)
    progress: bool = True            # print a line per finished batch of episodes


# --------------------------------------------------------------------------- building rows

def _device(name: str):
    from worldmodel.device import resolve_device

    return resolve_device(name)  # '' = auto


def preload_model_stack() -> None:
    """Import the model code (and triton via torch.compile) BEFORE any MuJoCo renderer exists:
    importing triton after Mesa's EGL context is created crashes the process (two LLVMs).
    Also diffusers, which the frame sampler imports on first use (~4 s here): it must not land
    inside the first replan's timing."""
    try:
        import worldmodel.rae  # noqa: F401
        import worldmodel.transfusion  # noqa: F401
        import worldmodel.world  # noqa: F401
        from diffusers import FlowMatchEulerDiscreteScheduler  # noqa: F401
    except ImportError:
        pass


def planner_settings(cfg: BenchmarkConfig, row: str, planner: str) -> dict[str, Any]:
    """The planner's fields: its config in `cfg.plan`, then the row's budget overrides (known keys only)."""
    base = dataclasses.asdict(getattr(cfg.plan, planner))
    budget = {"learned": cfg.learned_budget, "jepa": cfg.learned_budget, "oracle_latent": cfg.oracle_latent_budget,
              "oracle_state": cfg.oracle_state_budget}.get(row)
    if budget is not None:
        b = dataclasses.asdict(budget)
        if planner == "gradient":
            b["iterations"] = b["steps"]
        base.update({k: v for k, v in b.items() if v is not None and k in base})
    return base


def _rae_path(cfg: BenchmarkConfig, task: str) -> str:
    if cfg.rae:
        return cfg.rae.replace("{task}", task)
    return str(Path(_model_path(cfg, task)) / "rae") if cfg.model else ""


def _jepa_path(cfg: BenchmarkConfig, task: str) -> str:
    if cfg.jepa:
        return cfg.jepa.replace("{task}", task)
    return str(Path(_model_path(cfg, task)) / "jepa") if cfg.model else ""


def _model_path(cfg: BenchmarkConfig, task: str) -> str:
    """The learned model of `task`: `model` with {task} filled in (one model per task)."""
    return cfg.model.replace("{task}", task)


def load_world(cfg: BenchmarkConfig, task: str, loaded: dict):
    """The task's LatentWorld for the learned row (None without one); each folder is loaded once."""
    if "learned" not in cfg.rows or not cfg.model:
        return None
    path = _model_path(cfg, task)
    if path not in loaded:
        from worldmodel.world import LatentWorld

        loaded[path] = LatentWorld.from_pretrained(path, device=_device(cfg.device))
    return loaded[path]


def _landmarks(cfg: BenchmarkConfig, folder: str | Path):
    """The landmark graph beside a row's model (`<folder>/landmarks`), or None (none there, or landmarks=false)."""
    path = Path(folder) / "landmarks"
    if not cfg.landmarks or not (path / "config.json").is_file():
        return None
    from planners.landmarks import LandmarkGraph

    return LandmarkGraph.from_pretrained(path)


def action_space(task: str):
    """The task's action box, Box(-action_scale, action_scale, (A,)): the one every row plans in."""
    import gymnasium as gym

    from envs.mujoco_tasks import TASKS

    s = np.float32(TASKS[task].action_scale)
    return gym.spaces.Box(-s, s, (TASKS[task].action_dim,), np.float32)


@dataclass
class Row:
    """One row built for one task: its planning model, a new observer per episode (`observer()`),
    whether it needs rendered frames, what its cost is when not the plain latent MSE (`note`),
    and why it cannot run (`skip`; then `model` is None)."""
    name: str
    model: Any = None
    observer: Callable[[], Any] = NullObserver
    render: bool = False
    note: str = ""
    skip: str = ""

    def close(self) -> None:
        if hasattr(self.model, "close"):
            self.model.close()


def _with_graph(row: Row, graph) -> Row:
    if row.model is not None and graph is not None:
        row.note = f"landmark cost ({len(graph)} landmarks)"
    return row


def _latent_row(cfg: BenchmarkConfig, task: str, name: str, world, graph) -> Row:
    """A learned row: `world` (LatentWorld or JEPAWorld) as a LearnedModel, fed pixels only."""
    if world is None:
        return Row(name, render=True, skip="no model given (model=<folder written by `lw pretrain`>)")
    if world.extras.get("task") not in (None, task):
        return Row(name, render=True, skip=f"the model was trained on {world.extras.get('task')!r}")
    from planners.learned import LearnedModel

    model = LearnedModel(world, action_space(task), cfg.learned, landmarks=graph)
    return _with_graph(Row(name, model, model.observer, render=True), graph)


def learned_row(cfg: BenchmarkConfig, task: str, world) -> Row:
    """The world model (`model=`), with its landmark graph when it has one."""
    return _latent_row(cfg, task, "learned", world, _landmarks(cfg, _model_path(cfg, task)) if cfg.model else None)


def jepa_row(cfg: BenchmarkConfig, task: str, world) -> Row:
    """The JEPA's deterministic latent predictor (`jepa=`, default <model>/jepa)."""
    path = _jepa_path(cfg, task)
    if not path or not (Path(path) / "config.json").is_file():
        return Row("jepa", render=True, skip=f"no JEPA at {path!r} (jepa=<folder written by `lw train-encoder method=jepa`>)")
    from worldmodel.jepa import JEPAWorld

    return _latent_row(cfg, task, "jepa", JEPAWorld.from_pretrained(path, device=_device(cfg.device)),
                       _landmarks(cfg, path))


def oracle_latent_row(cfg: BenchmarkConfig, task: str, world) -> Row:
    """MuJoCo rollouts scored by the latent cost of an RAE (`rae=`)."""
    from planners.oracle import OracleConfig, OracleModel

    path = _rae_path(cfg, task)
    if not path or not (Path(path) / "config.json").is_file():
        return Row("oracle_latent", render=True, skip=f"no RAE at {path!r} (rae=<folder>)")
    from worldmodel.rae import RAE

    rae = RAE.from_pretrained(path, device=_device(cfg.device)).eval()
    graph = _landmarks(cfg, _model_path(cfg, task)) if cfg.model else None
    if graph is not None and graph.fingerprint != rae.fingerprint():
        graph = None                # the model's graph is in another RAE's latent space
    model = OracleModel(OracleConfig(task=task, cost="latent", horizon_cost=cfg.oracle_horizon_cost,
                                     workers=cfg.workers, image_size=cfg.image_size), rae=rae, landmarks=graph)
    return _with_graph(Row("oracle_latent", model, lambda: OracleObserver("image"), render=True), graph)


def oracle_state_row(cfg: BenchmarkConfig, task: str, world) -> Row:
    """MuJoCo rollouts scored by the true-state cost: the upper bound."""
    from planners.oracle import OracleConfig, OracleModel

    model = OracleModel(OracleConfig(task=task, cost="state", horizon_cost=cfg.oracle_horizon_cost,
                                     workers=cfg.workers, image_size=cfg.image_size))
    return Row("oracle_state", model, lambda: OracleObserver("state"))


def random_row(cfg: BenchmarkConfig, task: str, world) -> Row:
    """Uniform random actions: no model, no planner."""
    return Row("random")


# name -> builder(cfg, task, world) -> Row; `world` is the task's LatentWorld (None without model=)
ROWS: dict[str, Callable[[BenchmarkConfig, str, Any], Row]] = {
    "learned": learned_row, "jepa": jepa_row, "oracle_latent": oracle_latent_row,
    "oracle_state": oracle_state_row, "random": random_row}


def build_row(cfg: BenchmarkConfig, task: str, name: str, world=None) -> Row:
    """The row `name` of `task` (see ROWS); an unknown name is a ValueError naming the known ones."""
    if name not in ROWS:
        raise ValueError(f"unknown benchmark row {name!r}, expected one of {list(ROWS)}")
    return ROWS[name](cfg, task, world)


# --------------------------------------------------------------------------- running

def run_row(cfg: BenchmarkConfig, task: str, rm: Row, planner_name: str, episodes: int,
            seed: int, record_frames: bool) -> list[EpisodeResult]:
    """`episodes` episodes of one (task, row, planner), `lockstep` at a time."""
    from envs.mujoco_tasks import make_task
    from planners.registry import make_planner

    settings = planner_settings(cfg, rm.name, planner_name)
    render = rm.render or record_frames
    envs = [make_task(task, image_size=cfg.image_size, max_steps=cfg.max_steps, render=render)
            for _ in range(min(cfg.lockstep, episodes))]
    space = action_space(task)
    mpc = MPCConfig(receding_horizon=cfg.receding_horizon, max_steps=cfg.max_steps, record_frames=record_frames,
                    stop_on_success=cfg.stop_on_success)
    out: list[EpisodeResult] = []
    try:
        for start in range(0, episodes, cfg.lockstep):
            n = min(cfg.lockstep, episodes - start)
            planner = make_planner(planner_name, space, **{**settings, "seed": int(settings["seed"]) + seed + start})
            t0 = time.perf_counter()
            recs = run_mpc(envs[:n], planner, rm.model, [rm.observer() for _ in range(n)], mpc,
                           seeds=[seed + start + i for i in range(n)])
            out += recs
            if cfg.progress:
                ok = sum(r.success for r in out)
                print(f"  {task:<10} {rm.name:<13} {planner_name:<15} episodes {len(out):>3}/{episodes}  "
                      f"success {ok}/{len(out)}  ({time.perf_counter() - t0:.1f} s)", flush=True)
    finally:
        for e in envs:
            e.close()
    return out


def summarise(task: str, row: str, planner: str, recs: list[EpisodeResult], settings: dict, note: str = "") -> dict:
    n = len(recs)
    if n == 0:
        return dict(task=task, row=row, planner=planner, episodes=0, note=note)
    k = sum(r.success for r in recs)
    lo, hi = wilson_interval(k, n)
    dist, dist_sem = mean_sem([r.final_distance for r in recs])
    secs = [s for r in recs for s in r.replan_seconds]
    calls = [c for r in recs for c in r.model_calls]
    return dict(task=task, row=row, planner=planner, episodes=n, successes=k, success_rate=k / n, ci95=[lo, hi],
                final_distance=dist, final_distance_sem=dist_sem,
                seconds_per_replan=float(np.mean(secs)) if secs else 0.0,
                model_calls_per_replan=float(np.mean(calls)) if calls else 0.0,
                rollouts_per_replan=float(np.mean([r.rollouts / max(1, len(r.plans)) for r in recs])),
                steps=float(np.mean([r.steps for r in recs])), settings=settings, note=note,
                per_episode=[dict(seed=r.seed, success=r.success, final_distance=r.final_distance, steps=r.steps)
                             for r in recs])


def with_image_size(cfg: BenchmarkConfig, world) -> BenchmarkConfig:
    """Resolve image_size=0: frames as large as the world model sees them (64 without one)."""
    if cfg.image_size > 0:
        if world is not None and world.image_size != cfg.image_size:
            raise ValueError(f"image_size={cfg.image_size}, but the model sees {world.image_size}px frames")
        return cfg
    return dataclasses.replace(cfg, image_size=world.image_size if world is not None else 64)


def benchmark(cfg: BenchmarkConfig,
              done: Callable[[str, str, str, list[EpisodeResult]], None] | None = None) -> list[dict]:
    """Every (task, row, planner) of `cfg`, in order: one `summarise` dict each (skipped ones say why
    in `note`). `done(task, row, planner, records)` is called after each one that ran (with frames
    when cfg.video: `lw benchmark` writes its GIFs there)."""
    from envs.mujoco_tasks import TASKS
    from planners.registry import PLANNERS

    for t in cfg.tasks:
        if t not in TASKS:
            raise ValueError(f"unknown task {t!r} in tasks, expected some of {sorted(TASKS)}")
    for r in cfg.rows:
        if r not in ROWS:
            raise ValueError(f"unknown row {r!r} in rows, expected some of {list(ROWS)}")
    for p in cfg.planners:
        if p not in PLANNERS or p == "random":
            raise ValueError(f"unknown planner {p!r} in planners, expected some of {sorted(set(PLANNERS) - {'random'})}")
    if cfg.episodes < 1 or cfg.lockstep < 1:
        raise ValueError(f"episodes={cfg.episodes} and lockstep={cfg.lockstep} must be >= 1")
    preload_model_stack()
    loaded: dict = {}
    cfg = with_image_size(cfg, load_world(cfg, cfg.tasks[0], loaded))
    results = []
    for task in cfg.tasks:
        world = load_world(cfg, task, loaded)
        with_image_size(cfg, world)               # every task's model must see the same frame size
        for row in cfg.rows:
            rm = build_row(cfg, task, row, world)
            try:
                for planner in (["random"] if row == "random" else cfg.planners):
                    settings = planner_settings(cfg, row, planner)
                    if rm.skip:
                        results.append(summarise(task, row, planner, [], settings, rm.skip))
                        continue
                    if planner == "gradient" and row.startswith("oracle"):
                        results.append(summarise(task, row, planner, [], settings, "MuJoCo is not differentiable"))
                        continue
                    recs = run_row(cfg, task, rm, planner, cfg.episodes, cfg.seed, record_frames=cfg.video)
                    results.append(summarise(task, row, planner, recs, settings, rm.note))
                    if done is not None:
                        done(task, row, planner, recs)
            finally:
                rm.close()
    return results
