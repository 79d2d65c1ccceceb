"""Pack an exported world-model folder for shipping: half-precision weights, metrics beside it.

    python -m lw.pack_checkpoint runs/reacher_embedded/model checkpoints/reacher-tiny [runs/jepa_reacher]

The optional third folder (a `lw train-encoder method=jepa` run) is packed as `jepa/`, which
the benchmark's jepa row reads by default.

Matrices (>= 2-D float tensors) are stored in float16, which halves the folder; vectors
(norm scales, biases, the RAE's latent mean/std) stay float32. `from_pretrained` copies
them into float32 modules, so loading code does not change. Each folder is re-saved with
save_pretrained, so its checksums describe the packed weights, and the RAE's fingerprint is
recomputed from them (the cast changes its encoder's latents slightly, so latents cached
with the float32 RAE are not valid for the packed one). The run's metrics.jsonl is copied as
training_metrics.jsonl (the demo plots it), thinned to at most MAX_METRIC_ROWS training rows
(every k-th step, the first and the last; every held-out evaluation row is kept).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

from worldmodel import hub
from worldmodel.hub import CONFIG_NAME, WEIGHTS_NAME
from worldmodel.rae import RAE, RAEConfig


MAX_METRIC_ROWS = 3000   # a 6000-step run's per-step log alone is 5 MiB of a 25 MiB folder


def _thin_metrics(src: Path, dst: Path, max_rows: int = MAX_METRIC_ROWS) -> None:
    """Copy a metrics.jsonl keeping every k-th training step (k so that about `max_rows` remain), the
    first and last rows and every row with held-out (`val/`) figures."""
    lines = src.read_text().splitlines()
    every = max(1, -(-len(lines) // max_rows))
    keep = [line for i, line in enumerate(lines)
            if i % every == 0 or i == len(lines) - 1 or '"val/' in line]
    dst.write_text("\n".join(keep) + "\n")


def _half(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.half() if v.is_floating_point() and v.dim() >= 2 else v) for k, v in sd.items()}


def _pack_folder(src: Path, dst: Path) -> None:
    """Save the save_pretrained folder `src` at `dst` with half-precision matrices."""
    meta = hub.read_config(src)
    sd = _half(hub.load_state_dict(src))  # verified against src's checksum
    extra = {k: v for k, v in meta.items() if k not in ("kind", "config")}
    if meta["kind"] == RAE.KIND:  # the fingerprint every tool recomputes from the loaded weights
        rae = RAE(RAEConfig(**meta["config"]))
        rae.load_state_dict(sd)
        extra["fingerprint"] = rae.fingerprint()
    hub.save_pretrained(dst, meta["kind"], meta["config"], sd, extra=extra)


def pack(src: str | Path, dst: str | Path, jepa: str | Path | None = None) -> Path:
    src, dst = Path(src), Path(dst)
    for folder in (src, src / "rae", *([Path(jepa)] if jepa else [])):
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{str(folder / name)!r} is missing; expected a `lw pretrain` model export")
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for sub in ("", "rae"):
        _pack_folder(src / sub, tmp / sub)
    if jepa:
        _pack_folder(Path(jepa), tmp / "jepa")
    if (src.parent / "metrics.jsonl").is_file():
        _thin_metrics(src.parent / "metrics.jsonl", tmp / "training_metrics.jsonl")
    if (dst / "RECIPE.md").is_file():          # keep the hand-written recipe when re-packing
        shutil.copyfile(dst / "RECIPE.md", tmp / "RECIPE.md")
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return dst


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        raise SystemExit("usage: python -m lw.pack_checkpoint <exported model folder> <destination> "
                         "[<jepa folder>]")
    out = pack(*sys.argv[1:])
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"packed {sys.argv[1]} -> {out} ({size / 2**20:.1f} MiB)")
