"""IsoFLOP sweeps and power-law fits (Chinchilla approach 2), per modality: the library of `lw scaling`.

For every FLOP budget C and every model width in the grid, train once with exactly
D = C / flops_per_token tokens (the FLOP formula of pretrain.metrics: 6*N_active + the
attention term) and record the held-out loss. Per (modality, budget): fit a parabola of
loss against log N and take its vertex as N_opt (D_opt = C / (6 N_opt)). Across budgets:
fit N_opt = k C^a and D_opt = k' C^b by least squares in log-log space.

Modalities: "text" (text only), "vision" (plain + action-conditioned video: frames only),
"mixed" (the configured data mixture). `lw scaling` (lw/scaling.py) runs the sweep and writes
the report.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pretrain.checkpoint import CheckpointConfig
from pretrain.data.mixture import DataConfig
from pretrain.metrics import MetricsConfig, flops_per_token, to_dict
from pretrain.optim import OptimConfig
from pretrain.train import RAEArgs, TrainConfig, Trainer, model_config, resolve_data_info, uses_episodes
from worldmodel.config import ModelConfig

MODALITIES = ("text", "vision", "mixed")


@dataclass
class ScalingConfig:
    out_dir: str = "runs/scaling"   # tables, plot, JSON and one folder per run
    budgets: list[float] = field(default_factory=lambda: [3e9, 1e10, 3e10])  # training FLOPs per run (C)
    widths: list[int] = field(default_factory=lambda: [16, 24, 32, 48, 64])  # d_model grid (heads = d/16)
    depth: int = 2                  # transformer blocks of every grid model
    modalities: list[str] = field(default_factory=lambda: list(MODALITIES))
    batch_size: int = 4             # rows per step when steps_per_run = 0 (steps then follow from the budget)
    steps_per_run: int = 0          # > 0: every run takes this many steps and the batch follows from the
                                    # budget (removes the optimizer-step confound of tiny CPU budgets)
    eval_rows: int = 32             # held-out rows scoring each run
    min_steps: int = 8              # a (width, budget) pair with fewer steps is skipped
    warmup_frac: float = 0.1        # warmup steps as a fraction of each run
    device: str = "cpu"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)  # FFN/MoE and the rest; width/depth/heads set per run
    rae: RAEArgs = field(default_factory=RAEArgs)
    data: DataConfig = field(default_factory=DataConfig)     # the "mixed" mixture; seq_len for all
    optim: OptimConfig = field(default_factory=OptimConfig)


# ---------------------------------------------------------------- fits
def fit_parabola(log_n: np.ndarray, loss: np.ndarray) -> dict[str, float]:
    """loss = a x^2 + b x + c over x = ln N; the vertex is N_opt when the grid brackets it,
    else the best measured size (flagged bracketed=False: the optimum lies off the grid)."""
    if len(log_n) < 3:
        raise ValueError(f"a parabola needs >= 3 model sizes per budget, got {len(log_n)}")
    a, b, c = np.polyfit(log_n, loss, 2)
    vertex = -b / (2 * a) if a > 0 else None
    # bracketed: the best measured size is not at either end of the grid (sizes on both sides
    # of the optimum) and the parabola opens upward with its vertex inside the grid
    order = np.argsort(log_n)
    best = int(np.argmin(np.asarray(loss)[order]))
    bracketed = vertex is not None and 0 < best < len(log_n) - 1 and log_n.min() < vertex < log_n.max()
    x = float(vertex) if bracketed else float(log_n[np.argmin(loss)])
    return {"a": float(a), "b": float(b), "c": float(c), "log_n_opt": x, "n_opt": math.exp(x),
            "loss_opt": float(a * x * x + b * x + c), "convex": bool(a > 0), "bracketed": bool(bracketed)}


def fit_power_law(c: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """y = k * C^exponent, least squares in log-log space."""
    if len(c) < 2:
        raise ValueError(f"a power law needs >= 2 budgets, got {len(c)}")
    exponent, log_k = np.polyfit(np.log(c), np.log(y), 1)
    return {"exponent": float(exponent), "k": float(math.exp(log_k))}


def near_optimum(pts: list[dict[str, Any]], window: int) -> list[dict[str, Any]]:
    """The 2*window+1 sizes of one IsoFLOP curve centred on its best (shifted inward at the grid's
    ends). Far from the optimum the loss is not a parabola in ln N (a width under the latent's
    channels cannot carry a frame and sits on a plateau above the rest), and one quadratic through
    every size bends to those points instead of the minimum."""
    pts = sorted(pts, key=lambda r: r["n_active"])
    best = min(range(len(pts)), key=lambda i: pts[i]["loss"])
    start = max(0, min(best - window, len(pts) - (2 * window + 1)))
    return pts[start: start + 2 * window + 1]


def fit_isoflops(runs: list[dict[str, Any]], window: int = 2) -> dict[str, Any]:
    """Per modality: a parabola per budget through the sizes near its best (`near_optimum`), then
    N_opt ~ C^a and D_opt ~ C^b over the budgets whose optimum the width grid brackets (no exponents
    when fewer than two do)."""
    fits: dict[str, Any] = {}
    for mod in sorted({r["modality"] for r in runs}):
        per_budget = {}
        for budget in sorted({r["budget"] for r in runs if r["modality"] == mod}):
            pts = [r for r in runs if r["modality"] == mod and r["budget"] == budget
                   and not narrower_than_latent(r.get("width", 0), r.get("latent_dim"))]
            if len(pts) < 3:
                continue
            near = near_optimum(pts, window)  # the best ends `near` exactly when it ends the grid
            p = fit_parabola(np.log([r["n_active"] for r in near]), np.array([r["loss"] for r in near]))
            p["fit_n"] = [r["n_active"] for r in near]
            p["d_opt"] = budget / (6 * p["n_opt"])
            per_budget[budget] = p
        entry: dict[str, Any] = {"budgets": {f"{b:.3g}": v for b, v in per_budget.items()}}
        usable = {b: p for b, p in per_budget.items() if p["bracketed"]}  # an edge optimum is no estimate
        entry["unbracketed"] = [f"{b:.3g}" for b, p in per_budget.items() if not p["bracketed"]]
        if len(usable) >= 2:
            per_budget = usable
            cs = np.array(sorted(per_budget))
            entry["n_opt_law"] = fit_power_law(cs, np.array([per_budget[b]["n_opt"] for b in cs]))
            entry["d_opt_law"] = fit_power_law(cs, np.array([per_budget[b]["d_opt"] for b in cs]))
            entry["a"], entry["b"] = entry["n_opt_law"]["exponent"], entry["d_opt_law"]["exponent"]
        fits[mod] = entry
    return fits


# ---------------------------------------------------------------- the sweep
def modality_data(cfg: ScalingConfig, modality: str) -> DataConfig:
    if modality not in MODALITIES:
        raise ValueError(f"modality {modality!r} is not one of {MODALITIES}")
    d = dataclasses.replace(cfg.data, seed=cfg.seed)
    if modality == "text":
        return dataclasses.replace(d, text=1.0, image_text=0.0, video=0.0, action_video=0.0)
    if modality == "vision":
        return dataclasses.replace(d, text=0.0, image_text=0.0, video=0.5, action_video=0.5)
    return d


def run_config(cfg: ScalingConfig, modality: str, budget: float, width: int, out: Path) -> TrainConfig:
    heads = max(1, width // 16)
    model = dataclasses.replace(cfg.model, d_model=width, n_layers=cfg.depth, n_heads=heads, head_dim=None)
    data = modality_data(cfg, modality)
    return TrainConfig(run_dir=str(out / "runs" / f"{modality}_C{budget:.0e}_d{width}"), seed=cfg.seed,
                       device=cfg.device, steps=1, batch_size=cfg.batch_size, eval_rows=cfg.eval_rows,
                       export=False, model=model, rae=cfg.rae if uses_episodes(data) else RAEArgs(path=""),
                       data=data, optim=cfg.optim, checkpoint=CheckpointConfig(every=-1),
                       metrics=MetricsConfig(tensorboard=False, progress=False))


def plan_run(tc: TrainConfig, info, budget: float, min_steps: int, warmup_frac: float,
             steps_per_run: int = 0) -> TrainConfig | None:
    """Set steps (or, with steps_per_run, the batch size) so the run spends `budget` FLOPs;
    None when that is fewer than min_steps steps (or than one row per step)."""
    import torch
    from worldmodel.transfusion import Transfusion
    mc = model_config(tc, info)
    with torch.device("meta"):
        model = Transfusion(mc)
    emb = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    n_active = model.num_active_params() - emb
    fpt = flops_per_token(n_active, mc.n_layers, mc.d_model, tc.data.seq_len)
    tokens = budget / fpt
    batch = tc.batch_size
    if steps_per_run > 0:
        steps, batch = steps_per_run, int(round(tokens / (steps_per_run * tc.data.seq_len)))
        if batch < 1:
            return None
    else:
        steps = int(round(tokens / (batch * tc.data.seq_len)))
        if steps < min_steps:
            return None
    optim = dataclasses.replace(tc.optim, warmup_steps=max(1, int(warmup_frac * steps)))
    return dataclasses.replace(tc, steps=steps, batch_size=batch, optim=optim)


GRID_FIELDS = ("out_dir", "budgets", "widths", "modalities")  # a sweep may grow these and keep its runs


def settings_digest(cfg: ScalingConfig) -> str:
    """Every setting but the grid's lists (model, data, RAE, optimiser, seed, ...), hashed."""
    settings = {k: v for k, v in to_dict(cfg).items() if k not in GRID_FIELDS}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_key(settings: str, modality: str, budget: float, width: int) -> dict[str, Any]:
    """What makes two runs the same: the grid point and the settings (`settings_digest`). A finished
    run is reused only when its key matches."""
    return {"modality": modality, "budget": budget, "width": width, "settings": settings}


