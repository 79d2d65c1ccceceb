"""The oracle's worker process: one private task instance, candidate rollouts on state copies.

Kept free of torch (and of the rest of `planners`) so that a spawned worker starts in about
a second instead of paying torch's import.
"""
from __future__ import annotations

import os
import traceback

import numpy as np


def rollout_chunk(sim, cam, starts: np.ndarray, actions: np.ndarray, frame_steps: tuple[int, ...]):
    """Roll out M candidates from their get_state() vectors; render the requested steps.

    sim: a task made with render=False (physics); cam: a task made with render=True, used
    only to draw a state (or None when no frames are asked for).
    -> states (M, H, S) float64, frames (M, len(frame_steps), h, w, 3) uint8 or None.
    """
    M, H = actions.shape[:2]
    states = np.empty((M, H, sim.spec_.state_dim), np.float64)
    frames = None
    if frame_steps:
        frames = np.empty((M, len(frame_steps), cam.image_size, cam.image_size, 3), np.uint8)
    for m in range(M):
        sim.set_state(starts[m])
        k = 0
        for h in range(H):
            _, _, _, _, info = sim.step(actions[m, h])
            states[m, h] = info["state"]
            if frames is not None and h in frame_steps:
                cam.set_state(states[m, h])          # bare (qpos, qvel): keeps the renderer's goal and time
                frames[m, k] = cam.render_frame()
                k += 1
    return states, frames


def worker(conn, task: str, task_kwargs: dict) -> None:
    """Serve (starts, actions, frame_steps) requests on `conn` until it sends None."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        from envs.mujoco_tasks import make_task

        sim = make_task(task, **{**task_kwargs, "render": False})
        cam = None
        conn.send(("ready", None))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        try:
            msg = conn.recv()
        except EOFError:      # the parent went away
            break
        if msg is None:
            break
        try:
            starts, actions, frame_steps = msg
            if frame_steps and cam is None:   # a renderer only once a latent cost asks for frames
                cam = make_task(task, **{**task_kwargs, "render": True})
            conn.send(("ok", rollout_chunk(sim, cam, starts, actions, frame_steps)))
        except BaseException:
            conn.send(("error", traceback.format_exc()))
    if cam is not None:
        cam.close()
    sim.close()
