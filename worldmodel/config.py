"""Configuration of the unified Transfusion model, and the size factories.

`ModelConfig` is a plain dataclass (nested MoEConfig / FlowConfig), usable as a Hydra
structured-config node. `MODELS[name](latent_dim, frame_grid, action_dim, **overrides)`
returns the config of one size for a given latent shape and action dimension.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from worldmodel.errors import ModelFolderError
from worldmodel.flow import FlowConfig
from worldmodel.moe import MoEConfig
from worldmodel.tokenizer import ByteTokenizer

__all__ = ["ModelConfig", "MoEConfig", "FlowConfig", "MODELS", "make_config", "ADDED_KEYS"]

ATTN_BACKENDS = ("auto", "sdpa", "flex")
ACTION_ENCODINGS = ("text", "embed")
PREV_FRAME_MODES = ("off", "input", "residual")


@dataclass
class ModelConfig:
    vocab_size: int = ByteTokenizer().vocab_size  # token vocabulary (byte tokenizer: 256 bytes + specials)
    d_model: int = 128                 # residual stream width D
    n_layers: int = 4                  # transformer blocks
    n_heads: int = 4                   # attention heads
    head_dim: int | None = None        # per-head width; None -> d_model // n_heads
    latent_dim: int = 128              # C: channels of one RAE latent token
    frame_grid: tuple[int, int] = (4, 4)  # (grid_h, grid_w): latent tokens per frame = gh * gw
    action_dim: int = 2                # A: action vector length
    action_scale: float = 1.0          # actions are divided by this (the task's action bound) before encoding
    action_encoding: str = "embed"     # "embed": MLP -> one token per step (differentiable); "text": "<act>act a0=+0.12 ...<eoa>"
    direct_action: bool = True         # embedded actions: the step's action embedding is also added to its frame's
                                       # noisy-copy input (a direct path, like the time embedding); attention alone
                                       # left the actions unused at CPU scale (shuffled actions scored the same)
    action_adaln: bool = False         # embedded actions: AdaLN-zero (DiT) modulation of every block at a frame's
                                       # noisy tokens by SiLU(time embedding + the embedding of the action that leads
                                       # to the frame): a path the network cannot route around; zero-initialised,
                                       # so a new model equals the plain one
    moe: MoEConfig = field(default_factory=MoEConfig)      # feed-forward: dense / modality / MoE
    flow: FlowConfig = field(default_factory=FlowConfig)   # rectified flow: prediction x/v, time shift, steps
    text_weight: float = 1.0           # loss = text_weight * L_text + flow_weight * L_flow (+ MoE aux)
    flow_weight: float = 3.0           # paper's lambda_flow
    cond_dropout: float = 0.1          # P(a frame target's conditioning is hidden from its noisy copy), for CFG
    context_noise: float = 0.1         # max sigma of noise on clean context frames in training (sigma ~ U(0, this))
    prev_frame: str = "input"          # how a video frame's noisy copy uses the previous frame's clean latent at
                                       # the same grid cell: "off" (attention only); "input" (frame stacking, as
                                       # DIAMOND / GameNGen: added to the input); "residual" (input, and the
                                       # x-prediction is prev + head(h)). Measured on reacher (tiny, 800 steps,
                                       # 1-step latent MSE): off 0.73, input 0.60, residual 0.59; residual
                                       # drifts more in multi-step Euler sampling, so "input" is the default
    max_seq_len: int = 2048            # longest stream (packed row or rollout) the model accepts
    attn_backend: str = "auto"         # "sdpa" (dense mask), "flex" (FlexAttention), "auto": flex for CUDA training
    init_std: float = 0.02             # std of the normal init; residual output projections use std/sqrt(2*n_layers)
    rope_theta: float = 10000.0        # RoPE base of the sequence axis
    rope_theta_2d: float = 100.0       # RoPE base of the (row, col) axes (a frame grid is small)
    rope_frac_2d: float = 0.5          # fraction of rotary pairs given to row+col (half each)
    qk_norm: bool = True               # RMSNorm on queries and keys (stability at scale)
    norm_eps: float = 1e-5             # RMSNorm epsilon

    def __post_init__(self) -> None:
        self.frame_grid = tuple(int(g) for g in self.frame_grid)
        if isinstance(self.moe, dict):
            self.moe = MoEConfig(**self.moe)
        if isinstance(self.flow, dict):
            self.flow = FlowConfig(**self.flow)
        if len(self.frame_grid) != 2 or min(self.frame_grid) < 1:
            raise ValueError(f"frame_grid={self.frame_grid}, expected (grid_h, grid_w) with both >= 1")
        if self.prev_frame not in PREV_FRAME_MODES:
            raise ValueError(f"prev_frame={self.prev_frame!r}, expected one of {PREV_FRAME_MODES}")
        if self.prev_frame == "residual" and self.flow.prediction != "x":
            raise ValueError("prev_frame='residual' adds the previous frame to an x-prediction; it needs "
                             f"flow.prediction='x', got {self.flow.prediction!r} (or use prev_frame='input')")
        if self.action_encoding not in ACTION_ENCODINGS:
            raise ValueError(f"action_encoding={self.action_encoding!r}, expected one of {ACTION_ENCODINGS}")
        if self.action_adaln and self.action_encoding != "embed":
            raise ValueError("action_adaln=true modulates with the action embedding; it needs action_encoding='embed', "
                             f"got {self.action_encoding!r}")
        if self.attn_backend not in ATTN_BACKENDS:
            raise ValueError(f"attn_backend={self.attn_backend!r}, expected one of {ATTN_BACKENDS}")
        if self.head_dim is None:
            if self.d_model % self.n_heads:
                raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; set head_dim")
        if self.action_scale <= 0:
            raise ValueError(f"action_scale={self.action_scale}, expected > 0")
        if not 0.0 <= self.cond_dropout <= 1.0:
            raise ValueError(f"cond_dropout={self.cond_dropout}, expected in [0, 1]")
        if not 0.0 <= self.context_noise < 1.0:
            raise ValueError(f"context_noise={self.context_noise}, expected in [0, 1)")
        for name in ("d_model", "n_layers", "n_heads", "latent_dim", "action_dim", "vocab_size", "max_seq_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}, expected >= 1")

    @property
    def hd(self) -> int:
        """The per-head width actually used."""
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

    @property
    def frame_tokens(self) -> int:
        return self.frame_grid[0] * self.frame_grid[1]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["frame_grid"] = list(self.frame_grid)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str | None = None) -> ModelConfig:
        """The config saved as `d`, which must hold every key (ADDED_KEYS excepted) and no other.

        `source`: the config.json whose "config" entry `d` is; errors name it and the key.
        """
        d = with_added_keys(d)
        check_saved_keys(cls, d, source)
        d["moe"], d["flow"] = MoEConfig(**d["moe"]), FlowConfig(**d["flow"])
        return cls(**d)


# Keys added to ModelConfig after model folders had been saved without them, mapped to the
# value such an older folder meant (its model lacks the feature). Any other key missing from
# a saved config is an error. Extend this when adding a field; nested keys are dotted
# ("moe.new_key").
ADDED_KEYS: dict[str, Any] = {
    "prev_frame": "off",       # frame stacking: older models have no prev_in projection
    "direct_action": False,    # direct action path: older models have no such input
    "action_adaln": False,     # AdaLN action conditioning: older models have no modulation weights
}
NESTED = {"moe": MoEConfig, "flow": FlowConfig}  # ModelConfig fields saved as nested dicts


def with_added_keys(d: dict[str, Any]) -> dict[str, Any]:
    """A copy of a saved config dict with absent ADDED_KEYS set to what older folders meant."""
    d = {k: dict(v) if k in NESTED and isinstance(v, dict) else v for k, v in d.items()}
    for key, old in ADDED_KEYS.items():
        *parents, leaf = key.split(".")
        node = d
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.setdefault(leaf, old)
    return d


def key_problems(cls: type, d: dict[str, Any], prefix: str = "") -> tuple[list[str], list[str]]:
    """(unknown, missing) keys of the dict `d` against the dataclass `cls`, dotted into NESTED."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [prefix + k for k in d if k not in names]
    missing = [prefix + k for k in names if k not in d]
    for k, sub in NESTED.items() if cls is ModelConfig else ():
        if isinstance(d.get(k), dict):
            u, m = key_problems(sub, d[k], f"{prefix}{k}.")
            unknown, missing = unknown + u, missing + m
        elif k in d:
            unknown.append(f"{prefix}{k} (not an object)")  # malformed
    return unknown, missing


