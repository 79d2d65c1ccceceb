"""Planning latency: seconds per replan of each planner on the oracle (true-state and latent
cost) and on the learned model, for one episode state of a task.

    OMP_NUM_THREADS=1 .venv/bin/python bench/planning.py --task reacher --out runs/bench/planning.json
    .venv/bin/python bench/planning.py --model runs/tiny_cpu/model       # a trained world model
    .venv/bin/python bench/planning.py --sizes literature               # DINO-WM/TD-MPC2 sizes (slow on CPU)

Sizes: `cpu` (default) takes each row's budget from lw/conf/benchmark.yaml, `literature`
the planners' own defaults (CEM 300 x 30, MPPI 512 x 6, ...). Without --model the learned
row uses a randomly initialised world of `--size` (same compute as a trained one), and
without --rae the latent oracle uses a random RAE of the CPU shape (4x4 tokens x 128).
The oracle's workers are processes (`--workers`); the learned model runs in this process.
Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

# The model stack first: importing triton after a Mesa EGL context exists crashes the process.
from worldmodel.device import resolve_device  # noqa: E402
from worldmodel.world import LatentWorld  # noqa: E402
import worldmodel.transfusion  # noqa: E402,F401
from planners.benchmark import BenchmarkConfig, planner_settings  # noqa: E402
from planners.learned import LearnedModel  # noqa: E402
from planners.mpc import PixelContext  # noqa: E402
from planners.oracle import OracleConfig, OracleModel  # noqa: E402
from planners.registry import make_planner  # noqa: E402

PLANNERS = ("cem", "mppi", "random_shooting", "gradient")


def random_rae(image_size: int):
    from worldmodel.encoders import encoder_from_spec
    from worldmodel.rae import RAE, RAEConfig

    enc = encoder_from_spec({"encoder": "own", "input_size": image_size,
                             "kwargs": dict(image_size=image_size, patch_size=image_size // 4, dim=128, depth=6, heads=4)})
    return RAE(RAEConfig(image_size=image_size), enc).eval()


def random_world(size: str, spec, image_size: int, device: str) -> LatentWorld:
    from worldmodel.config import MODELS
    from worldmodel.transfusion import Transfusion

    cfg = MODELS[size](latent_dim=128, frame_grid=(4, 4), action_dim=spec.action_dim, action_scale=spec.action_scale)
    extras = {"task": spec.name, "image_size": image_size}   # context_frames, sample_steps: LatentWorld's defaults
    return LatentWorld(Transfusion(cfg).to(device), random_rae(image_size).to(device), extras)


def bench_config(sizes: str) -> BenchmarkConfig:
    from lw.config import compose

    cfg = compose(BenchmarkConfig, "benchmark", [])
    if sizes == "literature":
        cfg = dataclasses.replace(cfg, oracle_state_budget=type(cfg.oracle_state_budget)(),
                                  oracle_latent_budget=type(cfg.oracle_latent_budget)(),
                                  learned_budget=type(cfg.learned_budget)())
    return cfg


def time_replans(planner, model, state, goal, reps: int) -> tuple[float, float, int, int]:
    """Median and min seconds of `reps` replans (after one warm-up); model calls and rollouts of one."""
    res = planner.plan(model, [state], [goal])
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        res = planner.plan(model, [state], [goal])
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), float(np.min(times)), res.model_calls, res.rollouts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="reacher")
    ap.add_argument("--rows", default="oracle_state,oracle_latent,learned")
    ap.add_argument("--planners", default=",".join(PLANNERS))
    ap.add_argument("--sizes", choices=("cpu", "literature"), default="cpu")
    ap.add_argument("--model", default="", help="world-model folder; '' = random-init --size")
    ap.add_argument("--size", default="tiny", help="MODELS size of the random-init world")
    ap.add_argument("--rae", default="", help="RAE folder for the latent oracle; '' = random-init RAE")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=10_000)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--out", default="runs/bench/planning.json")
    args = ap.parse_args()
    args.device = str(resolve_device(args.device))  # a string: it goes into the JSON record

    from envs.mujoco_tasks import make_task

    cfg = bench_config(args.sizes)
    task = make_task(args.task, image_size=cfg.image_size, render=True)
    frame, _ = task.reset(seed=args.seed)
    rows, planners = args.rows.split(","), args.planners.split(",")
    print(f"planning latency on {args.task} (seed {args.seed}), sizes={args.sizes}, oracle workers={args.workers}, "
          f"device={args.device}, torch threads={torch.get_num_threads()}", flush=True)
    results = []
    for row in rows:
        if row == "oracle_state":
            model = OracleModel(OracleConfig(task=args.task, workers=args.workers))
        elif row == "oracle_latent":
            from worldmodel.rae import RAE

            rae = RAE.from_pretrained(args.rae, device=args.device) if args.rae else random_rae(cfg.image_size).to(args.device)
            model = OracleModel(OracleConfig(task=args.task, cost="latent", workers=args.workers), rae=rae)
        elif row == "learned":
            world = (LatentWorld.from_pretrained(args.model, device=args.device) if args.model
                     else random_world(args.size, task.spec_, cfg.image_size, args.device))
            model = LearnedModel(world, task.action_space, cfg.learned)
        else:
            raise ValueError(f"unknown row {row!r}, expected oracle_state, oracle_latent or learned")
        if row == "learned":
            state, goal = PixelContext(frame[None], np.zeros((0, task.action_space.shape[0]), np.float32)), task.goal_image
        else:
            state = task.get_state()
            goal = task.goal_state if row == "oracle_state" else task.goal_image
        try:
            for name in planners:
                if name == "gradient" and row != "learned":
                    continue                              # MuJoCo is not differentiable
                settings = planner_settings(cfg, row, name)
                planner = make_planner(name, task.action_space, **settings)
                med, best, calls, rollouts = time_replans(planner, model, state, goal, args.reps)
                r = dict(row=row, planner=name, seconds_per_replan=med, min_seconds=best, model_calls=calls,
                         rollouts=rollouts, rollouts_per_second=rollouts / med,
                         settings={k: v for k, v in settings.items() if k in ("horizon", "samples", "elites", "iterations", "starts")})
                results.append(r)
                print(f"  {row:<13} {name:<15} {med:8.3f} s/replan  ({calls} calls, {rollouts} rollouts, "
                      f"{rollouts / med:8.0f} rollouts/s)  {r['settings']}", flush=True)
        finally:
            if hasattr(model, "close"):
                model.close()

    lines = ["| row | planner | sizes | s / replan | model calls | rollouts | rollouts / s |", "|---|---|---|---|---|---|---|"]
    for r in results:
        s = r["settings"]
        size = " x ".join(str(s[k]) for k in ("samples", "starts", "iterations") if k in s) + f", H={s['horizon']}"
        lines.append(f"| {r['row']} | {r['planner']} | {size} | {r['seconds_per_replan']:.3f} | {r['model_calls']} | "
                     f"{r['rollouts']} | {r['rollouts_per_second']:.0f} |")
    print("\n".join(lines))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(task=args.task, sizes=args.sizes, workers=args.workers, device=args.device,
                                   model=args.model or f"random {args.size}", rae=args.rae or "random",
                                   machine=platform.platform(), cpu_count=__import__("os").cpu_count(),
                                   torch_threads=torch.get_num_threads(), results=results), indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
