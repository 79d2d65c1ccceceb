"""The simulator's defaults as plain rules (no model code, so that `world` and `jepa` share them
without an import cycle): the "None means the model's default" resolution and the one context
padding/truncation.

Legend: T frames given, N tokens per frame, C latent channels, A action dim.
"""
from __future__ import annotations

import torch
from torch import Tensor

DEFAULT_CONTEXT_FRAMES = 2   # context length of a folder that records none


def resolve_count(name: str, value: int | None, default: int) -> int:
    """`value`, or `default` when it is None (the one "use the model's default" marker); >= 1."""
    v = default if value is None else value
    if isinstance(v, bool) or int(v) != v or int(v) < 1:
        raise ValueError(f"{name}={value!r}, expected an int >= 1 (or None: the model's {default})")
    return int(v)


def fit_context(latents: Tensor, actions: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """The one context padding/truncation: latents (T,N,C) (or any per-frame tensor (T,...), such as
    uint8 frames (T,H,W,3) before encoding) + actions (T-1,A) -> exactly `length` frames (length,...)
    + (length-1,A). Keeps the last `length`, or pads at the front by repeating the first frame with
    zero actions, the centre of the symmetric action box [-action_scale, action_scale]: what a task
    at rest looks like."""
    T = latents.shape[0]
    if latents.ndim < 2 or T < 1:
        raise ValueError(f"context latents have shape {tuple(latents.shape)}, expected (T >= 1, N, C)")
    if actions.ndim != 2 or actions.shape[0] != T - 1:
        raise ValueError(f"context actions have shape {tuple(actions.shape)}, expected (T-1, A) = ({T - 1}, A) "
                         f"for {T} context frames")
    if T >= length:
        return latents[T - length:], actions[actions.shape[0] - (length - 1):] if length > 1 else actions[:0]
    pad = length - T
    z = torch.cat([latents[:1].expand(pad, *latents.shape[1:]), latents])
    a = torch.cat([actions.new_zeros(pad, actions.shape[1]), actions])
    return z, a
