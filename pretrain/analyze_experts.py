"""`lw analyze-experts`: how text and vision tokens share the routed experts, per layer.

For each MoE layer l and routed expert i, on held-out data:
    R_text[l, i] = share of the layer's text-token assignments routed to expert i
    R_img[l, i]  = share of the layer's vision-token (frame) assignments routed to expert i
    S[l, i]      = (R_text - R_img) / (R_text + R_img)        in [-1, 1]
S = +1: a text-only expert, -1: a vision-only expert, 0: shared evenly (the reference
paper's specialisation score). Shared experts are excluded: they are per-modality by design.
Outputs in out_dir: experts.png (heatmap layers x experts), experts.md, experts.json.

    lw analyze-experts model_dir=runs/tiny_cpu/model
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrain.data.mixture import DataConfig, Mixture, load_episodes
from worldmodel.device import resolve_device
from worldmodel.sequence import TEXT


@dataclass
class AnalyzeConfig:
    model_dir: str = "runs/tiny_cpu/model"  # a folder exported by `lw pretrain`
    out_dir: str = ""               # default: <model_dir>/../experts
    rows: int = 32                  # held-out packed rows to route
    batch_size: int = 8             # rows per forward
    split: str = "val"              # "val" (held out of training) or "train"
    device: str = "auto"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)  # mixture to route; dataset "" = the model's own


def specialisation(counts_LME: np.ndarray) -> dict[str, np.ndarray]:
    """(L, 2, E) assignment counts (modality 0 text, 1 vision) -> R_text, R_img, S, each (L, E)."""
    counts = np.asarray(counts_LME, dtype=np.float64)
    if counts.ndim != 3 or counts.shape[1] != 2:
        raise ValueError(f"counts have shape {counts.shape}, expected (layers, 2, experts)")
    share = counts / np.maximum(counts.sum(-1, keepdims=True), 1e-12)  # (L, 2, E)
    r_text, r_img = share[:, 0], share[:, 1]
    total = r_text + r_img
    s = np.where(total > 0, (r_text - r_img) / np.where(total > 0, total, 1.0), 0.0)
    return {"r_text": r_text, "r_img": r_img, "s": s}


@torch.no_grad()
def route_counts(model, batches, device) -> tuple[list[str], np.ndarray]:
    """Run the training forward (noisy + clean frame copies, as in training) and sum each MoE
    layer's (2, E) token counts. Returns layer names and (L, 2, E) counts."""
    from worldmodel.moe import FeedForward
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, FeedForward) and m.cfg.kind == "moe"]
    if not layers:
        kinds = sorted({m.cfg.kind for m in model.modules() if isinstance(m, FeedForward)})
        raise ValueError(f"the model has no routed experts (ffn kind {kinds}); expected moe.kind='moe'")
    total = None
    gen = torch.Generator(device=device).manual_seed(0)
    for batch in batches:
        model.loss(batch.to(device), generator=gen)
        c = torch.stack([m.last_stats.tokens_per_expert_by_modality.float().cpu() for _, m in layers])
        total = c if total is None else total + c
    return [n for n, _ in layers], total.numpy()


def heatmap(s_LE: np.ndarray, names: list[str], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    L, E = s_LE.shape
    fig, ax = plt.subplots(figsize=(max(5.0, 1.8 + 0.5 * E), max(2.8, 1.4 + 0.45 * L)))
    im = ax.imshow(s_LE, cmap="coolwarm", vmin=-1, vmax=1, aspect="auto")
    for (l, e), v in np.ndenumerate(s_LE):
        ax.text(e, l, f"{v:+.2f}", ha="center", va="center", fontsize=6)
    ax.set(xticks=range(E), yticks=range(L), xlabel="routed expert", ylabel="layer", title=title)
    ax.set_yticklabels([str(i) for i in range(L)])
    fig.colorbar(im, ax=ax, label="S (+1 text, -1 vision)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(names: list[str], spec: dict[str, np.ndarray], counts: np.ndarray) -> str:
    s = spec["s"]
    E = s.shape[1]
    lines = ["# Expert specialisation (S = (R_text - R_img) / (R_text + R_img))", "",
             "| layer | " + " | ".join(f"e{i}" for i in range(E)) + " | mean abs S | text tok | vision tok |",
             "|---" * (E + 4) + "|"]
    for l, name in enumerate(names):
        lines.append(f"| {l} ({name}) | " + " | ".join(f"{v:+.2f}" for v in s[l])
                     + f" | {np.abs(s[l]).mean():.2f} | {counts[l, 0].sum():.0f} | {counts[l, 1].sum():.0f} |")
    return "\n".join(lines) + "\n"


def analyze(cfg: AnalyzeConfig) -> dict[str, Any]:
    from worldmodel.sequence import collate, document_length, pack_rows
    from worldmodel.transfusion import Transfusion
    device = resolve_device(cfg.device)
    model = Transfusion.from_pretrained(cfg.model_dir, device=device)
    extra = model.extra
    data = cfg.data
    if not data.dataset:
        data.dataset = extra.get("dataset", "")
    weights = data.weights()
    episodes = None
    if any(w > 0 for k, w in weights.items() if k != TEXT):
        enc = data.encoder_id or extra.get("encoder_id", "")
        episodes = load_episodes(data.dataset, enc, cfg.split, data.holdout)
    data.seed = cfg.seed
    mix = Mixture(data, lambda d: document_length(d, model.cfg), episodes,
                  split=cfg.split if data.holdout > 0 else "train")
    docs = mix.next_rows(cfg.rows)
    batches = [collate([pack_rows(r, data.seq_len, model.cfg) for r in docs[i:i + cfg.batch_size]])
               for i in range(0, cfg.rows, cfg.batch_size)]
    names, counts = route_counts(model, batches, device)
    spec = specialisation(counts)
    out = Path(cfg.out_dir or Path(cfg.model_dir).parent / "experts")
    out.mkdir(parents=True, exist_ok=True)
    paths = {"png": out / "experts.png", "md": out / "experts.md", "json": out / "experts.json"}
    heatmap(spec["s"], names, paths["png"], f"S = (R_text - R_img) / (R_text + R_img)\n{cfg.split} split, {cfg.rows} rows")
    paths["md"].write_text(markdown(names, spec, counts))
    paths["json"].write_text(json.dumps({"layers": names, "counts": counts.tolist(),
                                         **{k: v.tolist() for k, v in spec.items()}}, indent=1))
    return {"paths": paths, "s": spec["s"], "counts": counts, "layers": names}


def main(overrides: list[str]) -> int:
    from pretrain.config import compose, wants_print
    show, overrides = wants_print(overrides)
    cfg = compose(AnalyzeConfig, "analyze_experts", overrides)
    if show:
        from omegaconf import OmegaConf
        print(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
        return 0
    res = analyze(cfg)
    s = res["s"]
    print(f"analyze-experts: {s.shape[0]} MoE layers x {s.shape[1]} experts; mean |S| per layer "
          + ", ".join(f"{v:.2f}" for v in np.abs(s).mean(1)))
    print(f"  heatmap {res['paths']['png']}\n  table   {res['paths']['md']}")
    return 0
