"""Make LearnedWorld-v0, step it with random actions, save what it imagines as a GIF.

    .venv/bin/python examples/quickstart.py --model checkpoints/reacher-tiny --out quickstart.gif
"""
from __future__ import annotations

import argparse

import gymnasium as gym
import imageio.v2 as imageio

import envs  # registers LearnedWorld-v0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="checkpoints/reacher-tiny")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", default="quickstart.gif")
    args = p.parse_args()

    gym.register_envs(envs)
    env = gym.make("LearnedWorld-v0", model=args.model, obs="pixels", render_mode="rgb_array")
    obs, info = env.reset(seed=0)
    frames, total = [obs], 0.0
    for _ in range(args.steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        frames.append(obs)
        total += float(reward)
        if terminated or truncated:
            break
    imageio.mimsave(args.out, [f.repeat(4, 0).repeat(4, 1) for f in frames], duration=125, loop=0)
    print(f"{len(frames) - 1} imagined steps, return {total:.3f} (negative latent distance to the goal) -> {args.out}")
    env.close()


if __name__ == "__main__":
    main()
