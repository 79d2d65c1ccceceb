"""The transformer trunk: pre-norm blocks (RMSNorm -> attention with QK-norm -> FeedForward).

Input and output live in the residual stream (B, T, D); embedding the modalities and the
output heads belong to `worldmodel.transfusion`. The FFN of every block is
`worldmodel.moe.FeedForward` (dense / modality / MoE by config), fed the token modality
(0 = text, 1 = vision).

Shape legend: B batch, T new tokens, S cached + new tokens, D model dim.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from worldmodel.config import ModelConfig
from worldmodel.layers import Attention, KVCache, RMSNorm, Rotary
from worldmodel.moe import FeedForward


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg.d_model, cfg.n_heads, cfg.hd, cfg.qk_norm, cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.ffn = FeedForward(cfg.d_model, cfg.moe)
        # AdaLN-zero (DiT): shift, scale, gate of both branches from a per-token condition.
        # No bias, so tokens with a zero condition (text, clean frames) are never modulated.
        self.ada = nn.Linear(cfg.d_model, 6 * cfg.d_model, bias=False) if cfg.action_adaln else None

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask, moe_modality: Tensor,
                past: tuple[Tensor, Tensor] | None = None,
                cond: Tensor | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """cond (B, T, D): the AdaLN condition per token (zero where none); ignored without `ada`."""
        if self.ada is None or cond is None:
            a, kv = self.attn(self.attn_norm(x), cos, sin, mask, past)
            x = x + a
            x = x + self.ffn(self.ffn_norm(x), moe_modality)
            return x, kv
        # gates are 1 + g (not g as in DiT) so that the zero init equals the plain block everywhere
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = self.ada(cond).chunk(6, dim=-1)
        a, kv = self.attn(self.attn_norm(x) * (1 + scale_a) + shift_a, cos, sin, mask, past)
        x = x + (1 + gate_a) * a
        x = x + (1 + gate_f) * self.ffn(self.ffn_norm(x) * (1 + scale_f) + shift_f, moe_modality)
        return x, kv


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.rotary = Rotary(cfg.hd, cfg.rope_theta, cfg.rope_theta_2d, cfg.rope_frac_2d)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)

    def init_weights(self) -> None:
        std = self.cfg.init_std
        out_std = std / math.sqrt(2 * self.cfg.n_layers)   # GPT-2: residual branches scaled by depth
        self.rotary.reset_buffers()
        for blk in self.blocks:
            nn.init.trunc_normal_(blk.attn.qkv.weight, std=std, a=-3 * std, b=3 * std)
            nn.init.trunc_normal_(blk.attn.proj.weight, std=out_std, a=-3 * out_std, b=3 * out_std)
            blk.ffn.init_weights(std, out_std)
            if blk.ada is not None:
                nn.init.zeros_(blk.ada.weight)   # AdaLN-zero: starts as the plain block
            for norm in (blk.attn_norm, blk.ffn_norm, blk.attn.q_norm, blk.attn.k_norm, self.norm):
                if isinstance(norm, RMSNorm):
                    nn.init.ones_(norm.weight)

    def forward(self, x: Tensor, pos: tuple[Tensor, Tensor, Tensor], moe_modality: Tensor, mask,
                cache: KVCache | None = None, commit: bool = False, cond: Tensor | None = None) -> Tensor:
        """x (B, T, D) -> normalised hidden states (B, T, D).

        pos: (pos_seq, pos_row, pos_col), each (B, T). mask: bool (B, 1, T, S) or a
        FlexAttention BlockMask. With a cache, the new tokens attend to the cached ones
        (S = cache length + T); commit=True appends their keys/values to the cache.
        cond (B, T, D): the AdaLN condition of each token (models with action_adaln).
        """
        cos, sin = self.rotary(*pos)
        for i, blk in enumerate(self.blocks):
            past = cache.get(i) if cache is not None else None
            x, (k, v) = blk(x, cos, sin, mask, moe_modality, past, cond)
            if cache is not None and commit:
                cache.append(i, k, v)
        return self.norm(x)

    def new_cache(self) -> KVCache:
        return KVCache(len(self.blocks))


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def check_finite(module: nn.Module) -> None:
    """Raise if any parameter is NaN/inf (e.g. left uninitialised)."""
    for name, p in module.named_parameters():
        if not torch.isfinite(p).all():
            raise ValueError(f"parameter {name} has non-finite values; expected an initialised model")
