"""Imagined vs MuJoCo rollouts, scored per horizon step: the library of `lw eval-prediction`.

Held-out episodes (seeds `seed + i`, default 1_000_000 + i: disjoint from collection's
0..) are driven by a data policy (default uniform in the action box). For each, the
first `context_frames` real frames are encoded; the model then rolls out the recorded
actions open loop for `horizon` steps. Per horizon step and averaged over episodes:
PSNR and SSIM of the decoded frames against the true MuJoCo frames, and latent MSE
against the RAE encoding of the true frames; the same for the copy-last-frame baseline
(the last real context frame), for the mean-latent baseline (the data's mean latent, 0
after normalisation, decoded: what a model that learned only a blurry mean scores) and
for the RAE round trip decode(encode(true)), the pixel ceiling of any latent model.

Action sensitivity: the model also rolls out every episode with another episode's actions
(`shuffled`, with the same sampling noise); a model that ignores its actions scores the same
with both. `imagine=jump` predicts step h in one jump from the context and the first h
actions (models pretrained with data.max_jump >= horizon), instead of frame by frame.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch


@dataclass
class EvalPredictionConfig:
    model: str = ""                 # world-model folder written by `lw pretrain` (required)
    task: str | None = None         # ground-truth task; None: the model folder's task
    episodes: int = 16              # held-out episodes
    horizon: int = 10               # imagined steps per episode
    context_frames: int | None = None  # real frames given to the model; None: the model's
    sample_steps: int | None = None    # Euler steps per frame; None: the model's (LatentWorld.sample_steps)
    policy: str = "uniform"         # data policy (envs.policies), or "collection": the policy,
                                    # mixture and hold of the model's training dataset (its manifest)
    hold: int = 1                   # env steps each policy decision is held (as in `lw collect`)
    seed: int = 1_000_000           # episode i uses seed + i (collection uses 0, 1, ...)
    sample_seed: int = 0            # seed of the sampling noise
    batch: int = 64                 # episodes per batched model call
    imagine: str = "rollout"        # "rollout": frame by frame (as LearnedWorld-v0); "jump": step h in one jump
    window: int | None = None       # rollout: the most frames an imagined frame sees (0: all; None: the model's)
    device: str | None = None       # None: cuda if available, else cpu
    out: str | None = None          # output folder; None: <model>/eval_prediction


def collection_policy(dataset: str | Path) -> dict:
    """The data policy of a dataset's (last) `lw collect` run: policy, mixture, hold, scripted_noise."""
    manifest = Path(dataset) / "manifest.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"policy=collection needs the training dataset's manifest, {str(manifest)!r} "
                                f"is missing; pass policy=uniform (or another policy) instead")
    runs = json.loads(manifest.read_text()).get("collect_runs") or []
    if not runs:
        raise ValueError(f"{str(manifest)!r} records no collect run; expected one written by `lw collect`")
    c = runs[-1]["config"]
    if "policy" not in c:
        raise ValueError(f"{str(manifest)!r}'s last collect run records no policy; expected one written by `lw collect`")
    return {k: c[k] for k in ("policy", "mixture", "hold", "scripted_noise") if k in c}


def recorded_data_policy(dataset: str | Path) -> dict | None:
    """`collection_policy` of a dataset, or None when it has no manifest or no collect run (a model
    trained on data made another way records no data policy)."""
    try:
        return collection_policy(dataset)
    except (FileNotFoundError, ValueError):
        return None


def record_episodes(task_name: str, image_size: int, n: int, steps: int, seed: int, policy: str = "uniform",
                    hold: int = 1, **policy_kw):
    """n ground-truth episodes of `steps` actions, made exactly as `lw collect` makes them (episode i:
    seed + i, same policy code) -> frames (n,steps+1,H,W,3) uint8, actions (n,steps,A) float32."""
    from pretrain.data.collect import CollectConfig, EpisodeCollector

    cfg = CollectConfig(task=task_name, episodes=n, policy=policy, hold=hold, episode_steps=steps,
                        image_size=image_size, workers=1, seed=seed, progress=False, **policy_kw)
    collector = EpisodeCollector(cfg)
    try:
        eps = [collector(i) for i in range(n)]
    finally:
        collector.task.close()
    return np.stack([e.frames for e in eps]), np.stack([e.actions for e in eps]).astype(np.float32)


