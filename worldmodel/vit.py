"""ViT parts of the Representation Autoencoder, built from timm blocks.

- `make_own_encoder(cfg)`: the project's small ViT encoder, a timm `VisionTransformer`
  without class token, with fixed 2-D sin-cos positions (as in MAE). Its
  `forward_features` gives the layer-normed patch tokens, exactly like a pretrained
  timm encoder, so both go through the same `TimmEncoder` wrapper (encoders.py).
- `PixelDecoder`: patch tokens -> pixels (linear in, timm Blocks, linear patch head,
  unpatchify); optionally with a learned mask token (the MAE decoder).
- `MAE`: masked-autoencoder pretraining of the own encoder (He et al. 2022): random
  75% patch masking, the encoder runs on visible patches only, a light decoder
  predicts the per-patch normalised pixels of the masked patches.

Legend: B batch, N patches (tokens), D width, P = patch*patch*3 pixels per patch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed
from timm.models.vision_transformer import Block, VisionTransformer

from . import hub

# The own encoder's pixel normalisation: images in [0, 1] -> [-1, 1].
OWN_MEAN = (0.5, 0.5, 0.5)
OWN_STD = (0.5, 0.5, 0.5)


@dataclass
class ViTConfig:
    image_size: int = 64    # input resolution (square)
    patch_size: int = 16    # 64 / 16 -> a 4x4 grid of 16 tokens
    dim: int = 192          # token width = latent channels C
    depth: int = 6          # transformer blocks
    heads: int = 3          # attention heads (dim / heads = 64)
    mlp_ratio: float = 4.0  # MLP hidden = mlp_ratio * dim

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size={self.image_size} is not a multiple of patch_size={self.patch_size}")
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


def sincos_pos_embed(grid: tuple[int, int], dim: int) -> torch.Tensor:
    """(1, gh*gw, dim) fixed 2-D sin-cos positions, row-major like the patch order."""
    return build_sincos2d_pos_embed(list(grid), dim=dim).unsqueeze(0)


def make_own_encoder(cfg: ViTConfig) -> VisionTransformer:
    """A timm ViT with no class token and fixed sin-cos positions (frozen, as in MAE)."""
    vit = VisionTransformer(
        img_size=cfg.image_size, patch_size=cfg.patch_size, num_classes=0, global_pool="avg",
        class_token=False, embed_dim=cfg.dim, depth=cfg.depth, num_heads=cfg.heads,
        mlp_ratio=cfg.mlp_ratio)
    with torch.no_grad():
        vit.pos_embed.copy_(sincos_pos_embed((cfg.grid, cfg.grid), cfg.dim))
    vit.pos_embed.requires_grad_(False)
    return vit


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, 3, H, W) -> (B, N, patch*patch*3), row-major patches, (py, px, c) inside a patch."""
    B, C, H, W = images.shape
    gh, gw = H // patch, W // patch
    x = images.reshape(B, C, gh, patch, gw, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(B, gh * gw, patch * patch * C)


def unpatchify(patches: torch.Tensor, grid: tuple[int, int], patch: int) -> torch.Tensor:
    """(B, N, patch*patch*3) -> (B, 3, gh*patch, gw*patch); the inverse of `patchify`."""
    B = patches.shape[0]
    gh, gw = grid
    x = patches.reshape(B, gh, gw, patch, patch, -1)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(B, -1, gh * patch, gw * patch)


class PixelDecoder(nn.Module):
    """ViT decoder: (B, N, in_dim) tokens -> (B, N, P) pixel patches."""

    def __init__(self, grid: tuple[int, int], in_dim: int, patch_size: int, dim: int = 256,
                 depth: int = 4, heads: int = 4, mlp_ratio: float = 4.0, mask_token: bool = False):
        super().__init__()
        self.grid, self.patch_size = tuple(grid), patch_size
        n = grid[0] * grid[1]
        self.embed = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim)) if mask_token else None
        self.pos_embed = nn.Parameter(sincos_pos_embed(self.grid, dim).reshape(1, n, dim).clone())
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, patch_size * patch_size * 3)
        self.apply(_init_weights)
        if self.mask_token is not None:
            nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed(tokens)  # (B, N, in_dim) -> (B, N, D)
        if mask is not None:  # (B, N) bool, True = masked: replace by the mask token
            if self.mask_token is None:
                raise ValueError("this PixelDecoder has no mask token; build it with mask_token=True")
            x = torch.where(mask[..., None], self.mask_token.to(x.dtype), x)
        x = self.blocks(x + self.pos_embed)
        return self.head(self.norm(x))  # (B, N, P)

    def to_image(self, patches: torch.Tensor) -> torch.Tensor:
        return unpatchify(patches, self.grid, self.patch_size)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


