"""RAE: frozen encoders (own MAE ViT and timm, local weights only), decoder, latent stats, save/load."""
import time

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pretrain.image_metrics import psnr, ssim
from worldmodel.encoders import build_encoder, encoder_from_spec
from worldmodel.rae import RAE, RAEConfig
from worldmodel.vit import MAE, MAEConfig, ViTConfig, patchify, unpatchify

torch.set_num_threads(1)


def shapes_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Grey frames with a coloured disc and bar at random places: (n, 3, size, size) in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, 3, size, size), np.float32)
    for i in range(n):
        img = np.full((3, size, size), 0.6, np.float32) - 0.2 * yy
        cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.2)
        img[:, (xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(0, 1, (3, 1))
        x0 = rng.uniform(0.1, 0.7)
        img[:, (xx > x0) & (xx < x0 + 0.25) & (np.abs(yy - rng.uniform(0.2, 0.8)) < 0.04)] = [[0.1], [0.2], [0.4]]
        out[i] = img
    return torch.from_numpy(out)


def tiny_own(image_size=32, patch=8, dim=32) -> dict:
    return {"encoder": "own", "input_size": image_size,
            "kwargs": vars(ViTConfig(image_size, patch, dim, depth=1, heads=2)).copy()}


def tiny_rae(image_size=32, patch=8, dim=32) -> RAE:
    enc = encoder_from_spec(tiny_own(image_size, patch, dim))
    return RAE(RAEConfig(image_size=image_size, decoder_dim=32, decoder_depth=1, decoder_heads=2), enc)


# --------------------------------------------------------------------------- metrics

def test_psnr_ssim():
    x = shapes_images(3, 32)
    assert torch.allclose(ssim(x, x), torch.tensor(1.0))
    y = (x + 0.01).clamp(0, 1)
    assert psnr(x, y, reduction="none").shape == (3,)
    assert 39 < psnr(x, y).item() < 41
    assert ssim(x, torch.rand_like(x)).item() < 0.2
    assert ssim(x, y).item() > ssim(x, x.flip(-1)).item()
    with pytest.raises(ValueError, match="shapes"):
        psnr(x, x[:2])


def test_patchify_roundtrip():
    x = torch.rand(2, 3, 24, 32)
    assert torch.equal(unpatchify(patchify(x, 8), (3, 4), 8), x)


# --------------------------------------------------------------------------- frozen encoder

def test_encoder_frozen_and_unchanged_by_decoder_step():
    rae = tiny_rae()
    x = shapes_images(8, 32)
    assert all(not p.requires_grad for p in rae.encoder.parameters())
    before = {k: v.clone() for k, v in rae.encoder.state_dict().items()}
    rae.train()
    assert not rae.encoder.training  # frozen encoders stay in eval mode
    z = rae.encode(x)
    assert not z.requires_grad
    opt = torch.optim.AdamW([p for p in rae.parameters() if p.requires_grad], lr=1e-2)
    _, loss = rae(x, noise_tau=0.8)
    loss.backward()
    assert all(p.grad is None for p in rae.encoder.parameters())
    assert any(p.grad is not None for p in rae.decoder.parameters())
    opt.step()
    after = rae.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # decode is differentiable w.r.t. its latents (planners / world model need it)
    z = z.clone().requires_grad_(True)
    rae.decode(z).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


@pytest.mark.parametrize("image_size,patch,grid", [(32, 8, 4), (48, 16, 3), (64, 16, 4), (64, 8, 8)])
def test_shapes(image_size, patch, grid):
    rae = tiny_rae(image_size, patch)
    x = shapes_images(2, image_size)
    z = rae.encode(x)
    assert rae.grid == (grid, grid) and rae.num_tokens == grid * grid and rae.latent_dim == 32
    assert z.shape == (2, grid * grid, 32)
    y = rae.decode(z)
    assert y.shape == (2, 3, image_size, image_size) and y.min() >= 0 and y.max() <= 1
    with pytest.raises(ValueError, match="expected"):
        rae.decode(z[:, :-1])


def test_latent_normalisation_inverse():
    rae = tiny_rae()
    x = shapes_images(64, 32, seed=1)
    rae.fit_latent_stats([x[:32], x[32:]])
    raw = rae.encode_raw(x)
    z = rae.encode(x)
    flat = z.flatten(0, 1)  # (B*N, C)
    assert flat.mean(0).abs().max() < 1e-3
    assert (flat.std(0, unbiased=False) - 1).abs().max() < 1e-3
    assert torch.allclose(rae.denormalize(z), raw, atol=1e-5)
    assert not torch.allclose(z, raw)


def test_save_load_equal(tmp_path):
    rae = tiny_rae()
    x = shapes_images(4, 32)
    rae.fit_latent_stats([x])
    with torch.no_grad():
        rae.decoder.head.bias.add_(0.1)  # a non-initial decoder
    rae.save_pretrained(tmp_path / "rae")
    back = RAE.from_pretrained(tmp_path / "rae")
    assert back.fingerprint() == rae.fingerprint()
    assert back.grid == rae.grid and back.encoder_id == "own" and back.image_size == 32
    assert torch.equal(back.encode(x), rae.encode(x))
    z = rae.encode(x)
    assert torch.equal(back.decode(z), rae.decode(z))
    assert all(not p.requires_grad for p in back.encoder.parameters())
    # the fingerprint tracks the encoder and the statistics, not the decoder
    with torch.no_grad():
        back.decoder.head.bias.add_(1.0)
    assert back.fingerprint() == rae.fingerprint()
    back.latent_std.mul_(2)
    assert back.fingerprint() != rae.fingerprint()


def test_own_encoder_from_mae_folder(tmp_path):
    mae = MAE(MAEConfig(ViTConfig(32, 8, 32, depth=1, heads=2), decoder_dim=32, decoder_depth=1, decoder_heads=2))
    mae.save_pretrained(tmp_path / "mae")
    rae = RAE.build(RAEConfig(image_size=32, decoder_dim=32, decoder_depth=1, decoder_heads=2),
                    "own", str(tmp_path / "mae"))
    for k, v in mae.encoder.state_dict().items():
        assert torch.equal(rae.encoder.model.state_dict()[k], v)
    with pytest.raises(FileNotFoundError, match="train-encoder"):
        build_encoder("own", str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="encoder_weights"):
        build_encoder("own", "")
    with pytest.raises(ValueError, match="unknown encoder"):
        build_encoder("dino", "x")


# --------------------------------------------------------------------------- timm encoders

TINY_TIMM = {  # the real timm architectures, shrunk (full size only in bench/rae.py)
    "vit_small_patch14_dinov2": dict(embed_dim=32, depth=1, num_heads=2),
    "vit_small_patch14_reg4_dinov2": dict(embed_dim=32, depth=1, num_heads=2),
    "vit_base_patch16_siglip_224": dict(embed_dim=32, depth=1, num_heads=2),
}


@pytest.mark.parametrize("name", list(TINY_TIMM))
@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_timm_encoder_local_weights(tmp_path, name, fmt):
    import timm

    kw = TINY_TIMM[name]
    patch = 14 if "patch14" in name else 16
    src = timm.create_model(name, pretrained=False, num_classes=0, img_size=patch * 2, **kw)
    sd = {k: v.contiguous() for k, v in src.state_dict().items()}
    file = tmp_path / f"w.{fmt}"
    save_file(sd, str(file)) if fmt == "safetensors" else torch.save(sd, file)
    # load at a different input size: the position embedding is resampled to 4x4 patches
    rae = RAE.build(RAEConfig(image_size=32, decoder_dim=32, decoder_depth=1, decoder_heads=2),
                    f"timm:{name}", str(file), input_size=patch * 4, encoder_kwargs=kw)
    enc = rae.encoder
    assert enc.grid == (4, 4) and rae.latent_dim == 32 and rae.encoder_id == f"timm:{name}"
    assert torch.equal(enc.model.patch_embed.proj.weight, sd["patch_embed.proj.weight"])
    assert enc.num_prefix_tokens == src.num_prefix_tokens
    assert torch.allclose(enc.pix_mean.flatten(), torch.tensor(src.pretrained_cfg["mean"]))
    x = shapes_images(2, 32)
    z = rae.encode(x)
    assert z.shape == (2, 16, 32) and torch.isfinite(z).all()
    # the folder is self-contained: from_pretrained needs neither the file nor the network
    rae.save_pretrained(tmp_path / "rae")
    file.unlink()
    back = RAE.from_pretrained(tmp_path / "rae")
    assert torch.equal(back.encode(x), z)
    assert torch.equal(back.decode(z), rae.decode(z))


def test_timm_auto_input_size(tmp_path):
    import timm

    kw = TINY_TIMM["vit_small_patch14_dinov2"]
    src = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=56, **kw)
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    enc = build_encoder("timm:vit_small_patch14_dinov2", str(tmp_path / "w.safetensors"), 0, kw, image_size=64)
    assert enc.input_size == 56 and enc.grid == (4, 4)  # 64/14 = 4.6 -> the divisor 4 of 64
    enc = build_encoder("timm:vit_small_patch14_dinov2", str(tmp_path / "w.safetensors"), 70, kw, image_size=64)
    with pytest.raises(ValueError, match="not divisible"):  # 64 px cannot come from a 5x5 grid
        RAE(RAEConfig(image_size=64), enc)


def test_missing_weights_fail_fast(tmp_path, monkeypatch):
    from huggingface_hub import constants

    t0 = time.monotonic()
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing.safetensors")):
        build_encoder("timm:vit_small_patch14_dinov2", str(tmp_path / "missing.safetensors"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(FileNotFoundError) as e:
        build_encoder("timm:vit_base_patch16_siglip_224.v2_webli", "")
    assert str(tmp_path / "hf") in str(e.value) and "timm/vit_base_patch16_siglip_224.v2_webli" in str(e.value)
    assert time.monotonic() - t0 < 2.0
    with pytest.raises(ValueError, match="unknown timm model"):
        build_encoder("timm:not_a_model_xyz", "")


# --------------------------------------------------------------------------- learning

def test_mae_learns():
    torch.manual_seed(0)
    x = shapes_images(32, 32, seed=2)
    mae = MAE(MAEConfig(ViTConfig(32, 8, 48, depth=2, heads=2), decoder_dim=48, decoder_depth=1, decoder_heads=2))
    opt = torch.optim.AdamW([p for p in mae.parameters() if p.requires_grad], lr=2e-3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        first = mae(x, generator=torch.Generator().manual_seed(9))[0].item()
    for _ in range(60):
        loss, pred, mask = mae(x, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert pred.shape == (32, 16, 8 * 8 * 3) and mask.sum(1).eq(12).all()  # 75% of 16 patches hidden
    with torch.no_grad():
        last = mae(x, generator=torch.Generator().manual_seed(9))[0].item()
    assert last < 0.7 * first, (first, last)


def test_decoder_learns_with_noise():
    torch.manual_seed(0)
    x = shapes_images(32, 32, seed=3)
    rae = tiny_rae()
    rae.fit_latent_stats([x])
    opt = torch.optim.AdamW(rae.decoder.parameters(), lr=3e-3)
    with torch.no_grad():
        first = (rae.decode(rae.encode(x)) - x).abs().mean().item()
    for _ in range(80):
        _, loss = rae(x, noise_tau=0.8)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        last = (rae.decode(rae.encode(x)) - x).abs().mean().item()
    assert last < 0.5 * first, (first, last)


def test_perceptual_loss_local_weights(tmp_path):
    import timm

    from pretrain.train_rae import PerceptualLoss

    save_file({k: v.contiguous() for k, v in timm.create_model("resnet18", pretrained=False).state_dict().items()},
              str(tmp_path / "r18.safetensors"))
    loss = PerceptualLoss("resnet18", str(tmp_path / "r18.safetensors"))
    x = shapes_images(2, 32)
    y = x.clone().requires_grad_(True)
    assert loss(y, x).item() < 1e-6
    z = (x + 0.2 * torch.rand_like(x)).clamp(0, 1).requires_grad_(True)
    d = loss(z, x)
    assert d.item() > 1e-3
    d.backward()
    assert z.grad.abs().sum() > 0 and all(p.grad is None for p in loss.parameters())
    t0 = time.monotonic()
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        PerceptualLoss("resnet18", str(tmp_path / "nope.safetensors"))
    assert time.monotonic() - t0 < 2.0


def test_timm_weights_from_local_hf_cache(tmp_path, monkeypatch):
    """encoder_weights="" reads the Hugging Face cache layout (refs/main -> snapshots/<rev>/file)."""
    import timm
    from huggingface_hub import constants

    name, kw = "vit_small_patch14_dinov2", TINY_TIMM["vit_small_patch14_dinov2"]
    repo = timm.models.get_pretrained_cfg(name).hf_hub_id  # timm/vit_small_patch14_dinov2.lvd142m
    cache = tmp_path / "hub"
    snap = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / "rev0"
    snap.mkdir(parents=True)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("rev0")
    src = timm.create_model(name, pretrained=False, img_size=56, **kw)
    save_file(src.state_dict(), str(snap / "model.safetensors"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    enc = build_encoder(f"timm:{name}", "", 56, kw)
    assert torch.equal(enc.model.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)


@pytest.mark.parametrize("patch", [8, 16])            # a 4x4 and a 2x2 grid of patches
def test_decode_uint8_equals_rounded_decode(patch):
    """The fast byte decoder (batched head, in-place per-pixel ops, HWC rearranged as bytes) gives
    exactly round(255 * decode) in the gym layout, across batch and chunk boundaries."""
    rae = tiny_rae(32, patch).eval()
    z = torch.randn(37, rae.num_tokens, rae.latent_dim, generator=torch.Generator().manual_seed(0)) * 2
    ref = (rae.decode(z) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    got = rae.decode_uint8(z, batch=16, chunk=5)
    assert got.dtype == torch.uint8 and got.shape == (37, 32, 32, 3)
    assert torch.equal(got, ref)
