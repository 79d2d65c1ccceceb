"""The planning benchmark as a library: plan in a model, execute in real MuJoCo, score there.

    rows = benchmark(BenchmarkConfig(tasks=["reacher"], rows=["oracle_state", "random"], episodes=4))

Rows (what the planner plans in): learned (the world model), jepa (the JEPA's deterministic
latent predictor), oracle_latent (MuJoCo with the same latent cost), oracle_state (MuJoCo with
the true-state cost, the upper bound), random: `ROWS`, a registry of named builders
(cfg, task, world) -> `Row`, so a new row is one function. Every episode: seed `seed + i`, start and goal
from the protocol (`protocol(cfg, task)`), success and final distance judged by the real task after
executing, `lockstep` episodes planned together.

The protocol, per task: `goals=auto` (default) gives the field's benchmark tasks (pusht,
dmc_reacher) the anchors' goals (planners.goals: start and goal = the state 25 environment
steps later on a held-out trajectory of the data policy, from episode seed `seed + i`) and
our own tasks their own random goals; `goals=anchors` / `goals=random` force one or the other.
The start and goal reach the real simulator through `reset(options={"start_state", "goal_state"})`,
the same for every row. `max_steps` (null) follows the goals: the anchors' 50 environment steps
(10 decisions of 5 steps), else 50 decisions. `success=auto` judges pusht by DINO-WM's state rule
under the anchors' goals (`make_task("pusht", success="anchors")`), by gym-pusht's coverage
otherwise. `budget=anchors` plans the learned and jepa rows with the anchors' CEM (300 samples x
30 iterations, top 30, horizon 5, receding horizon 5) instead of `learned_budget` (the CPU default). `benchmark` returns one summary dict per (task, row,
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
from planners.published import ANCHORS
from planners.gradient import GradientConfig
from planners.learned import LearnedConfig
from planners.mpc import EpisodeResult, MPCConfig, NullObserver, OracleObserver, run_mpc
from planners.mppi import MPPIConfig
from planners.random_shooting import RandomShootingConfig
from planners.stats import mean_sem, wilson_interval
from worldmodel.errors import ConfigError

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
    tasks: list[str] = field(default_factory=lambda: ["reacher", "point_maze", "pusher"])  # [] = the model's tasks
    rows: list[str] = field(default_factory=lambda: list(ROWS))   # learned | jepa | oracle_latent | oracle_state | random
    planners: list[str] = field(default_factory=lambda: ["cem"])  # for the model rows (random uses no planner)
    episodes: int = 20               # evaluation episodes per (task, row, planner)
    seed: int = 10_000               # episode i uses seed + i, disjoint from collection seeds 0..
    goals: str = "auto"              # auto (anchors for pusht / dmc_reacher, random for ours) | anchors | random
    goal_policy: str = "auto"        # the anchors' data policy: auto (the model folder's `data_policy` of the task, the policy and
                                     # weights its data was collected with; else lw collect's default mixture) | mixture
                                     # (lw collect's default weights) | one policy name (as `lw collect policy=`)
    success: str = "auto"            # auto (pusht: DINO-WM's rule with the anchors' goals) | task (the simulator's own) | anchors
    budget: str = "cpu"              # cpu (learned_budget) | anchors (CEM 300 x 30, top 30, horizon 5, for learned/jepa)
    max_steps: int | None = None     # env decision steps per episode; None = the protocol's (anchors: 50 environment
                                     # steps / action_repeat; random goals: 50 decisions)
    receding_horizon: int = 5        # actions executed per plan (DINO-WM: 5)
    stop_on_success: bool = True     # end an episode once the real task reports success (success = reached in budget)
    lockstep: int = 4                # episodes planned together
    model: str = ""                  # learned world-model folder (`lw pretrain`; {task} filled in); "" skips the learned row
    rae: str | None = "runs/rae_{task}"  # RAE for oracle_latent ({task} filled in); "" or empty (rae=) = <model>/rae; missing -> row skipped
    jepa: str | None = ""            # JEPA folder for the jepa row ({task} filled in); "" = <model>/jepa; missing -> row skipped
    workers: int = 2                 # oracle worker processes
    device: str = ""                 # torch device of the learned model / RAE; "" = cuda if available, else cpu
    threads: int = 0                 # torch CPU threads of the learned rows (0 = torch's default, every core); on a
                                     # machine where another process is busy, 1 avoids OpenMP stalls (5-20x slower)
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


# --------------------------------------------------------------------------- the protocol

GOALS = ("auto", "anchors", "random")
SUCCESS = ("auto", "task", "anchors")
BUDGETS = ("cpu", "anchors")
ANCHOR_TASKS = ("pusht", "dmc_reacher")   # the field's benchmark tasks: the anchors' goals under goals=auto
ANCHOR_RULES = ("pusht",)                 # tasks whose anchors judged by a rule of their own (DINO-WM's eval_state)
TASK_MAX_STEPS = 50                       # decisions per episode under the tasks' own goals
LATENT_ROWS = ("learned", "jepa")         # the rows budget=anchors plans with the anchors' CEM
ANCHORS_BUDGET = Budget(horizon=ANCHORS.horizon, samples=ANCHORS.samples, elites=ANCHORS.elites,
                        iterations=ANCHORS.iterations)


@dataclass(frozen=True)
class Protocol:
    """How one task's episodes are set and judged: the same for every row."""
    task: str
    goals: str             # "anchors" (planners.goals) | "random" (the task's own reset(seed))
    max_steps: int         # decisions per episode
    action_repeat: int     # environment steps per decision
    success: str           # "anchors" | "task": the rule's name
    success_rule: str      # the rule in words
    task_kwargs: dict      # make_task keywords of every env of every row (pusht: success=)
    goal_policy: dict | None = None   # anchors' goals: anchor_goal's data-policy keywords (policy, mixture, hold, ...)

    def describe(self) -> str:
        goals = (f"the anchors' (start and goal = the state {ANCHORS.goal_offset_steps} environment steps later on a "
                 f"held-out trajectory of the data policy {describe_policy(self.goal_policy)}, drawn from the episode "
                 f"seed)" if self.goals == "anchors" else "the task's own random goals (reset(seed))")
        return (f"{self.task}: goals {goals}; budget {self.max_steps} decisions = {self.max_steps * self.action_repeat} "
                f"environment steps; success: {self.success_rule}")

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "env_steps": self.max_steps * self.action_repeat}


