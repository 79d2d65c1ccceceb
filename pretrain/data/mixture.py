"""The pretraining data mixture: four sources packed into fixed-length rows by token ratios.

Sources (document kinds of `worldmodel.sequence`):
  TEXT          byte-level text from local corpora (default: the stdlib's pydoc topics),
                streamed in chunks of at most `text_tokens` tokens
  IMAGE_TEXT    one frame and its caption, both directions: caption -> frame (flow loss on
                the frame) or frame -> caption (text loss on the caption)
  VIDEO         `video_frames` consecutive frames, actions dropped
  ACTION_VIDEO  `context_frames` clean frames, then `predict_frames` frames, each preceded by
                the action that led to it: f0 a0 f1 a1 f2 ... (loss on the predicted frames).
                With `max_jump` K > 1 each predicted frame comes k ~ U{1..K} steps after the
                previous frame shown, preceded by all k actions (the frames between are left
                out): f0 a0 f1 a1 a2 a3 f4 ... Teacher-forced one-step prediction reads the
                velocity off the context frames and leaves little for the action to explain
                (Reacher: the action adds 4% R^2 to the next joint displacement, 26% five steps
                ahead); predicting k steps ahead makes the model use the actions, and lets a
                planner score an H-step plan with one frame (`predict_frame_after`).

Several datasets (`dataset: [root, ...]`, one model over several tasks) are one pool of episode
windows: each dataset is split on its own, and windows are drawn uniformly over all of them
(each dataset in proportion to its windows) or, with `dataset_weights`, a dataset by its weight.

Labelled subsets (`labelled` < 1: "pretrain on action-free video plus a few labelled episodes"):
action video comes only from a fixed, evenly spread share of each dataset's training episodes
(`labelled_mask`: the same subset in every run and seed); video and image-text draw from all
training episodes, or with `unlabelled_video: false` from the labelled ones alone (training on
that share of the data). The held-out split is never subset.

Ratios are in *tokens*: the next document comes from the source furthest below its share
of the tokens emitted so far (a deterministic smooth weighted round robin), so the ratios
hold up to about one document, whatever the document lengths. Rows are packed greedily:
after the first document, a row is extended only by sources still below their share whose
document fits (text is cut to fit, at least `min_fill_tokens`), else padded. Documents never
straddle rows, and the attention mask of `worldmodel.sequence` keeps packed documents apart.

Data position: everything random comes from one numpy PCG64 generator; with the text
cursor, the per-source token counters and the document carried over to the next row, it
makes `state_dict()`, from which `load_state_dict` continues with identical batches.
"""
from __future__ import annotations

import copy
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from worldmodel.errors import DataError
from worldmodel.sequence import ACTION_VIDEO, IMAGE_TEXT, TEXT, VIDEO, Action, Document, Frame, Text
from worldmodel.tokenizer import ByteTokenizer
from worldmodel.world import model_actions

SOURCE_NAMES = {TEXT: "text", IMAGE_TEXT: "image_text", VIDEO: "video", ACTION_VIDEO: "action_video"}
SPLITS = ("train", "val")