@dataclass
class MAEConfig:
    encoder: ViTConfig            # the encoder that is kept (and later frozen)
    decoder_dim: int = 128        # MAE's light decoder: width
    decoder_depth: int = 2        #   blocks
    decoder_heads: int = 4        #   heads
    mask_ratio: float = 0.75      # fraction of patches hidden from the encoder
    norm_pix_loss: bool = True    # targets = per-patch normalised pixels (MAE default)
    visible_loss_weight: float = 0.0  # >0 also reconstructs visible patches (keeps pixel detail)

    def __post_init__(self):
        if isinstance(self.encoder, dict):
            self.encoder = ViTConfig(**self.encoder)
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio={self.mask_ratio}, expected 0 <= mask_ratio < 1")


class MAE(nn.Module):
    KIND = "mae"

    def __init__(self, cfg: MAEConfig):
        super().__init__()
        self.cfg = cfg
        e = cfg.encoder
        self.encoder = make_own_encoder(e)
        self.decoder = PixelDecoder((e.grid, e.grid), e.dim, e.patch_size, cfg.decoder_dim,
                                    cfg.decoder_depth, cfg.decoder_heads, mask_token=True)
        self.register_buffer("pix_mean", torch.tensor(OWN_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pix_std", torch.tensor(OWN_STD).view(1, 3, 1, 1), persistent=False)

    def random_mask(self, B: int, N: int, device, generator: torch.Generator | None = None):
        """Per-sample random subset: (ids_keep (B, n_keep), mask (B, N) bool, True = hidden)."""
        n_keep = max(1, int(round(N * (1 - self.cfg.mask_ratio))))
        noise = torch.rand(B, N, device=device, generator=generator)
        ids_keep = noise.argsort(dim=1)[:, :n_keep]
        mask = torch.ones(B, N, dtype=torch.bool, device=device)
        mask.scatter_(1, ids_keep, False)
        return ids_keep, mask

    def encode_visible(self, images: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """Run the encoder on the kept patches only: (B, 3, H, W) -> (B, n_keep, D)."""
        vit = self.encoder
        x = vit.patch_embed((images - self.pix_mean) / self.pix_std) + vit.pos_embed  # (B, N, D)
        x = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, x.shape[-1]))
        return vit.norm(vit.blocks(vit.norm_pre(x)))

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None):
        """images (B, 3, H, W) in [0, 1] -> (loss, pred patches (B, N, P), mask (B, N))."""
        B = images.shape[0]
        N = self.encoder.patch_embed.num_patches
        ids_keep, mask = self.random_mask(B, N, images.device, generator)
        vis = self.encode_visible(images, ids_keep)  # (B, n_keep, D)
        full = vis.new_zeros(B, N, vis.shape[-1]).scatter(1, ids_keep[..., None].expand_as(vis), vis)
        pred = self.decoder(full, mask)  # (B, N, P)
        target = self.target(images)
        err = (pred - target).pow(2).mean(-1)  # (B, N)
        m = mask.float()
        loss = (err * m).sum() / m.sum()
        if self.cfg.visible_loss_weight > 0:
            loss = loss + self.cfg.visible_loss_weight * (err * (1 - m)).sum() / (1 - m).sum().clamp(min=1)
        return loss, pred, mask

    def target(self, images: torch.Tensor) -> torch.Tensor:
        t = patchify(images, self.cfg.encoder.patch_size)  # (B, N, P)
        if self.cfg.norm_pix_loss:
            t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6).sqrt()
        return t

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Paste predicted masked patches (un-normalised with the true patch stats) into the image."""
        p = self.cfg.encoder.patch_size
        t = patchify(images, p)
        if self.cfg.norm_pix_loss:
            pred = pred * (t.var(-1, keepdim=True) + 1e-6).sqrt() + t.mean(-1, keepdim=True)
        out = torch.where(mask[..., None], pred, t)
        return unpatchify(out, self.decoder.grid, p).clamp(0, 1)

    def save_pretrained(self, path) -> None:
        hub.save_pretrained(path, self.KIND, asdict(self.cfg), self.state_dict())

    @classmethod
    def from_pretrained(cls, path, device="cpu") -> "MAE":
        meta = hub.read_config(path, cls.KIND)
        model = cls(MAEConfig(**meta["config"]))
        model.load_state_dict(hub.load_state_dict(path))
        return model.to(device)
