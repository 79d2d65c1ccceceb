"""Pack an exported world-model folder for shipping: half-precision weights, metrics beside it.

    python -m pretrain.pack_checkpoint runs/reacher_embedded/model checkpoints/reacher-tiny

Matrices (>= 2-D float tensors) are stored in float16, which halves the folder; vectors
(norm scales, biases, the RAE's latent mean/std) stay float32. `from_pretrained` copies
them into float32 modules, so loading code does not change. The run's metrics.jsonl is
copied as training_metrics.jsonl (the demo plots it).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from worldmodel.hub import CONFIG_NAME, WEIGHTS_NAME


def _half(path: Path) -> None:
    sd = load_file(str(path))
    out = {k: (v.half() if v.is_floating_point() and v.dim() >= 2 else v).contiguous() for k, v in sd.items()}
    tmp = path.with_suffix(".tmp")
    save_file(out, str(tmp), metadata={"packed": "float16 matrices"})
    tmp.replace(path)


def pack(src: str | Path, dst: str | Path) -> Path:
    src, dst = Path(src), Path(dst)
    for folder in (src, src / "rae"):
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{str(folder / name)!r} is missing; expected a `lw pretrain` model export")
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "rae").mkdir()
    for sub in ("", "rae"):
        shutil.copyfile(src / sub / CONFIG_NAME, tmp / sub / CONFIG_NAME)
        shutil.copyfile(src / sub / WEIGHTS_NAME, tmp / sub / WEIGHTS_NAME)
        _half(tmp / sub / WEIGHTS_NAME)
    if (src.parent / "metrics.jsonl").is_file():
        shutil.copyfile(src.parent / "metrics.jsonl", tmp / "training_metrics.jsonl")
    if (dst / "RECIPE.md").is_file():          # keep the hand-written recipe when re-packing
        shutil.copyfile(dst / "RECIPE.md", tmp / "RECIPE.md")
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return dst


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m pretrain.pack_checkpoint <exported model folder> <destination>")
    out = pack(sys.argv[1], sys.argv[2])
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"packed {sys.argv[1]} -> {out} ({size / 2**20:.1f} MiB)")
