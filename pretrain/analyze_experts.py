"""How text and vision tokens share the routed experts, per layer (the library of `lw analyze-experts`).

For each MoE layer l and routed expert i, on held-out data:
    R_text[l, i] = share of the layer's text-token assignments routed to expert i
    R_img[l, i]  = share of the layer's vision-token (frame) assignments routed to expert i
    S[l, i]      = (R_text - R_img) / (R_text + R_img)        in [-1, 1]
S = +1: a text-only expert, -1: a vision-only expert, 0: shared evenly (the reference
paper's specialisation score). Shared experts are excluded: they are per-modality by design.
`lw analyze-experts` (lw/analyze_experts.py) writes the heatmap, table and JSON.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pretrain.data.mixture import DataConfig, Mixture, load_mixture_episodes
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


def analyze(cfg: AnalyzeConfig) -> dict[str, Any]:
    """Route `cfg.rows` rows of the mixture through the model: {"layers": names, "counts": (L, 2, E),
    "r_text", "r_img", "s": (L, E) each}."""
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
        episodes = load_mixture_episodes(data, enc, cfg.split)
    data.seed = cfg.seed
    mix = Mixture(data, lambda d: document_length(d, model.cfg), episodes,
                  split=cfg.split if data.holdout > 0 else "train")
    docs = mix.next_rows(cfg.rows)
    batches = [collate([pack_rows(r, data.seq_len, model.cfg) for r in docs[i:i + cfg.batch_size]])
               for i in range(0, cfg.rows, cfg.batch_size)]
    names, counts = route_counts(model, batches, device)
    return {"layers": names, "counts": counts, **specialisation(counts)}
