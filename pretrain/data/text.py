"""Text sources: documents as plain strings, in a seeded, deterministic order.

A source is one of
  - "pydoc"              the standard library's documentation topics (`pydoc_data.topics`):
                         ~80 long English documents (~0.5 MB) present on every Python
                         install, so there is always real text offline. The default.
  - "captions:<root>"    the per-episode captions of an episode dataset (see shards.py).
  - a `.txt` file        one document per file.
  - a `.jsonl` file      one document per line, from the field "text".
  - a folder             every .txt / .jsonl file under it, recursively.

Documents stream: files are read one at a time and mixed through a seeded shuffle buffer,
so corpora larger than memory work and the order is the same for the same seed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

DEFAULT_SOURCES = ("pydoc",)
TEXT_SUFFIXES = (".txt", ".jsonl")


def pydoc_documents() -> Iterator[str]:
    """The stdlib documentation topics, in sorted key order."""
    try:
        from pydoc_data.topics import topics
    except ImportError as e:  # some distributions strip it; say what to do instead
        raise ValueError("the default text source 'pydoc' needs the standard library's pydoc_data "
                         "module, which this Python lacks; pass text sources (.txt/.jsonl) instead") from e
    for key in sorted(topics):
        text = topics[key].strip()
        if text:
            yield text


def caption_documents(dataset) -> Iterator[str]:
    """One document per episode: its frame captions, consecutive repeats dropped, joined by spaces.

    `dataset` is a `pretrain.data.shards.Dataset` or the path of one.
    """
    from pretrain.data.shards import Dataset

    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    for i in range(len(ds.shards)):
        captions = ds.load_shard(i)["captions"]  # (E, T+1) str
        for row in captions.tolist():
            kept = [c for k, c in enumerate(row) if c and (k == 0 or c != row[k - 1])]
            if kept:
                yield " ".join(kept)


def _file_documents(path: Path) -> Iterator[str]:
    if path.suffix == ".txt":
        text = path.read_text(encoding="utf-8", errors="replace").strip()
        if text:
            yield text
        return
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{str(path)!r} line {lineno} is not JSON: {e}") from e
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise ValueError(f"{str(path)!r} line {lineno} has no string field 'text', "
                                 f"expected {{\"text\": \"...\"}}")
            if record["text"].strip():
                yield record["text"]


def _expand(source: str) -> list:
    """A source string -> list of units (Path of a text file, "pydoc", or ("captions", root))."""
    if source == "pydoc":
        return ["pydoc"]
    if source.startswith("captions:"):
        return [("captions", source[len("captions:"):])]
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
        if not files:
            raise ValueError(f"text source folder {source!r} holds no {'/'.join(TEXT_SUFFIXES)} files")
        return files
    if path.is_file():
        if path.suffix not in TEXT_SUFFIXES:
            raise ValueError(f"text source {source!r} has suffix {path.suffix!r}, expected one of "
                             f"{TEXT_SUFFIXES}")
        return [path]
    raise ValueError(f"text source {source!r} is not a file, folder, 'pydoc' or 'captions:<dataset>'")


def _unit_documents(unit) -> Iterator[str]:
    if unit == "pydoc":
        return pydoc_documents()
    if isinstance(unit, tuple):
        return caption_documents(unit[1])
    return _file_documents(unit)


def _shuffled(docs: Iterable[str], rng: np.random.Generator, buffer: int) -> Iterator[str]:
    pool: list[str] = []
    for doc in docs:
        if len(pool) < buffer:
            pool.append(doc)
            continue
        k = int(rng.integers(len(pool)))
        yield pool[k]
        pool[k] = doc
    for k in rng.permutation(len(pool)):
        yield pool[k]


def text_documents(sources: list[str] | None = None, seed: int = 0, shuffle: bool = True,
                   buffer: int = 1024) -> Iterator[str]:
    """One pass over the documents of `sources` (default: "pydoc"), deterministic given `seed`.

    With `shuffle`, the file order is permuted and documents pass a shuffle buffer of
    `buffer` documents; without it they come in the listed order. For several epochs,
    call again with a different seed (e.g. seed + epoch).
    """
    if buffer < 1:
        raise ValueError(f"buffer={buffer}, expected >= 1")
    units = [u for s in (sources or DEFAULT_SOURCES) for u in _expand(str(s))]  # fails early
    rng = np.random.default_rng(seed)
    if shuffle:
        units = [units[k] for k in rng.permutation(len(units))]
    docs = (d for u in units for d in _unit_documents(u))
    return _shuffled(docs, rng, buffer) if shuffle else docs