IMAGINE = ("rollout", "jump")


def imagine(world, ctx, ctx_actions, actions, steps: int | None, generator: torch.Generator, how: str,
            window: int | None = None):
    """(b,H,N,C) predictions of the H steps: one rollout, or H jumps (step h from the first h actions).
    `steps`: sample_steps, `window`: the rollout's window (None: the world's)."""
    if how == "rollout":
        return world.rollout(ctx, ctx_actions, actions, sample_steps=steps, generator=generator, window=window)
    return torch.cat([world.jump(ctx, ctx_actions, actions[:, :h + 1], sample_steps=steps, generator=generator)
                      for h in range(actions.shape[1])], 1)


@torch.no_grad()
def evaluate(world, frames: np.ndarray, actions: np.ndarray, tc: int, horizon: int,
             steps: int | None, generator: torch.Generator, batch: int = 64,
             how: str = "rollout", window: int | None = None) -> dict[str, np.ndarray]:
    """Per-episode, per-step metrics (E, H) for the model, copy-last and the RAE round trip, and
    the model's latent MSE with another episode's actions (`shuffled_latent_mse`; NaN for E = 1)."""
    from pretrain.image_metrics import psnr, ssim

    E, T1 = frames.shape[:2]
    if T1 < tc + horizon:
        raise ValueError(f"episodes have {T1} frames, expected at least context_frames + horizon = {tc + horizon}")
    if how not in IMAGINE:
        raise ValueError(f"imagine={how!r}, expected one of {IMAGINE}")
    dev = world.device
    out = {f"{who}_{m}": np.zeros((E, horizon)) for who in ("model", "copy_last", "mean_latent", "rae")
           for m in ("psnr", "ssim", "latent_mse")}
    out["shuffled_latent_mse"] = np.full((E, horizon), np.nan)
    future = actions[:, tc - 1:tc - 1 + horizon]
    shuffled = np.roll(future, 1, axis=0)                        # episode i gets episode i-1's actions
    for s in range(0, E, batch):
        fr, ac = frames[s:s + batch], actions[s:s + batch]
        b = len(fr)
        H_img = fr.shape[2]
        z = world.encode_frames(fr[:, :tc + horizon].reshape(-1, *fr.shape[2:]))
        z = z.reshape(b, tc + horizon, *z.shape[1:])            # (b,Tc+H,N,C)
        ctx, z_true = z[:, :tc], z[:, tc:]
        noise_state = generator.get_state()
        z_pred = imagine(world, ctx, ac[:, :tc - 1], future[s:s + b], steps, generator, how, window)    # (b,H,N,C)
        if E > 1:
            after = generator.get_state()
            generator.set_state(noise_state)          # the same sampling noise: only the actions differ
            z_shuf = imagine(world, ctx, ac[:, :tc - 1], shuffled[s:s + b], steps, generator, how, window)
            generator.set_state(after)
            out["shuffled_latent_mse"][s:s + b] = (z_shuf - z_true).pow(2).flatten(2).mean(2).cpu().numpy()
        true = torch.as_tensor(fr[:, tc:tc + horizon], device=dev).permute(0, 1, 4, 2, 3).float() / 255
        last = torch.as_tensor(fr[:, tc - 1], device=dev).permute(0, 3, 1, 2).float() / 255
        z_mean = torch.zeros_like(z_true)                        # the data's mean latent (normalised: 0)
        preds = {"model": world.decode_float(z_pred), "copy_last": last[:, None].expand_as(true),
                 "mean_latent": world.decode_float(z_mean), "rae": world.decode_float(z_true)}  # (b,H,3,H_img,W_img)
        lats = {"model": z_pred, "copy_last": ctx[:, -1:].expand_as(z_true), "mean_latent": z_mean, "rae": z_true}
        for who, p in preds.items():
            flat_p, flat_t = p.reshape(-1, 3, H_img, H_img), true.reshape(-1, 3, H_img, H_img)
            out[f"{who}_psnr"][s:s + b] = psnr(flat_p, flat_t, reduction="none").reshape(b, horizon).cpu().numpy()
            out[f"{who}_ssim"][s:s + b] = ssim(flat_p, flat_t, reduction="none").reshape(b, horizon).cpu().numpy()
            mse = (lats[who] - z_true).pow(2).flatten(2).mean(2)  # (b,H)
            out[f"{who}_latent_mse"][s:s + b] = mse.cpu().numpy()
    return out


