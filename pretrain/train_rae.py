"""`lw train-rae`: train the RAE pixel decoder on a frozen representation encoder.

    lw train-rae data=data/reacher encoder=own encoder_weights=runs/mae_reacher out=runs/rae_reacher
    lw train-rae encoder=timm:vit_small_patch14_dinov2 encoder_weights=/path/model.safetensors ...
    lw train-rae data=[data/reacher,data/point_maze] encoder=jepa encoder_weights=runs/jepa_both out=runs/rae_both

A list of datasets (one frame size) is one pool of frames, each dataset held out on its own.

1. Build the frozen encoder (local weights only) and fit the per-channel latent mean/std
   on training frames. 2. Encode every training frame once (the encoder is frozen and
   frames are not augmented, so cached latents are exact and save the encoder's forward
   pass at every step). 3. Train the ViT decoder with L1 (+ optional perceptual term) on
   noise-augmented latents, sigma = noise_tau * U(0, 1) per sample. Held-out PSNR/SSIM on
   clean latents and on latents with sigma = eval_noise noise, a PNG grid (originals |
   reconstructions | noisy-latent reconstructions), metrics.jsonl; the self-contained RAE
   folder is saved with save_pretrained periodically and at the end.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from pretrain.frames import eval_subset, load_frame_split, save_grid, to_float
from pretrain.metrics import MetricsLogger, progress_bar, save_resolved, tqdm_write
from pretrain.optim import Budget, lr_factor
from worldmodel.device import resolve_device, set_threads


@dataclass
class TrainRAEConfig:
    data: Any = "data/reacher"      # episode dataset root (lw collect), or a list of roots: one model over
                                    # several tasks (data=[data/reacher,data/point_maze])
    out: str = "runs/rae_reacher"   # the RAE folder (save_pretrained) and run logs
    holdout: float = 0.1            # last fraction of episodes held out for evaluation
    image_size: int = 64            # RAE pixel resolution (in and out)
    # frozen encoder
    encoder: str = "own"            # own | jepa | timm:<model name>
    encoder_weights: str = "runs/mae_reacher"  # own, jepa: lw train-encoder folder; timm: local file ("" = HF cache)
    input_size: int = 0             # encoder input resolution (0 = own size / image_size rounded to the patch)
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)  # extra timm.create_model kwargs
    stats_frames: int = 4096        # training frames used for the latent mean/std
    encode_batch: int = 256         # frames per encoder call when caching latents
    # ViT decoder
    decoder_dim: int = 192
    decoder_depth: int = 2
    decoder_heads: int = 3
    decoder_mlp_ratio: float = 4.0
    # loss
    noise_tau: float = 0.8          # latent noise sigma ~ noise_tau * U(0,1) (latents have std 1)
    mse_weight: float = 10.0        # > 0 adds an MSE term (PSNR's own loss; pulls thin structures in early)
    perceptual_weight: float = 0.0  # > 0 adds a feature-space loss (needs local weights)
    perceptual_net: str = "resnet18"  # timm CNN for the perceptual loss
    perceptual_weights: str = ""    # local weights file for it ("" = HF cache); missing -> fail fast
    # optimisation
    batch_size: int = 64
    lr: float = 3e-3
    min_lr_frac: float = 0.05
    weight_decay: float = 0.0
    warmup_steps: int = 50
    steps: int = 100_000            # the run stops at steps or max_minutes, whichever first
    max_minutes: float = 10.0       # wall-clock budget (<= 0: no limit); the cosine follows the budget
    # bookkeeping
    eval_every: int = 100
    eval_frames: int = 256
    eval_noise: float = 0.3         # held-out PSNR is also reported with this latent noise sigma
    save_every: int = 1000
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    progress: bool = True


class PerceptualLoss(nn.Module):
    """LPIPS-style distance without learned weights: mean squared difference of the unit-normalised
    feature maps of a frozen timm CNN at every stage. Weights from local files only."""

    def __init__(self, net: str, weights: str = ""):
        super().__init__()
        import timm
        from worldmodel.encoders import resolve_timm_weights

        file = resolve_timm_weights(net, weights or None)
        self.net = timm.create_model(net, pretrained=True, features_only=True,
                                     pretrained_cfg_overlay={"file": file})
        cfg = self.net.pretrained_cfg
        self.register_buffer("mean", torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1))
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.net.eval()

    def train(self, mode: bool = True):
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx = self.net((x - self.mean) / self.std)
        with torch.no_grad():
            fy = self.net((y - self.mean) / self.std)
        unit = lambda f: f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-8)  # noqa: E731
        return sum((unit(a) - unit(b)).pow(2).sum(1).mean() for a, b in zip(fx, fy)) / len(fx)


@torch.no_grad()
def encode_all(rae, frames_u8: torch.Tensor, batch: int, device: torch.device, desc: str,
               progress: bool) -> torch.Tensor:
    """Normalised latents of every frame: (n, 3, H, W) uint8 -> (n, N, C) float32 on `device`."""
    out = []
    bar = progress_bar(len(frames_u8), desc, progress)
    for s in range(0, len(frames_u8), batch):
        out.append(rae.encode(to_float(frames_u8[s:s + batch], device)))
        bar.update(min(batch, len(frames_u8) - s))
    bar.close()
    return torch.cat(out)


def train(cfg: TrainRAEConfig) -> dict:
    from pretrain.image_metrics import psnr, ssim
    from worldmodel.rae import RAE, RAEConfig

    set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    train_u8, held_u8, info = load_frame_split(cfg.data, cfg.holdout, cfg.image_size)

    rae_cfg = RAEConfig(cfg.image_size, cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads, cfg.decoder_mlp_ratio)
    rae = RAE.build(rae_cfg, cfg.encoder, cfg.encoder_weights or None, cfg.input_size, cfg.encoder_kwargs).to(device)
    perceptual = PerceptualLoss(cfg.perceptual_net, cfg.perceptual_weights).to(device) \
        if cfg.perceptual_weight > 0 else None
    save_resolved(cfg, out)
    log = MetricsLogger(out, tensorboard=False, append=True)
    budget = Budget(cfg.steps, cfg.max_minutes)  # the budget covers statistics + caching too
    n_dec = sum(p.numel() for p in rae.decoder.parameters())
    n_enc = sum(p.numel() for p in rae.encoder.parameters())
    print(f"train-rae: encoder {rae.encoder_id} ({n_enc / 1e6:.2f}M params, frozen, input "
          f"{rae.encoder.input_size}px) -> {rae.grid[0]}x{rae.grid[1]} tokens x {rae.latent_dim}; "
          f"decoder {n_dec / 1e6:.2f}M params -> {cfg.image_size}px\n"
          f"  {len(train_u8)} train frames ({info['train_episodes']} episodes), {len(held_u8)} held-out frames "
          f"({info['heldout_episodes']} episodes); batch {cfg.batch_size}, noise tau {cfg.noise_tau}, "
          f"device {device}, budget {cfg.steps} steps / {cfg.max_minutes} min", flush=True)

    # 1. latent statistics on an evenly spread subset of training frames
    stats_idx = torch.linspace(0, len(train_u8) - 1, min(cfg.stats_frames, len(train_u8))).round().long()
    stats_u8 = train_u8[stats_idx]
    rae.fit_latent_stats(to_float(stats_u8[s:s + cfg.encode_batch], device)
                         for s in range(0, len(stats_u8), cfg.encode_batch))
    # 2. every training frame encoded once (normalised latents)
    train_z = encode_all(rae, train_u8, cfg.encode_batch, device, "encode train frames", cfg.progress)
    held_eval = to_float(eval_subset(held_u8, cfg.eval_frames), device)
    held_z = rae.encode(held_eval)
    print(f"  latents cached in {budget.elapsed():.0f}s: {tuple(train_z.shape)}, "
          f"mean |mu| {rae.latent_mean.abs().mean():.3f}, mean std {rae.latent_std.mean():.3f}", flush=True)

    decay = [p for p in rae.decoder.parameters() if p.ndim >= 2]
    no_decay = [p for p in rae.decoder.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(cfg.seed)
    noise_gen = torch.Generator(device=device).manual_seed(cfg.seed + 7)
    bar = progress_bar(cfg.steps if cfg.max_minutes <= 0 else None, "train-rae", cfg.progress)
    step, last = 0, {}

    def evaluate() -> dict:
        rae.eval()
        with torch.no_grad():
            g = torch.Generator(device=device).manual_seed(cfg.seed + 1)  # the same noise every time
            clean = rae.decode(held_z)
            noisy = rae.decode(held_z + cfg.eval_noise * torch.randn(held_z.shape, device=device, generator=g))
        rae.train()
        save_grid(out / "samples.png", [held_eval, clean, noisy])
        return {"step": step, "minutes": round(budget.elapsed() / 60, 3), "cpu_minutes": round(budget.cpu() / 60, 3),
                "heldout_l1": (clean - held_eval).abs().mean().item(),
                "heldout_psnr": psnr(clean, held_eval).item(), "heldout_ssim": ssim(clean, held_eval).item(),
                "heldout_psnr_noisy": psnr(noisy, held_eval).item(),
                "heldout_ssim_noisy": ssim(noisy, held_eval).item()}

    rae.train()
    while not budget.done(step):
        lr = cfg.lr * lr_factor(step, budget.frac(step), cfg.warmup_steps, cfg.min_lr_frac)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, len(train_u8), (cfg.batch_size,), generator=gen)
        z = train_z[idx.to(train_z.device)]  # (B, N, C)
        x = to_float(train_u8[idx], device)
        if cfg.noise_tau > 0:  # RAE noise augmentation: sigma ~ tau * U(0, 1) per sample
            sigma = cfg.noise_tau * torch.rand(z.shape[0], 1, 1, device=device, generator=noise_gen)
            z = z + sigma * torch.randn(z.shape, device=device, generator=noise_gen)
        recon = rae.decode_patches(z)
        loss = l1 = (recon - x).abs().mean()
        if cfg.mse_weight > 0:
            loss = loss + cfg.mse_weight * (recon - x).pow(2).mean()
        if perceptual is not None:
            loss = loss + cfg.perceptual_weight * perceptual(recon.clamp(0, 1), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(l1=f"{l1.item():.4f}", lr=f"{lr:.2e}", refresh=False)
        if step % 20 == 0 or step == 1:
            log.write(step=step, minutes=round(budget.elapsed() / 60, 3), loss=loss.item(), l1=l1.item(), lr=lr)
        if step % cfg.eval_every == 0:
            last = evaluate()
            log.write(**last)
            tqdm_write(f"step {step} ({last['minutes']:.1f} min): held-out PSNR {last['heldout_psnr']:.2f} dB, "
                      f"SSIM {last['heldout_ssim']:.4f}; noisy latents (sigma {cfg.eval_noise}) "
                      f"PSNR {last['heldout_psnr_noisy']:.2f} dB")
        if step % cfg.save_every == 0:
            rae.save_pretrained(out)
    bar.close()
    if last.get("step") != step:
        last = evaluate()
    log.write(**last, final=True)
    log.close()
    rae.save_pretrained(out)
    summary = {**last, "steps": step, "grid": list(rae.grid), "latent_dim": rae.latent_dim,
               "encoder_id": rae.encoder_id, "fingerprint": rae.fingerprint(),
               "train_frames": len(train_u8), "heldout_frames": len(held_u8), "config": asdict(cfg)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"train-rae: {step} steps in {budget.elapsed() / 60:.1f} min; held-out PSNR {last['heldout_psnr']:.2f} dB, "
          f"SSIM {last['heldout_ssim']:.4f}, noisy (sigma {cfg.eval_noise}) PSNR {last['heldout_psnr_noisy']:.2f} dB; "
          f"saved {out}")
    return summary