def all_finished(cfg: ScalingConfig) -> list[dict[str, Any]]:
    """Every finished run in out_dir with this config's settings, whichever grid swept it: a sweep
    extended by a sub-grid (`widths=[8,12] budgets=[1e11]`) is fitted as one."""
    digest = settings_digest(cfg)
    runs = [r for r in load_finished(Path(cfg.out_dir) / "runs.jsonl") if r.get("key", {}).get("settings") == digest]
    return sorted(runs, key=lambda r: (r["modality"], r["budget"], r["n_active"]))


def load_finished(path: Path) -> list[dict[str, Any]]:
    """The runs a killed sweep finished (one JSON object per line; a line torn by a kill is dropped)."""
    if not path.exists():
        return []
    done = []
    for line in path.read_text().splitlines():
        try:
            done.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the line being written when the sweep was killed
    return done


def narrower_than_latent(width: int, latent_dim: int | None) -> bool:
    """A model narrower than the frame latent's channels squeezes every frame through fewer dimensions
    than it has: its loss sits on a plateau set by the squeeze, not by its size (entry 35: widths 16
    and 24 on a 32-channel latent lose 4-10x more than width 32 at any budget). Such a width is no
    point of an IsoFLOP curve, so vision and mixed sweeps skip it and the fits leave it out."""
    return latent_dim is not None and width < latent_dim