@dataclass
class DataConfig:
    dataset: Any = "data/reacher"   # episode dataset root (shards + cached RAE latents), or a list of roots:
                                    # one model over several tasks (same RAE latents, action dim, frame size)
    dataset_weights: list[float] = field(default_factory=list)  # share of episode windows per dataset (in
                                    # `dataset` order, normalised); [] = proportional to each dataset's windows
    encoder_id: str = ""            # latent cache key in the manifest; "" = the RAE's encoder_id
    text_sources: list[str] = field(default_factory=lambda: ["pydoc"])  # see pretrain/data/text.py
    seq_len: int = 256              # tokens per packed row
    # token shares of the four sources (normalised to sum 1; 0 drops a source). Paper default
    # is ~0.50 / 0.225 / 0.25 / 0.025; see conf/data/*.yaml for ours and why.
    text: float = 0.15
    image_text: float = 0.10
    video: float = 0.15
    action_video: float = 0.60
    context_frames: int = 2         # action video: clean conditioning frames (no loss)
    predict_frames: int = 2         # action video: frames predicted from context + actions (loss)
    max_jump: int = 1               # action video: a predicted frame comes 1..max_jump actions after the last
    video_frames: int = 4           # plain video: frames per window (loss on all)
    caption_to_frame: float = 0.5   # image-text: P(caption -> frame); else frame -> caption
    text_tokens: int = 0            # max tokens per text document chunk; 0 = seq_len
    min_fill_tokens: int = 16       # fill a row's tail with text when at least this many remain
    holdout: float = 0.05           # share of episodes / text documents held out (split="val")
    labelled: float = 1.0           # share of each dataset's training episodes whose actions are shown: action video
                                    # comes only from them (a fixed, evenly spread subset, the same in every run)
    unlabelled_video: bool = True   # video and image-text also draw from the other training episodes; false:
                                    # every source sees the labelled episodes alone (training on that share)
    seed: int = 0                   # seeds the mixture's generator and the text order

    def weights(self) -> dict[int, float]:
        w = {TEXT: self.text, IMAGE_TEXT: self.image_text, VIDEO: self.video, ACTION_VIDEO: self.action_video}
        bad = {SOURCE_NAMES[k]: v for k, v in w.items() if v < 0}
        if bad or sum(w.values()) <= 0:
            raise ValueError(f"data mixture weights {({SOURCE_NAMES[k]: v for k, v in w.items()})} "
                             f"must be >= 0 with a positive sum")
        total = sum(w.values())
        return {k: v / total for k, v in w.items()}

    def roots(self) -> list[str]:
        """The dataset roots: `dataset` as one path or a list of them."""
        from pretrain.data.datasets import dataset_roots
        return dataset_roots(self.dataset, "data.dataset")

    def dataset_shares(self) -> list[float] | None:
        """Each dataset's share of the episode windows drawn, or None: proportional to its windows."""
        from pretrain.data.datasets import dataset_shares
        if not self.dataset_weights:
            return None
        return dataset_shares(self.dataset_weights, len(self.roots()), "data.dataset_weights", "data.dataset")


# ---------------------------------------------------------------- episode data in memory
@dataclass
class EpisodeData:
    """Cached latents, actions and captions of a set of equal-length episodes."""
    latents: np.ndarray             # (E, T+1, N, C) float (normalised RAE latents; may be a memmap)
    actions: np.ndarray             # (E, T, A) float32, in the model's units (load_mixture_episodes)
    captions: np.ndarray            # (E, T+1) str
    dataset: int = 0                # which dataset of the mixture (DataConfig.roots() order) they come from

    def __post_init__(self) -> None:
        e, t1 = self.latents.shape[:2]
        if self.latents.ndim != 4:
            raise ValueError(f"latents have shape {self.latents.shape}, expected (E, T+1, N, C)")
        if self.actions.shape[:2] != (e, t1 - 1):
            raise ValueError(f"actions have shape {self.actions.shape}, expected ({e}, {t1 - 1}, A)")
        if self.captions.shape != (e, t1):
            raise ValueError(f"captions have shape {self.captions.shape}, expected ({e}, {t1})")


def holdout_mask(n: int, holdout: float) -> np.ndarray:
    """True for the held-out items of 0..n-1: every round(1/holdout)-th (at least one when n >= 2),
    so both splits span the data."""
    if holdout <= 0:
        return np.zeros(n, dtype=bool)
    if holdout >= 1:
        raise ValueError(f"holdout={holdout}, expected a value in [0, 1)")
    every = max(2, int(round(1 / holdout)))
    mask = (np.arange(n) % every) == every - 1
    if n >= 2 and not mask.any():  # small datasets still get one held-out item
        mask[-1] = True
    return mask


def labelled_mask(n: int, share: float) -> np.ndarray:
    """True for the labelled items of 0..n-1: floor(n * share) of them, evenly spread (item i when
    floor((i + 1) * share) > floor(i * share)), so the subset spans the data and never depends on a seed."""
    if not 0 < share <= 1:
        raise ValueError(f"data.labelled={share}, expected a share of the training episodes in (0, 1]")
    i = np.arange(n)
    return np.floor((i + 1) * share) > np.floor(i * share)


