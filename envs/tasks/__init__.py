"""The ground-truth MuJoCo tasks, one module each; use them through `envs.mujoco_tasks`."""
