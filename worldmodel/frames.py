"""Frames in: the one uint8-frame check every world's `encode_frames` makes (LatentWorld and
JEPAWorld), and numpy-or-torch to a tensor on a device. A module of its own below both worlds,
so that `jepa` does not import `world` (which loads the RAE, whose encoders include the JEPA's).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def as_tensor(x: np.ndarray | Tensor, device: torch.device, dtype: torch.dtype | None = None) -> Tensor:
    t = x if isinstance(x, Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    return t.to(device=device, dtype=dtype if dtype is not None else t.dtype)


def frames_to_float(frames: np.ndarray | Tensor, size: int, device: torch.device) -> Tensor:
    """Checked uint8 frames (B, size, size, 3), numpy or torch -> float (B, 3, size, size) in [0, 1]
    on `device`: what every world's encode_frames feeds its encoder."""
    if frames.dtype not in (np.uint8, torch.uint8):
        raise ValueError(f"frames have dtype {frames.dtype}, expected uint8 (B, H, W, 3) images")
    if frames.ndim != 4 or tuple(frames.shape[1:]) != (size, size, 3):
        raise ValueError(f"frames have shape {tuple(frames.shape)}, expected (B, {size}, {size}, 3)")
    return as_tensor(frames, device).permute(0, 3, 1, 2).float().div_(255.0)
