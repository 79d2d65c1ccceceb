"""Data-collection speed of the ground-truth tasks: rendered frames/s (step + render) per task.

    .venv/bin/python bench/collect.py [--frames 1000] [--image-size 64] [--out bench/results/collect.json]

One process, one task at a time, uniform random actions, episodes of the task's length
(resets, which render the goal image too, are counted in the time). Also reports the
physics alone (render=False, what oracle-planner workers use) and the reset cost.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def bench_task(name: str, frames: int, image_size: int, render: bool) -> dict:
    from envs.mujoco_tasks import make_task

    task = make_task(name, image_size=image_size, render=render)
    task.action_space.seed(0)
    task.reset(seed=0)
    for _ in range(20):  # warm-up: GL context, caches
        task.step(task.action_space.sample())
    actions = [task.action_space.sample() for _ in range(frames)]
    resets, t_reset = 0, 0.0
    t0 = time.perf_counter()
    task.reset(seed=1)
    for i, a in enumerate(actions):
        if task.step(a)[3]:  # truncated: a new episode
            t = time.perf_counter()
            task.reset(seed=2 + i)
            t_reset += time.perf_counter() - t
            resets += 1
    dt = time.perf_counter() - t0
    task.close()
    return {"per_s": frames / dt, "seconds": dt, "resets": resets,
            "reset_ms": 1000 * t_reset / max(resets, 1)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=1000, help="decisions (= frames) timed per task")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--tasks", nargs="*", default=None, help="default: all of envs.mujoco_tasks.TASKS")
    p.add_argument("--out", default="bench/results/collect.json")
    args = p.parse_args(argv)

    from envs.mujoco_tasks import TASKS

    names = args.tasks or list(TASKS)
    print(f"bench/collect: {args.frames} decisions per task, {args.image_size}x{args.image_size} frames, "
          f"MUJOCO_GL={os.environ.get('MUJOCO_GL', '')!r}, one process", flush=True)
    rows = []
    for name in names:
        spec = TASKS[name]
        rendered = bench_task(name, args.frames, args.image_size, render=True)
        physics = bench_task(name, args.frames, args.image_size, render=False)
        rows.append({"task": name, "frames_per_s": rendered["per_s"], "physics_steps_per_s": physics["per_s"],
                     "render_ms_per_frame": 1000 / rendered["per_s"] - 1000 / physics["per_s"],
                     "reset_ms": rendered["reset_ms"], "sim_steps_per_decision": spec.frame_skip * spec.action_repeat})
    header = f"{'task':<12} {'frames/s (step+render)':>23} {'physics decisions/s':>20} {'render ms/frame':>16} {'reset ms':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['task']:<12} {r['frames_per_s']:>23.0f} {r['physics_steps_per_s']:>20.0f} "
              f"{r['render_ms_per_frame']:>16.2f} {r['reset_ms']:>9.1f}")
    result = {"benchmark": "collect", "image_size": args.image_size, "frames": args.frames,
              "mujoco_gl": os.environ.get("MUJOCO_GL", ""), "cpu_count": os.cpu_count(),
              "machine": platform.machine(), "python": platform.python_version(), "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
