"""One-command ablations: arms of `lw pretrain` settings, each trained for several seeds and judged by
held-out action gain and MuJoCo-judged planning. The library of `lw ablation` (lw/ablation.py).

A preset (lw/conf/ablation/<name>.yaml) names the `lw pretrain` overrides every arm shares
(experiment preset, dataset, RAE) and its arms: a name and the arm's own overrides. A scale
(lw/conf/ablation_scale/<scale>.yaml) adds the size (model, steps, batch, device). For each arm and
training seed (`seed` and `data.seed`): train in this process (a run folder with an exported model
is reused, an unfinished one continues: resume=auto), then score it on every task: the action gain
of held-out open-loop prediction at the imagined steps asked (pretrain.eval_prediction.predict) and
planning success on each seed range (`plan`, a callable the program passes: the benchmark lives in
`planners`, which this library does not import). Each (arm, seed, task) is one line of
results.jsonl; a line already there for the same run and evaluation is reused, so a killed
ablation continues where it stopped.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from pretrain.eval_prediction import EvalPredictionConfig, predict
from pretrain.metrics import to_dict
from pretrain.train import TrainConfig, Trainer
from worldmodel.device import set_threads
from worldmodel.errors import ConfigError
from worldmodel.sequence import TEXT

BASE = "{base}"   # an arm's override naming the base model folder (AblationConfig.base)
# TrainConfig fields that change how a run is executed, not what it learns: a reused run may differ in them
RUNTIME_FIELDS = ("threads", "resume", "max_steps_this_run", "prefetch", "device", "compile", "metrics")


@dataclass
class ArmConfig:
    name: str = ""                  # the arm's label in results.jsonl, the report and its run folders
    overrides: list[str] = field(default_factory=list)   # its own `lw pretrain` overrides; {base} = the base folder
    match_vision_tokens: str = ""   # another arm's name: train for the steps that give this arm as many episode
                                    # (vision) tokens as that arm gets (equal data instead of equal compute)


@dataclass
class AblationEval:
    tasks: list[str] = field(default_factory=lambda: ["reacher"])   # ground-truth tasks every run is scored on
    prediction_episodes: int = 32   # held-out episodes of lw eval-prediction (uniform actions, seeds 1000000..)
    action_gain_steps: list[int] = field(default_factory=lambda: [1, 5])   # imagined steps whose action gain is kept
    episodes: int = 20              # planning episodes per seed range (the benchmark's learned row)
    seed_ranges: list[int] = field(default_factory=lambda: [10_000, 20_000])   # first seed of each range (disjoint)
    benchmark: list[str] = field(default_factory=list)   # further `lw benchmark` overrides (planner budget, ...)


@dataclass
class AblationConfig:
    name: str = ""                  # the preset, lw/conf/ablation/<name>.yaml (required)
    scale: str = "cpu"              # lw/conf/ablation_scale/<scale>.yaml: cpu (2 cores) | gpu_small (one GPU)
    question: str = ""              # what the ablation asks (the report's first line)
    out_dir: str = ""               # results.jsonl, report.md, plot.png, runs/<arm>/seed<s>/; "" = runs/ablation/<name>
                                    # (+ _<scale> for another scale than cpu)
    pretrain: list[str] = field(default_factory=list)   # the preset's `lw pretrain` overrides every arm shares
    size: list[str] = field(default_factory=list)       # the scale's `lw pretrain` overrides (model size, seq_len, lr)
    steps: int = 700                # optimizer steps of every run (equal compute), unless an arm says otherwise
    batch_size: int = 8             # rows per step
    device: str = "cpu"             # training and evaluation: auto | cpu | cuda
    threads: int = 0                # torch CPU threads (0 = torch's default; 1 on cores another job keeps busy)
    base: str = ""                  # a model folder written by `lw pretrain`, named by arms as {base} (transfer)
    train_seeds: list[int] = field(default_factory=lambda: [0, 1])   # each run's seed and data.seed
    arms: list[ArmConfig] = field(default_factory=list)
    eval: AblationEval = field(default_factory=AblationEval)

    def out(self) -> Path:
        return Path(self.out_dir or f"runs/ablation/{self.name}" + ("" if self.scale == "cpu" else f"_{self.scale}"))


ComposeTrain = Callable[[list[str]], TrainConfig]        # `lw pretrain` overrides -> its config
PlanScore = Callable[[str, str, int, Path], dict]         # (model folder, task, first seed, out) -> learned row


# ---------------------------------------------------------------- the runs
def check_arms(cfg: AblationConfig) -> None:
    """Names unique and present, matches naming an arm, {base} given when an arm needs it: before any training."""
    names = [a.name for a in cfg.arms]
    if not names or not all(names) or len(set(names)) != len(names):
        raise ConfigError(f"arms {names}, expected at least one arm, each with its own non-empty name")
    for arm in cfg.arms:
        if arm.match_vision_tokens and arm.match_vision_tokens not in names:
            raise ConfigError(f"arm {arm.name!r}: match_vision_tokens={arm.match_vision_tokens!r}, expected one of {names}")
        if not cfg.base and any(BASE in o for o in arm.overrides):
            raise ConfigError(f"arm {arm.name!r} starts from {BASE} ({arm.overrides}), but base is empty; expected "
                              f"base=<model folder written by `lw pretrain`> (the same model size)")
    if not cfg.train_seeds or not cfg.eval.seed_ranges or not cfg.eval.tasks:
        raise ConfigError(f"train_seeds={cfg.train_seeds}, eval.seed_ranges={cfg.eval.seed_ranges}, "
                          f"eval.tasks={cfg.eval.tasks}; expected each non-empty")
    if min(cfg.eval.action_gain_steps, default=0) < 1:
        raise ConfigError(f"eval.action_gain_steps={cfg.eval.action_gain_steps}, expected imagined steps >= 1")


def run_dir(cfg: AblationConfig, arm: str, seed: int) -> Path:
    return cfg.out() / "runs" / arm / f"seed{seed}"


def shared_overrides(cfg: AblationConfig, arm: ArmConfig) -> list[str]:
    """The `lw pretrain` overrides of an arm, before the run's own: preset, scale, sizes, then the arm's."""
    return [*cfg.pretrain, *cfg.size, f"steps={cfg.steps}", f"batch_size={cfg.batch_size}", f"device={cfg.device}",
            f"threads={cfg.threads}", *(o.replace(BASE, cfg.base) for o in arm.overrides)]


def episode_tokens_per_step(tc: TrainConfig) -> float:
    """Tokens per step of the episode sources (image-text, video, action video): all but text."""
    return tc.batch_size * tc.data.seq_len * (1 - tc.data.weights()[TEXT])


def arm_steps(cfg: AblationConfig, arm: ArmConfig, compose: ComposeTrain) -> int:
    """The arm's steps; with match_vision_tokens those that give it the named arm's episode tokens."""
    mine = compose(shared_overrides(cfg, arm))
    if not arm.match_vision_tokens:
        return mine.steps
    theirs = compose(shared_overrides(cfg, next(a for a in cfg.arms if a.name == arm.match_vision_tokens)))
    return max(1, round(theirs.steps * episode_tokens_per_step(theirs) / episode_tokens_per_step(mine)))


def run_overrides(cfg: AblationConfig, arm: ArmConfig, seed: int, steps: int) -> list[str]:
    """The `lw pretrain` command line of one run (what the report prints to reproduce it)."""
    matched = [f"steps={steps}"] if arm.match_vision_tokens else []
    return [*shared_overrides(cfg, arm), *matched, f"seed={seed}", f"data.seed={seed}",
            f"run_dir={run_dir(cfg, arm.name, seed)}", "resume=auto"]


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def settings_differences(saved: dict, tc: TrainConfig) -> list[str]:
    """What a run folder's saved config.json trains differently from `tc` (execution-only fields aside)."""
    now = _flat(json.loads(json.dumps(to_dict(tc))))
    was = _flat(saved)
    return [f"{k}: {was.get(k)!r} there, {now.get(k)!r} now" for k in sorted(set(now) | set(was))
            if k.split(".")[0] not in RUNTIME_FIELDS and was.get(k) != now.get(k)]


