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
        """(B, T) positions -> cos, sin of shape (B, 1, T, K), laid out for `apply_rotary`:
        cos = [cos a, cos a], sin = [-sin a, sin a] over the K/2 angles a."""
        ang = torch.cat([pos_seq[..., None].float() * self.inv_seq,
                         pos_row[..., None].float() * self.inv_2d,
                         pos_col[..., None].float() * self.inv_2d], dim=-1)  # (B, T, K/2)
        cos, sin = ang.cos(), ang.sin()
        return torch.cat([cos, cos], -1)[:, None], torch.cat([-sin, sin], -1)[:, None]


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x (..., T, K) rotated pairwise (first half, second half) by the angles of `Rotary`:
    [x1 cos - x2 sin, x2 cos + x1 sin], as x * cos + [x2, x1] * sin (four ops, the same values)."""
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    return (xf * cos + torch.cat([x2, x1], dim=-1) * sin).type_as(x)


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

    `extend(i, k, v)` gives layer i's keys/values of the cached tokens followed by a chunk's, and
    `advance(n)` (after the last layer) keeps the chunk's first n tokens. Built under no_grad
    (inference: rollouts, planning) the cache is one preallocated buffer per layer that chunks
    are written into, grown by doubling, so no step copies the whole cache; built with autograd
    on, it joins plain tensors with torch.cat, so a rollout through it stays differentiable
    (gradient planners).
    """

    def __init__(self, n_layers: int):
        self.layers: list[tuple[Tensor, Tensor] | None] = [None] * n_layers
        self.length = 0                  # cached tokens
        self.buffered: bool | None = None
        # tokens still to come after the first chunk (a rollout's horizon): the first buffer gets that
        # room, so the cache is not regrown (a regrowth copies the whole cache)
        self.headroom = 0

    def extend(self, i: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Layer i: the cached keys/values followed by this chunk's k, v (B, H, T, K) -> (B, H, S, K)."""
        if self.buffered is None:
            self.buffered = not torch.is_grad_enabled()
        L, T, old = self.length, k.shape[2], self.layers[i]
        if not self.buffered:
            if old is None:
                self.layers[i] = (k, v)
                return k, v
            k_all, v_all = torch.cat([old[0][:, :, :L], k], 2), torch.cat([old[1][:, :, :L], v], 2)
            self.layers[i] = (k_all, v_all)        # advance() decides how much of it stays
            return k_all, v_all
        if old is None or old[0].shape[2] < L + T:  # (re)allocate with room to grow
            cap = max(2 * (L + T), 32, L + T + self.headroom)
            buf = tuple(x.new_empty(x.shape[0], x.shape[1], cap, x.shape[3]) for x in (k, v))
            if old is not None:
                buf[0][:, :, :L], buf[1][:, :, :L] = old[0][:, :, :L], old[1][:, :, :L]
            self.layers[i] = old = buf
        old[0][:, :, L:L + T] = k
        old[1][:, :, L:L + T] = v
        return old[0][:, :, :L + T], old[1][:, :, :L + T]

    def advance(self, n: int) -> None:
        """Keep the first n tokens of the chunk just passed through every layer (0: none)."""
        self.length += n

    def repeat_rows(self, r: int) -> None:
        """Every cached row repeated r times (row b -> rows b*r .. b*r + r-1): a context computed
        once is shared by r continuations (the candidates of one plan). One broadcast copy per
        tensor, into a buffer of the same capacity when buffered."""
        L = self.length

        def repeated(t: Tensor) -> Tensor:
            Bc, H, cap, K = t.shape
            new = t.new_empty(Bc * r, H, cap if self.buffered else L, K)
            new.view(Bc, r, H, -1, K)[:, :, :, :L] = t[:, None, :, :L]
            return new

        self.layers = [None if kv is None else (repeated(kv[0]), repeated(kv[1])) for kv in self.layers]


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """Softmax attention (B, H, T, K) x (B, H, S, K) -> (B, H, T, K), bool mask (B|1, 1, T, S).

    Used for KV-cached decoding on the CPU, where a few new tokens attend to a short cache: there
    the plain matmul-softmax is about twice as fast as SDPA's flash kernel (docs/EXPERIMENTS.md, 15)."""
    s = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)                       # (B, H, T, S)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return s.softmax(-1) @ v


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

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask, cache: KVCache | None = None, layer: int = 0,
                queries: int | None = None) -> Tensor:
        """x (B, T, D) -> (B, T', D). With a cache, the tokens attend to the cached ones too and
        their keys/values are written into it (layer `layer`; `cache.advance` keeps them).

        queries: only the last `queries` tokens attend (T' = queries; the mask's query rows are
        the last ones too); the others only give keys and values (a KV-cache commit whose outputs
        nobody reads). None: all T tokens."""
        B, T, _ = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3,B,H,T,K)
        v = qkv[2]
        if isinstance(self.q_norm, RMSNorm) and isinstance(self.k_norm, RMSNorm):
            q, k = self._norm_rotate_qk(qkv[:2], cos, sin)     # q and k in one pass
        else:
            q, k = (apply_rotary(norm(t), cos, sin) for norm, t in ((self.q_norm, qkv[0]), (self.k_norm, qkv[1])))
        cached = cache is not None and cache.length > 0
        k_all, v_all = cache.extend(layer, k, v) if cache is not None else (k, v)
        if queries is not None:
            T = queries
            if T == 0:
                return x.new_zeros(B, 0, self.proj.out_features)
            if not isinstance(mask, Tensor):
                raise ValueError("queries= needs a dense bool mask (KV-cached decoding), not a FlexAttention BlockMask")
            q, mask = q[:, :, -T:], mask[..., -T:, :]
        if cached and not q.is_cuda and (isinstance(mask, Tensor) or mask is None):
            y = attend(q, k_all, v_all, mask)
        elif isinstance(mask, Tensor) or mask is None:
            y = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask)
        else:
            y = flex_attention(q.contiguous(), k_all.contiguous(), v_all.contiguous(), mask)
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B,H,T,K) -> (B,T,H*K)
        return self.proj(y)

    def _norm_rotate_qk(self, qk: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
        """QK-norm and RoPE of q and k stacked (2, B, H, T, K): the same values as q_norm/k_norm and
        apply_rotary on each, in a third of the ops."""
        w = torch.stack([self.q_norm.weight, self.k_norm.weight]).float().view(2, 1, 1, 1, -1)
        qk_n = (F.rms_norm(qk.float(), (qk.shape[-1],), eps=self.q_norm.eps) * w).type_as(qk)
        q, k = apply_rotary(qk_n, cos, sin).unbind(0)
        return q, k