def labelled_episodes(parts: list[EpisodeData], share: float) -> list[np.ndarray] | None:
    """Per part, the indices of its labelled episodes (`labelled_mask` over each dataset's episodes, in
    order), or None when every episode is labelled. A dataset left without one is a DataError."""
    if share == 1:   # every episode labelled: no subset, the windows as without one
        return None
    out: list[np.ndarray] = [np.zeros(0, np.int64)] * len(parts)
    for d in sorted({p.dataset for p in parts}):
        mine = [i for i, p in enumerate(parts) if p.dataset == d]
        sizes = [len(parts[i].latents) for i in mine]
        mask = labelled_mask(sum(sizes), share)
        if not mask.any():
            raise DataError(f"data.labelled={share} labels none of the {sum(sizes)} training episodes of dataset "
                            f"{d} (data.dataset order); expected a share of at least 1/{sum(sizes)}")
        for i, m in zip(mine, np.split(mask, np.cumsum(sizes)[:-1])):
            out[i] = np.flatnonzero(m)
    return out


def require_latents(ds, encoder_id: str) -> None:
    """A DataError naming the dataset unless every shard of `ds` caches latents of `encoder_id`."""
    if not ds.has_latents(encoder_id):
        have = sorted({k for s in ds.shards for k in s.get("latents", {})})
        raise DataError(f"dataset {str(ds.root)!r} has no cached latents for encoder {encoder_id!r} "
                         f"in every shard (has {have}); run `lw encode-dataset`")


def load_episodes(root: str | Path, encoder_id: str, split: str = "train",
                  holdout: float = 0.05, dataset: int = 0) -> list[EpisodeData]:
    """Read the shards' actions/captions and memory-map their cached latents (verified);
    `dataset` tags the parts with the dataset's index in a mixture of several."""
    from pretrain.data.shards import Dataset
    if split not in SPLITS:
        raise ValueError(f"split={split!r}, expected one of {SPLITS}")
    ds = Dataset(root)
    require_latents(ds, encoder_id)
    keep = holdout_mask(len(ds), holdout)
    if split == "train":
        keep = ~keep
    out = []
    for i, entry in enumerate(ds.shards):
        arrays = ds.load_shard(i)
        first = entry["first_episode"]
        sel = np.flatnonzero(keep[first:first + entry["n_episodes"]])
        if len(sel) == 0:
            continue
        lat = ds.load_latents(i, encoder_id, mmap=True)
        out.append(EpisodeData(latents=lat[sel] if len(sel) < len(lat) else lat,
                               actions=arrays["actions"][sel].copy(), captions=arrays["captions"][sel].copy(),
                               dataset=dataset))
    if not out:
        raise DataError(f"split {split!r} of {str(root)!r} holds no episodes (holdout={holdout})")
    return out


def load_mixture_episodes(cfg: DataConfig, encoder_id: str, split: str = "train") -> list[EpisodeData]:
    """The episodes of every dataset of `cfg.dataset`, each split on its own (`cfg.holdout`) and
    tagged with its index, their actions in the model's units: each task's stretched from its own
    bound to the model's (`datasets.action_scales`; unchanged for one task). The datasets must hold
    one frame size, one action dim and latents of one RAE: else a DataError naming the dataset."""
    from pretrain.data.datasets import action_scales, open_datasets
    datasets = open_datasets(cfg.roots())
    check_same_latents(datasets, encoder_id)
    scales, model_scale = action_scales(datasets)
    parts = []
    for i, ds in enumerate(datasets):
        for part in load_episodes(ds.root, encoder_id, split, cfg.holdout, i):
            part.actions = model_actions(part.actions, scales[ds.task], model_scale)
            parts.append(part)
    return parts


