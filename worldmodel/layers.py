"""Transformer building blocks: RMSNorm, 3-axis RoPE, attention (SDPA / Flex) and a KV cache.

Shape legend: B batch, T query tokens, S key tokens (cache + new), H heads, K head dim,
D model dim.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # computed in fp32 so bf16 activations keep a stable scale; output in the input dtype
        # (an fp32 weight must not promote bf16 q/k, flex_attention needs one dtype)
        y = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps) * self.weight.float()
        return y.type_as(x)


class Rotary(nn.Module):
    """Rotary embedding over three axes: sequence position, frame row, frame column.

    The head dim is split into K/2 rotation pairs; `frac_2d` of them go to (row, col)
    (half each), the rest to the sequence position. Non-frame tokens have row = col = 0,
    so their 2-D pairs do not rotate.
    """

    def __init__(self, head_dim: int, theta: float = 10000.0, theta_2d: float = 100.0, frac_2d: float = 0.5):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
        pairs = head_dim // 2
        self.n_axis = int(pairs * frac_2d) // 2       # pairs per 2-D axis
        self.n_seq = pairs - 2 * self.n_axis
        self.theta, self.theta_2d = theta, theta_2d
        if self.n_seq < 1:
            raise ValueError(f"head_dim {head_dim} leaves no rotary pairs for the sequence axis (frac_2d={frac_2d})")
        self.register_buffer("inv_seq", torch.empty(self.n_seq), persistent=False)
        self.register_buffer("inv_2d", torch.empty(self.n_axis), persistent=False)
        self.reset_buffers()

    @torch.no_grad()
    def reset_buffers(self) -> None:
        """(Re)compute the frequencies, e.g. after building on the meta device and to_empty()."""
        def inv_freq(n, base, like):
            return base ** (-torch.arange(n, dtype=torch.float32, device=like.device) / max(n, 1))

        self.inv_seq.copy_(inv_freq(self.n_seq, self.theta, self.inv_seq))
        self.inv_2d.copy_(inv_freq(self.n_axis, self.theta_2d, self.inv_2d))

    def forward(self, pos_seq: Tensor, pos_row: Tensor, pos_col: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T) positions -> cos, sin of shape (B, 1, T, K/2)."""
        ang = torch.cat([pos_seq[..., None].float() * self.inv_seq,
                         pos_row[..., None].float() * self.inv_2d,
                         pos_col[..., None].float() * self.inv_2d], dim=-1)  # (B, T, K/2)
        return ang.cos()[:, None], ang.sin()[:, None]


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x (B, H, T, K) rotated pairwise (first half, second half) by the angles."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


_compiled_flex = None


def flex_attention(q: Tensor, k: Tensor, v: Tensor, block_mask) -> Tensor:
    """FlexAttention; compiled on CUDA (eager on CPU is a slow reference, forward only)."""
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention as _flex

    if torch.compiler.is_compiling():       # inside a compiled block: dynamo fuses it itself
        return _flex(q, k, v, block_mask=block_mask)
    if q.is_cuda:
        if _compiled_flex is None:
            _compiled_flex = torch.compile(_flex, dynamic=False)
        return _compiled_flex(q, k, v, block_mask=block_mask)
    return _flex(q, k, v, block_mask=block_mask)


class KVCache:
    """Keys and values of every layer for the tokens already in the stream: (B, H, S, K) each.

    Plain tensors joined with torch.cat, so a rollout through the cache stays differentiable.
    """

    def __init__(self, n_layers: int):
        self.layers: list[tuple[Tensor, Tensor] | None] = [None] * n_layers

    @property
    def length(self) -> int:
        kv = self.layers[0]
        return 0 if kv is None else kv[0].shape[2]

    def get(self, i: int) -> tuple[Tensor, Tensor] | None:
        return self.layers[i]

    def append(self, i: int, k: Tensor, v: Tensor) -> None:
        old = self.layers[i]
        self.layers[i] = (k, v) if old is None else (torch.cat([old[0], k], 2), torch.cat([old[1], v], 2))


class Attention(nn.Module):
    """Multi-head self-attention with QK-norm and 3-axis RoPE.

    The mask picks the backend: a bool tensor (B, 1, T, S) -> SDPA (reference, CPU, KV
    cache); a FlexAttention BlockMask -> flex_attention (CUDA training).
    """

    def __init__(self, d_model: int, n_heads: int, head_dim: int, qk_norm: bool = True, eps: float = 1e-5):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, head_dim
        self.qkv = nn.Linear(d_model, 3 * n_heads * head_dim, bias=False)
        self.proj = nn.Linear(n_heads * head_dim, d_model, bias=False)
        self.q_norm = RMSNorm(head_dim, eps) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(head_dim, eps) if qk_norm else nn.Identity()

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask, past: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x (B, T, D) -> (B, T, D) and this call's (k, v) (B, H, T, K) for the cache."""
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B,H,T,K)
        q = apply_rotary(self.q_norm(q), cos, sin)
        k = apply_rotary(self.k_norm(k), cos, sin)
        k_all, v_all = (k, v) if past is None else (torch.cat([past[0], k], 2), torch.cat([past[1], v], 2))
        if isinstance(mask, Tensor) or mask is None:
            y = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask)
        else:
            y = flex_attention(q.contiguous(), k_all.contiguous(), v_all.contiguous(), mask)
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B,H,T,K) -> (B,T,H*K)
        return self.proj(y), (k, v)
