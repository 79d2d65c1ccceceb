"""`lw train-encoder method=jepa`: train a representation for control (worldmodel.jepa).

    lw train-encoder method=jepa data=data/reacher out=runs/jepa_reacher max_minutes=20
    lw train-encoder method=jepa data=[data/reacher,data/point_maze] out=runs/jepa_both   # one over two tasks
    lw train-encoder method=jepa data=[...] init_from=runs/jepa_reacher out=runs/jepa_all  # from reacher's own

Episodes are held in memory as uint8 frames; the last `holdout` fraction of each dataset's
episodes is never trained on. With several datasets (one frame size, one action dim) the
windows come from each in proportion to its windows, or by `dataset_weights` (each dataset's
share of a batch, as `lw pretrain`'s data.dataset_weights), and the proxy scores are each
dataset's. Each step samples windows of `history + rollout_steps` consecutive frames
and the actions between them, and trains encoder, predictor and inverse-dynamics head
together (`JEPA.loss`). Every `eval_every` steps the held-out proxy scores of
`pretrain.latent_probe` (action gain at 1 and 5 steps, latent-cost Spearman, state probe
R^2, per-dimension std) go to metrics.jsonl and the console, and the folder is saved
atomically with the optimiser and RNG state (pretrain.safe_state: no pickle), so `resume=true`
continues a killed run. `init_from` starts a new run from another JEPA folder's weights (same
shapes; a fresh optimiser): a shared JEPA started from reacher's own keeps reacher's precision,
which one trained from scratch never reaches (docs/EXPERIMENTS.md 42). The finished folder is what
`lw train-rae encoder=jepa encoder_weights=...` freezes, and what the benchmark's `jepa` row plans with.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from pretrain.data.datasets import dataset_roots, dataset_shares, task_bounds
from pretrain.latent_probe import EpisodeArrays, encode_episodes, load_episodes, score_latents
from pretrain.safe_state import load_state, save_state
from pretrain.metrics import MetricsLogger, progress_bar, save_resolved, to_dict, tqdm_write
from pretrain.optim import Budget, lr_factor
from worldmodel.errors import ConfigError
from worldmodel.tasks import model_actions
from worldmodel.device import resolve_device, set_threads


@dataclass
class TrainJEPAConfig:
    method: str = "jepa"            # lw train-encoder method=jepa (method=mae: the MAE trainer)
    data: Any = "data/reacher"      # episode dataset root (lw collect), or a list of roots: one model over
                                    # several tasks (data=[data/reacher,data/point_maze])
    out: str = "runs/jepa_reacher"  # run folder = the model folder (config.json + model.safetensors)
    holdout: float = 0.15           # last fraction of episodes held out for the proxy scores
    dataset_weights: list[float] = field(default_factory=list)  # each dataset's share of a batch's windows
                                    # (normalised); [] = in proportion to each dataset's windows
    # model (worldmodel.jepa.JEPAConfig)
    image_size: int = 64
    input_size: int = 32            # frames are average-pooled to this before the CNN
    channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    hidden: int = 256
    grid: list[int] = field(default_factory=lambda: [1, 1])   # latent tokens per frame (grid_h, grid_w)
    latent_dim: int = 32            # channels per token
    history: int = 2                # frames the predictor reads
    pred_hidden: int = 512
    pred_layers: int = 2
    head_norm: str = "batch"        # batch | layer | none: the encoder head's norm (layer: a frame's latent
                                    # does not depend on its batch, nor on the other tasks in it)
    task_heads: bool = False        # several tasks: the predictor and inverse head read the task (one-hot);
                                    # the encoder stays one shared map that never sees it (EXPERIMENTS 42)
    # loss
    rollout_steps: int = 2          # R: predictions unrolled on their own outputs in training
    regularizer: str = "vicreg"     # vicreg | sigreg (anti-collapse term on the embeddings)
    reg_weight: float = 1.0
    pred_loss: str = "mse"          # mse | relative: the prediction error as a fraction of each task's latent
                                    # variance (scale-free: a task cannot lower it by shrinking; EXPERIMENTS 41)
    inverse_weight: float = 1.0     # inverse-dynamics loss weight (0 = off)
    recon_weight: float = 0.0       # pixel-reconstruction loss weight (0 = off, no decoder); PushT: 1.0
    # optimisation
    batch_size: int = 96
    lr: float = 1e-3
    min_lr_frac: float = 0.1        # cosine to lr * min_lr_frac; 1.0 = constant (the shipped encoders, EXPERIMENTS 11)
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    steps: int = 1_000_000          # upper bound; the run stops at steps or max_minutes
    max_minutes: float = 20.0       # wall-clock budget (<= 0: no limit)
    # bookkeeping
    eval_every: int = 1000          # steps between held-out proxy scores and saves
    eval_episodes: int = 200        # held-out episodes scored (the first ones)
    resume: bool = False            # continue the run in `out` (step, optimiser, RNG)
    init_from: str = ""             # start from this JEPA folder's weights (same architecture; a fresh optimiser
                                    # and schedule): a second stage, or a curriculum from a specialist
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    progress: bool = True


STATE_FILE = "train_state.safetensors"


def _save_train_state(out: Path, opt: torch.optim.Optimizer, gen: torch.Generator, step: int,
                      elapsed_s: float) -> None:
    """Optimiser, sampler RNG, step and time spent in one pickle-free file (pretrain.safe_state),
    written atomically: resuming runs no code from the run folder."""
    tmp = out / f".{STATE_FILE}.tmp"
    save_state(tmp, {"optimizer": opt.state_dict(), "generator": gen.get_state(), "step": step,
                     "elapsed_s": elapsed_s})
    tmp.replace(out / STATE_FILE)


def _load_train_state(out: Path, opt: torch.optim.Optimizer, gen: torch.Generator) -> tuple[int, float]:
    state = load_state(out / STATE_FILE)
    opt.load_state_dict(state["optimizer"])
    gen.set_state(state["generator"])
    return int(state["step"]), float(state["elapsed_s"])


def _windows(datasets: list[EpisodeArrays], n: int, h: int, R: int, gen: torch.Generator, device,
             shares: list[float] | None = None):
    """n random training windows: frames (n, h+R, 3, H, W) float in [0, 1], actions (n, R, A) and the
    dataset of each (n,), drawn from each dataset's training episodes by `shares`, or (None) in
    proportion to its windows."""
    counts = [n]
    if len(datasets) > 1:
        weights = torch.tensor(shares) if shares is not None else torch.tensor(
            [float(len(d.split("train")[0]) * (d.frames.shape[1] - h - R + 1)) for d in datasets])
        counts = torch.multinomial(weights, n, replacement=True, generator=gen).bincount(minlength=len(datasets)).tolist()
    xs, acts = [], []
    for eps, k in zip(datasets, counts):
        frames, actions, _ = eps.split("train")
        E, T1 = frames.shape[:2]
        e = torch.randint(0, E, (k,), generator=gen)
        t = torch.randint(0, T1 - h - R + 1, (k,), generator=gen)           # first frame of the window
        fi = t[:, None] + torch.arange(h + R)
        ai = t[:, None] + h - 1 + torch.arange(R)                            # a[t+h-1] moves frame h-1 -> h
        xs.append(frames[e[:, None], fi].to(device).float().div_(255))
        acts.append(actions[e[:, None], ai].to(device))
    groups = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts)).to(device)
    return torch.cat(xs), torch.cat(acts), groups


def load_datasets(data, holdout: float, image_size: int) -> dict[str, EpisodeArrays]:
    """Every dataset of `data` (one root or a list) in memory, by task (by root where a task repeats);
    one frame size and action dim, else a DataError naming the dataset."""
    from pretrain.data.datasets import dataset_roots, open_datasets

    datasets = open_datasets(dataset_roots(data))
    repeated = len({ds.task for ds in datasets}) < len(datasets)
    return {str(ds.root) if repeated else ds.task: load_episodes(str(ds.root), holdout, image_size) for ds in datasets}


def describe_scores(scores: dict) -> str:
    """The headline proxy scores of one dataset's `evaluate`, or of each dataset's (`by_dataset`)."""
    if "by_dataset" in scores:
        return "; ".join(f"{name}: {describe_scores(s)}" for name, s in scores["by_dataset"].items())
    return (f"gain 1/5 steps {scores['k1']['action_gain']}/{scores['k5']['action_gain']}, spearman "
            f"{scores['spearman']}, probe R2 {scores['probe_r2']}"
            f"{' ' + str(scores['probe_r2_parts']) if 'probe_r2_parts' in scores else ''}, "
            f"min std {scores['latent_std_min']}")


@torch.no_grad()
def evaluate(model, eps: EpisodeArrays, n_eval: int, device, task_id: int | None = None) -> dict:
    """The held-out proxy scores (pretrain.latent_probe) with the model's own predictor (told `task_id`
    where its heads read the task)."""
    model.eval()
    f_tr, _, s_tr = eps.split("train")
    f_te, a_te, s_te = eps.split("held")
    f_te, a_te, s_te = f_te[:n_eval], a_te[:n_eval], s_te[:n_eval]
    k = min(len(f_tr), n_eval)
    z_tr = encode_episodes(model.encoder, f_tr[:k], device=device)
    z_te = encode_episodes(model.encoder, f_te, device=device)
    cpu = model.predictor.to("cpu")
    res = score_latents(z_tr, z_te, a_te, s_tr[:k], s_te, eps.task,
                        lambda zh, a: cpu.unroll(zh, model.scale_actions(a), task_id), model.cfg.history)
    model.predictor.to(device)
    std = z_te.flatten(0, 1).std(0)
    res["latent_std_min"], res["latent_std_mean"] = round(float(std.min()), 4), round(float(std.mean()), 4)
    model.train()
    return res


def train(cfg: TrainJEPAConfig) -> dict:
    from worldmodel.jepa import JEPA, PRED_LOSSES, JEPAConfig

    if cfg.pred_loss not in PRED_LOSSES:
        raise ConfigError(f"pred_loss={cfg.pred_loss!r}, expected one of {PRED_LOSSES}")
    if cfg.recon_weight < 0:
        raise ConfigError(f"recon_weight={cfg.recon_weight}, expected >= 0 (0 = no reconstruction)")
    set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    shares = dataset_shares(cfg.dataset_weights, len(dataset_roots(cfg.data)))   # checked before anything is written
    if cfg.resume and not (out / STATE_FILE).is_file():
        raise FileNotFoundError(f"resume=true but {str(out / STATE_FILE)!r} does not exist; expected the folder "
                                f"of an earlier `lw train-encoder method=jepa` run (or resume=false)")
    if not cfg.resume:  # the model's save_pretrained then replaces config.json (its extra keeps this config)
        save_resolved(cfg, out)
    log = MetricsLogger(out, tensorboard=False, append=True)
    datasets = load_datasets(cfg.data, cfg.holdout, cfg.image_size)
    scales, scale = task_bounds((eps.task, eps.action_scale) for eps in datasets.values())   # the world model's rule
    for eps in datasets.values():   # each task's actions reach the predictor as a fraction of its own bound
        eps.actions = model_actions(eps.actions, scales[eps.task], scale)
    first = next(iter(datasets.values()))
    tasks = [eps.task for eps in datasets.values()]
    if cfg.task_heads and len(set(tasks)) != len(tasks):
        raise ConfigError(f"task_heads=true reads each dataset as one task, but data={cfg.data!r} repeats a task "
                          f"({tasks}); expected one dataset per task")
    mcfg = JEPAConfig(cfg.image_size, cfg.input_size, tuple(cfg.channels), cfg.hidden, tuple(cfg.grid),
                      cfg.latent_dim, first.actions.shape[-1], scale, cfg.history, cfg.pred_hidden, cfg.pred_layers,
                      reconstruct=cfg.recon_weight > 0, head_norm=cfg.head_norm,
                      task_heads=len(tasks) if cfg.task_heads else 0)
    if cfg.history < 2 and cfg.inverse_weight > 0:
        raise ValueError("inverse_weight > 0 reads (z[t-1], z[t], z[t+1]); it needs history >= 2 (or inverse_weight=0)")
    model = JEPA(mcfg).to(device)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    step, spent = 0, 0.0
    if cfg.init_from and not cfg.resume:   # a resumed run's own weights already hold what it started from
        from pretrain.train import init_weights_from
        print(init_weights_from(model, cfg.init_from, JEPA.KIND, "lw train-encoder method=jepa"), flush=True)
    if cfg.resume:
        model.load_state_dict(JEPA.from_pretrained(out).state_dict())
        step, spent = _load_train_state(out, opt, gen)
        print(f"train-encoder jepa: resumed {out} at step {step} ({spent / 60:.1f} min spent)", flush=True)
    n_params = sum(p.numel() for p in model.encoder.parameters())
    n_train = sum(eps.n_train for eps in datasets.values())
    n_held = sum(len(eps.frames) for eps in datasets.values()) - n_train
    print(f"train-encoder jepa: {n_train} train / {n_held} held-out episodes of "
          f"{cfg.data!r} ({', '.join(tasks)}); encoder {n_params / 1e6:.2f}M params -> {mcfg.tokens}x{mcfg.latent_dim} latent; "
          f"{cfg.regularizer} x{cfg.reg_weight}, inverse x{cfg.inverse_weight}, recon x{cfg.recon_weight}, R={cfg.rollout_steps}; device {device}",
          flush=True)
    budget = Budget(cfg.steps, cfg.max_minutes)
    budget.t0 -= spent  # the budget and the schedule count the time of earlier runs
    # the tasks it was trained on, as a world-model folder names them (worldmodel.world.covered_tasks)
    several = {"tasks": list(dict.fromkeys(tasks)), "action_scales": scales}
    extra = {**({"task": tasks[0]} if len(set(tasks)) == 1 else several),
             "data": cfg.data, "train_config": to_dict(cfg)}
    bar = progress_bar(None, "train-encoder jepa", cfg.progress)
    last: dict = {}

    def scores() -> dict:
        per = {name: evaluate(model, eps, cfg.eval_episodes, device, i if mcfg.task_heads else None)
               for i, (name, eps) in enumerate(datasets.items())}
        return {"step": step, "minutes": round(budget.elapsed() / 60, 2),
                **(per[next(iter(per))] if len(per) == 1 else {"by_dataset": per})}

    def checkpoint() -> None:
        model.save_pretrained(out, extra={**extra, "step": step, "scores": last})
        _save_train_state(out, opt, gen, step, budget.elapsed())

    model.train()
    while not budget.done(step):
        lr = cfg.lr * lr_factor(step, budget.frac(step), cfg.warmup_steps, cfg.min_lr_frac)
        for g in opt.param_groups:
            g["lr"] = lr
        frames, actions, groups = _windows(list(datasets.values()), cfg.batch_size, cfg.history, cfg.rollout_steps,
                                           gen, device, shares)
        loss, parts = model.loss(frames, actions, cfg.regularizer, cfg.reg_weight, cfg.inverse_weight,
                                  cfg.recon_weight, groups=groups if len(datasets) > 1 else None,
                                  pred_loss=cfg.pred_loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{parts['loss']:.4f}", refresh=False)
        if step % 50 == 0 or step == 1:
            log.write(step=step, minutes=round(budget.elapsed() / 60, 3), lr=lr, **parts)
        if step % cfg.eval_every == 0:
            last = scores()
            log.write(**last)
            tqdm_write(f"step {step} ({last['minutes']} min): {describe_scores(last)}")
            checkpoint()
    bar.close()
    if last.get("step") != step:
        last = scores()
        log.write(**last, final=True)
    log.close()
    checkpoint()
    summary = {**last, "config": asdict(cfg)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"train-encoder jepa: {step} steps in {budget.elapsed() / 60:.1f} min; held-out {describe_scores(last)}; "
          f"saved {out}", flush=True)
    return summary