def summarise(per_episode: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """Mean over episodes per horizon step (and the standard error, `<key>_se`)."""
    res = {}
    for k, v in per_episode.items():
        res[k] = v.mean(0).tolist()
        res[f"{k}_se"] = (v.std(0, ddof=1) / np.sqrt(len(v))).tolist() if len(v) > 1 else [0.0] * v.shape[1]
    # action gain: error with another episode's actions / with the true ones (1.0 = actions ignored)
    res["action_gain"] = [s / max(m, 1e-12) for s, m in zip(res["shuffled_latent_mse"], res["model_latent_mse"])]
    return res


def training_dataset(extras: dict, task: str) -> str:
    """Where the model's `task` data was: its one training dataset, else the conventional data/<task>."""
    dataset = extras.get("dataset")
    return dataset if isinstance(dataset, str) and dataset else f"data/{task}"


def predict(cfg: EvalPredictionConfig, log: Callable[[str], None] = print) -> dict:
    """What `lw eval-prediction` scores, as data: the model folder's world imagines `cfg.episodes` held-out
    episodes (seeds cfg.seed..) open loop; returns {"task", "context_frames", "sample_steps", "policy",
    "device", "seconds": {"ground_truth", "model"}, "per_step": summarise(...)} (its action_gain per step)."""
    if not cfg.model:
        raise ValueError("model is required: lw eval-prediction model=<folder written by `lw pretrain`>")
    if cfg.episodes < 1 or cfg.horizon < 1:
        raise ValueError(f"episodes={cfg.episodes}, horizon={cfg.horizon}, expected both >= 1")
    from worldmodel.device import resolve_device
    from worldmodel.world import LatentWorld, covered_tasks

    device = resolve_device(cfg.device)
    world = LatentWorld.from_pretrained(cfg.model, device=device).for_task(cfg.task)   # takes the task's actions
    task = world.task
    tc = world.resolve_context_frames(cfg.context_frames)     # the world decides the defaults
    steps = world.resolve_sample_steps(cfg.sample_steps)
    window = world.resolve_window(cfg.window)
    log(f"eval-prediction: {cfg.episodes} held-out {task} episodes (seeds {cfg.seed}..), "
        f"{tc} context frames, window {window or 'all'}, horizon {cfg.horizon}, policy {cfg.policy}, device {device}")
    pol = {"policy": cfg.policy, "hold": cfg.hold}
    if cfg.policy == "collection":
        pol = covered_tasks(world.extras).get(task) or collection_policy(training_dataset(world.extras, task))
        log(f"  collection policy: {pol}")
    t0 = time.perf_counter()
    frames, actions = record_episodes(task, world.image_size, cfg.episodes, tc - 1 + cfg.horizon, cfg.seed, **pol)
    t1 = time.perf_counter()
    gen = torch.Generator(device=world.device).manual_seed(cfg.sample_seed)
    per_ep = evaluate(world, frames, actions, tc, cfg.horizon, steps, gen, cfg.batch, cfg.imagine, window)
    return {"task": task, "context_frames": tc, "window": window, "sample_steps": steps, "policy": pol, "device": str(device),
            "seconds": {"ground_truth": t1 - t0, "model": time.perf_counter() - t1}, "per_step": summarise(per_ep)}