def check_run_folder(tc: TrainConfig) -> None:
    """A run folder that exists must hold this run: one of other settings is refused, not mixed in."""
    saved = Path(tc.run_dir) / "config.json"
    if not tc.export:
        raise ConfigError("export=false: an ablation scores each run's exported model; expected export=true")
    differs = settings_differences(json.loads(saved.read_text()), tc) if saved.is_file() else []
    if differs:
        raise ConfigError(f"{str(saved.parent)!r} holds a run of other settings ({'; '.join(differs[:4])}); expected "
                          f"the same run: choose another out_dir, or delete that folder to train it anew")


def model_checksum(folder: str | Path) -> str | None:
    """The sha256 of the run's exported weights (what a results line was scored on), None before the export."""
    from worldmodel import hub

    config = Path(folder) / "model" / hub.CONFIG_NAME
    return json.loads(config.read_text())[hub.CHECKSUMS_KEY].get(hub.WEIGHTS_NAME) if config.is_file() else None


def train_unless_exported(tc: TrainConfig, log: Callable[[str], None] = print) -> float:
    """Train the run unless its folder already has an exported model (an unfinished run continues:
    resume=auto). Returns the seconds trained."""
    if model_checksum(tc.run_dir) is not None:
        log(f"  {tc.run_dir}: exported model found, training skipped")
        return 0.0
    t0 = time.perf_counter()
    Trainer(tc).run()
    return time.perf_counter() - t0