def check_saved_keys(cls: type, d: dict[str, Any], source: str | None = None) -> None:
    """Raise if a saved config dict lacks a field of `cls` or has one it does not know."""
    where, prefix = (f"{source!r}: ", "config.") if source else ("", "")
    error = ModelFolderError if source else ValueError  # a folder's file is the user's to fix
    unknown, missing = key_problems(cls, d)
    if unknown:
        names = sorted(f.name for f in dataclasses.fields(cls))
        raise error(f"{where}unknown {cls.__name__} keys {[prefix + k for k in unknown]}; expected keys "
                    f"among {names}")
    if missing:
        late = " except worldmodel.config.ADDED_KEYS" if cls is ModelConfig else ""
        raise error(f"{where}missing key(s) {[prefix + k for k in missing]}: a saved model config must "
                    f"hold every {cls.__name__} key{late}; the folder is incomplete or was edited, re-export it")


# -- sizes -------------------------------------------------------------------------------
# Defaults of the latent shape: the CPU RAE (64x64 frames, patch 16 -> 4x4 tokens of 128
# channels) and a GPU-scale RAE (DINOv2-B-like: 16x16 tokens of 768 channels).
CPU_LATENT = dict(latent_dim=128, frame_grid=(4, 4))
GPU_LATENT = dict(latent_dim=768, frame_grid=(16, 16))