def check_protocol(cfg: BenchmarkConfig) -> None:
    """Unknown goals= / success= / budget= / goal_policy= values are ConfigErrors naming the choices."""
    from envs.policies import POLICIES

    for key, choices in (("goals", GOALS), ("success", SUCCESS), ("budget", BUDGETS),
                         ("goal_policy", ("auto", *POLICIES, "mixture"))):
        if getattr(cfg, key) not in choices:
            raise ConfigError(f"{key}={getattr(cfg, key)!r}, expected one of {list(choices)}")
    if cfg.max_steps is not None and cfg.max_steps < 1:
        raise ConfigError(f"max_steps={cfg.max_steps}, expected >= 1 or null (the protocol's)")


def describe_policy(pol: dict | None) -> str:
    if not pol:
        return ""
    weights = pol.get("mixture")
    if pol["policy"] == "mixture" and weights:
        return "(mixture " + ", ".join(f"{w:.0%} {name}" for name, w in weights.items() if w) + ")"
    return f"({pol['policy']})"


def goal_policy(cfg: BenchmarkConfig, task: str) -> dict:
    """anchor_goal's data-policy keywords for `task`'s anchors' goals. goal_policy=auto: the policy the
    model's data was collected with (its folder's `data_policy`, written by `lw pretrain`), so the goals are
    states that policy reached, as in the anchors' protocol; lw collect's default mixture without one."""
    if cfg.goal_policy != "auto":
        return {"policy": cfg.goal_policy}
    pol = model_tasks(cfg, task).get(task)
    return dict(pol) if pol else {"policy": "mixture"}


