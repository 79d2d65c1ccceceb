"""`lw build-landmarks`: the landmark graph of a world model's latent space, from collected episodes.

    lw build-landmarks model=checkpoints/point_maze-tiny data=data/point_maze
    lw build-landmarks model=checkpoints/point_maze-tiny/jepa data=data/point_maze   # for the jepa row

`model` is a world-model folder (`lw pretrain`: the graph lives in the RAE's latent space) or a
JEPA folder (`lw train-encoder method=jepa`: the JEPA's own latent space). The frames of the
training part of `data` are encoded and clustered into `k` landmarks, the observed decisions
between them give the graph (`planners.landmarks`), and it is written to `<model>/landmarks`
(`<model>/landmarks/<task>` for a model of several tasks: one graph per task), where `lw benchmark`
finds it. Only pixels and actions build it; the true states of the held-out
episodes only score it: Spearman of graph cost and of plain latent MSE against the task's own
planning cost (corridor length on point_maze) over random held-out pairs.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lw.program import Program
from planners.landmarks import LandmarkGraph, graph_dir
from pretrain.latent_probe import load_episodes, spearman
from worldmodel.world import covered_tasks


@dataclass
class BuildLandmarksConfig:
    model: str = ""            # world-model folder (lw pretrain) or JEPA folder (lw train-encoder method=jepa)
    data: str = "data/point_maze"
    k: int = 200               # landmarks
    holdout: float = 0.15      # last fraction of episodes kept out of the graph and used to score it
    iters: int = 25            # k-means iterations
    fit_points: int = 50_000   # latents k-means is fitted on (a random subsample)
    seed: int = 0
    pairs: int = 4000          # held-out pairs scored
    out: str = ""              # "" = <model>/landmarks (<model>/landmarks/<task> for a model of several tasks)
    device: str = ""           # "" = cuda if available, else cpu
    threads: int = 0           # torch CPU threads (0 = torch's default)


def load_world(path: str, device: str):
    """The world (LatentWorld or JEPAWorld) of a model folder, by its kind."""
    from worldmodel import hub

    kind = hub.read_config(path).get("kind")
    if kind == "transfusion":
        from worldmodel.world import LatentWorld
        return LatentWorld.from_pretrained(path, device=device)
    if kind == "jepa":
        from worldmodel.jepa import JEPAWorld
        return JEPAWorld.from_pretrained(path, device=device)
    raise ValueError(f"{path!r} holds a {kind!r} model; expected a world-model folder (lw pretrain) "
                     "or a JEPA folder (lw train-encoder method=jepa)")


def score_graph(graph, z_te: torch.Tensor, s_te: np.ndarray, task: str, pairs: int, seed: int) -> dict:
    """Spearman of the graph cost and of latent MSE with the task's planning cost, held-out pairs."""
    from envs.mujoco_tasks import make_task

    E, T1, D = z_te.shape
    rng = np.random.default_rng(seed)
    i, j, i2, j2 = (rng.integers(0, n, pairs) for n in (E, T1, E, T1))
    za, zb = z_te[i, j], z_te[i2, j2]                                             # (P, D)
    true = np.asarray(make_task(task, render=False).cost(s_te[i, j], s_te[i2, j2]), np.float64)
    g = graph.cost(za[:, None, None, :], zb[:, None, None, :]).numpy()
    mse = (za - zb).pow(2).mean(-1).numpy()
    return {"spearman_graph": round(spearman(g, true), 3), "spearman_latent_mse": round(spearman(mse, true), 3),
            "unreachable_pairs": round(float((~torch.isfinite(graph.steps)).float().mean()), 4)}


def build(cfg: BuildLandmarksConfig) -> dict:
    from worldmodel.device import resolve_device, set_threads

    if not cfg.model:
        raise ValueError("model= is empty; expected a world-model folder (lw pretrain) or a JEPA folder")
    set_threads(cfg.threads)
    t0 = time.monotonic()
    world = load_world(cfg.model, resolve_device(cfg.device))
    eps = load_episodes(cfg.data, cfg.holdout)
    covered = list(covered_tasks(world.extras))
    if covered and eps.task not in covered:
        raise ValueError(f"{cfg.model!r} was trained on {covered}, but {cfg.data!r} holds {eps.task!r}")

    def encode(frames: torch.Tensor) -> torch.Tensor:                              # (E, T1, 3, H, W) -> (E, T1, D)
        flat = frames.flatten(0, 1).permute(0, 2, 3, 1)
        z = [world.encode_frames(flat[i:i + 2048]).flatten(1).float().cpu() for i in range(0, len(flat), 2048)]
        return torch.cat(z).view(*frames.shape[:2], -1)

    f_tr, _, _ = eps.split("train")
    f_te, _, s_te = eps.split("held")
    graph = LandmarkGraph.build(encode(f_tr), cfg.k, cfg.iters, cfg.seed, cfg.fit_points,
                                fingerprint=world.encoder_fingerprint(),
                                meta={"data": cfg.data, "task": eps.task, "model": cfg.model})
    scores = score_graph(graph, encode(f_te), s_te, eps.task, cfg.pairs, cfg.seed)
    graph.meta["heldout_scores"] = scores
    out = cfg.out or str(graph_dir(cfg.model, eps.task, multi_task=len(covered) > 1))
    graph.save_pretrained(out)
    return {"out": out, "landmarks": len(graph), "train_episodes": eps.n_train,
            "heldout_episodes": len(f_te), **scores, "seconds": round(time.monotonic() - t0, 1)}


def run(cfg: BuildLandmarksConfig) -> None:
    print(json.dumps(build(cfg), indent=2))


main = Program(__doc__, BuildLandmarksConfig, "build_landmarks", run)

if __name__ == "__main__":
    from lw.cli import module_main
    module_main("lw.build_landmarks")
