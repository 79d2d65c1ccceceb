"""Frozen representation encoders for the RAE, chosen by a spec string.

    own                  the project's small MAE-pretrained ViT (weights: an `lw train-encoder`
                         folder or a .safetensors of its encoder state dict)
    jepa                 a CNN trained for prediction and control (worldmodel.jepa; weights: an
                         `lw train-encoder method=jepa` folder); its latent is a few dims per frame
    timm:<model name>    any timm ViT: DINOv2, SigLIP2, MAE ... (weights: a local .safetensors /
                         .pth file, or the local Hugging Face cache; never the network)

Every encoder maps images (B, 3, H, W) in [0, 1] to the final-norm patch tokens
(B, N, C): `forward_features` with the class/register tokens (`num_prefix_tokens`)
dropped. Images are resized to the encoder's input size and normalised with the
model's own pretrained mean/std. `build_encoder` loads weights; `encoder_from_spec`
builds the same architecture empty (a saved RAE then fills it from its own file).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import hub
from .jepa import JEPA, ConvEncoder, JEPAConfig
from .vit import MAE, OWN_MEAN, OWN_STD, ViTConfig, make_own_encoder

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


class FrozenEncoder(nn.Module):
    """A representation encoder that never trains: no gradients, always in eval mode (no dropout,
    BatchNorm with its running statistics). Subclasses set spec, encoder_id, input_size, grid, dim."""

    def freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)


class TimmEncoder(FrozenEncoder):
    """A frozen timm ViT: images in [0, 1] -> (B, N, C) patch tokens."""

    def __init__(self, model: nn.Module, spec: dict[str, Any], mean, std):
        super().__init__()
        self.model = model
        self.spec = spec  # {"encoder": id, "input_size": int, "kwargs": {...}}: rebuilds the architecture
        self.encoder_id: str = spec["encoder"]
        self.input_size: int = spec["input_size"]
        self.grid: tuple[int, int] = tuple(int(g) for g in model.patch_embed.grid_size)
        self.dim: int = int(model.embed_dim)
        self.num_prefix_tokens: int = int(getattr(model, "num_prefix_tokens", 0))
        self.register_buffer("pix_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("pix_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.freeze()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images have shape {tuple(images.shape)}, expected (B, 3, H, W)")
        x = images.to(self.pix_mean.dtype)
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bicubic",
                              align_corners=False, antialias=True).clamp(0, 1)
        x = (x - self.pix_mean) / self.pix_std
        tokens = self.model.forward_features(x)  # (B, prefix + N, C), after the final norm
        return tokens[:, self.num_prefix_tokens:]  # (B, N, C)


class JEPAEncoder(FrozenEncoder):
    """A trained JEPA's encoder, frozen, with the interface the RAE expects of a representation
    encoder (`spec`, `encoder_id`, `input_size`, `grid`, `dim`, images -> (B, N, C))."""

    def __init__(self, cfg: JEPAConfig, spec: dict[str, Any] | None = None):
        super().__init__()
        self.model = ConvEncoder(cfg)
        self.spec = spec or {"encoder": "jepa", "input_size": cfg.image_size, "kwargs": cfg.to_dict()}
        self.encoder_id = "jepa"
        self.input_size = cfg.image_size
        self.grid = cfg.grid
        self.dim = cfg.latent_dim
        self.freeze()

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        if images.shape[-2:] != (self.input_size, self.input_size):
            images = F.interpolate(images.float(), size=(self.input_size, self.input_size), mode="area")
        return self.model(images)


def load_jepa_encoder(path: str | Path) -> JEPAEncoder:
    """The frozen encoder of a `lw train-encoder method=jepa` folder."""
    meta = hub.read_config(path, JEPA.KIND)
    enc = JEPAEncoder(JEPAConfig(**meta["config"]))
    sd = hub.load_state_dict(path)
    enc.model.load_state_dict({k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")})
    enc.freeze()
    return enc


# ---------------------------------------------------------------- architecture only

def encoder_from_spec(spec: dict[str, Any]) -> TimmEncoder:
    """Build the encoder architecture described by `spec` with random weights."""
    name = spec["encoder"]
    if name == "own":
        cfg = ViTConfig(**spec["kwargs"])
        if spec["input_size"] != cfg.image_size:
            raise ValueError(f"own encoder input_size={spec['input_size']}, expected its image_size={cfg.image_size}")
        return TimmEncoder(make_own_encoder(cfg), spec, OWN_MEAN, OWN_STD)
    if name == "jepa":
        return JEPAEncoder(JEPAConfig(**spec["kwargs"]), spec)
    if name.startswith("timm:"):
        model = _create_timm(name[5:], spec["input_size"], spec["kwargs"], file=None)
        return TimmEncoder(model, spec, *_timm_mean_std(model))
    raise ValueError(f"unknown encoder {name!r}, expected 'own', 'jepa' or 'timm:<model name>'")


def _create_timm(model_name: str, input_size: int, kwargs: dict, file: str | None) -> nn.Module:
    import timm

    if not timm.is_model(model_name):
        raise ValueError(f"unknown timm model {model_name!r}, expected a name from timm.list_models()")
    extra = dict(pretrained=True, pretrained_cfg_overlay={"file": file}) if file else dict(pretrained=False)
    model = timm.create_model(model_name, img_size=input_size, num_classes=0, **extra, **kwargs)
    if not hasattr(model, "forward_features") or not hasattr(model, "patch_embed"):
        raise ValueError(f"timm model {model_name!r} is not a ViT with patch_embed/forward_features")
    return model


def _timm_mean_std(model: nn.Module):
    cfg = model.pretrained_cfg
    return tuple(cfg.get("mean", (0.5, 0.5, 0.5))), tuple(cfg.get("std", (0.5, 0.5, 0.5)))


# ---------------------------------------------------------------- with pretrained weights

def build_encoder(encoder: str, weights: str | None = None, input_size: int = 0,
                  kwargs: dict | None = None, image_size: int = 64) -> TimmEncoder:
    """Build and load a frozen encoder. `input_size=0`: the own encoder's size, or for timm
    about `image_size` (grid * patch, with a grid that divides image_size)."""
    kwargs = dict(kwargs or {})
    if encoder == "own":
        return _load_own(weights, input_size)
    if encoder == "jepa":
        if not weights:
            raise ValueError("encoder='jepa' needs encoder_weights=<folder written by `lw train-encoder method=jepa`>")
        if input_size:
            raise ValueError(f"encoder='jepa' takes frames at its training size; expected input_size=0, got {input_size}")
        return load_jepa_encoder(weights)
    if not encoder.startswith("timm:"):
        raise ValueError(f"unknown encoder {encoder!r}, expected 'own', 'jepa' or 'timm:<model name>'")
    import timm

    model_name = encoder[5:]
    if not timm.is_model(model_name):
        raise ValueError(f"unknown timm model {model_name!r}, expected a name from timm.list_models()")
    file = resolve_timm_weights(model_name, weights)
    if not input_size:
        input_size = _auto_input_size(model_name, kwargs, image_size)
    model = _create_timm(model_name, input_size, kwargs, file=file)
    spec = {"encoder": encoder, "input_size": input_size, "kwargs": kwargs}
    return TimmEncoder(model, spec, *_timm_mean_std(model))


def _auto_input_size(model_name: str, kwargs: dict, image_size: int) -> int:
    """Input size = grid * patch, with the grid the divisor of image_size nearest image_size / patch
    (so the decoder's pixel patches tile the image exactly)."""
    import timm

    # Read the patch size from an empty meta-device model (no memory, no weights).
    with torch.device("meta"):
        m = timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)
    p = int(m.patch_embed.patch_size[0])
    divisors = [g for g in range(1, image_size + 1) if image_size % g == 0]
    grid = min(divisors, key=lambda g: (abs(g - image_size / p), -g))
    return grid * p


