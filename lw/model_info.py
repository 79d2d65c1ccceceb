"""`lw model-info`: total and active parameter counts of every model size, as a table.

Models are built on the meta device (no memory, no init cost), so the 1B size prints as
fast as the tiny one. Active = parameters one token uses: attention, embeddings and heads,
the router and one top-k set of routed experts plus its modality's shared expert
(`worldmodel.moe.active_params`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lw.program import Program
from pretrain.metrics import save_resolved


@dataclass
class LatentShape:
    name: str = "cpu"                   # label printed in the table
    latent_dim: int = 128               # C channels per latent token
    frame_grid: list[int] = field(default_factory=lambda: [4, 4])   # (grid_h, grid_w) tokens per frame


@dataclass
class ModelInfoConfig:
    sizes: list[str] = field(default_factory=lambda: ["tiny", "small", "base", "1b"])  # keys of worldmodel.config.MODELS
    latents: list[LatentShape] = field(default_factory=lambda: [
        LatentShape("cpu", 128, [4, 4]),          # own MAE encoder, 64x64 frames, patch 16
        LatentShape("gpu", 768, [16, 16]),        # DINOv2-B-like RAE at 224 px
    ])
    action_dim: int = 2                 # action vector length (reacher: 2)
    action_encoding: str = "embed"      # "embed" adds a small action MLP; "text" adds nothing
    out: str | None = None              # optional folder for model_info.json / model_info.md


def _fmt(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def count(size: str, shape: LatentShape, action_dim: int, action_encoding: str) -> dict:
    from worldmodel.config import MODELS
    from worldmodel.transfusion import Transfusion

    if size not in MODELS:
        raise ValueError(f"model size {size!r} is unknown, expected one of {sorted(MODELS)}")
    cfg = MODELS[size](latent_dim=shape.latent_dim, frame_grid=tuple(shape.frame_grid), action_dim=action_dim,
                       action_encoding=action_encoding)
    with torch.device("meta"):
        model = Transfusion(cfg)
    total, active = model.num_params(), model.num_active_params()
    emb = model.tok_emb.weight.numel() + model.text_head.weight.numel()
    io = sum(p.numel() for m in (model.latent_in, model.flow_head, model.time_emb) for p in m.parameters())
    m = cfg.moe
    ffn = f"{m.kind}" + (f" E{m.n_experts} k{m.top_k} G{m.granularity}{'+sh' if m.shared_experts else ''}"
                          if m.kind == "moe" else "")
    return dict(size=size, latent=shape.name, frame=f"{cfg.frame_grid[0]}x{cfg.frame_grid[1]}x{cfg.latent_dim}",
                d_model=cfg.d_model, layers=cfg.n_layers, heads=cfg.n_heads, ffn=ffn, total=total, active=active,
                text_embed=emb, latent_io=io)


def table(rows: list[dict]) -> str:
    head = ["size", "latent", "frame (gh x gw x C)", "d_model", "layers", "heads", "ffn", "total", "active",
            "active %", "text emb+head", "latent in/out+t"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(str(v) for v in (
            r["size"], r["latent"], r["frame"], r["d_model"], r["layers"], r["heads"], r["ffn"], _fmt(r["total"]),
            _fmt(r["active"]), f"{100 * r['active'] / r['total']:.0f}%", _fmt(r["text_embed"]),
            _fmt(r["latent_io"]))) + " |")
    return "\n".join(lines)


def run(cfg: ModelInfoConfig) -> None:
    rows = [count(s, shape, cfg.action_dim, cfg.action_encoding) for s in cfg.sizes for shape in cfg.latents]
    md = table(rows)
    print(md)
    print("\nactive = parameters a token uses: attention, embeddings/heads, router, top-k routed experts "
          "+ its modality's shared expert")
    if cfg.out:
        out = Path(cfg.out)
        save_resolved(cfg, out)
        (out / "model_info.json").write_text(json.dumps(rows, indent=2))
        (out / "model_info.md").write_text(md + "\n")
        print(f"wrote {out / 'model_info.json'}")


main = Program(__doc__, ModelInfoConfig, "model_info", run)

if __name__ == "__main__":
    from lw.cli import module_main
    module_main("lw.model_info")
