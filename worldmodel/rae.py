"""Representation Autoencoder (RAE): a frozen representation encoder + a trained ViT decoder.

    encode: images (B, 3, H, W) in [0, 1] -> frozen encoder -> (B, N, C) tokens
            -> per-channel normalisation with the training data's mean/std -> latents
    decode: latents (B, N, C) -> ViT decoder -> pixel patches -> (B, 3, H, W) in [0, 1]

The decoder reads the *normalised* latents directly (std 1 per channel), and is
trained with Gaussian noise on them (sigma = tau * U(0, 1), RAE) so that it decodes
the slightly-off latents a generator produces. The folder written by
`save_pretrained` is self-contained: encoder weights, decoder weights and the latent
statistics all live in its model.safetensors.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from . import hub
from .config import check_saved_keys
from .encoders import TimmEncoder, build_encoder, encoder_from_spec
from .vit import PixelDecoder


@dataclass
class RAEConfig:
    image_size: int = 64          # pixel resolution in and out of the RAE (square)
    decoder_dim: int = 192        # ViT decoder width (the measured reacher default)
    decoder_depth: int = 2        # ViT decoder blocks
    decoder_heads: int = 3        # ViT decoder heads
    decoder_mlp_ratio: float = 4.0
    # Filled from the encoder when built: {"encoder": id, "input_size": int, "kwargs": {...}}
    encoder_spec: dict[str, Any] = field(default_factory=dict)


class RAE(nn.Module):
    KIND = "rae"

    def __init__(self, cfg: RAEConfig, encoder: TimmEncoder | None = None):
        super().__init__()
        if encoder is None:
            if not cfg.encoder_spec:
                raise ValueError("RAEConfig.encoder_spec is empty; build with RAE.build(...) or pass an encoder")
            encoder = encoder_from_spec(cfg.encoder_spec)
        cfg.encoder_spec = dict(encoder.spec)
        self.cfg = cfg
        self.encoder = encoder  # frozen (requires_grad False, always eval)
        gh, gw = encoder.grid
        if cfg.image_size % gh or cfg.image_size % gw:
            raise ValueError(f"image_size={cfg.image_size} is not divisible by the encoder grid {encoder.grid}; "
                             f"expected image_size a multiple of {gh} and {gw}")
        self.decoder = PixelDecoder((gh, gw), encoder.dim, cfg.image_size // gh, cfg.decoder_dim,
                                    cfg.decoder_depth, cfg.decoder_heads, cfg.decoder_mlp_ratio)
        with torch.no_grad():  # start near the mean grey image
            self.decoder.head.weight.mul_(0.1)
        self.register_buffer("latent_mean", torch.zeros(encoder.dim))
        self.register_buffer("latent_std", torch.ones(encoder.dim))

    @classmethod
    def build(cls, cfg: RAEConfig, encoder: str = "own", encoder_weights: str | None = None,
              input_size: int = 0, encoder_kwargs: dict | None = None) -> "RAE":
        """A new RAE around a pretrained frozen encoder (weights loaded from local files)."""
        enc = build_encoder(encoder, encoder_weights, input_size, encoder_kwargs, cfg.image_size)
        return cls(cfg, enc)

    # ------------------------------------------------------------------ properties
    @property
    def grid(self) -> tuple[int, int]:
        return self.encoder.grid

    @property
    def latent_dim(self) -> int:
        return self.encoder.dim

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def image_size(self) -> int:
        return self.cfg.image_size

    @property
    def encoder_id(self) -> str:
        return self.encoder.encoder_id

    # ------------------------------------------------------------------ encode / decode
    @torch.no_grad()
    def encode_raw(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, N, C) un-normalised encoder tokens."""
        return self.encoder(images)

    def normalize(self, tokens: torch.Tensor) -> torch.Tensor:
        return (tokens - self.latent_mean) / self.latent_std

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        return latents * self.latent_std + self.latent_mean

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float in [0, 1] -> (B, N, C) normalised latents; no grad into the encoder."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images have shape {tuple(images.shape)}, expected (B, 3, H, W)")
        return self.normalize(self.encoder(images))

    def decode_patches(self, latents: torch.Tensor) -> torch.Tensor:
        """Unclamped decoder output in [0, 1] units: (B, N, C) -> (B, 3, H, W)."""
        if latents.ndim != 3 or latents.shape[1:] != (self.num_tokens, self.latent_dim):
            raise ValueError(f"latents have shape {tuple(latents.shape)}, "
                             f"expected (B, {self.num_tokens}, {self.latent_dim})")
        x = self.decoder.to_image(self.decoder(latents.to(self.latent_std.dtype)))  # (B, 3, H, W), [-1, 1]
        return x * 0.5 + 0.5

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, N, C) normalised latents -> (B, 3, H, W) float in [0, 1] (differentiable)."""
        return self.decode_patches(latents).clamp(0, 1)

    @torch.no_grad()
    def decode_uint8(self, latents: torch.Tensor, batch: int = 256, chunk: int = 16) -> torch.Tensor:
        """(B, N, C) normalised latents -> (B, H, W, 3) uint8 frames (the gym layout), exactly
        round(255 * decode(latents)). Fast: the decoder runs `batch` frames at a time (its head's
        weights are read once per batch), the per-pixel ops run in place on `chunk` frames at a
        time (each pass stays in the CPU cache) and on the patch layout, and the patches are
        rearranged to HWC only once they are bytes (a quarter of the memory traffic)."""
        if latents.ndim != 3 or latents.shape[1:] != (self.num_tokens, self.latent_dim):
            raise ValueError(f"latents have shape {tuple(latents.shape)}, "
                             f"expected (B, {self.num_tokens}, {self.latent_dim})")
        B, S, (gh, gw), ps = latents.shape[0], self.image_size, self.grid, self.decoder.patch_size
        out = torch.empty(B, gh, ps, gw, ps, 3, dtype=torch.uint8, device=latents.device)
        for i in range(0, B, batch):
            patches = self.decoder(latents[i:i + batch].to(self.latent_std.dtype))        # (b, N, P), [-1, 1]
            for j in range(0, patches.shape[0], chunk):
                x = patches[j:j + chunk].mul_(0.5).add_(0.5).clamp_(0, 1).mul_(255.0).round_()
                x = x.view(-1, gh, gw, ps, ps, 3).permute(0, 1, 3, 2, 4, 5)             # (b, gh, p, gw, p, 3)
                out[i + j:i + j + x.shape[0]] = x
        return out.view(B, S, S, 3)

    def forward(self, images: torch.Tensor, noise_tau: float = 0.0,
                generator: torch.Generator | None = None):
        """Training pass: encode, noise the latents (sigma ~ tau * U(0,1) per sample), decode.

        Returns (reconstruction (B, 3, H, W) unclamped, L1 loss against `images`).
        """
        z = self.encode(images)  # (B, N, C), no grad
        if noise_tau > 0:
            sigma = noise_tau * torch.rand(z.shape[0], 1, 1, device=z.device, generator=generator)
            z = z + sigma * torch.randn(z.shape, device=z.device, generator=generator)
        recon = self.decode_patches(z)
        return recon, (recon - images).abs().mean()

    # ------------------------------------------------------------------ statistics
    @torch.no_grad()
    def fit_latent_stats(self, batches) -> None:
        """Set latent_mean / latent_std (per channel) from an iterable of image batches."""
        n, s, s2 = 0, 0.0, 0.0
        for images in batches:
            t = self.encoder(images.to(self.latent_mean.device)).double().flatten(0, 1)  # (B*N, C)
            n, s, s2 = n + t.shape[0], s + t.sum(0), s2 + (t * t).sum(0)
        if n == 0:
            raise ValueError("fit_latent_stats got no images")
        mean = s / n
        std = (s2 / n - mean * mean).clamp(min=1e-12).sqrt()
        self.latent_mean.copy_(mean.float())
        self.latent_std.copy_(std.float().clamp(min=1e-6))

    def fingerprint(self) -> str:
        """sha256 over the encoder spec, encoder weights and latent statistics.

        Two RAEs with equal fingerprints produce identical latents, so a latent cache
        written with one is valid for the other (the decoder does not matter).
        """
        h = hashlib.sha256(json.dumps(self.cfg.encoder_spec, sort_keys=True).encode())
        tensors = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        tensors.update(latent_mean=self.latent_mean, latent_std=self.latent_std)
        for k in sorted(tensors):
            h.update(k.encode())
            h.update(tensors[k].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, path) -> None:
        extra = {"grid": list(self.grid), "latent_dim": self.latent_dim, "encoder_id": self.encoder_id,
                 "fingerprint": self.fingerprint()}
        hub.save_pretrained(path, self.KIND, asdict(self.cfg), self.state_dict(), extra=extra)

    @classmethod
    def from_pretrained(cls, path, device="cpu") -> "RAE":
        meta = hub.read_config(path, cls.KIND)
        check_saved_keys(RAEConfig, meta["config"], str(Path(path) / hub.CONFIG_NAME))
        model = cls(RAEConfig(**meta["config"]))
        model.load_state_dict(hub.load_state_dict(path))
        model.encoder.freeze()
        return model.to(device)
