"""`lw encode-dataset`: cache the frozen RAE encoder's normalised latents beside each shard.

    lw encode-dataset data=data/reacher rae=runs/rae_reacher
    lw encode-dataset data=[data/reacher,data/point_maze] rae=runs/rae_both   # each, with one RAE

For shard i, `latents/<encoder_id>/shard-0000i.npy` holds (E, T+1, N, C) latents (float16
by default) in the shard's episode/frame order, i.e. `rae.encode(frame)` for every
frame. Each file is written atomically, then recorded in the dataset manifest with its
sha256, shape, dtype and the RAE's *fingerprint* (sha256 of the encoder spec, encoder
weights and latent mean/std: equal fingerprints give identical latents). Re-running
skips shards whose recorded latents exist, pass their checksum and carry the same
fingerprint, once the shard itself passes its checksum (a corrupt shard is an error naming
it); anything else is re-encoded. Readers use `load_latents` /
`verify_latents`, which check the checksum (a corrupt file raises ShardCorruptError
naming it) and that the fingerprint matches the RAE they decode with, so pretraining
never re-runs the encoder.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrain.data.shards import (Dataset, ShardCorruptError, atomic_write, latent_file, sha256_file,
                                  update_manifest)

DTYPES = ("float16", "float32")


@dataclass
class EncodeDatasetConfig:
    data: Any = "data/reacher"      # episode dataset root (lw collect), or a list of roots (each is encoded)
    rae: str = "runs/rae_reacher"   # RAE folder (save_pretrained) whose encoder makes the latents
    dtype: str = "float16"          # float16 | float32 storage
    batch_size: int = 256           # frames per encoder call
    force: bool = False             # re-encode even shards with valid cached latents
    device: str = "auto"            # auto | cpu | cuda | cuda:N
    threads: int = 0                # torch CPU threads (0 = torch default)
    progress: bool = True


def rae_identity(rae_path: str | Path) -> tuple[str, str]:
    """(encoder_id, fingerprint) of a saved RAE, read from its config.json (no weights loaded)."""
    from worldmodel import hub

    meta = hub.read_config(rae_path, "rae")
    if "fingerprint" not in meta or "encoder_id" not in meta:
        raise ValueError(f"RAE folder {str(rae_path)!r} has no encoder_id/fingerprint in its config.json; "
                         f"re-save it with worldmodel.rae.RAE.save_pretrained")
    return str(meta["encoder_id"]), str(meta["fingerprint"])


def _check_record(ds: Dataset, i: int, encoder_id: str, fingerprint: str) -> dict:
    """The manifest record of shard i's latents, checked against the RAE's fingerprint."""
    rec = ds.shards[i].get("latents", {}).get(encoder_id)
    if rec is None:
        raise KeyError(f"shard {i} of {str(ds.root)!r} has no latents for encoder {encoder_id!r}; "
                       f"run `lw encode-dataset data={ds.root} rae=<RAE folder>`")
    if rec.get("fingerprint") != fingerprint:
        raise ValueError(f"cached latents {str(ds.root / rec['file'])!r} were made by an RAE with fingerprint "
                         f"{str(rec.get('fingerprint'))[:16]}..., expected {fingerprint[:16]}... (a different "
                         f"encoder or latent normalisation); re-run `lw encode-dataset`")
    return rec


def load_latents(ds: Dataset, i: int, rae_path: str | Path, mmap: bool = False) -> np.ndarray:
    """Shard i's cached latents (E, T+1, N, C), verified: checksum, shape and RAE fingerprint."""
    encoder_id, fingerprint = rae_identity(rae_path)
    _check_record(ds, i, encoder_id, fingerprint)
    return ds.load_latents(i, encoder_id, mmap=mmap)  # checksum + shape; ShardCorruptError names the file


def verify_latents(data: str | Path, rae_path: str | Path) -> str:
    """Check that every shard has valid latents made by this RAE; returns its encoder_id."""
    ds = Dataset(data)
    encoder_id, fingerprint = rae_identity(rae_path)
    for i in range(len(ds.shards)):
        _check_record(ds, i, encoder_id, fingerprint)
        ds.load_latents(i, encoder_id, mmap=True)
    return encoder_id


def _invalid_reason(ds: Dataset, i: int, encoder_id: str, fingerprint: str, expect_shape: list[int]) -> str | None:
    """None if shard i already has valid latents from this RAE, else why it must be (re-)encoded."""
    if encoder_id not in ds.shards[i].get("latents", {}):
        return "missing"
    try:
        rec = _check_record(ds, i, encoder_id, fingerprint)
        if rec["shape"] != expect_shape:
            return f"shape {rec['shape']} != {expect_shape}"
        ds.load_latents(i, encoder_id, mmap=True)
    except (KeyError, ValueError) as e:  # other RAE, or corrupt (ShardCorruptError is a ValueError)
        return str(e)
    return None