def heldout_loss(folder: str | Path, key: str = "val/group/action_video") -> float | None:
    """The run's last held-out action-video flow loss (metrics.jsonl), None when it was not evaluated."""
    path = Path(folder) / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return next((r[key] for r in reversed(rows) if key in r), None)


# ---------------------------------------------------------------- scoring
def score_run(cfg: AblationConfig, tc: TrainConfig, plan: PlanScore, log: Callable[[str], None] = print) -> list[dict]:
    """One result per task: held-out loss, action gain at the steps asked, planning per seed range."""
    from worldmodel import hub

    model = Path(tc.run_dir) / "model"
    extra = hub.read_config(model)
    ev = cfg.eval
    out = []
    for task in ev.tasks:
        pred = predict(EvalPredictionConfig(model=str(model), task=task, episodes=ev.prediction_episodes,
                                            horizon=max(ev.action_gain_steps), device=cfg.device), log)
        gain = pred["per_step"]["action_gain"]
        planning = {}
        for first in ev.seed_ranges:
            row = plan(str(model), task, first, Path(tc.run_dir) / "benchmark" / f"{task}_seed{first}")
            planning[str(first)] = {k: row.get(k) for k in ("successes", "episodes", "success_rate",
                                                            "final_distance", "note")}
            log(f"  {task} seeds {first}..{first + ev.episodes - 1}: {row.get('successes')}/{row.get('episodes')}")
        out.append({"task": task, "train_steps": extra.get("train_steps"), "train_tokens": extra.get("train_tokens"),
                    "heldout_action_video_loss": heldout_loss(tc.run_dir),
                    "action_gain": {str(k): gain[k - 1] for k in ev.action_gain_steps}, "planning": planning})
    return out


# ---------------------------------------------------------------- results.jsonl
def read_results(path: str | Path) -> list[dict]:
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def append_results(path: str | Path, rows: list[dict]) -> None:
    with open(path, "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def same_evaluation(row: dict, arm: str, seed: int, checksum: str | None, ev: AblationEval) -> bool:
    """A results.jsonl line of this arm and seed, scored on these very weights with these evaluation settings."""
    return checksum is not None and (row.get("arm"), row.get("seed"), row.get("model_sha256"), row.get("eval")) == \
        (arm, seed, checksum, json.loads(json.dumps(to_dict(ev))))


def run_ablation(cfg: AblationConfig, compose: ComposeTrain, plan: PlanScore,
                 log: Callable[[str], None] = print) -> list[dict]:
    """Every arm x training seed: train (or reuse), score, append to results.jsonl. Returns this
    ablation's results, one per (arm, seed, task), in arm order."""
    check_arms(cfg)
    set_threads(cfg.threads)
    out = cfg.out()
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for arm in cfg.arms:
        steps = arm_steps(cfg, arm, compose)
        for seed in cfg.train_seeds:
            overrides = run_overrides(cfg, arm, seed, steps)
            tc = compose(overrides)
            check_run_folder(tc)
            log(f"ablation {cfg.name}: arm {arm.name}, seed {seed}, {steps} steps -> {tc.run_dir}")
            checksum = model_checksum(tc.run_dir)
            before = [r for r in read_results(out / "results.jsonl") if same_evaluation(r, arm.name, seed, checksum,
                                                                                         cfg.eval)]
            if before:
                log("  scored before (results.jsonl): reused")
                results += before
                continue
            seconds = train_unless_exported(tc, log)
            rows = [{"arm": arm.name, "seed": seed, "run_dir": tc.run_dir, "steps": steps, "train_seconds": seconds,
                     "model_sha256": model_checksum(tc.run_dir), "pretrain": overrides, "eval": to_dict(cfg.eval), **r}
                    for r in score_run(cfg, tc, plan, log)]
            append_results(out / "results.jsonl", rows)
            results += rows
    return results


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def arm_means(results: list[dict]) -> list[dict]:
    """Per (arm, task), the mean over training seeds of the loss, each action gain and each range's success."""
    out = []
    for arm, task in dict.fromkeys((r["arm"], r["task"]) for r in results):
        rows = [r for r in results if (r["arm"], r["task"]) == (arm, task)]
        out.append({"arm": arm, "task": task, "seeds": [r["seed"] for r in rows],
                    "heldout_action_video_loss": _mean([r["heldout_action_video_loss"] for r in rows]),
                    "action_gain": {k: _mean([r["action_gain"][k] for r in rows]) for k in rows[0]["action_gain"]},
                    "success_rate": {k: _mean([r["planning"][k]["success_rate"] for r in rows])
                                     for k in rows[0]["planning"]}})
    return out

