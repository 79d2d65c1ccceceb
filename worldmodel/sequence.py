"""One packed multimodal token stream, built from segments.

A document is a list of segments: `Text` (byte-token ids), `Frame` (RAE latent tokens of
one image) and `Action` (one action vector). `SequenceBuilder` lays them out and produces,
together, every per-token vector the model needs: token ids, modality, frame ids, noisy
flags, document ids, the three RoPE positions and the text targets. The attention mask is
then *derived* from those vectors (`mask_from_vectors`), never stored, so the layout and
the mask cannot disagree.

Layout of one frame (N = grid_h * grid_w latent tokens, p = its sequence position):

    <boi>@p  [noisy copy: N tokens @p+1]  [clean copy: N tokens @p+1]  <eoi>@p+2

The noisy copy exists only when `Frame.loss` is True: it is the flow-matching input and
carries the frame's own loss. Clean context ("duplicate noisy copies with a mask"):
  * the tokens of one copy attend to each other (bidirectional) and to every earlier clean
    token of their document;
  * nothing attends to a noisy copy except the copy itself, so every later token - the
    clean copy included - sees only the clean frame;
  * documents packed into one row never attend across each other (padding is its own
    "document", doc_id -1, that no real token sees).
This is exactly what a rollout does: context frames sit clean in the KV cache and the new
frame is denoised at the next position, seeing the cache and itself.

Positions: every token of a frame (both copies) shares one sequence position; (row, col)
inside the frame feed the 2-D rotary components. Non-frame tokens have row = col = 0.

Conditioning for classifier-free guidance: the Text/Action segments that sit between a
frame and the previous frame of its document (a caption before an image, the action
before the next video frame) are that frame's conditioning; `cond_of` names the frame.
The frame's own <boi> is marked too, since it attends to the condition and would leak it.
Condition dropout hides these tokens from the frame's *noisy* copy only (see `allowed`).

Actions: `action_encoding="text"` writes `<act>` + ByteTokenizer.format_action(a /
action_scale) + `<eoa>` as ordinary (loss-free) text tokens; `"embed"` emits one token of
modality ACTION whose raw values go to `PackedBatch.actions` (the model's MLP embeds them).

Shape legend: B rows, L tokens, N tokens per frame, C latent channels, A action dim.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import torch
from torch import Tensor

from worldmodel.tokenizer import ByteTokenizer

# Document sources (losses are reported per source).
TEXT, IMAGE_TEXT, VIDEO, ACTION_VIDEO = 0, 1, 2, 3
SOURCE_NAMES = ("text", "image_text", "video", "action_video")

# Token modalities. The MoE FFN sees vision (1) for frame tokens, text (0) for all others.
MOD_TEXT, MOD_VISION, MOD_ACTION = 0, 1, 2

# Text-encoded actions are clamped to this magnitude (after / action_scale) so every action
# formats to the same number of bytes and batched rollouts stay in lockstep.
TEXT_ACTION_CLAMP = 9.99

_TOK = ByteTokenizer()


# -- segments -------------------------------------------------------------------------
@dataclass
class Text:
    ids: list[int]              # byte-token ids (ByteTokenizer), specials allowed
    loss: bool = True           # next-token loss on these tokens


@dataclass
class Frame:
    latents: Tensor             # (N, C) normalised RAE latents, row-major over the grid
    loss: bool = True           # True: the frame is a flow target (a noisy copy is added)


@dataclass
class Action:
    values: Tensor              # (A,) raw action (in the task's units; divided by action_scale)


@dataclass
class Document:
    segments: list              # Text / Frame / Action, in order
    source: int                 # TEXT, IMAGE_TEXT, VIDEO or ACTION_VIDEO


# -- the packed batch --------------------------------------------------------------------
@dataclass
class PackedBatch:
    tokens: Tensor        # (B, L) long  token ids (<pad> at frame/action-embed tokens)
    modality: Tensor      # (B, L) long  MOD_TEXT / MOD_VISION / MOD_ACTION
    frame_id: Tensor      # (B, L) long  frame index within the row, -1 for non-frame tokens
    is_noisy: Tensor      # (B, L) bool  token of a frame's noisy copy
    doc_id: Tensor        # (B, L) long  document index within the row, -1 for padding
    source: Tensor        # (B, L) long  document source, -1 for padding
    index: Tensor         # (B, L) long  stream index (causal order; absolute in a KV-cached stream)
    pos_seq: Tensor       # (B, L) long  RoPE sequence position (shared by a frame's tokens)
    pos_row: Tensor       # (B, L) long  row inside the frame (0 for non-frame tokens)
    pos_col: Tensor       # (B, L) long  column inside the frame (0 for non-frame tokens)
    cond_of: Tensor       # (B, L) long  frame id this token conditions (CFG dropout), else -1
    text_targets: Tensor  # (B, L) long  id of the next token (valid where text_loss)
    text_loss: Tensor     # (B, L) bool  this position predicts a loss-bearing text token
    latents: Tensor       # (B, L, C) float  clean latents at frame tokens (both copies), else 0
    actions: Tensor       # (B, L, A) float  raw action at action-embed tokens, else 0

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    @property
    def seq_len(self) -> int:
        return self.tokens.shape[1]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PackedBatch:
        return PackedBatch(**{f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                              for f in fields(self)})

    def pin_memory(self) -> PackedBatch:
        return PackedBatch(**{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})

    def expand(self, batch_size: int) -> PackedBatch:
        """Repeat a one-row batch to `batch_size` rows (the layout is shared)."""
        if self.batch_size != 1:
            raise ValueError(f"expand needs a one-row batch, got {self.batch_size} rows")
        return PackedBatch(**{f.name: getattr(self, f.name).expand(batch_size, *getattr(self, f.name).shape[1:])
                              for f in fields(self)})


def collate(rows: list[PackedBatch]) -> PackedBatch:
    """Stack one-or-more-row PackedBatches of equal length into one (B, L) batch."""
    if not rows:
        raise ValueError("collate needs at least one row, got an empty list")
    lens = {r.seq_len for r in rows}
    if len(lens) != 1:
        raise ValueError(f"collate needs rows of one length, got lengths {sorted(lens)}")
    return PackedBatch(**{f.name: torch.cat([getattr(r, f.name) for r in rows], 0) for f in fields(PackedBatch)})


def concat(chunks: list[PackedBatch]) -> PackedBatch:
    """Join consecutive chunks of the same rows along the sequence (used by KV-cached streams)."""
    return PackedBatch(**{f.name: torch.cat([getattr(c, f.name) for c in chunks], 1) for f in fields(PackedBatch)})


# -- masks ----------------------------------------------------------------------------------
def allowed(idx_q, idx_k, doc_q, doc_k, fid_q, fid_k, noisy_q, noisy_k, cond_k=None, drop_q=None):
    """The attention rule, elementwise over broadcastable (query, key) vectors.

    Used by both the dense SDPA mask and the FlexAttention mask_mod, so they agree by
    construction. drop_q marks query tokens whose conditioning is hidden (CFG dropout).
    """
    same_block = (fid_q == fid_k) & (fid_q >= 0) & (noisy_q == noisy_k)   # one copy of one frame
    earlier_clean = (idx_k <= idx_q) & ~noisy_k
    ok = (doc_q == doc_k) & (earlier_clean | same_block)
    if drop_q is not None:
        ok = ok & ~(drop_q & (cond_k == fid_q) & (fid_q >= 0))
    return ok


def mask_from_vectors(q: PackedBatch, k: PackedBatch, drop_q: Tensor | None = None) -> Tensor:
    """Dense bool mask (B, 1, Lq, Lk), True = attend, for queries `q` over keys `k`."""
    def col(t):  # (B, Lq) -> (B, Lq, 1)
        return t[:, :, None]

    def row(t):  # (B, Lk) -> (B, 1, Lk)
        return t[:, None, :]

    m = allowed(col(q.index), row(k.index), col(q.doc_id), row(k.doc_id), col(q.frame_id), row(k.frame_id),
                col(q.is_noisy), row(k.is_noisy), row(k.cond_of), None if drop_q is None else col(drop_q))
    return m[:, None]


def sdpa_mask(batch: PackedBatch, drop: Tensor | None = None) -> Tensor:
    """Bool (B, 1, L, L) mask of a packed batch for scaled_dot_product_attention."""
    return mask_from_vectors(batch, batch, drop)


def flex_block_mask(batch: PackedBatch, drop: Tensor | None = None):
    """FlexAttention BlockMask over the same vectors and rule as `sdpa_mask`."""
    from torch.nn.attention.flex_attention import create_block_mask

    idx, doc, fid, noisy, cond = batch.index, batch.doc_id, batch.frame_id, batch.is_noisy, batch.cond_of

    if drop is None:
        def mask_mod(b, h, qi, ki):
            return allowed(idx[b, qi], idx[b, ki], doc[b, qi], doc[b, ki], fid[b, qi], fid[b, ki],
                           noisy[b, qi], noisy[b, ki])
    else:
        def mask_mod(b, h, qi, ki):
            return allowed(idx[b, qi], idx[b, ki], doc[b, qi], doc[b, ki], fid[b, qi], fid[b, ki],
                           noisy[b, qi], noisy[b, ki], cond[b, ki], drop[b, qi])

    B, L = batch.tokens.shape
    return create_block_mask(mask_mod, B, None, L, L, device=batch.tokens.device)


# -- building ---------------------------------------------------------------------------------
def text_action_ids(values: Tensor, action_scale: float) -> list[list[int]]:
    """(B, A) raw actions -> per row `<act> act a0=+0.12 ... <eoa>` ids (fixed width)."""
    v = (values.detach().float() / action_scale).clamp(-TEXT_ACTION_CLAMP, TEXT_ACTION_CLAMP)
    return [[_TOK.act_id] + _TOK.encode(_TOK.format_action(r)) + [_TOK.eoa_id] for r in v.cpu().tolist()]


class _PositionRun(NamedTuple):
    """The RoPE sequence positions of a part that are the same in every row: start, start + step,
    start + 2 * step, ... (step 1: consecutive tokens; step 0: the N tokens of a frame copy,
    which share one position). Positions that differ between rows are a (B, n) tensor instead."""
    start: int
    step: int


def _per_token(per_part: list, counts: Tensor, T: int, dtype: torch.dtype | None = None) -> Tensor:
    """(T,): each part's value repeated over its tokens (counts (parts,): tokens per part)."""
    return torch.repeat_interleave(torch.tensor(per_part, dtype=dtype, device=counts.device), counts, output_size=T)


