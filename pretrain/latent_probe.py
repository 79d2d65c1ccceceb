"""Fast proxy scores of a latent space for control: is it action-predictable, is it a planning cost?

    lw probe-latent data=data/reacher rep=runs/jepa_reacher minutes=2

Scores a representation (a `lw train-encoder method=jepa` folder, or an RAE folder) on the
held-out episodes of a dataset, in minutes, before anyone spends hours pretraining a world
model in it:
  * action gain at 1 and 5 steps: a deterministic predictor's open-loop latent error with
    another episode's actions / with the true ones (1.0 = the actions are ignored). The
    predictor is the JEPA's own (`own`) and, for any representation, a fresh MLP trained
    here for `minutes` on the frozen latents (`mlp`), so RAE and JEPA latents compare alike;
  * error / copy-last: the same error relative to predicting "nothing moves";
  * spearman: rank correlation of latent distance (the planners' cost) with the task's
    true goal distance (fingertip for reacher, ball position for point_maze) over random
    held-out pairs: does a smaller latent cost mean closer to the goal?
  * probe_r2: ridge regression from the latent to the task's pose features (reacher: cos/sin of
    the joint angles and the fingertip; point_maze: the ball's position; pusht: the agent, the
    block and cos/sin of its angle), how much of the pose the latent holds; probe_r2_parts
    scores each named part alone (POSE_PARTS), since the pooled figure follows the part that
    varies most. Velocities and the hidden goal are left out: no single frame shows them.

`score_latents` is the one scoring function: `lw train-encoder method=jepa` calls it at every
evaluation, so its log and this command report the same numbers.

Legend: E episodes, T1 frames per episode, D latent size, A action dim, S state dim.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from worldmodel.device import set_threads
from worldmodel.tasks import task_index

# predict(z_hist (B, h, D), actions (B, H, A) raw) -> (B, H, D)
Predict = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class ProbeLatentConfig:
    data: str = "data/reacher"     # episode dataset (lw collect); its last `holdout` fraction is scored
    rep: str = ""                  # representation folder: `lw train-encoder method=jepa` output or an RAE folder
    holdout: float = 0.15          # last fraction of episodes held out (never trained on)
    minutes: float = 2.0           # training budget of the fresh MLP predictor (0: score the JEPA's own only)
    history: int = 2               # frames the fresh predictor reads
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0
    out: str = ""                  # write the scores here as JSON ("" = print only)
    threads: int = 0               # torch CPU threads (0 = torch default)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation of a and b (no tie correction)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def _ridge_predict(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, lam: float = 1e-2) -> np.ndarray:
    m, s = x_tr.mean(0), x_tr.std(0) + 1e-6
    x_tr, x_te = (x_tr - m) / s, (x_te - m) / s
    w = np.linalg.solve(x_tr.T @ x_tr + lam * len(x_tr) * np.eye(x_tr.shape[1]), x_tr.T @ (y_tr - y_tr.mean(0)))
    return x_te @ w + y_tr.mean(0)


def _r2(pred: np.ndarray, y: np.ndarray) -> float:
    return float(1 - ((pred - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())


@torch.no_grad()
def action_gain(z: torch.Tensor, actions: torch.Tensor, predict: Predict, history: int,
                horizons=(1, 5), seed: int = 1) -> dict:
    """Open-loop error of `predict` with the true vs another episode's actions on held-out
    latents z (E, T1, D), actions (E, T1-1, A); errors are relative to the latent variance."""
    E, T1, _ = z.shape
    perm = torch.randperm(E, generator=torch.Generator().manual_seed(seed))
    if E > 1 and bool((perm == torch.arange(E)).all()):
        perm = torch.roll(perm, 1)
    scale = float(z[:, history:].var())
    out = {}
    for H in horizons:
        starts = range(history - 1, T1 - H)  # the context ends at frame t, predictions t+1..t+H
        if len(starts) == 0:
            continue
        errs = {}
        for name, acts in (("true", actions), ("shuffled", actions[perm])):
            tot = 0.0
            for t in starts:
                pred = predict(z[:, t - history + 1:t + 1], acts[:, t:t + H])       # (E, H, D)
                tot += float((pred[:, -1] - z[:, t + H]).pow(2).mean())
            errs[name] = tot / len(starts) / scale
        copy = float(np.mean([float((z[:, t] - z[:, t + H]).pow(2).mean()) for t in starts])) / scale
        out[f"k{H}"] = {"mse_true": round(errs["true"], 4), "mse_shuffled": round(errs["shuffled"], 4),
                        "copy_last": round(copy, 4), "action_gain": round(errs["shuffled"] / max(errs["true"], 1e-12), 3)}
    return out


def cost_quality(z: np.ndarray, states: np.ndarray, distance: Callable, pairs: int = 4000, seed: int = 0) -> dict:
    """Spearman of latent MSE with the task's true distance over random pairs of held-out frames;
    also over near pairs (true distance below its 25th percentile), where planning decides."""
    E, T1 = z.shape[:2]
    rng = np.random.default_rng(seed)
    i, j, i2, j2 = (rng.integers(0, n, pairs) for n in (E, T1, E, T1))
    true = np.asarray(distance(states[i, j], states[i2, j2]), dtype=np.float64)
    lat = ((z[i, j] - z[i2, j2]) ** 2).mean(-1)
    near = true < np.quantile(true, 0.25)
    return {"spearman": round(spearman(lat, true), 3), "spearman_near": round(spearman(lat[near], true[near]), 3)}


def pair_distance(task: str) -> Callable:
    """The true distance between what two frames show (cost_quality's reference): the task's own
    `distance(state, goal_state)`, except where the goal lives in a part of the state that the
    frames do not show (dmc_reacher: the hidden target; there, finger to finger)."""
    from envs.mujoco_tasks import TASK_CLASSES

    if task == "dmc_reacher":
        from envs.tasks.dmc_reacher import finger

        return lambda a, b: np.linalg.norm(finger(np.asarray(a)[..., :2]) - finger(np.asarray(b)[..., :2]), axis=-1)
    return TASK_CLASSES[task].distance


# Named column groups of pose_features, scored one by one as well as pooled: a pooled R^2 is
# dominated by the parts that vary most (on PushT the agent, which the actions move directly).
POSE_PARTS = {
    "reacher": {"angles": slice(0, 4), "fingertip": slice(4, 6)},
    "dmc_reacher": {"angles": slice(0, 4), "finger": slice(4, 6)},
    "pusht": {"agent": slice(0, 2), "block": slice(2, 4), "block_angle": slice(4, 6)},
}


def pose_features(task: str, states: np.ndarray) -> np.ndarray:
    """(..., S) true states -> (..., F) what one frame shows of the pose (the probe's targets)."""
    from envs.mujoco_tasks import TASK_CLASSES

    if task == "reacher":
        from envs.tasks.reacher import fingertip

        q = states[..., :2]
        return np.concatenate([np.cos(q), np.sin(q), fingertip(q) / 0.21], -1)
    if task == "point_maze":
        return states[..., :2]
    if task == "dmc_reacher":   # unwrapped joint angles: their cos/sin and the finger (the target is hidden)
        from envs.tasks.dmc_reacher import finger

        q = states[..., :2]
        return np.concatenate([np.cos(q), np.sin(q), finger(q) / 0.24], -1)
    if task == "pusht":   # agent and block xy in arena fractions, the (unwrapped) block angle as cos/sin
        from envs.tasks.pusht import ARENA

        angle = states[..., 4:5]
        return np.concatenate([states[..., :4] / ARENA, np.cos(angle), np.sin(angle)], -1)
    return states[..., :TASK_CLASSES[task].spec_.state_dim // 2]   # positions (qpos) of other tasks


def score_latents(z_tr: torch.Tensor, z_te: torch.Tensor, a_te: torch.Tensor, s_tr: np.ndarray, s_te: np.ndarray,
                  task: str, predict: Predict, history: int) -> dict:
    """All proxy scores of one representation: train/held-out latents (E, T1, D), held-out
    actions (E, T1-1, A) and true states (E, T1, S)."""
    zn_tr, zn_te = z_tr.flatten(0, 1).numpy(), z_te.flatten(0, 1).numpy()
    y_tr, y_te = pose_features(task, s_tr), pose_features(task, s_te)
    y_tr, y_te = y_tr.reshape(len(zn_tr), -1), y_te.reshape(len(zn_te), -1)
    pred = _ridge_predict(zn_tr, y_tr, zn_te)
    parts = {name: round(_r2(pred[:, cols], y_te[:, cols]), 3) for name, cols in POSE_PARTS.get(task, {}).items()}
    return {"probe_r2": round(_r2(pred, y_te), 3), **({"probe_r2_parts": parts} if parts else {}),
            **cost_quality(z_te.numpy(), s_te, pair_distance(task)), **action_gain(z_te, a_te, predict, history)}


# ----------------------------------------------------------------------------- data

@dataclass
class EpisodeArrays:
    """All episodes of a dataset, split by episode: frames uint8 (E, T1, 3, H, W), actions
    float32 (E, T1-1, A), states (E, T1, S)."""
    frames: torch.Tensor
    actions: torch.Tensor
    states: np.ndarray
    task: str
    n_train: int
    action_scale: float          # the task's action bound (actions lie in [-scale, scale])

    def split(self, name: str):
        sl = slice(0, self.n_train) if name == "train" else slice(self.n_train, None)
        return self.frames[sl], self.actions[sl], self.states[sl]


def load_episodes(root: str, holdout: float, image_size: int = 0) -> EpisodeArrays:
    """Every episode of a dataset in memory (frames as uint8), the last `holdout` fraction held out."""
    from pretrain.data.datasets import manifest_action_scale
    from pretrain.data.shards import Dataset

    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout={holdout}, expected a fraction in (0, 1)")
    ds = Dataset(root)
    if len(ds) < 2:
        raise ValueError(f"dataset {root!r} has {len(ds)} episodes, expected at least 2 (train + held-out)")
    shards = [ds.load_shard(i) for i in range(len(ds.shards))]
    lengths = sorted({s["frames"].shape[1] for s in shards})
    if len(lengths) != 1:
        raise ValueError(f"dataset {root!r} mixes episode lengths {lengths} frames; expected one length "
                         "(collect it with one episode_steps)")
    frames = torch.from_numpy(np.concatenate([s["frames"] for s in shards])).permute(0, 1, 4, 2, 3).contiguous()
    if image_size and frames.shape[-1] != image_size:
        E, T1 = frames.shape[:2]
        frames = F.interpolate(frames.flatten(0, 1).float(), size=(image_size, image_size), mode="area"
                               ).round().clamp(0, 255).to(torch.uint8).view(E, T1, 3, image_size, image_size)
    actions = torch.from_numpy(np.concatenate([s["actions"] for s in shards]).astype(np.float32))
    states = np.concatenate([s["states"] for s in shards])
    n_held = max(1, int(round(len(frames) * holdout)))
    return EpisodeArrays(frames, actions, states, ds.task, len(frames) - n_held, manifest_action_scale(ds.manifest))


@torch.no_grad()
def encode_episodes(encode: Callable[[torch.Tensor], torch.Tensor], frames: torch.Tensor, chunk: int = 2048,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 frames (E, T1, 3, H, W) -> latent vectors (E, T1, D) on the CPU, in chunks."""
    flat = frames.flatten(0, 1)
    out = [encode(flat[i:i + chunk].to(device).float().div_(255)).flatten(1).float().cpu()
           for i in range(0, len(flat), chunk)]
    return torch.cat(out).view(*frames.shape[:2], -1)


# ----------------------------------------------------------------------------- program

def _load_rep(path: str):
    """(encode images -> (B, N, C), the JEPA or None, image size) of a representation folder."""
    from worldmodel import hub

    kind = hub.read_config(path).get("kind")
    if kind == "jepa":
        from worldmodel.jepa import JEPA
        m = JEPA.from_pretrained(path)
        return m.encoder, m, m.cfg.image_size
    if kind == "rae":
        from worldmodel.rae import RAE
        r = RAE.from_pretrained(path)
        return r.encode, None, r.image_size
    raise ValueError(f"{path!r} holds a {kind!r} model; expected a 'jepa' folder (lw train-encoder method=jepa) "
                     "or an 'rae' folder (lw train-rae)")


def fit_mlp_predictor(z: torch.Tensor, actions: torch.Tensor, history: int, minutes: float, batch_size: int,
                      lr: float, seed: int, action_scale: float) -> Predict:
    """A fresh residual MLP predictor trained for `minutes` on frozen latents (E, T1, D) with 2-step unrolls."""
    from worldmodel.jepa import LatentPredictor

    torch.manual_seed(seed)
    E, T1, D = z.shape
    net = LatentPredictor(D, history, actions.shape[-1], 512, 2)
    opt = torch.optim.AdamW(net.parameters(), lr, weight_decay=1e-4)
    R, t0 = 2, time.monotonic()
    gen = torch.Generator().manual_seed(seed)
    while time.monotonic() - t0 < minutes * 60:
        e = torch.randint(0, E, (batch_size,), generator=gen)
        t = torch.randint(history - 1, T1 - R, (batch_size,), generator=gen)
        zi = torch.arange(-history + 1, R + 1)[None] + t[:, None]                # (B, h+R)
        win = z[e[:, None], zi]
        pred = net.unroll(win[:, :history], actions[e[:, None], t[:, None] + torch.arange(R)] / action_scale)
        loss = F.mse_loss(pred, win[:, history:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    return lambda zh, a: net.unroll(zh, a / action_scale)


def probe(cfg: ProbeLatentConfig) -> dict:
    set_threads(cfg.threads)
    if not cfg.rep:
        raise ValueError("rep= is empty; expected a representation folder (lw train-encoder method=jepa, or lw train-rae)")
    t0 = time.monotonic()
    encode, jepa, size = _load_rep(cfg.rep)
    eps = load_episodes(cfg.data, cfg.holdout, size)
    f_tr, a_tr, s_tr = eps.split("train")
    f_te, a_te, s_te = eps.split("held")
    z_tr, z_te = encode_episodes(encode, f_tr), encode_episodes(encode, f_te)
    scale = eps.action_scale
    res: dict = {"rep": cfg.rep, "data": cfg.data, "latent_size": z_tr.shape[-1],
                 "train_episodes": len(f_tr), "heldout_episodes": len(f_te)}
    if jepa is not None:
        tid = task_index(jepa.extra, eps.task) if jepa.cfg.task_heads else None   # task-conditioned heads
        own = lambda zh, a: jepa.predictor.unroll(zh, jepa.scale_actions(a), tid)  # noqa: E731
        res["own"] = score_latents(z_tr, z_te, a_te, s_tr, s_te, eps.task, own, jepa.cfg.history)
    if cfg.minutes > 0:
        mlp = fit_mlp_predictor(z_tr, a_tr, cfg.history, cfg.minutes, cfg.batch_size, cfg.lr, cfg.seed, scale)
        res["mlp"] = score_latents(z_tr, z_te, a_te, s_tr, s_te, eps.task, mlp, cfg.history)
    res["seconds"] = round(time.monotonic() - t0, 1)
    return res