def _size(d_model: int, n_layers: int, n_heads: int, n_experts: int, top_k: int, granularity: int,
          max_seq_len: int) -> Callable[..., ModelConfig]:
    def factory(latent_dim: int = 128, frame_grid: tuple[int, int] = (4, 4), action_dim: int = 2,
                **overrides: Any) -> ModelConfig:
        moe = overrides.pop("moe", None) or MoEConfig(kind="moe", n_experts=n_experts, top_k=top_k,
                                                       granularity=granularity, shared_experts=True)
        return ModelConfig(d_model=d_model, n_layers=n_layers, n_heads=n_heads, latent_dim=latent_dim,
                           frame_grid=tuple(frame_grid), action_dim=action_dim, moe=moe,
                           max_seq_len=max_seq_len, **overrides)
    factory.__doc__ = (f"d_model={d_model}, {n_layers} layers, {n_heads} heads, MoE {n_experts} experts "
                       f"top-{top_k} G={granularity} + shared text/vision experts")
    return factory


MODELS: dict[str, Callable[..., ModelConfig]] = {
    # CPU: trains in minutes on 2 cores (CALIBRATION: d 128-192, ~16 tokens/frame); ~2M params.
    "tiny": _size(128, 4, 4, n_experts=8, top_k=2, granularity=4, max_seq_len=2048),
    "small": _size(384, 8, 6, n_experts=16, top_k=2, granularity=8, max_seq_len=4096),
    "base": _size(768, 12, 12, n_experts=16, top_k=2, granularity=8, max_seq_len=8192),
    # ~1.1B total / ~0.25B active parameters: a GPU model (paper granularity G=16).
    "1b": _size(1536, 16, 12, n_experts=32, top_k=2, granularity=16, max_seq_len=8192),
}


def make_config(size: str, latent_dim: int, frame_grid: tuple[int, int], action_dim: int,
                **overrides: Any) -> ModelConfig:
    if size not in MODELS:
        raise ValueError(f"model size {size!r} is unknown, expected one of {sorted(MODELS)}")
    return MODELS[size](latent_dim=latent_dim, frame_grid=frame_grid, action_dim=action_dim, **overrides)