def model_tasks(cfg: BenchmarkConfig, task: str) -> dict[str, dict | None]:
    """The tasks the learned model of `task` covers and each one's data policy (worldmodel.world.covered_tasks);
    {} without model= or a folder there."""
    if not cfg.model:
        return {}
    from worldmodel.hub import CONFIG_NAME, read_config
    from worldmodel.world import covered_tasks

    folder = Path(_model_path(cfg, task))
    return covered_tasks(read_config(folder)) if (folder / CONFIG_NAME).is_file() else {}


def with_model_tasks(cfg: BenchmarkConfig) -> BenchmarkConfig:
    """Resolve tasks=[]: every task the model folder covers (a model of several tasks runs on each)."""
    if cfg.tasks:
        return cfg
    if "{task}" in cfg.model:
        raise ConfigError(f"tasks=[] takes the tasks of one model folder, but model={cfg.model!r} is one per task; "
                          "name the tasks (tasks=[reacher,...])")
    tasks = list(model_tasks(cfg, ""))
    if not tasks:
        raise ConfigError(f"tasks=[] takes the model folder's tasks, but model={cfg.model!r} names none; "
                          "name the tasks (tasks=[reacher,...])")
    return dataclasses.replace(cfg, tasks=tasks)


def _success_rule(task: str, rule: str) -> str:
    from envs.mujoco_tasks import TASKS

    if task == "pusht":
        from envs.tasks.pusht import ANCHOR_ANGLE, ANCHOR_POS, COVERAGE

        if rule == "anchors":
            return (f"DINO-WM's state rule (make_task('pusht', success='anchors'): the norm of the (agent xy, block xy) "
                    f"error < {ANCHOR_POS:g} units and the block angle within {ANCHOR_ANGLE:.3f} rad = pi/9; "
                    "gym-pusht's coverage stays in info)")
        return f"gym-pusht's own (coverage of the goal T > {100 * COVERAGE:.0f}%)"
    own = {"dmc_reacher": "dm_control's own target test (finger within 6 cm of the target centre)"}.get(
        task, f"the task's own (distance <= {TASKS[task].success_threshold:g} m)")
    return own + (" (no separate anchors' rule here: the task's own)" if rule == "anchors" else "")


def protocol(cfg: BenchmarkConfig, task: str) -> Protocol:
    """The protocol of `task` under `cfg` (module docstring); a ConfigError if it does not apply."""
    from envs.mujoco_tasks import TASKS

    check_protocol(cfg)
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r} in tasks, expected some of {sorted(TASKS)}")
    spec = TASKS[task]
    goals = cfg.goals if cfg.goals != "auto" else ("anchors" if task in ANCHOR_TASKS else "random")
    if goals == "anchors":
        from planners.goals import decisions_for

        try:
            default_steps = decisions_for(task, ANCHORS.budget_steps)
            decisions_for(task, ANCHORS.goal_offset_steps)
        except ValueError as e:
            raise ConfigError(f"goals=anchors does not fit {task}: {e}") from None
    else:
        default_steps = TASK_MAX_STEPS
    success = cfg.success if cfg.success != "auto" else (
        "anchors" if goals == "anchors" and task in ANCHOR_RULES else "task")
    kwargs = {"success": "anchors" if success == "anchors" else "coverage"} if task == "pusht" else {}
    return Protocol(task=task, goals=goals, max_steps=int(cfg.max_steps or default_steps),
                    action_repeat=int(spec.action_repeat), success=success,
                    success_rule=_success_rule(task, success), task_kwargs=kwargs,
                    goal_policy=goal_policy(cfg, task) if goals == "anchors" else None)


def episode_options(cfg: BenchmarkConfig, task: str, seeds) -> list[dict | None]:
    """Each episode's reset options: {"start_state", "goal_state"} under the anchors' goals, else None
    (the task's own reset(seed)). Drawn once per task; every row gets the same list."""
    seeds = [int(s) for s in seeds]
    proto = protocol(cfg, task)
    if proto.goals != "anchors":
        return [None] * len(seeds)
    from planners.goals import anchor_goals

    return [{"start_state": s, "goal_state": g} for s, g in anchor_goals(task, seeds, **proto.goal_policy)]


