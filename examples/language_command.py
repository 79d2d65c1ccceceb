"""A goal in words: the world model imagines the described state, then plans to reach it.

    MUJOCO_GL=egl .venv/bin/python examples/language_command.py --model checkpoints/reacher-tiny \
        --command "The upper arm points up and to the left (about 135 degrees) and the elbow is straight." \
        --out language.gif

The unified model was pretrained on captions in both directions (caption -> frame and
frame -> caption), so a sentence in the style of the task's captions can be turned into
a goal image: `LatentWorld.imagine_from_text` samples the frame after the caption. CEM then
plans toward that imagined goal in the learned world from pixels, the real MuJoCo task
executes the actions, and the script prints the true end state in the same words (the
task's own captioner). The GIF shows the imagined goal beside the executed episode.

Works with either action encoding. With a text-action model (`action_encoding=text`),
`gym.make("LearnedWorld-v0", model=...)` also takes the sentence as a rollout prefix:
`env.reset(options={"command": ...})`.
"""
from __future__ import annotations

import argparse

import imageio.v2 as imageio
import numpy as np
import torch

from envs.mujoco_tasks import make_task
from planners import LearnedConfig, LearnedModel, MPCConfig, make_planner, run_mpc
from planners.mpc import PixelObserver
from worldmodel.world import LatentWorld

DEFAULT_COMMAND = ("The upper arm points up and to the left (about 135 degrees) and the elbow is straight. "
                   "The fingertip is in the upper left of the arena.")


class ImaginedGoalObserver(PixelObserver):
    """Pixels only, like the benchmark's observer, but the goal is the image the model imagined."""

    def __init__(self, context: int, goal_image: np.ndarray):
        super().__init__(context)
        self.imagined_goal = goal_image

    def reset(self, env, obs, info):
        super().reset(env, obs, info)
        self.goal = self.imagined_goal          # the task's own goal image is ignored


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="checkpoints/reacher-tiny", help="world-model folder written by `lw pretrain`")
    p.add_argument("--command", default=DEFAULT_COMMAND, help="the goal, described like the task's captions")
    p.add_argument("--seed", type=int, default=10_000, help="start state of the real episode")
    p.add_argument("--steps", type=int, default=30, help="decision steps executed in MuJoCo")
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--sample-steps", type=int, default=4, help="Euler steps for the imagined goal")
    p.add_argument("--task", default=None, help="the task to act in (default: the model's only task)")
    p.add_argument("--out", default="language.gif")
    args = p.parse_args()

    world = LatentWorld.from_pretrained(args.model).for_task(args.task)
    goal_latent = world.imagine_from_text(args.command, sample_steps=args.sample_steps,
                                          generator=torch.Generator().manual_seed(args.seed))
    goal_image = world.decode(goal_latent)[0]                          # (H, W, 3) uint8

    task = make_task(world.task, image_size=world.image_size)
    model = LearnedModel(world, task.action_space, LearnedConfig(sample_steps=2))
    planner = make_planner("cem", task.action_space, horizon=5, samples=args.samples,
                           elites=max(2, args.samples // 8), iterations=args.iterations)
    cfg = MPCConfig(max_steps=args.steps, receding_horizon=5, stop_on_success=False)
    [result] = run_mpc([task], planner, model, [ImaginedGoalObserver(world.context_frames, goal_image)], cfg,
                       seeds=[args.seed])

    print(f"command : {args.command}")
    print(f"reached : {task.unwrapped.caption()}")
    print(f"executed {result.steps} steps in MuJoCo, {np.mean(result.replan_seconds):.2f} s/replan")
    frames = [np.concatenate([goal_image, np.full((goal_image.shape[0], 2, 3), 255, np.uint8), f], 1)
              for f in result.frames]
    imageio.mimsave(args.out, frames, duration=1 / 8, loop=0)
    print(f"wrote {args.out}: imagined goal (left) | executed episode (right)")
    task.close()


if __name__ == "__main__":
    main()
