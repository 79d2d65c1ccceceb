"""The unified Transfusion world model: text next-token + rectified flow on RAE latents + actions.

One transformer (`worldmodel.transformer`) over one packed stream (`worldmodel.sequence`):
  * text / special tokens  -> token embedding;                       head: linear D -> vocab
  * frame latent tokens    -> linear C -> D  + timestep embedding(t); head: linear D -> C
  * actions                -> text tokens, or (embed) an MLP A -> D, one token per step
Clean frames carry t = 1 (or 1 - sigma with context noise); a frame target's noisy copy
carries its sampled t. The flow math (t sampling, noising, x/v targets, Euler sampler)
lives in `worldmodel.flow.RectifiedFlow`.

Loss = text_weight * L_text + flow_weight * L_flow + MoE aux loss, with
  * one t per frame (per frame_id), logit-normal with the resolution shift;
  * condition dropout (CFG): with prob cond_dropout a frame target's noisy copy may not
    attend to its conditioning (the caption / action tokens right before the frame). We
    mask rather than substitute a learned null token: the clean stream is untouched (later
    tokens and the text loss still see the condition), and at sampling time the
    unconditional branch is the same mask over the *same* KV cache - no second context pass;
  * context noise: clean context frames get sigma ~ U(0, context_noise) of noise in
    training with t = 1 - sigma as their timestep, so rollouts may condition on their own
    (imperfect) predictions; `predict_next_frames(context_noise=...)` picks the level
    (default 0 = clean, inside the training range).

Generation uses a KV cache: the context goes through the model once; each Euler step runs
only the new frame's N noisy tokens against the cache; the clean predicted frame is then
appended to the cache (SequenceBuilder gives the same layout as training).

Shape legend: B batch, L tokens, N tokens per frame, C latent channels, A action dim,
Tc context frames, H horizon, V vocabulary, D model dim.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldmodel import hub
from worldmodel.config import ModelConfig
from worldmodel.flow import RectifiedFlow, randn
from worldmodel.moe import active_params, moe_aux_loss, moe_stats
from worldmodel.sequence import (ACTION_VIDEO, IMAGE_TEXT, MOD_ACTION, MOD_VISION, SOURCE_NAMES, TEXT, PackedBatch,
                                 SequenceBuilder, concat, flex_block_mask, mask_from_vectors, sdpa_mask)
from worldmodel.tokenizer import ByteTokenizer
from worldmodel.transformer import Transformer
from worldmodel.stream import ContextPrefix, KVStream

KIND = "transfusion"


class TimestepEmbedder(nn.Module):
    """DiT: sinusoidal features of 1000*t -> MLP -> D."""

    def __init__(self, d_model: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, d_model), nn.SiLU(), nn.Linear(d_model, d_model))

    def forward(self, t: Tensor) -> Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        ang = 1000.0 * t.float()[..., None] * freqs                     # (..., half)
        emb = torch.cat([ang.cos(), ang.sin()], dim=-1)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


@dataclass
class Outputs:
    hidden: Tensor   # (B, L, D) final normalised hidden states
    logits: Tensor   # (B, L, V) next-token logits
    flow: Tensor     # (B, L, C) flow head (x or v prediction; meaningful at noisy frame tokens)


def _front_pad(x: Tensor | None, length: int) -> Tensor | None:
    """(B, n, ...) -> (B, length, ...) with zeros in front: a per-token input given for the tail
    tokens of a chunk (its noisy frame) only."""
    if x is None or x.shape[1] == length:
        return x
    return torch.cat([x.new_zeros(x.shape[0], length - x.shape[1], *x.shape[2:]), x], 1)


# -- per-frame tables ----------------------------------------------------------------------------
# To look something up by frame (the previous frame's latents, the action before a frame), a full
# packed row is scattered into a table with one slot per frame (or per frame and grid cell) and
# gathered back. Tokens that must not be written go to one extra "dump" slot at the end: one
# fixed-shape scatter on the device, where picking the written tokens with a boolean mask would
# cost a host sync and a data-dependent shape. Nothing read from the dump slot is used.
_NO_DOC = -2   # the document of a frame slot nobody wrote: equal to no token's (padding is -1)


def _along_dim1(index: Tensor, like: Tensor) -> Tensor:
    """A (B, L) index expanded over the trailing dims of `like`, for scatter / gather along dim 1."""
    return index.view(*index.shape, *(1,) * (like.dim() - 2)).expand(*index.shape, *like.shape[2:])


def _scatter_table(values: Tensor, slot: Tensor, write: Tensor, n_slots: int, fill: float | bool = 0) -> Tensor:
    """(B, n_slots + 1, ...): values (B, L, ...) at slot (B, L) where write (B, L), `fill` in the
    slots nobody wrote; the last slot is the dump of the tokens not written."""
    table = values.new_full((slot.shape[0], n_slots + 1, *values.shape[2:]), fill)
    return table.scatter(1, _along_dim1(torch.where(write, slot, n_slots), values), values)


def _read_table(table: Tensor, slot: Tensor, valid: Tensor | None = None) -> Tensor:
    """(B, L, ...): table[b, slot[b, i]]. With `valid` (B, L), 0 wherever not valid (those tokens
    read the dump slot)."""
    if valid is None:
        return table.gather(1, _along_dim1(slot, table))
    out = table.gather(1, _along_dim1(torch.where(valid, slot, table.shape[1] - 1), table))
    return out * valid[..., None].to(out.dtype)


class Transfusion(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        D, C = cfg.d_model, cfg.latent_dim
        self.tok_emb = nn.Embedding(cfg.vocab_size, D)
        self.latent_in = nn.Linear(C, D)
        self.time_emb = TimestepEmbedder(D)
        self.prev_in = nn.Linear(C, D, bias=False) if cfg.prev_frame != "off" else None
        self.action_direct = (nn.Linear(D, D, bias=False)
                              if cfg.direct_action and cfg.action_encoding == "embed" else None)
        self.action_in = (nn.Sequential(nn.Linear(cfg.action_dim, D), nn.SiLU(), nn.Linear(D, D))
                          if cfg.action_encoding == "embed" else None)
        self.trunk = Transformer(cfg)
        self.text_head = nn.Linear(D, cfg.vocab_size, bias=False)
        self.flow_head = nn.Linear(D, C)
        self.flow = RectifiedFlow(cfg.flow, cfg.frame_tokens, C)
        self.tokenizer = ByteTokenizer()
        self.extra: dict[str, Any] = {}   # extra config.json fields of a loaded folder (task spec, ...)
        self.init_weights()

    # -- init / info ----------------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self) -> None:
        std = self.cfg.init_std
        for m in [self.tok_emb, self.latent_in, self.text_head, self.flow_head,
                  *self.time_emb.mlp, *(self.action_in or [])]:
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=std, a=-3 * std, b=3 * std)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
        if self.action_in is not None:
            # fan-in scale for the 2-D action input: at std 0.02 the action's features were ~0.03,
            # 10x weaker than the timestep's sinusoids, and training left the actions unused
            a = self.action_in[0]
            nn.init.trunc_normal_(a.weight, std=a.in_features ** -0.5, a=-3 * a.in_features ** -0.5,
                                  b=3 * a.in_features ** -0.5)
        for extra in (self.prev_in, self.action_direct):
            if extra is not None:
                nn.init.zeros_(extra.weight)   # starts as the plain model; learns how much to lean on it
        self.trunk.init_weights()

    @classmethod
    def build(cls, cfg: ModelConfig, device: torch.device | str | None = None) -> Transfusion:
        """Lingua-style: build on the meta device (no memory, no wasted init), materialise on
        `device`, then initialise every parameter and buffer explicitly."""
        with torch.device("meta"):
            model = cls(cfg)
        model.to_empty(device=device or "cpu")
        model.init_weights()
        return model

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def num_active_params(self) -> int:
        """Parameters used per token (one top-k expert set + shared expert, attention, embeddings)."""
        return active_params(self)

    @property
    def device(self) -> torch.device:
        return self.tok_emb.weight.device

    # -- the network ----------------------------------------------------------------------
    def previous_frame_latents(self, b: PackedBatch, z: Tensor) -> Tensor:
        """(B, L, C): at each noisy frame token, the clean-copy input z of the previous frame of
        the same document at the same grid cell; 0 elsewhere (first frames, images, text).

        Full packed sequences only (frame ids index frames within the row). Gathered from a
        (frame, cell) table, no loop over frames; a frame has >= N + 2 tokens, so L // N + 1
        slots bound the frames of a row without a host sync.
        """
        N, (_, W) = self.cfg.frame_tokens, self.cfg.frame_grid
        F = b.seq_len // N + 1
        clean = (b.modality == MOD_VISION) & ~b.is_noisy
        fid, cell = b.frame_id.clamp_min(0), b.pos_row * W + b.pos_col
        clean_latents = _scatter_table(z, fid * N + cell, clean, F * N)     # [frame * N + cell] -> clean-copy z
        frame_doc = _scatter_table(b.doc_id, fid, clean, F, fill=_NO_DOC)   # [frame] -> its document
        prev_fid = (fid - 1).clamp_min(0)
        has_prev = b.is_noisy & (fid >= 1) & (_read_table(frame_doc, prev_fid) == b.doc_id)
        return _read_table(clean_latents, prev_fid * N + cell, has_prev)

    def frame_actions(self, b: PackedBatch, drop: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(B, L, A) raw action conditioning each noisy token's frame, and (B, L) bool where there
        is one (and its conditioning is not dropped). Full packed sequences only; gathered from a
        per-frame table like previous_frame_latents."""
        F = b.seq_len // self.cfg.frame_tokens + 1
        is_act = (b.modality == MOD_ACTION) & (b.cond_of >= 0)
        action_of = _scatter_table(b.actions, b.cond_of, is_act, F)             # [frame] -> the action before it
        has_action = _scatter_table(is_act, b.cond_of, is_act, F, fill=False)   # [frame] -> whether there is one
        fid = b.frame_id.clamp_min(0)
        ok = b.is_noisy & _read_table(has_action, fid)
        if drop is not None:
            ok = ok & ~drop
        return _read_table(action_of, fid), ok

    @property
    def _uses_frame_action(self) -> bool:
        """Whether a frame's own action enters at its noisy tokens (direct input and/or AdaLN)."""
        return self.action_direct is not None or self.cfg.action_adaln

    def _frame_action_emb(self, b: PackedBatch, drop: Tensor | None) -> Tensor | None:
        """(B, L, D): at the noisy tokens of each action-conditioned frame, the embedding of the
        action that leads to it (0 elsewhere and where CFG dropped the condition); None when the
        model has neither the direct action input nor AdaLN. Full sequences only."""
        if not self._uses_frame_action:
            return None
        act, ok = self.frame_actions(b, drop)
        emb = self._embed_action(act)
        return emb * ok[..., None].to(emb.dtype)

    def _embed_action(self, act: Tensor) -> Tensor:
        """Raw actions (..., A) -> the action MLP's embedding (..., D) (scaled by the task's bound)."""
        return self.action_in((act / self.cfg.action_scale).to(self.action_in[0].weight.dtype))

    def _embed(self, b: PackedBatch, z: Tensor, t_emb: Tensor, prev: Tensor | None = None,
               act_emb: Tensor | None = None) -> Tensor:
        """Inputs of every token (B, L, D): token embedding, latent projection + time embedding
        `t_emb` (+ the previous frame `prev` (B, L, C) at noisy tokens, + the direct action input
        from `act_emb` (B, L, D)), or action MLP."""
        h = self.tok_emb(b.tokens)
        h_frame = self.latent_in(z.to(h.dtype)) + t_emb
        if self.prev_in is not None and prev is not None:
            h_frame = h_frame + self.prev_in(prev.to(h.dtype)) * b.is_noisy[..., None].to(h.dtype)
        if self.action_direct is not None and act_emb is not None:
            h_frame = h_frame + self.action_direct(act_emb.to(h.dtype))
        h = torch.where((b.modality == MOD_VISION)[..., None], h_frame.to(h.dtype), h)
        if self.action_in is not None:
            h = torch.where((b.modality == MOD_ACTION)[..., None], self._embed_action(b.actions).to(h.dtype), h)
        return h

    def _adaln_cond(self, b: PackedBatch, t_emb: Tensor, act_emb: Tensor | None,
                    noisy_tail: int | None) -> Tensor | None:
        """The AdaLN condition: SiLU(time embedding + frame action embedding) at noisy frame tokens.
        noisy_tail None (a full sequence): (B, L, D), 0 at every other token (so they are not
        modulated); n (a KV-cached chunk whose noisy tokens are its last n): (B, n, D) for those
        alone. None without AdaLN or without noisy tokens."""
        if not self.cfg.action_adaln or noisy_tail == 0:
            return None
        if noisy_tail is None:
            c = t_emb if act_emb is None else t_emb + act_emb.to(t_emb.dtype)
            return F.silu(c) * b.is_noisy[..., None].to(c.dtype)
        c = t_emb[:, t_emb.shape[1] - noisy_tail:]
        return F.silu(c if act_emb is None else c + act_emb[:, act_emb.shape[1] - noisy_tail:].to(c.dtype))

    def _flow_out(self, h: Tensor, prev: Tensor | None) -> Tensor:
        """The flow head; with prev_frame='residual' the x-prediction is prev + head(h)
        (prev is 0 wherever there is no previous frame, so images predict x directly)."""
        out = self.flow_head(h)
        return out + prev.to(out.dtype) if self.cfg.prev_frame == "residual" and prev is not None else out

    def _prev(self, b: PackedBatch, z: Tensor) -> Tensor | None:
        """previous_frame_latents of a full sequence, when the model uses them."""
        return self.previous_frame_latents(b, z) if self.cfg.prev_frame != "off" else None

    def _run(self, b: PackedBatch, z: Tensor, t: Tensor, mask, stream: KVStream | None = None,
             commit: int = 0, prev: Tensor | None = None, act_emb: Tensor | None = None,
             noisy_tail: int | None = None, keep: int | None = None) -> Tensor:
        """The trunk over chunk b: z (B, L, C) latent inputs, t (B, L) times (or (1, L): the same
        for every row). With a stream: the first `commit` tokens are appended to its cache.
        noisy_tail: a cached chunk's noisy tokens are its last n (AdaLN there only; 0: none);
        None: a full sequence. prev / act_emb may be given for the last tokens only. keep: only
        the last `keep` hidden states are computed (None: all)."""
        total = b.seq_len + (stream.cache.length if stream is not None else 0)
        if total > self.cfg.max_seq_len:
            raise ValueError(f"stream of {total} tokens is longer than max_seq_len={self.cfg.max_seq_len}")
        L = b.seq_len
        t_emb = self.time_emb(t)
        x = self._embed(b, z, t_emb.to(self.tok_emb.weight.dtype), _front_pad(prev, L), _front_pad(act_emb, L))
        moe_mod = (b.modality == MOD_VISION).long()     # MoE: frame tokens vision, all others text
        return self.trunk(x, (b.pos_seq, b.pos_row, b.pos_col), moe_mod, mask,
                          stream.cache if stream is not None else None, commit,
                          self._adaln_cond(b, t_emb, act_emb, noisy_tail), keep)

    def _run_full(self, b: PackedBatch, z: Tensor, t: Tensor, drop: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """A whole packed sequence: its derived inputs (previous frames, direct actions) and mask
        -> (hidden states, the previous-frame latents the flow head needs)."""
        prev = self._prev(b, z)
        h = self._run(b, z, t, self._full_mask(b, drop), prev=prev, act_emb=self._frame_action_emb(b, drop))
        return h, prev

    def _full_mask(self, b: PackedBatch, drop: Tensor | None):
        backend = self.cfg.attn_backend
        if backend == "auto":
            backend = "flex" if b.tokens.is_cuda else "sdpa"
        return flex_block_mask(b, drop) if backend == "flex" else sdpa_mask(b, drop)

    def forward(self, batch: PackedBatch, z: Tensor | None = None, t: Tensor | None = None,
                drop: Tensor | None = None) -> Outputs:
        """Full-sequence forward. z (B, L, C): latent inputs of frame tokens (default: the clean
        batch.latents); t (B, L): their times (default 1); drop (B, L) bool: query tokens whose
        conditioning is hidden (CFG dropout)."""
        z = batch.latents if z is None else z
        t = torch.ones(batch.tokens.shape, device=z.device) if t is None else t
        h, prev = self._run_full(batch, z, t, drop)
        return Outputs(h, self.text_head(h), self._flow_out(h, prev))

    # -- training loss --------------------------------------------------------------------
    def loss(self, batch: PackedBatch, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Any]]:
        """Sample one t per frame and the noise, run the model, return (loss, metrics).

        metrics (python floats): loss, loss_text, loss_flow, moe_aux, loss_text/<source>,
        loss_flow/<source>, loss/<source> for the sources present, moe/* routing stats.
        Condition dropout and context noise apply in training mode only.
        """
        cfg, dev = self.cfg, batch.tokens.device
        B, L = batch.tokens.shape
        x = batch.latents
        frame = batch.modality == MOD_VISION
        noisy = batch.is_noisy
        n_frames = L                                  # static bound on frames per row: no host sync
        fid = batch.frame_id.clamp_min(0)
        t_noisy = self.flow.sample_t(B * n_frames, device=dev, generator=generator).view(B, n_frames).gather(1, fid)
        t_clean = torch.ones_like(t_noisy)
        drop = None
        if self.training and cfg.context_noise > 0:
            sigma = torch.rand(B, n_frames, device=dev, generator=generator) * cfg.context_noise
            t_clean = 1.0 - sigma.gather(1, fid)
        if self.training and cfg.cond_dropout > 0:
            dropped = torch.rand(B, n_frames, device=dev, generator=generator) < cfg.cond_dropout
            drop = dropped.gather(1, fid) & noisy
        t = torch.where(noisy, t_noisy, torch.where(frame, t_clean, torch.ones_like(t_clean)))
        eps = torch.randn(x.shape, device=dev, generator=generator, dtype=x.dtype)
        z = torch.where(frame[..., None], self.flow.interpolate(x, eps, t), x)

        h, prev = self._run_full(batch, z, t, drop)
        logits = self.text_head(h)
        ce = F.cross_entropy(logits.float().flatten(0, 1), batch.text_targets.flatten(),
                             reduction="none").view(B, L)
        fl = self.flow.loss(self._flow_out(h, prev), x, eps).mean(-1)        # (B, L) per-token MSE
        w_text, w_flow = batch.text_loss.float(), noisy.float()
        loss_text = (ce * w_text).sum() / w_text.sum().clamp_min(1.0)
        loss_flow = (fl * w_flow).sum() / w_flow.sum().clamp_min(1.0)
        aux = moe_aux_loss(self)
        loss = cfg.text_weight * loss_text + cfg.flow_weight * loss_flow + aux
        return loss, self._metrics(batch, loss, loss_text, loss_flow, aux, ce, w_text, fl, w_flow)

    @torch.no_grad()
    def _metrics(self, batch, loss, loss_text, loss_flow, aux, ce, w_text, fl, w_flow) -> dict[str, Any]:
        S = len(SOURCE_NAMES)
        src = batch.source.clamp_min(0).flatten()

        def per_source(v, w):
            return torch.zeros(S, device=v.device).index_add_(0, src, (v * w).flatten().float())

        stacked = torch.cat([torch.stack([loss, loss_text, loss_flow, aux]).float(),
                             per_source(ce, w_text), per_source(torch.ones_like(ce), w_text),
                             per_source(fl, w_flow), per_source(torch.ones_like(fl), w_flow)])
        vals = stacked.tolist()                                             # one host sync
        m: dict[str, Any] = dict(zip(("loss", "loss_text", "loss_flow", "moe_aux"), vals[:4]))
        st, ct, sf, cf = (vals[4 + i * S: 4 + (i + 1) * S] for i in range(4))
        for s, name in enumerate(SOURCE_NAMES):
            parts = []
            if ct[s] > 0:
                m[f"loss_text/{name}"] = st[s] / ct[s]
                parts.append(self.cfg.text_weight * m[f"loss_text/{name}"])
            if cf[s] > 0:
                m[f"loss_flow/{name}"] = sf[s] / cf[s]
                parts.append(self.cfg.flow_weight * m[f"loss_flow/{name}"])
            if parts:
                m[f"loss/{name}"] = sum(parts)
        m["text_tokens"] = sum(ct)
        m["flow_tokens"] = sum(cf)
        m.update({k: v for k, v in moe_stats(self).items() if k.startswith("moe/")})
        return m

    # -- KV-cached stream -------------------------------------------------------------------
    def _commit(self, stream: KVStream, chunk: PackedBatch, t_clean: float = 1.0, keep: int | None = 0) -> Tensor:
        """Run a chunk of clean tokens against the cache and append it; returns the hidden states
        of its last `keep` tokens (0: none are needed, the last block then only gives keys and
        values; None: all)."""
        keys = stream.keys_with(chunk)
        t = torch.full((1, chunk.seq_len), t_clean, device=chunk.tokens.device)    # one time for every row
        h = self._run(chunk, chunk.latents, t, mask_from_vectors(chunk, keys), stream, commit=chunk.seq_len,
                      noisy_tail=0, keep=keep)
        stream.keys = keys
        return h

    def _noised(self, lat: Tensor, sigma: float, generator: torch.Generator | None) -> Tensor:
        if sigma <= 0:
            return lat
        eps = randn(lat.shape, generator, lat.device, lat.dtype)  # one generator, or one per row
        return self.flow.interpolate(lat, eps, torch.full(lat.shape[:1], 1.0 - sigma, device=lat.device))

    def _sample_frame(self, stream: KVStream, q: PackedBatch, prev: Tensor, steps: int | None, cfg_scale: float,
                      generator: torch.Generator | None, action: Tensor | None = None,
                      shared_noise: bool = False, pending: PackedBatch | None = None,
                      t_pending: float = 1.0) -> Tensor:
        """Euler-sample the noisy frame chunk q (B, N) against the cache -> clean latents (B, N, C).
        prev (B, N, C): the previous frame's clean-copy latents (the frame-stacking input);
        action (B, A): the step's raw action (the direct action input), None for none;
        shared_noise: one noise draw for all rows (common random numbers for comparing rows).
        pending: clean tokens not yet in the cache that come right before q (the last frame's
        clean copy, the action, <boi>; their time t_pending): committed in the same forward as
        the first denoising step, which saves a pass per frame (the same result: q's tokens see
        them as they would see them in the cache)."""
        N = q.seq_len
        act_emb = None
        if self._uses_frame_action and action is not None:
            act_emb = self._embed_action(action)[:, None].expand(-1, N, -1)          # (B, N, D)
        predict = partial(self._predict_noisy_frame, stream=stream, q=q, prev=prev, act_emb=act_emb)
        if pending is not None:
            chunk = concat([pending, q])
            fused_mask = mask_from_vectors(chunk, stream.keys_with(chunk))

            def first_step(z: Tensor, t: Tensor) -> Tensor:
                zz = torch.cat([pending.latents, z.to(pending.latents.dtype)], 1)
                tt = torch.cat([torch.full((t.shape[0], pending.seq_len), t_pending, device=t.device),
                                t[:, None].expand(t.shape[0], N)], 1)
                h = self._run(chunk, zz, tt, fused_mask, stream, commit=pending.seq_len, prev=prev,
                              act_emb=act_emb, noisy_tail=N, keep=N)
                stream.keys = stream.keys_with(pending)
                return self._flow_out(h, prev)
        keys = stream.keys_with(pending) if pending is not None else None
        keys = keys.cat(q) if keys is not None else stream.keys_with(q)
        cond = partial(predict, mask=mask_from_vectors(q, keys))
        # the unconditional branch hides the action every way: attention, direct input and AdaLN
        uncond = (partial(predict, mask=mask_from_vectors(q, keys, q.is_noisy), act_emb=None)
                  if cfg_scale != 1.0 else None)
        shape = q.latents.shape
        noise = randn((1, *shape[1:]) if shared_noise else shape, generator, q.latents.device,
                      q.latents.dtype).expand(shape)  # generator: one, or one per row (flow.randn)
        return self.flow.sample(cond, noise, steps, cfg_scale, uncond, first=first_step if pending is not None else None)

    def _predict_noisy_frame(self, z: Tensor, t: Tensor, *, stream: KVStream, q: PackedBatch, mask: Tensor,
                             prev: Tensor, act_emb: Tensor | None) -> Tensor:
        """flow.sample's predict(z, t): the flow head's output (B, N, C) for the noisy frame chunk q
        at latents z (B, N, C) and times t ((B,) or (1,)), attending to the cache (not appending)."""
        N = q.seq_len
        h = self._run(q, z, t[:, None].expand(t.shape[0], N), mask, stream, prev=prev, act_emb=act_emb, noisy_tail=N)
        return self._flow_out(h, prev)

    def _check_rollout(self, context: Tensor, context_actions: Tensor, actions: Tensor,
                       text: list[str] | None) -> None:
        """The one check of a rollout's inputs: LatentWorld (the env's, the planners' and the
        evaluators' way in) passes them through to here unchecked."""
        cfg = self.cfg
        N, C, A = cfg.frame_tokens, cfg.latent_dim, cfg.action_dim
        if context.dim() != 4 or context.shape[2:] != (N, C) or context.shape[1] < 1:
            raise ValueError(f"context has shape {tuple(context.shape)}, expected (B, Tc>=1, {N}, {C})")
        Bc, Tc = context.shape[:2]
        if context_actions.shape != (Bc, Tc - 1, A):
            raise ValueError(f"context_actions has shape {tuple(context_actions.shape)}, expected ({Bc}, {Tc - 1}, {A}) "
                             f"(context actions have shape (Bc, Tc-1, A): one between each two context frames)")
        if actions.dim() != 3 or actions.shape[2] != A or actions.shape[0] % Bc:
            raise ValueError(f"actions have shape {tuple(actions.shape)}, expected (B, H, {A}) with B a multiple of the "
                             f"{Bc} contexts (B = {Bc}: one row each; B = {Bc} * r: row i continues context i // r)")
        B = actions.shape[0]
        if cfg.action_encoding == "text" and torch.is_grad_enabled() and actions.requires_grad:
            raise ValueError("action_encoding='text' writes actions as tokens, which carry no gradient; "
                             "expected action_encoding='embed' for gradient-based planning")
        if text is not None:
            if cfg.action_encoding != "text":
                raise ValueError(f"a text command needs action_encoding='text', got {cfg.action_encoding!r}")
            if len(text) != context.shape[0]:
                raise ValueError(f"text has {len(text)} commands, expected one per context row ({context.shape[0]})")

    def _context_stream(self, context: Tensor, context_actions: Tensor, text: list[str] | None,
                        context_noise: float, generator: torch.Generator | None) -> tuple[SequenceBuilder, Tensor]:
        """[text][frame0][act0][frame1]...[frame_{Tc-1}] in a builder (not yet run), and the
        context frames as committed (B, Tc, N, C) (noised when context_noise > 0)."""
        B, Tc = context.shape[:2]
        sb = SequenceBuilder(self.cfg, B, device=self.device, dtype=context.dtype)
        sb.new_document(ACTION_VIDEO)
        if text is not None:
            sb.text([self.tokenizer.encode(s) for s in text], loss=False)
        committed = []
        for i in range(Tc):
            committed.append(self._noised(context[:, i].to(self.device), context_noise, generator))
            sb.frame(committed[-1], loss=False)
            if i < Tc - 1:
                sb.action(context_actions[:, i].to(self.device))
        return sb, torch.stack(committed, 1)

    @torch.no_grad()
    def prefill(self, context: Tensor, context_actions: Tensor, text: list[str] | None = None,
                context_noise: float = 0.0, generator: torch.Generator | None = None) -> ContextPrefix:
        """The context's KV cache, computed once: pass the result as `context` to
        predict_next_frames / predict_frame_after (context_actions=None) any number of times, e.g.
        the CEM iterations of one replan, which all continue the same observation. Inference only
        (no autograd through the cache); context_noise is drawn here, once for all those calls."""
        no_actions = context_actions.new_zeros(context.shape[0], 0, self.cfg.action_dim)
        self._check_rollout(context, context_actions, no_actions, text)
        sb, frames = self._context_stream(context, context_actions, text, context_noise, generator)
        stream = KVStream(self.cfg.n_layers)
        self._commit(stream, sb.take(), 1.0 - context_noise)
        return ContextPrefix(stream, sb, frames, context_actions.to(self.device), 1.0 - context_noise)

    def _start(self, context: Tensor | ContextPrefix, context_actions: Tensor | None, actions: Tensor,
               text: list[str] | None, context_noise: float, generator
               ) -> tuple[SequenceBuilder, KVStream, Tensor, Tensor, float]:
        """(builder, stream, context frames as committed (B, Tc, N, C), their actions (B, Tc-1, A),
        their time) for the B = actions.shape[0] rows. Bc < B contexts (row i continues context
        i // (B // Bc)) are committed once, at Bc rows, and their KV cache is shared; a
        ContextPrefix brings that cache ready. Bc == B: the context goes into the first step's forward."""
        B = actions.shape[0]
        if isinstance(context, ContextPrefix):
            if actions.dim() != 3 or actions.shape[2] != self.cfg.action_dim or B % context.rows:
                raise ValueError(f"actions have shape {tuple(actions.shape)}, expected (B, H, {self.cfg.action_dim}) "
                                 f"with B a multiple of the prefix's {context.rows} contexts")
            prefix = context
        else:
            self._check_rollout(context, context_actions, actions, text)
            if context_noise > 0 and context.shape[0] != B and not isinstance(generator, (torch.Generator, type(None))):
                raise ValueError("context_noise with shared contexts needs one generator (or none), not one per row")
            t_clean = 1.0 - context_noise
            sb, frames = self._context_stream(context, context_actions, text, context_noise, generator)
            stream = KVStream(self.cfg.n_layers)
            if context.shape[0] == B:
                return sb, stream, frames, context_actions.to(self.device), t_clean
            self._commit(stream, sb.take(), t_clean)
            prefix = ContextPrefix(stream, sb, frames, context_actions.to(self.device), t_clean)
        r = B // prefix.rows
        sb, stream, _, t_clean = prefix.continued(r, copy=prefix is context)
        frames, acts = (prefix.frames, prefix.actions) if r == 1 else \
            (prefix.frames.repeat_interleave(r, 0), prefix.actions.repeat_interleave(r, 0))
        return sb, stream, frames, acts, t_clean

    def predict_next_frames(self, context: Tensor, context_actions: Tensor, actions: Tensor,
                            steps: int | None = None, cfg_scale: float = 1.0,
                            generator: torch.Generator | None = None, text: list[str] | None = None,
                            context_noise: float = 0.0, shared_noise: bool = False,
                            window: int = 0) -> Tensor:
        """Roll the world forward: (Bc, Tc, N, C) context, (Bc, Tc-1, A) its actions, (B, H, A)
        actions -> (B, H, N, C) predicted latent frames. B is a multiple of Bc: row i continues
        context i // (B // Bc), whose KV cache is computed once and shared (the candidates of one
        plan); Bc == B gives every row its own context. `context` may be a ContextPrefix from
        `prefill` (context_actions None): that cache, computed once for many calls.

        Builds [text][frame0][act0][frame1]...[frame_{Tc-1}], then per step appends the action,
        Euler-samples the next frame (its noisy copy at the next position, `steps` steps, CFG
        when cfg_scale != 1) and appends the clean prediction to the KV cache; the tokens that
        join the cache go through the model together with the first denoising step of the next
        frame. Differentiable unless called under no_grad. context_noise: sigma added to every
        context frame (given and predicted), with t = 1 - sigma, as in training. shared_noise:
        every row samples from the same noise, so rows differ only by their inputs (a planner
        comparing candidates). text: one command per context row.

        window: 0 conditions each frame on everything before it. k > 0: no frame sees more than the
        last k frames (given or predicted). Once the stream would hold more, the next frame starts a
        new stream from the last min(Tc, k - 1) frames (at least 1) and the actions between them, so
        a long rollout becomes a chain of documents shaped as the context it was given followed by
        imagined frames. A model trained on documents of a few frames predicts a frame after a
        longer history worse than one after the history it was trained on (docs/EXPERIMENTS.md
        entry 38); with k = context + predicted frames - 1 every document of the chain has the
        shape of a training document.
        """
        if window < 0:
            raise ValueError(f"window={window}, expected 0 (the whole history) or a number of frames >= 1")
        sb, stream, frames, acts, t_clean = self._start(context, context_actions, actions, text, context_noise,
                                                        generator)
        last = frames[:, -1]
        if actions.shape[1] == 0:
            return last.new_zeros(actions.shape[0], 0, *last.shape[1:])
        B = actions.shape[0]
        if window and text is not None:
            text = [s for s in text for _ in range(B // len(text))]      # one command per row
        keep = max(1, min(frames.shape[1], window - 1))     # frames a restarted stream begins with
        history_f, history_a = list(frames.unbind(1)), list(acts.unbind(1))
        in_stream = frames.shape[1]                         # frames the current stream holds
        stream.cache.headroom = actions.shape[1] * (self.cfg.frame_tokens + 3)   # per step: frame, <eoi>, action, <boi>
        out = []
        for h in range(actions.shape[1]):
            a = actions[:, h].to(self.device)
            if window and in_stream > window:            # restart from the last `keep` frames
                kept_a = history_a[len(history_a) - keep + 1:] if keep > 1 else []
                sb, _ = self._context_stream(torch.stack(history_f[-keep:], 1),
                                             torch.stack(kept_a, 1) if kept_a else a.new_zeros(B, 0, a.shape[1]),
                                             text, 0.0, None)
                stream, in_stream = KVStream(self.cfg.n_layers), keep
            sb.action(a)
            sb.begin_frame()
            pending = sb.take()                          # context / last frame + action + <boi>
            sb.frame_tokens(torch.zeros_like(last), noisy=True)
            x = self._sample_frame(stream, sb.take(), last, steps, cfg_scale, generator, a,
                                   shared_noise, pending=pending, t_pending=t_clean)
            out.append(x)
            last = self._noised(x, context_noise, generator)
            sb.frame_tokens(last, noisy=False)
            sb.end_frame()
            in_stream += 1
            if window:
                history_f.append(last)
                history_a.append(a)
        return torch.stack(out, 1)

    def predict_frame_after(self, context: Tensor, context_actions: Tensor, actions: Tensor,
                            steps: int | None = None, cfg_scale: float = 1.0,
                            generator: torch.Generator | None = None, text: list[str] | None = None,
                            shared_noise: bool = False) -> Tensor:
        """Jump H steps ahead: (B, Tc, N, C) context, (B, Tc-1, A) its actions, (B, H, A) actions
        -> (B, N, C), the frame after all H actions, sampled once with no frames in between.

        The layout of `data.max_jump` training ([context] a_0 ... a_{H-1} <boi> frame); it
        needs a model trained with max_jump >= H (`LatentWorld.max_jump`). One frame instead of
        H makes an H-step plan H times cheaper to score, and errors do not compound through
        imagined frames. Differentiable unless called under no_grad.
        """
        if actions.dim() == 3 and actions.shape[1] == 0:
            raise ValueError("actions has shape (B, 0, A); predict_frame_after needs at least one action")
        if self._uses_frame_action:
            raise ValueError("the direct action input and AdaLN take one action per frame; a jump needs a model "
                             "with direct_action=false and action_adaln=false")
        sb, stream, frames, _, _ = self._start(context, context_actions, actions, text, 0.0, generator)
        last = frames[:, -1]
        for h in range(actions.shape[1]):
            sb.action(actions[:, h].to(self.device))
        sb.begin_frame()
        pending = sb.take()                                     # context + all H actions + <boi>
        sb.frame_tokens(torch.zeros_like(last), noisy=True)
        return self._sample_frame(stream, sb.take(), last, steps, cfg_scale, generator, shared_noise=shared_noise,
                                  pending=pending)

    @torch.no_grad()
    def generate_frames(self, texts: list[str], steps: int | None = None, cfg_scale: float = 1.0,
                        generator: torch.Generator | None = None) -> Tensor:
        """Caption -> image: (B,) strings -> (B, N, C) latent frames, the image-text layout of
        training ([caption][<boi> frame]) with the frame Euler-sampled against the cached caption."""
        if not texts or not all(isinstance(s, str) and s.strip() for s in texts):
            raise ValueError(f"texts={texts!r}, expected a non-empty list of non-empty strings")
        B, N, C = len(texts), self.cfg.frame_tokens, self.cfg.latent_dim
        dtype = self.latent_in.weight.dtype
        sb = SequenceBuilder(self.cfg, B, device=self.device, dtype=dtype)
        sb.new_document(IMAGE_TEXT)
        sb.text([self.tokenizer.encode(s, bos=True, eos=True) for s in texts], loss=False)
        sb.begin_frame()
        stream = KVStream(self.cfg.n_layers)
        pending = sb.take()
        zeros = torch.zeros(B, N, C, device=self.device, dtype=dtype)   # no previous frame in an image document
        sb.frame_tokens(zeros, noisy=True)
        return self._sample_frame(stream, sb.take(), zeros, steps, cfg_scale, generator, pending=pending)

    # -- text --------------------------------------------------------------------------------
    @staticmethod
    def _sample_token(logits: Tensor, temperature: float, top_p: float, generator) -> Tensor:
        """(B, V) -> (B,) ids: greedy at temperature 0, else nucleus sampling."""
        if temperature <= 0:
            return logits.argmax(-1)
        probs = torch.softmax(logits.float() / temperature, -1)
        if top_p < 1.0:
            p_sorted, order = probs.sort(-1, descending=True)
            keep = p_sorted.cumsum(-1) - p_sorted < top_p          # always keeps the top token
            p_sorted = p_sorted * keep
            probs = torch.zeros_like(probs).scatter_(-1, order, p_sorted)
        return torch.multinomial(probs / probs.sum(-1, keepdim=True), 1, generator=generator)[:, 0]

    @torch.no_grad()
    def generate_text(self, prefix_ids: list[int] | Tensor, max_new: int = 64, temperature: float = 1.0,
                      top_p: float = 1.0, generator: torch.Generator | None = None) -> list[int] | Tensor:
        """Sample text after a prefix with a KV cache. A list prefix returns a list of new ids
        (cut at <eos>); a (B, T) tensor returns (B, max_new) new ids."""
        as_list = not isinstance(prefix_ids, Tensor)
        ids = torch.tensor([list(prefix_ids)], dtype=torch.long) if as_list else prefix_ids
        if ids.dim() != 2 or ids.shape[1] < 1:
            raise ValueError(f"prefix_ids has shape {tuple(ids.shape)}, expected (B, T>=1) or a non-empty list")
        sb = SequenceBuilder(self.cfg, ids.shape[0], device=self.device)
        sb.new_document(TEXT)
        sb.text(ids.to(self.device), loss=False)
        stream, new = KVStream(self.cfg.n_layers), []
        h = self._commit(stream, sb.take(), keep=1)
        for i in range(max_new):
            nxt = self._sample_token(self.text_head(h[:, -1]), temperature, top_p, generator)
            new.append(nxt)
            if i < max_new - 1:
                sb.text(nxt[:, None], loss=False)
                h = self._commit(stream, sb.take(), keep=1)
        out = torch.stack(new, 1) if new else torch.zeros(ids.shape[0], 0, dtype=torch.long, device=self.device)
        if not as_list:
            return out
        seq = out[0].tolist()
        return seq[:seq.index(self.tokenizer.eos_id)] if self.tokenizer.eos_id in seq else seq

    # -- save / load -------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        return hub.save_pretrained(path, KIND, self.cfg.to_dict(), self.state_dict(), extra=extra)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> Transfusion:
        meta = hub.read_config(path, KIND)
        model = cls(ModelConfig.from_dict(meta["config"], source=str(Path(path) / hub.CONFIG_NAME)))
        model.load_state_dict(hub.load_state_dict(path), strict=True)
        model.extra = {k: v for k, v in meta.items() if k not in ("kind", "config")}
        return model.to(device).eval()