def append_line(path: Path, line: str) -> None:
    """Append one line, first ending a line torn by a kill so the new one stays whole."""
    torn = False
    if path.exists() and path.stat().st_size > 0:
        with path.open("rb") as f:   # the last byte alone: the file grows by a line per run
            f.seek(-1, 2)
            torn = f.read(1) != b"\n"
    with path.open("a") as f:
        f.write(("\n" if torn else "") + line + "\n")


def sweep(cfg: ScalingConfig, episodes=None, val_episodes=None, log=print) -> list[dict[str, Any]]:
    """Every (modality, budget, width) of the grid, each run appended to out_dir/runs.jsonl as it
    ends; run again after a kill and the finished runs are read back instead of retrained."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    finished_path = out / "runs.jsonl"
    finished = load_finished(finished_path)
    settings = settings_digest(cfg)   # the same for every grid point
    runs = []
    cache: dict[str, Any] = {}
    for mod in cfg.modalities:
        for budget in cfg.budgets:
            for width in cfg.widths:
                key = run_key(settings, mod, budget, width)
                old = next((r for r in finished if r.get("key") == key), None)
                if old is not None:
                    runs.append(old)
                    log(f"  {mod:6s} C={budget:.0e} d={width:3d} loss={old['loss']:.4f} (finished before)")
                    continue
                tc = run_config(cfg, mod, budget, width, out)
                info_key = f"info_{uses_episodes(tc.data)}"  # text-only runs need neither RAE nor dataset
                info = cache[info_key] = cache.get(info_key) or resolve_data_info(tc)
                latent_dim = info.latent_dim if uses_episodes(tc.data) else None   # text-only runs have none
                if narrower_than_latent(width, latent_dim):
                    log(f"  skip {mod} C={budget:.0e} d={width}: narrower than the latent's {latent_dim} channels")
                    continue
                tc = plan_run(tc, info, budget, cfg.min_steps, cfg.warmup_frac, cfg.steps_per_run)
                if tc is None:
                    log(f"  skip {mod} C={budget:.0e} d={width}: budget below "
                        + ("one row per step" if cfg.steps_per_run > 0 else f"{cfg.min_steps} steps"))
                    continue
                eps, val = (episodes, val_episodes) if uses_episodes(tc.data) else (None, None)
                if eps is None and uses_episodes(tc.data):  # load the cached latents once
                    if "episodes" not in cache:
                        from pretrain.data.mixture import load_mixture_episodes
                        enc = tc.data.encoder_id or info.encoder_id
                        cache["episodes"] = load_mixture_episodes(tc.data, enc, "train")
                        cache["val"] = (load_mixture_episodes(tc.data, enc, "val")
                                        if tc.data.holdout > 0 else cache["episodes"])
                    eps, val = cache["episodes"], cache["val"]
                t0 = time.perf_counter()
                trainer = Trainer(tc, episodes=eps, val_episodes=val, info=info, quiet=True)
                result = trainer.run()
                loss = result["final_eval"]["val/loss"]
                runs.append({"modality": mod, "budget": budget, "width": width, "depth": cfg.depth, "key": key,
                             "latent_dim": latent_dim,
                             "n_active": result["n_active"], "n_params": result["n_params"],
                             "tokens": trainer.tokens_seen, "steps": tc.steps, "batch_size": tc.batch_size,
                             "loss": loss,
                             "flops": trainer.tokens_seen * result["flops_per_token"],
                             "seconds": time.perf_counter() - t0})
                append_line(finished_path, json.dumps(runs[-1]))  # a kill loses at most the run in flight
                log(f"  {mod:6s} C={budget:.0e} d={width:3d} N={result['n_active'] / 1e3:7.1f}k "
                    f"steps={tc.steps:4d}x{tc.batch_size:3d} rows loss={loss:.4f} ({runs[-1]['seconds']:.1f}s)")
    return runs
