"""How text and vision tokens share the routed experts, per layer (the library of `lw analyze-experts`).

For each MoE layer l and routed expert i, on held-out data:
    R_text[l, i] = share of the layer's text-token assignments routed to expert i
    R_img[l, i]  = share of the layer's vision-token (frame) assignments routed to expert i
    S[l, i]      = (R_text - R_img) / (R_text + R_img)        in [-1, 1]
S = +1: a text-only expert, -1: a vision-only expert, 0: shared evenly (the reference
paper's specialisation score). Shared experts are excluded: they are per-modality by design.

By task (a model of several datasets, `data.dataset: [root, ...]`): `rows` held-out rows of each
dataset alone (one-hot `dataset_weights`, text dropped) are routed as well, and per task t:
    R_t[l, i]    = share of task t's vision-token assignments at layer l routed to expert i
    S_t[l, i]    = (R_t - R_rest) / (R_t + R_rest), R_rest the mean R of the other tasks (0 where both 0)
    summary[l]   = the Jensen-Shannon divergence of the tasks' R_t[l] (generalised to T tasks, divided
                   by log T): 0 when every task routes alike, 1 when they use disjoint experts.
    noise_floor[l] = the control: the mean over tasks of the JS (/ log 2) between the task's even and odd
                   rows, what summary reads from sampling alone (each half has half the rows: it errs high).
`lw analyze-experts` (lw/analyze_experts.py) writes the heatmaps, tables and JSON.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
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


def shares(counts: np.ndarray) -> np.ndarray:
    """Counts (..., E) -> each row's share per expert (all 0 where a row has no count)."""
    counts = np.asarray(counts, dtype=np.float64)
    return counts / np.maximum(counts.sum(-1, keepdims=True), 1e-12)


def normalised_js(share_K: np.ndarray) -> np.ndarray:
    """(K, ..., E) shares of K distributions -> (...): their Jensen-Shannon divergence / log K, in [0, 1]."""
    def entropy(p: np.ndarray) -> np.ndarray:                          # (..., E) -> (...)
        return -np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(-1)
    js = entropy(share_K.mean(0)) - entropy(share_K).mean(0)
    return np.clip(js / np.log(share_K.shape[0]), 0.0, 1.0)


def task_specialisation(counts_TLE: np.ndarray) -> dict[str, np.ndarray]:
    """(T, L, E) vision-token assignment counts per task -> shares R_t and S_t (T, L, E) and the
    per-layer summary (L,): the normalised Jensen-Shannon divergence between the tasks' shares."""
    counts = np.asarray(counts_TLE, dtype=np.float64)
    if counts.ndim != 3 or counts.shape[0] < 2:
        raise ValueError(f"counts have shape {counts.shape}, expected (tasks >= 2, layers, experts)")
    T = counts.shape[0]
    share = shares(counts)                                             # (T, L, E)
    rest = (share.sum(0, keepdims=True) - share) / (T - 1)             # (T, L, E) mean of the other tasks
    total = share + rest
    s = np.where(total > 0, (share - rest) / np.where(total > 0, total, 1.0), 0.0)
    return {"shares": share, "s": s, "summary": normalised_js(share)}


def split_half_noise_floor(halves_T2LE: np.ndarray) -> np.ndarray:
    """(T, 2, L, E) vision counts of each task's two row halves -> (L,): the mean over tasks of the JS
    between a task's halves / log 2, what `summary` reads where routing differs by sampling alone."""
    halves = np.asarray(halves_T2LE, dtype=np.float64)
    if halves.ndim != 4 or halves.shape[1] != 2:
        raise ValueError(f"halves have shape {halves.shape}, expected (tasks, 2, layers, experts)")
    return normalised_js(shares(halves).swapaxes(0, 1)).mean(0)


@torch.no_grad()
def route_counts(model, batches, device) -> tuple[list[str], np.ndarray]:
    """Run the training forward (noisy + clean frame copies, as in training) and count each MoE
    layer's (2, E) token assignments. Returns layer names and (batches, L, 2, E) counts, per batch."""
    from worldmodel.moe import FeedForward
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, FeedForward) and m.cfg.kind == "moe"]
    if not layers:
        kinds = sorted({m.cfg.kind for m in model.modules() if isinstance(m, FeedForward)})
        raise ValueError(f"the model has no routed experts (ffn kind {kinds}); expected moe.kind='moe'")
    per_batch = []
    gen = torch.Generator(device=device).manual_seed(0)
    for batch in batches:
        model.loss(batch.to(device), generator=gen)
        per_batch.append(torch.stack([m.last_stats.tokens_per_expert_by_modality.float().cpu() for _, m in layers]))
    return [n for n, _ in layers], torch.stack(per_batch).numpy()


def task_names(roots: list[str]) -> list[str]:
    """Each dataset's task (its manifest's); the folder names where two datasets share a task."""
    from pretrain.data.shards import Dataset
    tasks = [Dataset(r, verify=False).task for r in roots]
    return tasks if len(set(tasks)) == len(tasks) else [f"{t} ({Path(r).name})" for t, r in zip(tasks, roots)]


def analyze(cfg: AnalyzeConfig) -> dict[str, Any]:
    """Route `cfg.rows` rows of the mixture through the model: {"layers": names, "counts": (L, 2, E),
    "r_text", "r_img", "s": (L, E) each, "by_task"}. by_task, for a mixture of several datasets:
    {"tasks", "counts", "shares", "s": (T, L, E), "summary", "noise_floor": (L,)} from `cfg.rows` rows of
    each dataset alone; None for one dataset (or no episode sources)."""
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

    def draw_rows(mixture: DataConfig) -> list:
        """`cfg.rows` packed rows of `mixture`."""
        mix = Mixture(mixture, lambda d: document_length(d, model.cfg), episodes,
                      split=cfg.split if mixture.holdout > 0 else "train")
        return [pack_rows(r, mixture.seq_len, model.cfg) for r in mix.next_rows(cfg.rows)]

    def batches(rows: list) -> list:
        return [collate(rows[i:i + cfg.batch_size]) for i in range(0, len(rows), cfg.batch_size)]
    names, per_batch = route_counts(model, batches(draw_rows(data)), device)
    counts = per_batch.sum(0)
    by_task = None
    roots = data.roots() if episodes else []
    if len(roots) > 1:   # each dataset alone, episode sources only: vision counts per task
        if cfg.rows < 2:
            raise ValueError(f"rows={cfg.rows}: the noise floor splits each task's rows in two halves; use rows >= 2")
        halves = []
        for d in range(len(roots)):
            alone = replace(data, text=0.0, dataset_weights=[float(i == d) for i in range(len(roots))])
            rows = draw_rows(alone)
            even, odd = batches(rows[0::2]), batches(rows[1::2])   # batched apart: each batch holds one half
            # one call, one noise generator: the halves must not see the same frame noise
            vision = route_counts(model, even + odd, device)[1][:, :, 1]   # (batches, L, E)
            halves.append([vision[:len(even)].sum(0), vision[len(even):].sum(0)])
        halves_T2LE = np.array(halves)
        vision_TLE = halves_T2LE.sum(1)
        by_task = {"tasks": task_names(roots), "counts": vision_TLE, **task_specialisation(vision_TLE),
                   "noise_floor": split_half_noise_floor(halves_T2LE)}
    return {"layers": names, "counts": counts, **specialisation(counts), "by_task": by_task}
