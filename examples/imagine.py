"""Side by side: MuJoCo (left) and the world model's imagination (right) for random actions.

    MUJOCO_GL=egl .venv/bin/python examples/imagine.py --model runs/tiny_cpu/model --steps 20 \
        --out imagine.gif

Both start from the same real frames (the env resets the ground-truth task with the seed
and encodes its first frames); the same uniform-random actions then drive MuJoCo and
LearnedWorld-v0. Writes a GIF (or MP4 when --out ends in .mp4).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import envs  # noqa: E402  (registers LearnedWorld-v0)
from envs.mujoco_tasks import make_task  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="world-model folder written by `lw pretrain`")
    p.add_argument("--task", default=None, help="ground-truth task (default: the model's)")
    p.add_argument("--seed", type=int, default=1_000_000, help="episode seed (held out from collection)")
    p.add_argument("--steps", type=int, default=20, help="imagined steps")
    p.add_argument("--denoise-steps", type=int, default=None, help="Euler steps per frame")
    p.add_argument("--scale", type=int, default=4, help="pixel upscaling for viewing")
    p.add_argument("--fps", type=int, default=8)
    p.add_argument("--device", default=None)
    p.add_argument("--out", default="imagine.gif")
    args = p.parse_args()

    gym.register_envs(envs)
    env = gym.make("LearnedWorld-v0", model=args.model, task=args.task, obs="pixels", render_mode="rgb_array",
                   denoise_steps=args.denoise_steps, device=args.device, max_episode_steps=-1)
    core = env.unwrapped.core
    imagined, _ = env.reset(seed=args.seed)
    # The same real start in a separate MuJoCo task: reset with the seed, then the zero-action
    # context steps the env took (deterministic physics -> the same state).
    task = make_task(core.task_name, image_size=core.world.image_size)
    real, _ = task.reset(seed=args.seed)
    zero = np.zeros(env.action_space.shape, np.float32)
    for _ in range(core.tc - 1):
        real = task.step(zero)[0]
    rng = np.random.default_rng(args.seed)
    pairs = [(real, imagined)]
    for _ in range(args.steps):
        a = rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
        real = task.step(a)[0]
        imagined, *_ = env.step(a)
        pairs.append((real, imagined))
    gap = np.full((real.shape[0], 2, 3), 255, np.uint8)
    frames = [np.concatenate([r, gap, i], 1).repeat(args.scale, 0).repeat(args.scale, 1) for r, i in pairs]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".mp4":
        imageio.mimsave(out, frames, fps=args.fps, macro_block_size=1)
    else:
        imageio.mimsave(out, frames, duration=1000 / args.fps, loop=0)
    print(f"wrote {out}: {len(frames)} frames, left MuJoCo | right imagined ({core.task_name}, seed {args.seed})")
    env.close()
    task.close()


if __name__ == "__main__":
    main()
