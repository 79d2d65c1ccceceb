"""Plan in the learned world model from pixels; execute and score in real MuJoCo.

    .venv/bin/python examples/plan_reacher.py --model checkpoints/reacher-tiny --seed 10000

The planner (CEM) sees only the camera frames and the goal image; the real Reacher task
executes the first actions of each plan (receding horizon) and alone decides success.
"""
from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

from envs.mujoco_tasks import make_task
from planners import LearnedConfig, LearnedModel, MPCConfig, make_planner, run_mpc
from planners.mpc import PixelObserver
from worldmodel.world import LatentWorld


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="checkpoints/reacher-tiny")
    p.add_argument("--seed", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=50, help="decision steps executed in MuJoCo")
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--iterations", type=int, default=4)
    args = p.parse_args()

    world = LatentWorld.from_pretrained(args.model)                     # Transfusion + RAE
    task = make_task("reacher", image_size=world.image_size)           # the real simulator
    model = LearnedModel(world, task.action_space, LearnedConfig(sample_steps=2))
    planner = make_planner("cem", task.action_space, horizon=5, samples=args.samples,
                           elites=max(2, args.samples // 8), iterations=args.iterations)
    [result] = run_mpc([task], planner, model, [PixelObserver(world.context_frames)],
                       MPCConfig(max_steps=args.steps, receding_horizon=5), seeds=[args.seed])
    print(f"success={result.success}  final fingertip distance={result.final_distance:.3f} m  "
          f"steps={result.steps}  s/replan={np.mean(result.replan_seconds):.2f}")
    task.close()


if __name__ == "__main__":
    main()
