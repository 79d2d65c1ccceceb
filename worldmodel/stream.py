"""A KV-cached token stream for generation: the cache and the mask vectors of the cached tokens
(`KVStream`), and a rollout context already committed to one (`ContextPrefix`, what
`Transfusion.prefill` returns), so that many rollouts continuing one context compute it once.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from worldmodel.layers import KVCache
from worldmodel.sequence import PackedBatch, SequenceBuilder


@dataclass
class _Keys:
    """The mask vectors of the tokens held in a KV cache (what `mask_from_vectors` reads)."""
    index: Tensor
    doc_id: Tensor
    frame_id: Tensor
    is_noisy: Tensor
    cond_of: Tensor

    @classmethod
    def of(cls, b) -> _Keys:
        return cls(**{f.name: getattr(b, f.name) for f in fields(cls)})

    def cat(self, b) -> _Keys:
        return _Keys(**{f.name: torch.cat([getattr(self, f.name), getattr(b, f.name)], 1) for f in fields(self)})


class KVStream:
    """A KV-cached stream: the cache and the mask vectors of the cached tokens."""

    def __init__(self, n_layers: int):
        self.cache = KVCache(n_layers)
        self.keys: _Keys | None = None

    def keys_with(self, chunk: PackedBatch) -> _Keys:
        return _Keys.of(chunk) if self.keys is None else self.keys.cat(chunk)

    def repeat_rows(self, r: int) -> None:
        """Each row of the stream continued by r rows (see KVCache.repeat_rows)."""
        self.cache.repeat_rows(r)
        self.keys = _Keys(**{f.name: getattr(self.keys, f.name).repeat_interleave(r, 0) for f in fields(_Keys)})


class ContextPrefix:
    """A rollout context already in a KV cache (`Transfusion.prefill`): the stream, the builder
    positioned after it, the context frames as committed (Bc, Tc, N, C) and their actions
    (Bc, Tc-1, A) (a windowed rollout re-reads them), and the frames' time. `continued(r)` gives
    each of its rows r continuations, on a copy (the prefix stays reusable)."""

    def __init__(self, stream: KVStream, builder: SequenceBuilder, frames: Tensor, actions: Tensor, t_clean: float):
        self.stream, self.builder, self.frames, self.actions, self.t_clean = stream, builder, frames, actions, t_clean

    @property
    def last(self) -> Tensor:
        return self.frames[:, -1]

    @property
    def rows(self) -> int:
        return self.builder.B

    def continued(self, r: int, copy: bool = True) -> tuple[SequenceBuilder, KVStream, Tensor, float]:
        """(builder, stream, last, t_clean) for rows * r rows; copy=False may reuse this prefix's state.
        (The context frames and actions for those rows: `frames.repeat_interleave(r, 0)`.)"""
        sb = SequenceBuilder.__new__(SequenceBuilder)
        sb.__dict__.update(self.builder.__dict__)
        sb._parts, sb._pending = [], []
        stream = KVStream(len(self.stream.cache.layers))
        stream.cache.layers, stream.cache.length = list(self.stream.cache.layers), self.stream.cache.length
        stream.cache.buffered, stream.keys = self.stream.cache.buffered, self.stream.keys
        if r > 1 or copy:
            stream.repeat_rows(r)            # new tensors: this prefix's cache is never written into
        sb.repeat_rows(r)
        return sb, stream, self.last.repeat_interleave(r, 0) if r > 1 else self.last, self.t_clean