def _load_own(weights: str | None, input_size: int) -> TimmEncoder:
    if not weights:
        raise ValueError("encoder='own' needs encoder_weights=<folder written by `lw train-encoder`>")
    path = Path(weights)
    if path.is_dir():
        meta = hub.read_config(path, MAE.KIND)  # names the missing file if it is not a model folder
        cfg = ViTConfig(**meta["config"]["encoder"])
        sd = {k[len("encoder."):]: v for k, v in hub.load_state_dict(path).items() if k.startswith("encoder.")}
    else:
        raise FileNotFoundError(f"own encoder weights {str(path)!r} not found; expected the output folder "
                                f"of `lw train-encoder` (with config.json + model.safetensors)")
    if input_size and input_size != cfg.image_size:
        raise ValueError(f"own encoder input_size={input_size}, expected its training size {cfg.image_size} (or 0)")
    spec = {"encoder": "own", "input_size": cfg.image_size, "kwargs": vars(cfg).copy()}
    enc = encoder_from_spec(spec)
    enc.model.load_state_dict(sd)
    enc.freeze()
    return enc


def resolve_timm_weights(model_name: str, weights: str | None) -> str:
    """A local weights file for `model_name`, or a FileNotFoundError saying where it should be.

    Never touches the network: an explicit file is checked on disk; otherwise only the
    local Hugging Face cache is read (huggingface_hub.try_to_load_from_cache).
    """
    t0 = time.monotonic()
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"encoder weights file {str(path)!r} for timm:{model_name} does not exist; "
                                    f"expected a local {' / '.join(WEIGHT_SUFFIXES)} state dict")
        if path.suffix not in WEIGHT_SUFFIXES:
            raise ValueError(f"encoder weights file {str(path)!r} has suffix {path.suffix!r}, "
                             f"expected one of {WEIGHT_SUFFIXES}")
        return str(path)
    import timm
    from huggingface_hub import constants, try_to_load_from_cache

    pcfg = timm.models.get_pretrained_cfg(model_name)
    repo_id = getattr(pcfg, "hf_hub_id", None) if pcfg is not None else None
    cache_dir = constants.HF_HUB_CACHE
    if not repo_id:
        raise FileNotFoundError(f"timm:{model_name} has no Hugging Face repo id; give encoder_weights=<local file>")
    filenames = [pcfg.hf_hub_filename] if getattr(pcfg, "hf_hub_filename", None) else []
    filenames += ["model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"]
    for fn in filenames:
        found = try_to_load_from_cache(repo_id, fn, cache_dir=cache_dir)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    raise FileNotFoundError(
        f"no local weights for timm:{model_name}: looked in the Hugging Face cache {cache_dir!r} for repo "
        f"{repo_id!r} (files {filenames}) in {time.monotonic() - t0:.2f}s; nothing is downloaded here. "
        f"Put the weights there or pass encoder_weights=/path/model.safetensors")
