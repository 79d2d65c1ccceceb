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
                cache: KVCache | None = None, layer: int = 0, cond: Tensor | None = None,
                keep: int | None = None) -> Tensor:
        """x (B, T, D) -> (B, T', D); with a cache, attending to it and writing this chunk's keys
        and values into it as layer `layer` (see Attention).

        cond (B, n, D): the AdaLN condition of the LAST n tokens (n = T in training, where it is
        zero at every token that is not a noisy frame token; in a KV-cached chunk only its noisy
        tail is conditioned, and the tokens before it are unmodulated, as a zero condition would
        leave them); ignored without `ada`. keep: only the last `keep` tokens go on past the
        attention (T' = keep; the others only give keys and values); None keeps all.
        """
        # gates are 1 + g (not g as in DiT) so that the zero init equals the plain block everywhere
        mod = self.ada(cond).chunk(6, dim=-1) if self.ada is not None and cond is not None else None
        h = self.attn_norm(x)
        a = self.attn(h if mod is None else _modulate(h, mod[1], mod[0]), cos, sin, mask, cache, layer, keep)
        if keep is not None:                      # only the last `keep` tokens go on (0: keys and values only)
            T = x.shape[1]
            x, moe_modality = x[:, T - keep:], moe_modality[:, T - keep:]
            if keep == 0:
                return x
        if mod is None:
            x = x + a
            return x + self.ffn(self.ffn_norm(x), moe_modality)
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = mod                # (B, n, D) each
        x = x + _modulate(a, gate_a)
        return x + _modulate(self.ffn(_modulate(self.ffn_norm(x), scale_f, shift_f), moe_modality), gate_f)


def _modulate(h: Tensor, scale: Tensor, shift: Tensor | None = None) -> Tensor:
    """h (B, T, D) with its last n tokens (n = scale.shape[1], or T if fewer) as h * (1 + scale)
    + shift; the tokens before them are left as they are (what a zero AdaLN condition does)."""
    T, n = h.shape[1], min(scale.shape[1], h.shape[1])
    scale = scale[:, scale.shape[1] - n:]
    tail = h[:, T - n:] * (1 + scale)
    if shift is not None:
        tail = tail + shift[:, shift.shape[1] - n:]
    return tail if n == T else torch.cat([h[:, :T - n], tail], 1)


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
                cache: KVCache | None = None, commit: int | bool = 0, cond: Tensor | None = None,
                keep: int | None = None) -> Tensor:
        """x (B, T, D) -> normalised hidden states (B, T', D).

        pos: (pos_seq, pos_row, pos_col), each (B, T) (or (1, T), shared by all rows). mask: bool
        (B, 1, T, S) or a FlexAttention BlockMask. With a cache, the new tokens attend to the
        cached ones (S = cache length + T); the first `commit` of them are appended to the cache
        (their keys/values; 0 or False: none, True: all). cond (B, n, D): the AdaLN condition of the last n tokens
        (models with action_adaln). keep: the hidden states of only the last `keep` tokens are
        needed (T' = keep): the last block runs its attention output and FFN for those alone
        (a commit needs only keys and values from it). None: all T.
        """
        n_commit = x.shape[1] if commit is True else int(commit)
        cos, sin = self.rotary(*pos)
        last = len(self.blocks) - 1
        for i, blk in enumerate(self.blocks):
            x = blk(x, cos, sin, mask, moe_modality, cache, i, cond, keep if i == last else None)
        if cache is not None:
            cache.advance(n_commit)
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