def check_same_latents(datasets: list, encoder_id: str) -> None:
    """Every dataset caches `encoder_id` latents of one (N, C) shape, made by one RAE (the same
    fingerprint, where the cache records one): one model reads them all."""
    from pretrain.data.datasets import check_same
    for ds in datasets:
        require_latents(ds, encoder_id)

    def record(ds) -> dict:   # the first shard's latent record (a dataset's shards share one RAE)
        return ds.shards[0]["latents"][encoder_id]
    check_same(datasets, f"{encoder_id!r} latents of shape (N, C)", lambda ds: tuple(record(ds)["shape"][2:]))
    check_same([ds for ds in datasets if record(ds).get("fingerprint")], f"{encoder_id!r} latents from the RAE",
               lambda ds: record(ds)["fingerprint"][:16])


class WindowIndex:
    """Sampling of (episode, start) windows of `frames` frames over EpisodeData parts: uniform over
    all windows, or with `shares` (one per dataset index) a dataset by its share, then uniform
    over that dataset's windows. `episodes` (per part: the indices it may draw; None: all) restricts
    the windows to a subset of the episodes."""

    def __init__(self, parts: list[EpisodeData], frames: int, shares: list[float] | None = None,
                 episodes: list[np.ndarray] | None = None):
        episodes = episodes if episodes is not None else [None] * len(parts)
        if shares is not None:   # each dataset's windows one contiguous range of the index
            order = sorted(range(len(parts)), key=lambda i: parts[i].dataset)
            parts, episodes = [parts[i] for i in order], [episodes[i] for i in order]
        self.parts, self.episodes, self.frames = parts, episodes, frames
        counts = []
        for p, ep in zip(parts, episodes):
            e, t1 = p.latents.shape[:2]
            counts.append((e if ep is None else len(ep)) * max(0, t1 - frames + 1))
        self.cum = np.cumsum([0] + counts)
        if self.cum[-1] == 0:
            longest = max(p.latents.shape[1] for p in parts)
            raise ValueError(f"windows of {frames} frames do not fit episodes of {longest} frames; "
                             f"lower the window length")
        self.shares = None if shares is None else np.asarray(shares, np.float64)
        if shares is not None:
            self.ranges = self._dataset_ranges(len(shares))

    def _dataset_ranges(self, n: int) -> np.ndarray:
        """(n, 2) first and end window index of each dataset; a drawn dataset without windows is an error."""
        tags = np.array([p.dataset for p in self.parts])
        if tags.max() >= n:
            raise ValueError(f"episodes of dataset {tags.max()} but data.dataset_weights has {n} weights")
        first = np.searchsorted(tags, np.arange(n), side="left")
        end = np.searchsorted(tags, np.arange(n), side="right")
        ranges = np.stack([self.cum[first], self.cum[end]], 1)
        empty = [d for d in range(n) if self.shares[d] > 0 and ranges[d, 1] == ranges[d, 0]]
        if empty:
            raise ValueError(f"datasets {empty} (data.dataset order) have a positive weight but no windows of "
                             f"{self.frames} frames in this split")
        return ranges

    def sample(self, rng: np.random.Generator) -> tuple[EpisodeData, int, int]:
        if self.shares is None:
            k = int(rng.integers(self.cum[-1]))
        else:
            lo, hi = self.ranges[rng.choice(len(self.shares), p=self.shares)]
            k = int(lo + rng.integers(hi - lo))
        i = int(np.searchsorted(self.cum, k, side="right") - 1)
        part, k = self.parts[i], k - int(self.cum[i])
        per_ep = part.latents.shape[1] - self.frames + 1
        e = k // per_ep if self.episodes[i] is None else int(self.episodes[i][k // per_ep])
        return part, e, k % per_ep  # part, episode, start


def _latent(part: EpisodeData, e: int, t: int) -> torch.Tensor:
    return torch.from_numpy(np.array(part.latents[e, t], dtype=np.float32))  # (N, C), copied from the memmap