class _Part:
    """One run of n tokens appended to every row. Fields are python scalars when equal for the
    whole run and all rows (materialised cheaply in take()), tensors (B, n) otherwise; `pos` is
    likewise a _PositionRun or a (B, n) tensor."""
    __slots__ = ("n", "tokens", "modality", "frame_id", "noisy", "doc", "source", "pos", "grid", "cond",
                 "text_loss", "latents", "actions")

    def __init__(self, n, tokens, modality, frame_id, noisy, doc, source, pos, grid, cond, text_loss,
                 latents, actions):
        self.n, self.tokens, self.modality, self.frame_id, self.noisy = n, tokens, modality, frame_id, noisy
        self.doc, self.source, self.pos, self.grid, self.cond = doc, source, pos, grid, cond
        self.text_loss, self.latents, self.actions = text_loss, latents, actions


class SequenceBuilder:
    """Appends segments to B rows in lockstep and hands out the tokens as PackedBatch chunks.

    All rows receive the same segment kinds and lengths (values may differ), which is what
    batched rollouts need; `pack_rows` uses it with B = 1. State carried across `take()`
    calls (stream index, positions, frame counter, pending conditioning) lets a KV-cached
    stream be extended chunk by chunk with exactly the layout `pack_rows` produces.
    """

    def __init__(self, cfg: Any, batch_size: int = 1, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32):
        self.cfg, self.B, self.device, self.dtype = cfg, batch_size, device, dtype
        gh, gw = cfg.frame_grid
        self.N, self.C, self.A = gh * gw, cfg.latent_dim, cfg.action_dim
        self._rows = torch.arange(gh, device=device).repeat_interleave(gw)   # (N,) row of each frame token
        self._cols = torch.arange(gw, device=device).repeat(gh)               # (N,) column
        self.index = 0                  # next stream index
        self.pos: int | Tensor = 0      # next position: an int shared by all rows, or (B,) after ragged text
        self.doc = -1
        self.source = -1
        self.n_frames = 0
        self.cur_frame = -1             # frame opened by begin_frame, -1 when none is open
        self.frame_pos: int | Tensor = 0  # position of the open frame's tokens
        self._pending: list[_Part] = []   # conditioning pieces waiting for the next frame
        self._parts: list[_Part] = []

    # -- low level ----------------------------------------------------------------------
    def _emit(self, n: int, *, tokens: int | Tensor = _TOK.pad_id, modality: int = MOD_TEXT, frame_id: int = -1,
              noisy: bool = False, pos=None, grid: bool = False, text_loss: bool | Tensor = False,
              latents: Tensor | None = None, actions: Tensor | None = None, doc=None, source=None,
              advance: bool = True) -> _Part:
        """Append n tokens. pos: None -> consecutive from self.pos; an int or (B,) tensor -> that
        position for all n tokens (a frame copy); a (B, n) tensor or a _PositionRun -> explicit."""
        if pos is None:
            pos = _PositionRun(self.pos, step=1) if isinstance(self.pos, int) else \
                self.pos[:, None] + torch.arange(n, device=self.device)[None]
        elif isinstance(pos, int):
            pos = _PositionRun(pos, step=0)
        elif isinstance(pos, Tensor) and pos.dim() == 1:
            pos = pos[:, None].expand(self.B, n)
        part = _Part(n, tokens, modality, frame_id, noisy, self.doc if doc is None else doc,
                     self.source if source is None else source, pos, grid, -1, text_loss, latents, actions)
        self.index += n
        if advance:
            self.pos = self.pos + n
        self._parts.append(part)
        return part

    def new_document(self, source: int) -> None:
        if source not in range(len(SOURCE_NAMES)):
            raise ValueError(f"document source {source!r} is not one of 0..3 {SOURCE_NAMES}")
        if self.cur_frame >= 0:
            raise ValueError("new_document while a frame is open; call end_frame first")
        self.doc += 1
        self.source = source
        self.pos = 0                    # positions restart per document (RoPE is relative)
        self._pending = []

    def _need_doc(self) -> None:
        if self.doc < 0:
            raise ValueError("add a document first (new_document(source)) before segments")

    # -- segments -------------------------------------------------------------------------
    def text(self, ids: Tensor | list, loss: bool = True) -> None:
        """ids: (B, T) long tensor, or a list of B id lists (ragged lists are left-padded
        with <pad> tokens of doc -1, which no real token attends to)."""
        self._need_doc()
        if isinstance(ids, Tensor):
            ids_t = ids.to(self.device, torch.long)
            if ids_t.dim() != 2 or ids_t.shape[0] != self.B:
                raise ValueError(f"text ids have shape {tuple(ids.shape)}, expected ({self.B}, T)")
        else:
            ids_list = [list(map(int, r)) for r in ids]
            if len(ids_list) != self.B:
                raise ValueError(f"text has {len(ids_list)} rows, expected {self.B}")
            longest = max(len(r) for r in ids_list)
            if longest == 0:
                return
            if any(len(r) != longest for r in ids_list):
                self._text_ragged(ids_list, loss)
                return
            if any(i < 0 or i >= self.cfg.vocab_size for r in ids_list for i in r):
                raise ValueError(f"text token id {[i for r in ids_list for i in r if not 0 <= i < self.cfg.vocab_size][0]} "
                                 f"is outside the vocabulary [0, {self.cfg.vocab_size})")
            ids_t = torch.tensor(ids_list, dtype=torch.long, device=self.device)
            self._pending.append(self._emit(ids_t.shape[1], tokens=ids_t, text_loss=loss))
            return
        if ids_t.shape[1] == 0:
            return
        bad = (ids_t < 0) | (ids_t >= self.cfg.vocab_size)
        if bad.any():
            raise ValueError(f"text token id {int(ids_t[bad][0])} is outside the vocabulary [0, {self.cfg.vocab_size})")
        self._pending.append(self._emit(ids_t.shape[1], tokens=ids_t, text_loss=loss))

    def _text_ragged(self, ids_list: list[list[int]], loss: bool) -> None:
        longest = max(len(r) for r in ids_list)
        tok = torch.full((self.B, longest), _TOK.pad_id, dtype=torch.long)
        real = torch.zeros(self.B, longest, dtype=torch.bool)
        for b, r in enumerate(ids_list):
            if r:
                tok[b, longest - len(r):] = torch.tensor(r)
                real[b, longest - len(r):] = True
        if ((tok < 0) | (tok >= self.cfg.vocab_size)).any():
            raise ValueError(f"text token ids must lie in [0, {self.cfg.vocab_size})")
        tok, real = tok.to(self.device), real.to(self.device)
        # per-row positions count only real tokens; pads sit at the first real position
        pos = self.pos + (real.long().cumsum(1) - 1).clamp_min(0)                  # (B, T)
        minus1 = torch.full_like(tok, -1)
        part = self._emit(longest, tokens=tok, pos=pos, text_loss=real & loss, advance=False,
                          doc=torch.where(real, self.doc, minus1), source=torch.where(real, self.source, minus1))
        self.pos = self.pos + real.long().sum(1)                                   # now (B,) per row
        self._pending.append(part)

    def action(self, values: Tensor) -> None:
        """values: (B, A) raw actions (or (A,) when B == 1)."""
        self._need_doc()
        if values.dim() == 1:
            values = values[None]
        if values.shape != (self.B, self.A):
            raise ValueError(f"action has shape {tuple(values.shape)}, expected ({self.B}, {self.A})")
        enc = self.cfg.action_encoding
        if enc == "text":
            ids = text_action_ids(values, self.cfg.action_scale)
            if len({len(r) for r in ids}) != 1:
                raise ValueError("text-encoded actions of one batch formatted to different lengths")
            part = self._emit(len(ids[0]), tokens=torch.tensor(ids, dtype=torch.long, device=self.device))
        elif enc == "embed":
            part = self._emit(1, tokens=_TOK.act_id, modality=MOD_ACTION,
                              actions=values.to(self.device, self.dtype)[:, None])
        else:
            raise ValueError(f"action_encoding must be 'text' or 'embed', got {enc!r}")
        self._pending.append(part)

    def begin_frame(self) -> int:
        """Emit <boi>, open a new frame and return its frame id."""
        self._need_doc()
        if self.cur_frame >= 0:
            raise ValueError("begin_frame while a frame is already open")
        f = self.n_frames
        self.n_frames += 1
        boi = self._emit(1, tokens=_TOK.boi_id)
        # the segments since the previous frame condition this one; <boi> saw them, so it joins
        for part in self._pending + [boi]:
            part.cond = f if isinstance(part.doc, int) else torch.where(part.doc >= 0, f, -1)
        self._pending = []
        self.cur_frame, self.frame_pos = f, self.pos
        return f

    def frame_tokens(self, latents: Tensor, noisy: bool) -> None:
        """One copy (N tokens) of the open frame, all at the frame's sequence position."""
        if self.cur_frame < 0:
            raise ValueError("frame_tokens needs begin_frame first")
        if latents.dim() == 2:
            latents = latents[None]
        if latents.shape != (self.B, self.N, self.C):
            raise ValueError(f"frame latents have shape {tuple(latents.shape)}, "
                             f"expected ({self.B}, {self.N}, {self.C}) (grid {tuple(self.cfg.frame_grid)})")
        self._emit(self.N, modality=MOD_VISION, frame_id=self.cur_frame, noisy=noisy, pos=self.frame_pos,
                   grid=True, latents=latents, advance=False)

    def end_frame(self) -> None:
        if self.cur_frame < 0:
            raise ValueError("end_frame without begin_frame")
        self.pos = self.frame_pos + 1
        self._emit(1, tokens=_TOK.eoi_id)
        self.cur_frame = -1

    def frame(self, latents: Tensor, loss: bool = True) -> None:
        """<boi> [noisy copy if loss] clean copy <eoi>."""
        self.begin_frame()
        if loss:
            self.frame_tokens(latents, noisy=True)
        self.frame_tokens(latents, noisy=False)
        self.end_frame()

    def pad(self, n: int) -> None:
        """n padding tokens: their own 'document' (-1), causal among themselves, seen by nobody else."""
        if n > 0:
            self._emit(n, doc=-1, source=-1, pos=_PositionRun(0, step=1), advance=False)

    def document(self, doc: Document) -> None:
        self.new_document(doc.source)
        for seg in doc.segments:
            if isinstance(seg, Text):
                self.text([list(seg.ids)] * self.B, loss=seg.loss)
            elif isinstance(seg, Frame):
                self.frame(seg.latents, loss=seg.loss)
            elif isinstance(seg, Action):
                self.action(torch.as_tensor(seg.values))
            else:
                raise ValueError(f"unknown segment {type(seg).__name__}; expected Text, Frame or Action")

    # -- output ---------------------------------------------------------------------------
    def _field(self, parts: list[_Part], offsets: list[int], T: int, attr: str, dtype: torch.dtype) -> Tensor:
        """(B, T) from per-part scalars (one repeat_interleave) with tensor parts written in."""
        vals = [getattr(p, attr) for p in parts]
        counts = torch.tensor([p.n for p in parts], device=self.device)
        out = _per_token([0 if isinstance(v, Tensor) else v for v in vals], counts, T, dtype)[None].repeat(self.B, 1)
        for v, o, p in zip(vals, offsets, parts):
            if isinstance(v, Tensor):
                out[:, o:o + p.n] = v
        return out

    def _positions(self, parts: list[_Part], offsets: list[int], T: int) -> Tensor:
        """(B, T) sequence positions: every _PositionRun expanded at once, (B, n) parts written in."""
        dev = self.device
        # a (B, n) part counts as the run 0, 0, ... here and is written in below
        runs = [p.pos if isinstance(p.pos, _PositionRun) else _PositionRun(0, step=0) for p in parts]
        counts = torch.tensor([p.n for p in parts], device=dev)
        start, step, first = (_per_token(v, counts, T)
                              for v in ([r.start for r in runs], [r.step for r in runs], offsets))
        out = (start + step * (torch.arange(T, device=dev) - first))[None].repeat(self.B, 1)
        for p, o in zip(parts, offsets):
            if isinstance(p.pos, Tensor):
                out[:, o:o + p.n] = p.pos
        return out

    def repeat_rows(self, r: int) -> None:
        """Continue every row as r rows (row b -> rows b*r .. b*r + r-1), after a take(): a shared
        context continued by r candidates (`KVCache.repeat_rows` does the same to its cache)."""
        if self._parts or self._pending or self.cur_frame >= 0:
            raise ValueError("repeat_rows needs every appended token taken, no pending condition and no open frame")
        self.B *= r
        if isinstance(self.pos, Tensor):
            self.pos = self.pos.repeat_interleave(r, 0)

    def take(self) -> PackedBatch:
        """Everything appended since the last take(), as one (B, T) chunk."""
        if not self._parts:
            raise ValueError("nothing to take: no tokens were appended")
        parts, self._parts = self._parts, []
        offsets, T = [], 0
        for p in parts:
            offsets.append(T)
            T += p.n
        B, dev, L = self.B, self.device, torch.long
        grid_r = torch.zeros(B, T, dtype=L, device=dev)
        grid_c = torch.zeros(B, T, dtype=L, device=dev)
        latents = torch.zeros(B, T, self.C, dtype=self.dtype, device=dev)
        actions = torch.zeros(B, T, self.A, dtype=self.dtype, device=dev)
        for p, o in zip(parts, offsets):
            if p.grid:
                grid_r[:, o:o + p.n] = self._rows
                grid_c[:, o:o + p.n] = self._cols
            if p.latents is not None:
                latents[:, o:o + p.n] = p.latents      # slice writes keep the autograd graph
            if p.actions is not None:
                actions[:, o:o + p.n] = p.actions
        tok = self._field(parts, offsets, T, "tokens", L)
        doc = self._field(parts, offsets, T, "doc", L)
        flag = self._field(parts, offsets, T, "text_loss", torch.bool)
        # position i predicts token i+1 when that token bears text loss in the same document
        targets = torch.zeros_like(tok)
        targets[:, :-1] = tok[:, 1:]
        loss = torch.zeros_like(flag)
        loss[:, :-1] = flag[:, 1:] & (doc[:, 1:] == doc[:, :-1]) & (doc[:, :-1] >= 0)
        index = torch.arange(self.index - T, self.index, device=dev)[None].repeat(B, 1)
        return PackedBatch(
            tokens=tok, modality=self._field(parts, offsets, T, "modality", L),
            frame_id=self._field(parts, offsets, T, "frame_id", L),
            is_noisy=self._field(parts, offsets, T, "noisy", torch.bool), doc_id=doc,
            source=self._field(parts, offsets, T, "source", L), index=index,
            pos_seq=self._positions(parts, offsets, T), pos_row=grid_r, pos_col=grid_c,
            cond_of=self._field(parts, offsets, T, "cond", L), text_targets=targets, text_loss=loss,
            latents=latents, actions=actions)


