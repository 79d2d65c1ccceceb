"""LearnedWorld environments.

Importing `envs` registers `LearnedWorld-v0` with Gymnasium (1.x loads no plugin entry
points), so all of these work:

    import envs; gym.make("LearnedWorld-v0", model="runs/tiny_cpu/model")
    gym.register_envs(envs)                       # keeps linters from dropping the import
    gym.make("envs:LearnedWorld-v0", model=...)   # Gymnasium imports `envs` itself
    gym.make_vec("LearnedWorld-v0", num_envs=64, model=...)   # native batched VectorEnv

The import stays light: entry points are strings, so no torch model is built, no MuJoCo
started and nothing compiled until an env is made.
"""
from __future__ import annotations

import gymnasium as gym

LEARNED_WORLD_ID = "LearnedWorld-v0"

if LEARNED_WORLD_ID not in gym.registry:
    gym.register(
        id=LEARNED_WORLD_ID,
        entry_point="envs.learned:LearnedWorldEnv",
        vector_entry_point="envs.learned:LearnedWorldVectorEnv",
        # The env truncates at its own `max_episode_steps` (default: the task's episode
        # length); gym.make(..., max_episode_steps=n) adds a TimeLimit on top.
        max_episode_steps=None,
        # Sampling noise is seeded at reset: same seed + same actions -> same observations.
        nondeterministic=False,
    )

__all__ = ["LEARNED_WORLD_ID"]