# ---------------------------------------------------------------- sources
class TextStream:
    """Byte-token chunks of a stream of documents, with an exact, restorable cursor."""

    def __init__(self, sources: list[str], seed: int, split: str = "train", holdout: float = 0.05):
        self.sources, self.seed, self.split, self.holdout = list(sources), seed, split, holdout
        self.tok = ByteTokenizer()
        self.epoch, self.doc_index, self.offset = 0, 0, 0  # cursor: epoch, document in epoch, token in doc
        self._it: Iterator[str] | None = None
        self._ids: list[int] | None = None

    def _keep(self, text: str) -> bool:
        if self.holdout <= 0:
            return self.split == "train"
        every = max(2, int(round(1 / self.holdout)))
        held = zlib.crc32(text.encode("utf-8")) % every == 0  # stable across orders and runs
        return held == (self.split == "val")

    def _open(self) -> None:
        from pretrain.data.text import text_documents
        self._it = (d for d in text_documents(self.sources, seed=self.seed + self.epoch) if self._keep(d))
        for _ in range(self.doc_index):  # replay to the saved cursor (strings only, no tokenising)
            next(self._it)
        self._ids = None

    def _current(self) -> list[int]:
        if self._it is None:
            self._open()
        while self._ids is None:
            doc = next(self._it, None)
            if doc is None:  # epoch done: reshuffle with the next seed
                if self.doc_index == 0:
                    raise ValueError(f"text sources {self.sources} hold no {self.split!r} documents")
                self.epoch, self.doc_index, self.offset = self.epoch + 1, 0, 0
                self._open()
                continue
            self._ids = self.tok.encode(doc, bos=True, eos=True)
        return self._ids

    def next_ids(self, max_tokens: int) -> list[int]:
        ids = self._current()
        chunk = ids[self.offset:self.offset + max_tokens]
        self.offset += len(chunk)
        if self.offset >= len(ids):
            self.doc_index, self.offset, self._ids = self.doc_index + 1, 0, None
        return chunk

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "doc_index": self.doc_index, "offset": self.offset}

    def load_state_dict(self, s: dict) -> None:
        self.epoch, self.doc_index, self.offset = s["epoch"], s["doc_index"], s["offset"]
        self._it = None
        self._ids = None
        if self.offset:
            self._open()
            self._current()


class EpisodeSources:
    """Image-text, video and action-video documents sampled from episode windows: uniformly, or
    per dataset by `data.dataset_weights`; in the training split, action video only from the
    labelled episodes (`data.labelled`), the others too with `data.unlabelled_video: false`."""

    def __init__(self, parts: list[EpisodeData], cfg: DataConfig, caption_tokens: int, split: str = "train"):
        self.cfg, self.tok = cfg, ByteTokenizer()
        self.caption_tokens = caption_tokens  # captions are cut to this many tokens
        shares = cfg.dataset_shares()
        labelled = labelled_episodes(parts, cfg.labelled) if split == "train" else None  # held out: all episodes
        seen = None if cfg.unlabelled_video else labelled    # the episodes video and image-text draw from
        self.frames = WindowIndex(parts, 1, shares, seen)
        self.video = WindowIndex(parts, cfg.video_frames, shares, seen) if cfg.video > 0 else None
        self.act = (WindowIndex(parts, cfg.context_frames + cfg.predict_frames * cfg.max_jump, shares, labelled)
                    if cfg.action_video > 0 else None)

    def image_text(self, rng: np.random.Generator) -> Document:
        part, e, t = self.frames.sample(rng)
        caption = self.tok.encode(str(part.captions[e, t]), bos=True, eos=True)[:self.caption_tokens]
        if rng.random() < self.cfg.caption_to_frame:
            segs = [Text(caption, loss=False), Frame(_latent(part, e, t), loss=True)]
        else:
            segs = [Frame(_latent(part, e, t), loss=False), Text(caption, loss=True)]
        return Document(segs, IMAGE_TEXT)

    def video_doc(self, rng: np.random.Generator) -> Document:
        part, e, s = self.video.sample(rng)
        return Document([Frame(_latent(part, e, s + i), loss=True) for i in range(self.cfg.video_frames)], VIDEO)

    def action_video(self, rng: np.random.Generator, longest: bool = False) -> Document:
        """Context frames one step apart, then each predicted frame 1..max_jump steps after the
        previous one, preceded by every action in between. longest: all jumps at max_jump."""
        part, e, s = self.act.sample(rng)
        c, P, K = self.cfg.context_frames, self.cfg.predict_frames, self.cfg.max_jump
        jumps = np.full(P, K) if longest or K == 1 else rng.integers(1, K + 1, P)
        shown = s + np.concatenate([np.arange(c), c - 1 + np.cumsum(jumps)])
        segs = [Frame(_latent(part, e, s), loss=c <= 0)]
        for i in range(1, len(shown)):
            for t in range(shown[i - 1], shown[i]):
                segs.append(Action(torch.from_numpy(np.array(part.actions[e, t], dtype=np.float32))))
            segs.append(Frame(_latent(part, e, int(shown[i])), loss=i >= c))
        return Document(segs, ACTION_VIDEO)


