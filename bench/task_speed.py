"""Ground-truth task speed: decisions with a frame per second, physics alone, and (pusht) contact data.

    .venv/bin/python bench/task_speed.py [--decisions 300] [--image-size 64] [--tasks ...] \
        [--contact-episodes 30] [--out bench/results/task_speed.json]

For every task of envs.mujoco_tasks.TASKS, one process, uniform random actions:
- decisions+frames/s: task.step + its frame (a decision is spec.action_repeat base-env steps);
- physics decisions/s: the same with render=False (what oracle workers and data policies pay);
- base steps/s: decisions/s x action_repeat (gym-pusht steps, dm_control control steps, ...).
Two reference rows show where dm_control's reacher starts from: its default scene (skybox,
textured floor, reflections, shadows) drawn per control step by `physics.render(64, 64)` and by
one reused `mujoco.Renderer`, against `dmc_reacher` (one reused renderer, visual options off).
Then the pusht data policies: the fraction of episodes in which the block moves by more than
20 units ("2 cm") or 10 degrees, per policy and for collect's default mixture.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

import sys

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: its sibling scripts
from collect import bench_task  # noqa: E402  # the one per-task step(+frame) timer, as bench/collect.py times it


def bench_dmc_default(steps: int, image_size: int, reused: bool) -> float:
    """dm_control reacher-easy as shipped: one control step + one frame of its default scene."""
    import mujoco
    from envs.rendering import _load_triton_first, select_gl_backend

    select_gl_backend()
    _load_triton_first()
    from dm_control import suite

    env = suite.load("reacher", "easy", task_kwargs={"random": 0})
    env.reset()
    physics = env.physics
    renderer = mujoco.Renderer(physics.model.ptr, image_size, image_size) if reused else None
    cam = physics.model.ptr.camera("fixed").id

    def frame():
        if renderer is None:
            return physics.render(image_size, image_size, camera_id=cam)
        renderer.update_scene(physics.data.ptr, cam)
        return renderer.render()

    rng = np.random.default_rng(0)
    for _ in range(5):
        env.step(rng.uniform(-1, 1, 2))
        frame()
    t0 = time.perf_counter()
    for _ in range(steps):
        if env.step(rng.uniform(-1, 1, 2)).last():
            env.reset()
        frame()
    dt = time.perf_counter() - t0
    if renderer is not None:
        renderer.close()
    return steps / dt


def contact_fraction(policies: list[str], episodes: int, steps: int) -> list[dict]:
    """pusht: episodes (seeds 0..episodes-1) whose block moved > 20 units or > 10 degrees."""
    from envs.mujoco_tasks import make_task
    from envs.tasks.pusht import angle_error
    from pretrain.data.collect import CollectConfig
    from envs.policies import make_policy, pick_policy

    task = make_task("pusht", render=False)
    mixture = CollectConfig().mixture
    rows = []
    for name in policies:
        moved, escaped, shift = 0, 0, []
        t0 = time.perf_counter()
        for seed in range(episodes):
            rng = np.random.default_rng(seed)
            pol_name = pick_policy(name, mixture, rng)
            policy = make_policy(pol_name, task, rng)
            _, info = task.reset(seed=seed)
            s0 = info["state"]
            for _ in range(steps):
                a = np.clip(np.asarray(policy(task.get_state()), np.float32), task.action_space.low,
                            task.action_space.high)
                info = task.step(a)[4]
            s = info["state"]
            d, ang = float(np.linalg.norm(s[2:4] - s0[2:4])), float(np.degrees(angle_error(s[4], s0[4])))
            moved += d > 20 or ang > 10
            escaped += not (0 < s[2] < 512 and 0 < s[3] < 512)
            shift.append(d)
        rows.append({"policy": name, "episodes": episodes, "steps": steps, "moved_fraction": moved / episodes,
                     "median_block_shift_units": float(np.median(shift)), "block_left_arena": escaped,
                     "seconds": time.perf_counter() - t0})
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--decisions", type=int, default=300, help="decisions timed per task")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--tasks", nargs="*", default=None, help="default: all of envs.mujoco_tasks.TASKS")
    p.add_argument("--contact-episodes", type=int, default=30, help="pusht episodes per data policy (0: skip)")
    p.add_argument("--out", default="bench/results/task_speed.json")
    args = p.parse_args(argv)

    from envs.mujoco_tasks import TASKS

    names = args.tasks or list(TASKS)
    print(f"bench/task_speed: {args.decisions} decisions per task, {args.image_size}x{args.image_size} frames, "
          f"MUJOCO_GL={os.environ.get('MUJOCO_GL', '')!r}, one process", flush=True)
    rows = []
    for name in names:
        spec = TASKS[name]
        rendered = bench_task(name, args.decisions, args.image_size, render=True)["per_s"]
        physics = bench_task(name, args.decisions, args.image_size, render=False)["per_s"]
        rows.append({"task": name, "backend": spec.backend, "action_repeat": spec.action_repeat,
                     "decisions_frames_per_s": rendered, "physics_decisions_per_s": physics,
                     "base_steps_per_s": physics * spec.action_repeat,
                     "render_ms_per_frame": 1000 / rendered - 1000 / physics})
    reference = []
    if "dmc_reacher" in names:
        n = max(50, args.decisions // 2)
        for how, reused in (("physics.render", False), ("reused mujoco.Renderer", True)):
            reference.append({"task": f"dm_control default scene, {how}", "backend": "dm_control", "action_repeat": 1,
                              "decisions_frames_per_s": bench_dmc_default(n, args.image_size, reused)})
    header = (f"{'task':<44} {'backend':<10} {'rep':>3} {'decisions+frames/s':>19} {'physics decisions/s':>20} "
              f"{'base steps/s':>13} {'render ms':>10}")
    print(header)
    print("-" * len(header))
    for r in rows + reference:
        phys = f"{r['physics_decisions_per_s']:>20.0f} {r['base_steps_per_s']:>13.0f} {r['render_ms_per_frame']:>10.2f}" \
            if "physics_decisions_per_s" in r else f"{'':>20} {'':>13} {'':>10}"
        print(f"{r['task']:<44} {r['backend']:<10} {r['action_repeat']:>3} {r['decisions_frames_per_s']:>19.0f} {phys}")
    if reference:
        dmc = next(r for r in rows if r["task"] == "dmc_reacher")
        per_step = dmc["decisions_frames_per_s"] * dmc["action_repeat"]
        print(f"(dm_control's default rows render every control step; dmc_reacher renders once per decision of "
              f"{dmc['action_repeat']} steps: {per_step:.0f} control steps/s with a frame per decision; "
              f"render {dmc['render_ms_per_frame']:.2f} ms/frame vs "
              f"{1000 / reference[1]['decisions_frames_per_s']:.2f} ms per step+frame of the default scene)")
    contact = []
    if args.contact_episodes > 0 and "pusht" in names:
        steps = TASKS["pusht"].episode_steps
        contact = contact_fraction(["scripted", "uniform", "correlated", "ou", "mixture"], args.contact_episodes, steps)
        print(f"\npusht data policies: episodes ({args.contact_episodes} x {steps} decisions) whose block moved "
              f"> 20 units (2 cm) or > 10 degrees")
        print(f"{'policy':<12} {'moved':>7} {'median shift (units)':>21} {'left arena':>11}")
        for r in contact:
            print(f"{r['policy']:<12} {r['moved_fraction']:>7.0%} {r['median_block_shift_units']:>21.0f} "
                  f"{r['block_left_arena']:>11}")
    result = {"benchmark": "task_speed", "image_size": args.image_size, "decisions": args.decisions,
              "mujoco_gl": os.environ.get("MUJOCO_GL", ""), "cpu_count": os.cpu_count(),
              "machine": platform.machine(), "python": platform.python_version(), "rows": rows,
              "dm_control_default_scene": reference, "pusht_contact": contact}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
