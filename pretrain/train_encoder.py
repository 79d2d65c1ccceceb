"""`lw train-encoder`: pretrain the offline ('own') ViT encoder with masked autoencoding
(`method=mae`, this module) or a representation for control (`method=jepa`, pretrain.train_jepa).

    lw train-encoder data=data/reacher out=runs/mae_reacher max_minutes=5

Frames of the training episodes (the last `holdout` fraction of episodes is held out,
never frames of training episodes) are held in memory as uint8. Each step hides 75% of
the patches of a batch, runs the encoder on the visible ones and a light decoder
predicts the per-patch normalised pixels of the hidden ones. Held-out loss, PSNR/SSIM of
the pasted reconstruction, and a PNG grid (originals | masked | reconstructions) are
written periodically; the MAE (whose `encoder.*` is what `lw train-rae` freezes) is saved
with save_pretrained, periodically and at the end.

The helpers below (frame loading, run folder, budget, grids) are shared with train_rae.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pretrain.config import compose, save_resolved, to_dict, wants_print
from worldmodel.device import resolve_device, set_threads


@dataclass
class TrainEncoderConfig:
    method: str = "mae"             # mae (this trainer) | jepa (pretrain.train_jepa: a representation for control)
    data: str = "data/reacher"      # episode dataset root (lw collect)
    out: str = "runs/mae_reacher"   # run folder; the model is saved here (config.json + model.safetensors)
    holdout: float = 0.1            # last fraction of episodes held out for evaluation
    image_size: int = 64            # frames are resized to this if the dataset differs
    # encoder (kept and frozen afterwards)
    patch_size: int = 16            # 64/16 -> 4x4 = 16 tokens per frame
    dim: int = 192                  # token width = latent channels
    depth: int = 6
    heads: int = 3
    # MAE's light decoder (thrown away after pretraining)
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    mask_ratio: float = 0.75        # fraction of patches hidden from the encoder
    norm_pix_loss: bool = True      # per-patch normalised pixel targets
    visible_loss_weight: float = 0.0  # also reconstruct visible patches (0 = plain MAE)
    # optimisation
    batch_size: int = 64
    lr: float = 1.5e-3              # peak AdamW learning rate
    min_lr_frac: float = 0.1        # cosine decays to lr * min_lr_frac
    weight_decay: float = 0.05
    warmup_steps: int = 100
    steps: int = 100_000            # upper bound on steps; the run stops at steps or max_minutes
    max_minutes: float = 4.0        # wall-clock budget (<= 0: no limit); the cosine follows the budget
    # bookkeeping
    eval_every: int = 100           # steps between held-out evaluations
    eval_frames: int = 256          # held-out frames used per evaluation
    save_every: int = 1000          # steps between checkpoints (atomic save_pretrained)
    seed: int = 0
    device: str = "auto"            # auto | cpu | cuda | cuda:N
    threads: int = 0                # torch CPU threads (0 = torch default)
    progress: bool = True           # tqdm progress bar


# ----------------------------------------------------------------------------- shared helpers

def load_frame_split(root: str, holdout: float, image_size: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """All frames of the dataset as uint8 (n, 3, H, W): (train, held-out, info).

    The held-out set is the last `holdout` fraction of episodes (at least one), so no frame
    of a training episode is ever evaluated on.
    """
    from pretrain.data.shards import Dataset

    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout={holdout}, expected a fraction in (0, 1)")
    ds = Dataset(root)
    n_ep = len(ds)
    if n_ep < 2:
        raise ValueError(f"dataset {root!r} has {n_ep} episodes, expected at least 2 (train + held-out)")
    n_held = max(1, int(round(n_ep * holdout)))
    first_held = n_ep - n_held
    train, held = [], []
    for i, entry in enumerate(ds.shards):
        frames = ds.load_shard(i)["frames"]  # (E, T+1, H, W, 3)
        for j in range(entry["n_episodes"]):
            (held if entry["first_episode"] + j >= first_held else train).append(frames[j])
    def to_tensor(chunks):
        x = torch.from_numpy(np.concatenate(chunks)).permute(0, 3, 1, 2).contiguous()  # (n, 3, H, W)
        if x.shape[-1] != image_size or x.shape[-2] != image_size:
            x = F.interpolate(x.float(), size=(image_size, image_size), mode="bilinear", antialias=True,
                              align_corners=False).round().clamp(0, 255).to(torch.uint8)
        return x
    info = {"episodes": n_ep, "train_episodes": first_held, "heldout_episodes": n_held, "task": ds.task}
    return to_tensor(train), to_tensor(held), info


def to_float(frames_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    return frames_u8.to(device, non_blocking=True).float().div_(255)


def eval_subset(held: torch.Tensor, n: int) -> torch.Tensor:
    """A fixed, evenly spread subset of held-out frames (the same at every evaluation)."""
    idx = torch.linspace(0, len(held) - 1, min(n, len(held))).round().long()
    return held[idx]


class Budget:
    """Stop at `steps` or after `max_minutes`; `frac()` is the schedule position in [0, 1]."""

    def __init__(self, steps: int, max_minutes: float):
        if steps < 1:
            raise ValueError(f"steps={steps}, expected >= 1")
        self.steps, self.seconds = steps, max_minutes * 60 if max_minutes > 0 else math.inf
        self.t0, self.cpu0 = time.monotonic(), time.process_time()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def cpu(self) -> float:
        """CPU seconds of this process (all threads) since the start: shows how busy the machine was."""
        return time.process_time() - self.cpu0

    def frac(self, step: int) -> float:
        return min(1.0, max(step / self.steps, self.elapsed() / self.seconds))

    def done(self, step: int) -> bool:
        return step >= self.steps or self.elapsed() >= self.seconds


def lr_at(step: int, frac: float, lr: float, warmup: int, min_frac: float) -> float:
    """Linear warmup over `warmup` steps, then cosine from lr to lr*min_frac over the budget."""
    warm = min(1.0, (step + 1) / max(1, warmup))
    return lr * warm * (min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * frac)))


class MetricsLog:
    """Appends one JSON object per line to run_dir/metrics.jsonl."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **record) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def save_grid(path: Path, rows: list[torch.Tensor], n: int = 8, scale: int = 2) -> None:
    """PNG with one row per tensor (B, 3, H, W) in [0, 1]: e.g. originals | reconstructions."""
    import imageio.v3 as iio

    idx = torch.linspace(0, len(rows[0]) - 1, min(n, len(rows[0]))).round().long()  # spread over the set
    strips = [torch.cat(list(r[idx].detach().float().cpu().clamp(0, 1)), dim=2) for r in rows]  # (3, H, n*W)
    img = (torch.cat(strips, dim=1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    img = img.repeat(scale, 0).repeat(scale, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    iio.imwrite(tmp, img)
    tmp.replace(path)


def progress_bar(enabled: bool, total: int | None, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True, mininterval=2.0)


def tqdm_write(msg: str) -> None:
    """Print above the progress bar and flush (logs redirected to files stay current)."""
    from tqdm import tqdm

    tqdm.write(msg)
    sys.stdout.flush()


# ----------------------------------------------------------------------------- program

def train(cfg: TrainEncoderConfig) -> dict:
    from pretrain.image_metrics import psnr, ssim
    from worldmodel.vit import MAE, MAEConfig, ViTConfig

    set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    save_resolved(cfg, out)
    log = MetricsLog(out)

    train_u8, held_u8, info = load_frame_split(cfg.data, cfg.holdout, cfg.image_size)
    held_eval = to_float(eval_subset(held_u8, cfg.eval_frames), device)
    mae_cfg = MAEConfig(ViTConfig(cfg.image_size, cfg.patch_size, cfg.dim, cfg.depth, cfg.heads),
                        cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads, cfg.mask_ratio,
                        cfg.norm_pix_loss, cfg.visible_loss_weight)
    model = MAE(mae_cfg).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    n_enc = sum(p.numel() for p in model.encoder.parameters())
    n_dec = sum(p.numel() for p in model.decoder.parameters())
    print(f"train-encoder: MAE on {len(train_u8)} train frames ({info['train_episodes']} episodes), "
          f"{len(held_u8)} held-out frames ({info['heldout_episodes']} episodes) of {cfg.data!r}\n"
          f"  encoder ViT {cfg.image_size}px/p{cfg.patch_size} -> {mae_cfg.encoder.grid ** 2} tokens x {cfg.dim}, "
          f"{n_enc / 1e6:.2f}M params; MAE decoder {n_dec / 1e6:.2f}M; batch {cfg.batch_size}, device {device}, "
          f"budget {cfg.steps} steps / {cfg.max_minutes} min", flush=True)

    gen = torch.Generator().manual_seed(cfg.seed)
    eval_gen_seed = cfg.seed + 1
    budget = Budget(cfg.steps, cfg.max_minutes)
    bar = progress_bar(cfg.progress, cfg.steps if cfg.max_minutes <= 0 else None, "train-encoder")
    step, last = 0, {}

    def evaluate() -> dict:
        model.eval()
        with torch.no_grad():
            g = torch.Generator(device=device).manual_seed(eval_gen_seed)  # same masks every time
            loss, pred, mask = model(held_eval, generator=g)
            recon = model.reconstruct(held_eval, pred, mask)
        model.train()
        rec = {"step": step, "minutes": round(budget.elapsed() / 60, 3),
               "cpu_minutes": round(budget.cpu() / 60, 3), "heldout_loss": loss.item(),
               "heldout_psnr_masked": psnr(recon, held_eval).item(), "heldout_ssim_masked": ssim(recon, held_eval).item()}
        hidden = _pixel_mask(mask, model).float()  # (B, 1, H, W)
        masked = held_eval * (1 - hidden) + 0.5 * hidden  # hidden patches shown grey
        save_grid(out / "samples.png", [held_eval, masked, recon])
        return rec

    model.train()
    while not budget.done(step):
        lr = lr_at(step, budget.frac(step), cfg.lr, cfg.warmup_steps, cfg.min_lr_frac)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, len(train_u8), (cfg.batch_size,), generator=gen)
        loss, _, _ = model(to_float(train_u8[idx], device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}", refresh=False)
        if step % 20 == 0 or step == 1:
            log.write(step=step, minutes=round(budget.elapsed() / 60, 3), loss=loss.item(), lr=lr)
        if step % cfg.eval_every == 0:
            last = evaluate()
            log.write(**last)
            tqdm_write(f"step {step}: held-out loss {last['heldout_loss']:.4f}, masked-recon PSNR "
                      f"{last['heldout_psnr_masked']:.2f} dB, SSIM {last['heldout_ssim_masked']:.4f}")
        if step % cfg.save_every == 0:
            model.save_pretrained(out)
    bar.close()
    if last.get("step") != step:
        last = evaluate()
    log.write(**last, final=True)
    model.save_pretrained(out)
    summary = {**last, "steps": step, "train_frames": len(train_u8), "heldout_frames": len(held_u8),
               "config": asdict(cfg)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"train-encoder: {step} steps in {budget.elapsed() / 60:.1f} min; held-out MAE loss "
          f"{last['heldout_loss']:.4f}, masked-recon PSNR {last['heldout_psnr_masked']:.2f} dB; saved {out}")
    return summary


def _pixel_mask(mask: torch.Tensor, model) -> torch.Tensor:
    """(B, N) patch mask -> (B, 1, H, W) pixel mask (True = hidden), for the sample grid."""
    p = model.cfg.encoder.patch_size
    g = model.decoder.grid
    return mask.reshape(-1, 1, g[0], g[1]).repeat_interleave(p, 2).repeat_interleave(p, 3)


def main(overrides: list[str]) -> int:
    methods = [o.split("=", 1)[1] for o in overrides if o.startswith("method=")]
    method = methods[-1] if methods else "mae"
    if method == "jepa":
        from pretrain import train_jepa
        return train_jepa.main(overrides)
    if method != "mae":
        raise ValueError(f"method={method!r}, expected 'mae' (masked autoencoder) or 'jepa' (predictive, for control)")
    show, overrides = wants_print(overrides)
    cfg = compose(TrainEncoderConfig, "train_encoder", overrides)
    if show:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    train(cfg)
    return 0
