"""`lw plan`: plan one episode in a model, execute it in MuJoCo, write its GIF and a JSON summary.

    lw plan task=reacher row=oracle_state planner=cem seed=10000
    lw plan task=reacher row=learned bench.model=checkpoints/reacher-tiny

The rows, planners and budgets are those of `lw benchmark` (`bench.*`, planners.benchmark).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lw.benchmark import goal_frame, write_gif
from lw.program import Program
from planners.benchmark import BenchmarkConfig, build_row, load_world, preload_model_stack, run_row, with_image_size


@dataclass
class PlanOneConfig:
    task: str = "reacher"            # a key of envs.mujoco_tasks.TASKS
    row: str = "oracle_state"        # learned | jepa | oracle_latent | oracle_state | random
    planner: str = "cem"             # cem | mppi | gradient | random_shooting
    seed: int = 10_000               # episode seed
    bench: BenchmarkConfig = field(default_factory=BenchmarkConfig)   # everything else (model, budgets, steps)
    out: str = "runs/plan"           # folder for episode.gif and episode.json


def run(cfg: PlanOneConfig) -> None:
    b = cfg.bench
    preload_model_stack()
    world = load_world(dataclasses.replace(b, rows=[cfg.row]), cfg.task, {})
    b = with_image_size(b, world)
    rm = build_row(b, cfg.task, cfg.row, world)
    try:
        if rm.skip:
            raise ValueError(f"cannot plan with row={cfg.row!r}: {rm.skip}")
        planner = "random" if cfg.row == "random" else cfg.planner
        rec, = run_row(dataclasses.replace(b, lockstep=1, progress=False), cfg.task, rm, planner, 1, cfg.seed,
                       record_frames=True)
    finally:
        rm.close()
    out = Path(cfg.out)
    write_gif(out / "episode.gif", rec.frames, goal_frame(cfg.task, cfg.seed, b.image_size, rec.goal_state))
    summary = dict(task=cfg.task, row=cfg.row, planner=cfg.planner, seed=cfg.seed, success=rec.success,
                   final_distance=rec.final_distance, steps=rec.steps,
                   seconds_per_replan=float(np.mean(rec.replan_seconds)), cost=rm.note or "default",
                   actions=rec.actions.tolist())
    (out / "episode.json").write_text(json.dumps(summary, indent=2))
    print(f"{cfg.task} {cfg.row}/{cfg.planner} seed {cfg.seed}: success={rec.success} "
          f"final distance {rec.final_distance:.4f} after {rec.steps} steps, "
          f"{summary['seconds_per_replan']:.2f} s/replan{f', {rm.note}' if rm.note else ''} -> {out / 'episode.gif'}")


main = Program(__doc__, PlanOneConfig, "plan", run)

if __name__ == "__main__":
    from lw.cli import module_main
    module_main("lw.plan")
