"""Frames for the encoder trainers (`lw train-encoder`, `lw train-rae`): the held-out split,
uint8 -> float on the device, a fixed evaluation subset and the PNG sample grids.

Shared here so that the trainers import from a library module, not from each other.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def load_frame_split(data, holdout: float, image_size: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """All frames of the dataset (or list of datasets) as uint8 (n, 3, H, W): (train, held-out, info).

    The held-out set is the last `holdout` fraction of each dataset's episodes (at least one), so
    no frame of a training episode is ever evaluated on. Several datasets must have one frame size.
    """
    from pretrain.data.datasets import dataset_roots, open_datasets

    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout={holdout}, expected a fraction in (0, 1)")
    train, held = [], []
    info = {"episodes": 0, "train_episodes": 0, "heldout_episodes": 0, "tasks": []}
    for ds in open_datasets(dataset_roots(data)):
        n_ep = len(ds)
        if n_ep < 2:
            raise ValueError(f"dataset {str(ds.root)!r} has {n_ep} episodes, expected at least 2 (train + held-out)")
        n_held = max(1, int(round(n_ep * holdout)))
        first_held = n_ep - n_held
        for i, entry in enumerate(ds.shards):
            frames = ds.load_shard(i)["frames"]  # (E, T+1, H, W, 3)
            for j in range(entry["n_episodes"]):
                (held if entry["first_episode"] + j >= first_held else train).append(frames[j])
        info["episodes"] += n_ep
        info["train_episodes"] += first_held
        info["heldout_episodes"] += n_held
        info["tasks"].append(ds.task)

    def to_tensor(chunks):
        x = torch.from_numpy(np.concatenate(chunks)).permute(0, 3, 1, 2).contiguous()  # (n, 3, H, W)
        if x.shape[-1] != image_size or x.shape[-2] != image_size:
            x = F.interpolate(x.float(), size=(image_size, image_size), mode="bilinear", antialias=True,
                              align_corners=False).round().clamp(0, 255).to(torch.uint8)
        return x
    return to_tensor(train), to_tensor(held), info


def to_float(frames_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    return frames_u8.to(device, non_blocking=True).float().div_(255)


def eval_subset(held: torch.Tensor, n: int) -> torch.Tensor:
    """A fixed, evenly spread subset of held-out frames (the same at every evaluation)."""
    idx = torch.linspace(0, len(held) - 1, min(n, len(held))).round().long()
    return held[idx]


def save_grid(path: Path, rows: list[torch.Tensor], n: int = 8, scale: int = 2) -> None:
    """PNG with one row per tensor (B, 3, H, W) in [0, 1]: e.g. originals | reconstructions."""
    import imageio.v3 as iio

    idx = torch.linspace(0, len(rows[0]) - 1, min(n, len(rows[0]))).round().long()  # spread over the set
    strips = [torch.cat(list(r[idx].detach().float().cpu().clamp(0, 1)), dim=2) for r in rows]  # (3, H, n*W)
    img = (torch.cat(strips, dim=1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    img = img.repeat(scale, 0).repeat(scale, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    iio.imwrite(tmp, img)
    tmp.replace(path)
