"""Side by side: MuJoCo (left) and the world model's imagination (right) for random actions.

    MUJOCO_GL=egl .venv/bin/python examples/imagine.py --model checkpoints/reacher-tiny --steps 20 \
        --out imagine.gif

Both start from the same real frames (the env resets the ground-truth task with the seed
and encodes its first frames); the same uniform-random actions then drive MuJoCo and
LearnedWorld-v0. Writes a GIF (or MP4 when --out ends in .mp4).
"""
from __future__ import annotations

import argparse

from lw.report import side_by_side_gif


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="checkpoints/reacher-tiny", help="world-model folder written by `lw pretrain`")
    p.add_argument("--task", default=None, help="ground-truth task (default: the model's)")
    p.add_argument("--seed", type=int, default=1_000_000, help="episode seed (held out from collection)")
    p.add_argument("--steps", type=int, default=20, help="imagined steps")
    p.add_argument("--sample-steps", type=int, default=None, help="Euler steps per frame (default: the model's)")
    p.add_argument("--scale", type=int, default=4, help="pixel upscaling for viewing")
    p.add_argument("--fps", type=int, default=8)
    p.add_argument("--device", default=None)
    p.add_argument("--out", default="imagine.gif")
    args = p.parse_args()
    out = side_by_side_gif(args.model, args.task, args.out, seed=args.seed, steps=args.steps,
                           sample_steps=args.sample_steps, device=args.device, scale=args.scale, fps=args.fps)
    print(f"wrote {out}: {args.steps + 1} frames, left MuJoCo | right imagined (seed {args.seed})")


if __name__ == "__main__":
    main()