# -- documents and rows -----------------------------------------------------------------------
def _segment_length(seg, cfg) -> int:
    if isinstance(seg, Text):
        return len(seg.ids)
    if isinstance(seg, Frame):
        gh, gw = cfg.frame_grid
        return 2 + gh * gw * (2 if seg.loss else 1)
    if isinstance(seg, Action):
        if cfg.action_encoding == "text":
            return len(text_action_ids(torch.as_tensor(seg.values)[None], cfg.action_scale)[0])
        return 1
    raise ValueError(f"unknown segment {type(seg).__name__}; expected Text, Frame or Action")


def document_length(doc: Document, cfg) -> int:
    """Tokens the document occupies in a packed row (noisy copies included)."""
    return sum(_segment_length(s, cfg) for s in doc.segments)


def pack_rows(docs: list[Document], seq_len: int, cfg) -> PackedBatch:
    """Pack documents into ONE row of `seq_len` tokens (padded at the end): a (1, seq_len) batch."""
    total = sum(document_length(d, cfg) for d in docs)
    if total > seq_len:
        raise ValueError(f"documents need {total} tokens, more than seq_len={seq_len}; "
                         f"use document_length(doc, cfg) to fill rows")
    sb = SequenceBuilder(cfg, 1)
    for d in docs:
        sb.document(d)
    sb.pad(seq_len - total)
    return sb.take()
