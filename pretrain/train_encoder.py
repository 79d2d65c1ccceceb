"""`lw train-encoder`: pretrain the offline ('own') ViT encoder with masked autoencoding
(`method=mae`, this module) or a representation for control (`method=jepa`, pretrain.train_jepa).

    lw train-encoder data=data/reacher out=runs/mae_reacher max_minutes=5

Frames of the training episodes (the last `holdout` fraction of each dataset's episodes is held
out, never frames of training episodes; `data=[...]` pools several datasets of one frame size) are held in memory as uint8. Each step hides 75% of
the patches of a batch, runs the encoder on the visible ones and a light decoder
predicts the per-patch normalised pixels of the hidden ones. Held-out loss, PSNR/SSIM of
the pasted reconstruction, and a PNG grid (originals | masked | reconstructions) are
written periodically; the MAE (whose `encoder.*` is what `lw train-rae` freezes) is saved
with save_pretrained, periodically and at the end.

Its frame helpers live in pretrain.frames (shared with train_rae), the budget and the
schedule in pretrain.optim, the log and the bar in pretrain.metrics.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from pretrain.frames import eval_subset, load_frame_split, save_grid, to_float
from pretrain.metrics import MetricsLogger, progress_bar, save_resolved, tqdm_write
from pretrain.optim import Budget, lr_factor
from worldmodel.device import resolve_device, set_threads


@dataclass
class TrainEncoderConfig:
    method: str = "mae"             # mae (this trainer) | jepa (pretrain.train_jepa: a representation for control)
    data: Any = "data/reacher"      # episode dataset root (lw collect), or a list of roots: one model over
                                    # several tasks (data=[data/reacher,data/point_maze])
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


# ----------------------------------------------------------------------------- program

def train(cfg: TrainEncoderConfig) -> dict:
    from pretrain.image_metrics import psnr, ssim
    from worldmodel.vit import MAE, MAEConfig, ViTConfig

    set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    save_resolved(cfg, out)
    log = MetricsLogger(out, tensorboard=False, append=True)

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
    bar = progress_bar(cfg.steps if cfg.max_minutes <= 0 else None, "train-encoder", cfg.progress)
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
        lr = cfg.lr * lr_factor(step, budget.frac(step), cfg.warmup_steps, cfg.min_lr_frac)
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
    log.close()
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
