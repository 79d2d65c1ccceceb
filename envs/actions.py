"""The one action check at the boundary of every env (the MuJoCo tasks and LearnedWorld-v0).

Gymnasium's semantics for a float Box: an action is a real float array of the space's shape
inside its bounds. A numpy or torch array must already have a float dtype (an integer array
is almost always a mistake: a discrete action or an index sent to a continuous env); a
Python list or number is converted, as `Box.contains` converts it. Entries up to
ACTION_TOLERANCE * max(1, |bound|) outside the box (float32 rounding, a planner's last bit)
are clipped; farther is an error.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

ACTION_TOLERANCE = 1e-5  # relative to max(1, |bound|): how far outside the box an entry is clipped, not refused


def check_action(action: Any, space: spaces.Box, batch: int | None = None) -> np.ndarray:
    """`action` as a float64 array inside `space` (clipped), or a ValueError that says what is wrong.

    `batch`: a vector env's leading dimension of `batch` actions. float64, so the MuJoCo tasks
    step with exactly the caller's values; the learned env casts to float32 at the model.
    """
    shape = space.shape if batch is None else (batch, *space.shape)
    if hasattr(action, "detach"):  # a torch tensor, on any device
        action = action.detach().cpu().numpy()
    if isinstance(action, (str, bytes)):
        raise ValueError(f"action {action!r} is a string, expected a float array of shape {shape}")
    if isinstance(action, np.ndarray):
        a = action
    else:
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"action {action!r} is not numeric, expected a float array of shape {shape}") from None
    if a.shape != shape:
        raise ValueError(f"action has shape {a.shape}, expected {shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"action has dtype {a.dtype}, expected a float dtype (float32)")
    a = a.astype(np.float64)
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"action {a.tolist()} has non-finite values, expected finite values "
                         f"in [{low.tolist()}, {high.tolist()}]")
    tol_low = ACTION_TOLERANCE * np.maximum(1.0, np.abs(low))
    tol_high = ACTION_TOLERANCE * np.maximum(1.0, np.abs(high))
    if np.any(a < low - tol_low) or np.any(a > high + tol_high):
        raise ValueError(f"action {np.round(a, 4).tolist()} is out of bounds, expected values in "
                         f"[{low.tolist()}, {high.tolist()}]")
    return np.clip(a, low, high)