def receding_horizon(cfg: BenchmarkConfig, row: str) -> int:
    """Actions executed per plan for `row`: the anchors' under budget=anchors (latent rows), else cfg's."""
    return ANCHORS.receding_horizon if cfg.budget == "anchors" and row in LATENT_ROWS else cfg.receding_horizon


def describe_settings(planner: str, st: dict) -> str:
    if planner in ("cem", "mppi"):
        return (f"{planner} {st['samples']} samples x {st['iterations']} iterations, top {st['elites']}, "
                f"horizon {st['horizon']}")
    if planner == "gradient":
        return f"gradient {st['starts']} starts x {st['iterations']} steps, horizon {st['horizon']}"
    if planner == "random_shooting":
        return f"random_shooting {st['samples']} samples, horizon {st['horizon']}"
    return planner


def describe_budget(cfg: BenchmarkConfig) -> str:
    """The planner budget of every row of `cfg`, grouped: one line for the results table."""
    groups: dict[str, list[str]] = {}
    for row in cfg.rows:
        if row == "random":
            groups.setdefault("uniform random actions", []).append(row)
            continue
        text = "; ".join(describe_settings(p, planner_settings(cfg, row, p)) for p in cfg.planners)
        groups.setdefault(f"{text}, receding horizon {receding_horizon(cfg, row)}", []).append(row)
    name = ("anchors (the anchors' CEM for learned and jepa)" if cfg.budget == "anchors"
            else "cpu (the CPU default)")
    return f"budget={name}: " + "; ".join(f"{', '.join(rows)}: {text}" for text, rows in groups.items())


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
    learned = ANCHORS_BUDGET if cfg.budget == "anchors" else cfg.learned_budget
    budget = {"learned": learned, "jepa": learned, "oracle_latent": cfg.oracle_latent_budget,
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


def _landmarks(cfg: BenchmarkConfig, folder: str | Path, task: str):
    """The landmark graph a row's model keeps for `task` (`planners.landmarks.find_graph`), or None
    (none there, or landmarks=false)."""
    from planners.landmarks import LandmarkGraph, find_graph

    path = find_graph(folder, task) if cfg.landmarks else None
    return LandmarkGraph.from_pretrained(path) if path is not None else None


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
    from worldmodel.world import covered_tasks

    covered = list(covered_tasks(world.extras))
    if covered and task not in covered:
        return Row(name, render=True, skip=f"the model was trained on {', '.join(map(repr, covered))}")
    from planners.learned import LearnedModel

    model = LearnedModel(world.for_task(task), action_space(task), cfg.learned, landmarks=graph)
    return _with_graph(Row(name, model, model.observer, render=True), graph)


def learned_row(cfg: BenchmarkConfig, task: str, world) -> Row:
    """The world model (`model=`), with its landmark graph when it has one."""
    return _latent_row(cfg, task, "learned", world, _landmarks(cfg, _model_path(cfg, task), task) if cfg.model else None)


def jepa_row(cfg: BenchmarkConfig, task: str, world) -> Row:
    """The JEPA's deterministic latent predictor (`jepa=`, default <model>/jepa)."""
    path = _jepa_path(cfg, task)
    if not path or not (Path(path) / "config.json").is_file():
        return Row("jepa", render=True, skip=f"no JEPA at {path!r} (jepa=<folder written by `lw train-encoder method=jepa`>)")
    from worldmodel.jepa import JEPAWorld

    return _latent_row(cfg, task, "jepa", JEPAWorld.from_pretrained(path, device=_device(cfg.device)),
                       _landmarks(cfg, path, task))


def oracle_latent_row(cfg: BenchmarkConfig, task: str, world) -> Row:
    """MuJoCo rollouts scored by the latent cost of an RAE (`rae=`)."""
    from planners.oracle import OracleConfig, OracleModel

    path = _rae_path(cfg, task)
    if not path or not (Path(path) / "config.json").is_file():
        return Row("oracle_latent", render=True, skip=f"no RAE at {path!r} (rae=<folder>)")
    from worldmodel.rae import RAE

    rae = RAE.from_pretrained(path, device=_device(cfg.device)).eval()
    graph = _landmarks(cfg, _model_path(cfg, task), task) if cfg.model else None
    if graph is not None and graph.fingerprint != rae.fingerprint():
        graph = None                # the model's graph is in another RAE's latent space
    model = OracleModel(OracleConfig(task=task, cost="latent", horizon_cost=cfg.oracle_horizon_cost,
                                     workers=cfg.workers, image_size=cfg.image_size,
                                     task_kwargs=protocol(cfg, task).task_kwargs), rae=rae, landmarks=graph)
    return _with_graph(Row("oracle_latent", model, lambda: OracleObserver("image"), render=True), graph)


def oracle_state_row(cfg: BenchmarkConfig, task: str, world) -> Row:
    """MuJoCo rollouts scored by the true-state cost: the upper bound."""
    from planners.oracle import OracleConfig, OracleModel

    model = OracleModel(OracleConfig(task=task, cost="state", horizon_cost=cfg.oracle_horizon_cost,
                                     workers=cfg.workers, image_size=cfg.image_size,
                                     task_kwargs=protocol(cfg, task).task_kwargs))
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
            seed: int, record_frames: bool, options: list[dict | None] | None = None) -> list[EpisodeResult]:
    """`episodes` episodes of one (task, row, planner), `lockstep` at a time; episode i has seed
    `seed + i` and reset options `options[i]` (None: `episode_options`, the protocol's)."""
    from envs.mujoco_tasks import make_task
    from planners.registry import make_planner

    proto = protocol(cfg, task)
    if options is None:
        options = episode_options(cfg, task, range(seed, seed + episodes))
    if len(options) != episodes:
        raise ValueError(f"got {len(options)} reset options for {episodes} episodes")
    settings = planner_settings(cfg, rm.name, planner_name)
    render = rm.render or record_frames
    envs = [make_task(task, image_size=cfg.image_size, max_steps=proto.max_steps, render=render, **proto.task_kwargs)
            for _ in range(min(cfg.lockstep, episodes))]
    space = action_space(task)
    mpc = MPCConfig(receding_horizon=receding_horizon(cfg, rm.name), max_steps=proto.max_steps, record_states=True,
                    record_frames=record_frames, stop_on_success=cfg.stop_on_success)
    out: list[EpisodeResult] = []
    try:
        for start in range(0, episodes, cfg.lockstep):
            n = min(cfg.lockstep, episodes - start)
            planner = make_planner(planner_name, space, **{**settings, "seed": int(settings["seed"]) + seed + start})
            t0 = time.perf_counter()
            recs = run_mpc(envs[:n], planner, rm.model, [rm.observer() for _ in range(n)], mpc,
                           seeds=[seed + start + i for i in range(n)], reset_options=options[start:start + n])
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
                start_successes=sum(r.start_success for r in recs),
                per_episode=[dict(seed=r.seed, success=r.success, final_distance=r.final_distance, steps=r.steps,
                                  start_success=r.start_success,
                                  **{k: np.asarray(v).tolist() for k, v in
                                     (("start_state", r.start_state), ("goal_state", r.goal_state),
                                      ("final_state", r.final_state)) if v is not None})
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

    cfg = with_model_tasks(cfg)
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
    for t in cfg.tasks:
        protocol(cfg, t)                          # a protocol that does not fit a task fails before any work
    from worldmodel.device import set_threads

    set_threads(cfg.threads)
    preload_model_stack()
    loaded: dict = {}
    cfg = with_image_size(cfg, load_world(cfg, cfg.tasks[0], loaded))
    results = []
    for task in cfg.tasks:
        world = load_world(cfg, task, loaded)
        with_image_size(cfg, world)               # every task's model must see the same frame size
        seeds = range(cfg.seed, cfg.seed + cfg.episodes)
        options = episode_options(cfg, task, seeds)   # drawn once: every row starts and ends at the same states
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
                    recs = run_row(cfg, task, rm, planner, cfg.episodes, cfg.seed, record_frames=cfg.video,
                                   options=options)
                    results.append(summarise(task, row, planner, recs, settings, rm.note))
                    if done is not None:
                        done(task, row, planner, recs)
            finally:
                rm.close()
    return results