@torch.no_grad()
def encode_frames(rae, frames: np.ndarray, batch_size: int, device: torch.device) -> np.ndarray:
    """(..., H, W, 3) uint8 -> (..., N, C) float32 normalised latents."""
    lead, (H, W) = frames.shape[:-3], frames.shape[-3:-1]
    flat = frames.reshape(-1, H, W, 3)
    out = []
    for s in range(0, len(flat), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(flat[s:s + batch_size])).to(device)
        x = x.permute(0, 3, 1, 2).float().div_(255)  # (b, 3, H, W)
        out.append(rae.encode(x).float().cpu().numpy())
    z = np.concatenate(out)
    return z.reshape(*lead, *z.shape[1:])


def encode_dataset(cfg: EncodeDatasetConfig) -> dict:
    """Cache the RAE's latents beside every shard of `cfg.data`; a list of datasets: each of them,
    with the one RAE (a model over several tasks reads them all). Returns the summary (one dict
    per dataset under "datasets" for a list)."""
    from pretrain.data.datasets import dataset_roots
    from worldmodel.device import resolve_device, set_threads
    from worldmodel.rae import RAE

    if cfg.dtype not in DTYPES:
        raise ValueError(f"dtype={cfg.dtype!r}, expected one of {DTYPES}")
    datasets = [Dataset(root) for root in dataset_roots(cfg.data)]   # every one readable before any work
    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    encoder_id, fingerprint = rae_identity(cfg.rae)
    rae = RAE.from_pretrained(cfg.rae, device=device).eval()
    if rae.fingerprint() != fingerprint:
        raise ValueError(f"RAE folder {cfg.rae!r}: weights give fingerprint {rae.fingerprint()[:16]}..., "
                         f"config.json says {fingerprint[:16]}... (modified or corrupt folder)")
    summaries = [encode_one(cfg, ds, rae, (encoder_id, fingerprint), device) for ds in datasets]
    return summaries[0] if isinstance(cfg.data, (str, Path)) else {"datasets": summaries}


def encode_one(cfg: EncodeDatasetConfig, ds: Dataset, rae, identity: tuple[str, str], device: torch.device) -> dict:
    """Cache `rae`'s latents beside each shard of `ds` (valid ones are kept); `identity` is the
    RAE's (encoder_id, fingerprint)."""
    from pretrain.metrics import progress_bar

    encoder_id, fingerprint = identity
    if ds.image_size not in (None, rae.image_size):
        print(f"note: dataset frames are {ds.image_size}px; the RAE encoder resizes them to "
              f"{rae.encoder.input_size}px", flush=True)
    N, C = rae.num_tokens, rae.latent_dim
    t0 = time.monotonic()
    done, skipped = 0, 0
    bar = progress_bar(ds.n_frames, f"encode {encoder_id}", cfg.progress)
    for i, entry in enumerate(ds.shards):
        shape = [entry["n_episodes"], entry["episode_steps"] + 1, N, C]
        reason = "force=true" if cfg.force else _invalid_reason(ds, i, encoder_id, fingerprint, shape)
        if reason is None:
            # valid latents are not enough: training reads the shard too (actions, captions), and
            # a corrupt shard cannot be re-encoded, so it is an error naming the file
            ds.verify_shard(i)
            skipped += 1
            bar.update(entry["n_frames"])
            continue
        if reason != "missing":
            bar.write(f"shard {i}: re-encoding ({reason})")
        frames = ds.load_shard(i)["frames"]  # (E, T+1, H, W, 3), checksum verified
        z = encode_frames(rae, frames, cfg.batch_size, device).astype(cfg.dtype)  # (E, T+1, N, C)
        rel = latent_file(i, encoder_id)
        atomic_write(ds.root / rel, lambda f: np.save(f, z, allow_pickle=False))
        record = {"file": rel, "sha256": sha256_file(ds.root / rel), "shape": list(z.shape),
                  "dtype": cfg.dtype, "fingerprint": fingerprint}

        def add(manifest: dict, i=i, record=record) -> None:
            manifest["shards"][i].setdefault("latents", {})[encoder_id] = record
        update_manifest(ds.root, add)
        done += 1
        bar.update(entry["n_frames"])
    bar.close()
    ds.reload()
    verify_latents(ds.root, cfg.rae)
    dt = time.monotonic() - t0
    summary = {"data": str(ds.root), "rae": cfg.rae, "encoder_id": encoder_id, "fingerprint": fingerprint,
               "encoded_shards": done, "skipped_shards": skipped, "frames": ds.n_frames,
               "latent_shape": [N, C], "dtype": cfg.dtype, "seconds": round(dt, 2)}
    print(f"encode-dataset: {done} shards encoded, {skipped} already valid; {ds.n_frames} frames -> "
          f"({N}, {C}) {cfg.dtype} latents under {str(ds.root / 'latents')!r} in {dt:.1f}s")
    return summary


__all__ = ["EncodeDatasetConfig", "encode_dataset", "encode_one", "load_latents", "verify_latents", "rae_identity",
           "encode_frames", "ShardCorruptError"]