# ---------------------------------------------------------------- the mixture
class Mixture:
    """Packs documents of the configured sources into rows of `seq_len` tokens.

    `length(doc) -> int` is the token length of a document in the model's sequence layout
    (`worldmodel.sequence.document_length(doc, model_cfg)`).
    """

    def __init__(self, cfg: DataConfig, length: Callable[[Document], int],
                 episodes: list[EpisodeData] | None = None, split: str = "train"):
        self.cfg, self.length = cfg, length
        self.weights = {k: w for k, w in cfg.weights().items() if w > 0}
        if cfg.seq_len < 8:
            raise ValueError(f"data.seq_len={cfg.seq_len}, expected >= 8")
        if cfg.context_frames < 1 or cfg.predict_frames < 1 or cfg.video_frames < 1 or cfg.max_jump < 1:
            raise ValueError(f"context_frames={cfg.context_frames}, predict_frames={cfg.predict_frames}, "
                             f"max_jump={cfg.max_jump}, "
                             f"video_frames={cfg.video_frames}; expected all >= 1")
        if not 0.0 <= cfg.caption_to_frame <= 1.0:
            raise ValueError(f"data.caption_to_frame={cfg.caption_to_frame}, expected a probability in [0, 1]")
        self._text_overhead = length(Document([Text([0], loss=True)], TEXT)) - 1  # layout tokens of a text doc
        self.text_max = min(cfg.text_tokens or cfg.seq_len, cfg.seq_len - self._text_overhead)
        self.text = TextStream(cfg.text_sources, cfg.seed, split, cfg.holdout) if TEXT in self.weights else None
        self.episodes = None
        if set(self.weights) - {TEXT}:
            if not episodes:
                raise ValueError(f"weights {({SOURCE_NAMES[k]: w for k, w in self.weights.items()})} "
                                 f"need episode data, but none was given")
            self.episodes = EpisodeSources(episodes, cfg, caption_tokens=cfg.seq_len // 2, split=split)
        self.rng = np.random.Generator(np.random.PCG64(cfg.seed))
        self.tokens = {k: 0 for k in self.weights}   # tokens emitted per source
        self.pending: Document | None = None         # the document that opens the next row
        self.rows = 0
        # sources whose documents vary in length: one that does not fit opens the next row
        self.variable = {IMAGE_TEXT} | ({ACTION_VIDEO} if cfg.max_jump > 1 else set())
        self._check_lengths()

    def _check_lengths(self) -> None:
        """Every fixed-shape document must fit one row; say which and by how much if not."""
        state = self.state_dict()
        self.fixed: dict[int, int] = {}  # token length of the fixed-shape sources
        for k in self.weights:
            if k == TEXT:
                continue
            doc = self.episodes.action_video(self.rng, longest=True) if k == ACTION_VIDEO else self._sample(k)
            n = self.length(doc)
            if k == IMAGE_TEXT:  # caption lengths vary: bound by the longest caption allowed
                caption = next(s for s in doc.segments if isinstance(s, Text))
                n = n - len(caption.ids) + self.episodes.caption_tokens
            elif k not in self.variable:
                self.fixed[k] = n
            if n > self.cfg.seq_len:
                raise ValueError(f"a {SOURCE_NAMES[k]} document has {n} tokens, more than "
                                 f"data.seq_len={self.cfg.seq_len}; raise seq_len or shorten the window")
        self.load_state_dict(state)  # the probes must not move the data position

    def _sample(self, k: int, max_tokens: int | None = None) -> Document:
        if k == TEXT:
            ids = self.text.next_ids(max_tokens or self.text_max)
            return Document([Text(ids, loss=True)], TEXT)
        if k == IMAGE_TEXT:
            return self.episodes.image_text(self.rng)
        if k == VIDEO:
            return self.episodes.video_doc(self.rng)
        return self.episodes.action_video(self.rng)

    def _by_deficit(self) -> list[tuple[int, float]]:
        """Sources with their token deficit (target share of all tokens minus own), largest first."""
        total = sum(self.tokens.values())
        deficits = [(k, self.weights[k] * total - self.tokens[k]) for k in self.weights]
        return sorted(deficits, key=lambda kd: -kd[1])  # stable: ties keep config order

    def _next_doc(self, room: int, first: bool) -> Document | None:
        """The next document for a row with `room` tokens left, or None to close the row.

        The most under-served source that fits goes next. A started row is only extended by
        sources below their share (deficit > 0), so filling never skews the ratios: when none
        fits, the row is padded instead.
        """
        for k, deficit in self._by_deficit():
            if not first and deficit <= 0:
                return None
            if k == TEXT:
                if room - self._text_overhead >= (1 if first else max(1, self.cfg.min_fill_tokens)):
                    return self._sample(TEXT, min(self.text_max, room - self._text_overhead))
                continue
            if self.fixed.get(k, 0) > room or (k in self.variable and self.pending is not None):
                continue
            doc = self._sample(k)
            if self.length(doc) <= room:
                return doc
            self.pending = doc  # a variable-length document that did not fit opens the next row
        return None

    def next_row(self) -> list[Document]:
        row, used = [], 0
        if self.pending is not None:
            doc, self.pending = self.pending, None
            row.append(doc)
            used = self.length(doc)
            self.tokens[doc.source] += used
        while used < self.cfg.seq_len:
            doc = self._next_doc(self.cfg.seq_len - used, first=not row)
            if doc is None:
                break
            n = self.length(doc)
            row.append(doc)
            used += n
            self.tokens[doc.source] += n
        self.rows += 1
        return row

    def next_rows(self, n: int) -> list[list[Document]]:
        return [self.next_row() for _ in range(n)]

    def token_shares(self) -> dict[str, float]:
        total = max(1, sum(self.tokens.values()))
        return {SOURCE_NAMES[k]: v / total for k, v in self.tokens.items()}

    # -- data position
    def state_dict(self) -> dict:
        return {"rng": copy.deepcopy(self.rng.bit_generator.state), "tokens": dict(self.tokens),
                "pending": copy.deepcopy(self.pending), "rows": self.rows,
                "text": self.text.state_dict() if self.text is not None else None,
                "datasets": self._datasets()}

    def _datasets(self) -> list:
        """The episode datasets by folder name (a moved folder still resumes), with their weights."""
        names = [Path(r).name for r in self.cfg.roots()] if self.cfg.dataset else []   # "": episodes handed in
        return [names, list(self.cfg.dataset_weights)]

    def load_state_dict(self, s: dict) -> None:
        if set(s["tokens"]) != set(self.tokens):
            raise ValueError(f"data state has sources {sorted(s['tokens'])}, this mixture has "
                             f"{sorted(self.tokens)}: the data config changed since the checkpoint")
        now = self._datasets()
        if s.get("datasets") is not None and list(s["datasets"]) != now:   # older checkpoints: no record
            (was, was_w), (now, now_w) = s["datasets"], now
            raise ValueError(f"the checkpoint was trained on datasets {was} (weights {was_w or 'by windows'}), "
                             f"this run names {now} (weights {now_w or 'by windows'}): resuming would continue "
                             f"another mixture; restore data.dataset / data.dataset_weights or start a new run")
        self.rng.bit_generator.state = copy.deepcopy(s["rng"])
        self.tokens = dict(s["tokens"])
        self.pending = copy.deepcopy(s["pending"])
        self.rows = s["rows"]
        if self.text is not None:
            self.text.load_state_dict(s["text"])
