"""Episode shards: checksummed, append-only datasets of MuJoCo episodes.

Layout of a dataset folder:

    <root>/manifest.json              # format, task, task spec, collection runs, one entry per shard
    <root>/shard-00000.npz            # uncompressed npz, E equal-length episodes stacked
    <root>/latents/<encoder>/shard-00000.npy   # cached RAE latents (written by latent_cache.py)

One shard holds E episodes of the same length T (shards may differ in T), stacked:

    frames      (E, T+1, H, W, 3) uint8     observation before each action, plus the last one
    actions     (E, T, A)         float32   action applied at step t (after clipping to the box)
    states      (E, T+1, S)       float32   true simulator state of each frame
    rewards     (E, T)            float32
    goal_state  (E, Sg)           float32
    goal_frame  (E, H, W, 3)      uint8
    captions    (E, T+1)          str       one English sentence per frame
    policy      (E,)              str       data policy that produced the episode
    seed        (E,)              int64     episode seed (env reset + policy noise)

Uncompressed npz is read at memory speed (frames dominate and barely compress), needs no
pickle, and is one file per shard so one sha256 covers it. Every write is atomic (temp file
+ os.replace) and the manifest is rewritten atomically after each shard, so a killed
collection leaves a valid dataset of the shards it finished. Checksums are verified lazily,
once per shard per `Dataset`; any mismatch, truncation, missing file or missing key raises
`ShardCorruptError` naming the file.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import tempfile
import threading
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from worldmodel.errors import DataError
from worldmodel.hub import sha256_file  # noqa: F401  (one implementation; importers use shards.sha256_file)

FORMAT = "learnedworld-episodes"
VERSION = 1
MANIFEST = "manifest.json"
LOCK = ".manifest.lock"
SHARD_KEYS = ("frames", "actions", "states", "rewards", "goal_state", "goal_frame", "captions",
              "policy", "seed")
# fields `Dataset.windows` can return, besides "latents" (needs encoder_id)
WINDOW_FIELDS = ("frames", "actions", "states", "rewards", "captions", "goal_frame", "goal_state",
                 "episode", "start", "latents")


class ShardCorruptError(DataError):
    """A shard (or its cached latents) is missing, truncated, fails its checksum or lacks a key."""


# ----------------------------------------------------------------------------- files

def atomic_write(path: str | Path, write: Callable[[Any], None]) -> Path:
    """Call `write(fileobj)` on a temp file beside `path`, fsync, then os.replace onto `path`.

    On any failure (including KeyboardInterrupt) the temp file is removed and `path` is
    left as it was: readers never see a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def _write_json(path: Path, obj: dict) -> None:
    data = (json.dumps(obj, indent=1) + "\n").encode()
    atomic_write(path, lambda f: f.write(data))


@contextlib.contextmanager
def _manifest_lock(root: Path):
    """Serialise read-modify-write of the manifest across processes (collector, latent cache)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _deferred_interrupt():
    """Hold Ctrl-C until the block ends, so a shard and its manifest entry land together."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    received = []
    signal.signal(signal.SIGINT, lambda *_: received.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if received:
        raise KeyboardInterrupt


def read_manifest(root: str | Path) -> dict:
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} not found: {str(root)!r} is not an episode dataset "
                                f"(create one with `lw collect out={root}`)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ShardCorruptError(f"{str(path)!r} is not valid JSON: {e}") from e
    if manifest.get("format") != FORMAT:
        raise DataError(f"{str(path)!r} has format {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("version") != VERSION:
        raise DataError(f"{str(path)!r} has format version {manifest.get('version')!r}, "
                         f"expected {VERSION}")
    return manifest


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.npz"


def latent_file(shard_index: int, encoder_id: str) -> str:
    """Conventional path (relative to the dataset root) of a shard's cached latents."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in encoder_id)
    return f"latents/{safe}/shard-{shard_index:05d}.npy"


# ----------------------------------------------------------------------------- episodes

@dataclass
class Episode:
    frames: np.ndarray        # (T+1, H, W, 3) uint8
    actions: np.ndarray       # (T, A) float32
    states: np.ndarray        # (T+1, S) float32
    rewards: np.ndarray       # (T,) float32
    goal_state: np.ndarray    # (Sg,) float32
    goal_frame: np.ndarray    # (H, W, 3) uint8
    captions: list[str]       # T+1 sentences
    policy: str = ""          # name of the data policy that acted
    seed: int = -1            # episode seed

    def __post_init__(self):
        for name in ("actions", "states", "rewards", "goal_state"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float32))
        self.captions = [str(c) for c in self.captions]
        self.validate()

    @property
    def steps(self) -> int:
        return len(self.actions)

    def validate(self) -> None:
        f, a, s = self.frames, self.actions, self.states
        if not (isinstance(f, np.ndarray) and f.dtype == np.uint8 and f.ndim == 4 and f.shape[-1] == 3):
            raise ValueError(f"frames must be uint8 (T+1, H, W, 3), got "
                             f"{getattr(f, 'dtype', type(f))} {getattr(f, 'shape', None)}")
        t = len(f) - 1
        if t < 1:
            raise ValueError(f"an episode needs at least 1 step, got {len(f)} frames")
        checks = [("actions", a.ndim == 2 and len(a) == t, f"({t}, A)"),
                  ("states", s.ndim == 2 and len(s) == t + 1, f"({t + 1}, S)"),
                  ("rewards", self.rewards.shape == (t,), f"({t},)"),
                  ("goal_state", self.goal_state.ndim == 1, "(Sg,)")]
        for name, ok, want in checks:
            if not ok:
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, expected {want}")
        g = self.goal_frame
        if not (isinstance(g, np.ndarray) and g.dtype == np.uint8 and g.shape == f.shape[1:]):
            raise ValueError(f"goal_frame must be uint8 {f.shape[1:]}, got "
                             f"{getattr(g, 'dtype', type(g))} {getattr(g, 'shape', None)}")
        if len(self.captions) != t + 1:
            raise ValueError(f"captions has {len(self.captions)} entries, expected {t + 1} (one per frame)")


def _stack(episodes: list[Episode]) -> dict[str, np.ndarray]:
    return {
        "frames": np.stack([e.frames for e in episodes]),
        "actions": np.stack([e.actions for e in episodes]),
        "states": np.stack([e.states for e in episodes]),
        "rewards": np.stack([e.rewards for e in episodes]),
        "goal_state": np.stack([e.goal_state for e in episodes]),
        "goal_frame": np.stack([e.goal_frame for e in episodes]),
        "captions": np.array([e.captions for e in episodes], dtype=str),
        "policy": np.array([e.policy for e in episodes], dtype=str),
        "seed": np.array([e.seed for e in episodes], dtype=np.int64),
    }


def _episode_at(arrays: dict[str, np.ndarray], j: int) -> Episode:
    return Episode(frames=arrays["frames"][j], actions=arrays["actions"][j], states=arrays["states"][j],
                   rewards=arrays["rewards"][j], goal_state=arrays["goal_state"][j],
                   goal_frame=arrays["goal_frame"][j], captions=arrays["captions"][j].tolist(),
                   policy=str(arrays["policy"][j]), seed=int(arrays["seed"][j]))


# ----------------------------------------------------------------------------- writing

class ShardWriter:
    """Buffer episodes and write them as atomic shards, updating the manifest after each.

        with ShardWriter("data/reacher", "reacher", config=cfg_dict, task_spec=spec) as w:
            for ep in episodes: w.add(ep)

    `append=True` opens an existing dataset (the task and image size must match); without it
    an existing dataset is an error unless `overwrite=True`, which deletes its shards first.
    Leaving the `with` block, even by an exception or Ctrl-C, writes the buffered (complete)
    episodes as a final shard, so finished work is kept and the manifest stays valid.
    """

    def __init__(self, root: str | Path, task: str, config: dict | None = None, *,
                 task_spec: dict | None = None, image_size: int | None = None,
                 episodes_per_shard: int = 32, append: bool = False, overwrite: bool = False):
        if episodes_per_shard < 1:
            raise ValueError(f"episodes_per_shard={episodes_per_shard}, expected >= 1")
        self.root = Path(root)
        self.episodes_per_shard = episodes_per_shard
        self._buffer: list[Episode] = []
        exists = (self.root / MANIFEST).is_file()
        if exists and append:
            manifest = read_manifest(self.root)
            if manifest["task"] != task:
                raise DataError(f"cannot append task {task!r} to {str(self.root)!r}, which holds "
                                f"task {manifest['task']!r}")
            if image_size is not None and manifest["image_size"] not in (None, image_size):
                raise DataError(f"cannot append image_size={image_size} to {str(self.root)!r}, "
                                f"which holds image_size={manifest['image_size']}")
        elif exists and not overwrite:
            raise DataError(f"{str(self.root)!r} already holds a dataset; pass append=true to add "
                            f"episodes or overwrite=true to replace it")
        else:
            if exists:  # overwrite: remove only the files the old manifest lists
                for entry in read_manifest(self.root)["shards"]:
                    files = [entry["file"]] + [r["file"] for r in entry.get("latents", {}).values()]
                    for name in files:
                        with contextlib.suppress(FileNotFoundError):
                            (self.root / name).unlink()
            manifest = {"format": FORMAT, "version": VERSION, "task": task, "image_size": image_size,
                        "action_dim": None, "state_dim": None, "goal_dim": None,
                        "task_spec": task_spec or {}, "collect_runs": [], "shards": []}
        manifest["collect_runs"].append({"first_shard": len(manifest["shards"]),
                                         "first_episode": _n_episodes(manifest),
                                         "config": config or {}})
        self.manifest = manifest
        with _manifest_lock(self.root):
            _write_json(self.root / MANIFEST, self.manifest)

    @property
    def n_episodes(self) -> int:
        """Episodes in the dataset, including buffered ones (the next episode's global index)."""
        return _n_episodes(self.manifest) + len(self._buffer)

    def add(self, episode: Episode) -> None:
        m = self.manifest
        h, w = episode.frames.shape[1:3]
        if h != w:
            raise ValueError(f"frames are {h}x{w}, expected square images")
        dims = {"image_size": h, "action_dim": episode.actions.shape[1],
                "state_dim": episode.states.shape[1], "goal_dim": len(episode.goal_state)}
        for key, value in dims.items():
            if m[key] is None:
                m[key] = int(value)
            elif m[key] != value:
                raise ValueError(f"episode has {key}={value}, but dataset {str(self.root)!r} "
                                 f"holds {key}={m[key]}")
        if self._buffer and self._buffer[0].steps != episode.steps:
            self.flush()  # a shard stacks equal-length episodes only
        self._buffer.append(episode)
        if len(self._buffer) >= self.episodes_per_shard:
            self.flush()

    def flush(self) -> dict | None:
        """Write the buffered episodes as one shard; return its manifest entry."""
        if not self._buffer:
            return None
        with _deferred_interrupt():  # a Ctrl-C here would orphan the shard or lose the episodes
            entry = self._write_shard(self._buffer)
            self._buffer = []
        return entry

    def _write_shard(self, episodes: list[Episode]) -> dict:
        arrays = _stack(episodes)
        index = len(self.manifest["shards"])
        path = self.root / shard_name(index)
        atomic_write(path, lambda f: np.savez(f, **arrays))
        e, t = arrays["actions"].shape[:2]
        entry = {
            "file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size,
            "n_episodes": int(e), "n_frames": int(e * (t + 1)), "episode_steps": int(t),
            "first_episode": _n_episodes(self.manifest),
            "policies": dict(Counter(ep.policy for ep in episodes)),
            # kept here so a summary needs only the manifest
            "action_min": arrays["actions"].min(axis=(0, 1)).tolist(),
            "action_max": arrays["actions"].max(axis=(0, 1)).tolist(),
            "reward_mean": float(arrays["rewards"].mean()),
        }
        with _manifest_lock(self.root):
            # re-read so concurrent latent records made by another process are kept
            on_disk = read_manifest(self.root)["shards"]
            for old, new in zip(self.manifest["shards"], on_disk):
                old.update({k: v for k, v in new.items() if k == "latents"})
            self.manifest["shards"].append(entry)
            _write_json(self.root / MANIFEST, self.manifest)
        return entry

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _n_episodes(manifest: dict) -> int:
    return sum(s["n_episodes"] for s in manifest["shards"])


def update_manifest(root: str | Path, fn: Callable[[dict], None]) -> dict:
    """Apply `fn(manifest)` (in place) under the manifest lock and rewrite it atomically."""
    root = Path(root)
    with _manifest_lock(root):
        manifest = read_manifest(root)
        fn(manifest)
        _write_json(root / MANIFEST, manifest)
    return manifest


def record_latents(root: str | Path, shard_index: int, encoder_id: str, file: str, sha256: str,
                   shape: list[int] | tuple[int, ...]) -> None:
    """Record cached latents of one shard (`file` relative to root) in the manifest."""
    def fn(manifest: dict) -> None:
        shards = manifest["shards"]
        if not 0 <= shard_index < len(shards):
            raise ValueError(f"shard_index={shard_index}, expected 0..{len(shards) - 1}")
        shards[shard_index].setdefault("latents", {})[encoder_id] = {
            "file": str(file), "sha256": sha256, "shape": [int(x) for x in shape]}
    update_manifest(root, fn)


# ----------------------------------------------------------------------------- reading

class Dataset:
    """Read-only view of an episode dataset: episodes, fixed-length windows, cached latents."""

    def __init__(self, root: str | Path, verify: bool = True):
        self.root = Path(root)
        self.verify = verify  # check sha256 the first time each file is read
        self.reload()

    def reload(self) -> None:
        self.manifest = read_manifest(self.root)
        self.shards: list[dict] = self.manifest["shards"]
        self.task: str = self.manifest["task"]
        self.image_size: int | None = self.manifest["image_size"]
        self.action_dim: int | None = self.manifest["action_dim"]
        self.state_dim: int | None = self.manifest["state_dim"]
        self._offsets = np.cumsum([0] + [s["n_episodes"] for s in self.shards])
        self._verified: set[str] = set()
        self._cache: tuple[int, dict] | None = None  # last loaded shard

    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def n_frames(self) -> int:
        return sum(s["n_frames"] for s in self.shards)

    def __repr__(self) -> str:
        return (f"Dataset({str(self.root)!r}, task={self.task!r}, episodes={len(self)}, "
                f"shards={len(self.shards)}, frames={self.n_frames})")

    # -- integrity
    def _check_file(self, path: Path, sha256: str, size: int | None) -> None:
        if not path.is_file():
            raise ShardCorruptError(f"{str(path)!r} is missing (listed in {MANIFEST})")
        if size is not None and path.stat().st_size != size:
            raise ShardCorruptError(f"{str(path)!r} has {path.stat().st_size} bytes, expected {size} "
                                    f"(truncated or overwritten)")
        if self.verify and str(path) not in self._verified:
            got = sha256_file(path)
            if got != sha256:
                raise ShardCorruptError(f"{str(path)!r} fails its checksum: sha256 {got[:16]}..., "
                                        f"expected {sha256[:16]}...")
            self._verified.add(str(path))

    def verify_shard(self, i: int) -> None:
        """Check shard i's file (present, size, sha256) against the manifest without loading it."""
        entry = self.shards[i]
        self._check_file(self.root / entry["file"], entry["sha256"], entry["bytes"])

    def verify_all(self) -> None:
        """Check every shard and recorded latent file against the manifest."""
        for i, entry in enumerate(self.shards):
            self.verify_shard(i)
            for enc in entry.get("latents", {}):
                self.load_latents(i, enc, mmap=True)

    # -- shards and episodes
    def load_shard(self, i: int) -> dict[str, np.ndarray]:
        """All arrays of shard `i` (see the module docstring), verified."""
        if not 0 <= i < len(self.shards):
            raise IndexError(f"shard {i} out of range, dataset has {len(self.shards)} shards")
        if self._cache is not None and self._cache[0] == i:
            return self._cache[1]
        entry = self.shards[i]
        path = self.root / entry["file"]
        self._check_file(path, entry["sha256"], entry["bytes"])
        try:
            with np.load(path, allow_pickle=False) as npz:
                missing = [k for k in SHARD_KEYS if k not in npz.files]
                if missing:
                    raise ShardCorruptError(f"{str(path)!r} lacks keys {missing}, expected {list(SHARD_KEYS)}")
                arrays = {k: npz[k] for k in SHARD_KEYS}
        except ShardCorruptError:
            raise
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as e:
            raise ShardCorruptError(f"{str(path)!r} is not a readable shard: {e}") from e
        e, t = entry["n_episodes"], entry["episode_steps"]
        if arrays["frames"].shape[:2] != (e, t + 1) or arrays["actions"].shape[:2] != (e, t):
            raise ShardCorruptError(f"{str(path)!r} holds frames {arrays['frames'].shape} / actions "
                                    f"{arrays['actions'].shape}, manifest says {e} episodes of {t} steps")
        self._cache = (i, arrays)
        return arrays

    def shard_episodes(self, i: int) -> list[Episode]:
        arrays = self.load_shard(i)
        return [_episode_at(arrays, j) for j in range(self.shards[i]["n_episodes"])]

    def locate(self, index: int) -> tuple[int, int]:
        """Global episode index -> (shard, position in shard)."""
        if not 0 <= index < len(self):
            raise IndexError(f"episode {index} out of range, dataset has {len(self)} episodes")
        shard = int(np.searchsorted(self._offsets, index, side="right") - 1)
        return shard, index - int(self._offsets[shard])

    def __getitem__(self, index: int) -> Episode:
        shard, j = self.locate(index)
        return _episode_at(self.load_shard(shard), j)

    def episodes(self, shuffle: bool = False, seed: int = 0) -> Iterator[Episode]:
        """Iterate over episodes, one shard in memory at a time (shuffled: shard order and within)."""
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(self.shards)) if shuffle else range(len(self.shards))
        for i in order:
            episodes = self.shard_episodes(int(i))
            inner = rng.permutation(len(episodes)) if shuffle else range(len(episodes))
            for j in inner:
                yield episodes[j]

    # -- windows
    def windows(self, length: int, stride: int = 1, shuffle: bool = False, seed: int = 0,
                fields: tuple[str, ...] = ("frames", "actions"),
                encoder_id: str | None = None) -> Iterator[tuple]:
        """Stream fixed-length windows of `length` steps as tuples of the requested `fields`.

        frames (L+1,H,W,3) uint8, actions (L,A), states (L+1,S), rewards (L,), captions
        list[str] (L+1), goal_frame, goal_state, episode (global index), start (first step),
        latents (L+1, ...) of `encoder_id`. Windows start every `stride` steps inside each
        episode. `shuffle` permutes the shard order and the windows within each shard (one
        shard is in memory at a time), deterministically given `seed`. Arrays are views.
        """
        if length < 1 or stride < 1:
            raise ValueError(f"length={length}, stride={stride}; expected both >= 1")
        bad = [f for f in fields if f not in WINDOW_FIELDS]
        if bad:
            raise ValueError(f"unknown window fields {bad}, expected a subset of {WINDOW_FIELDS}")
        if "latents" in fields and encoder_id is None:
            raise ValueError("fields include 'latents' but encoder_id=None; name the encoder")
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(self.shards)) if shuffle else range(len(self.shards))
        for i in order:
            i = int(i)
            entry = self.shards[i]
            e, t = entry["n_episodes"], entry["episode_steps"]
            if t < length:
                continue
            arrays = self.load_shard(i)
            lat = self.load_latents(i, encoder_id) if "latents" in fields else None
            starts = np.arange(0, t - length + 1, stride)
            pairs = np.stack(np.meshgrid(np.arange(e), starts, indexing="ij"), -1).reshape(-1, 2)
            if shuffle:
                pairs = pairs[rng.permutation(len(pairs))]
            for j, s in pairs.tolist():
                yield tuple(self._window_field(f, arrays, lat, i, j, s, length) for f in fields)

    def _window_field(self, name, arrays, lat, shard, j, s, length):
        if name in ("frames", "states"):
            return arrays[name][j, s:s + length + 1]
        if name in ("actions", "rewards"):
            return arrays[name][j, s:s + length]
        if name == "captions":
            return arrays["captions"][j, s:s + length + 1].tolist()
        if name in ("goal_frame", "goal_state"):
            return arrays[name][j]
        if name == "episode":
            return int(self._offsets[shard]) + j
        if name == "start":
            return s
        return lat[j, s:s + length + 1]  # latents

    # -- cached latents
    def has_latents(self, encoder_id: str) -> bool:
        return bool(self.shards) and all(encoder_id in s.get("latents", {}) for s in self.shards)

    def load_latents(self, i: int, encoder_id: str, mmap: bool = False) -> np.ndarray:
        """Cached latents of shard `i` (leading dims (n_episodes, T+1)), verified."""
        rec = self.shards[i].get("latents", {}).get(encoder_id)
        if rec is None:
            have = sorted(self.shards[i].get("latents", {}))
            raise KeyError(f"shard {i} of {str(self.root)!r} has no latents for encoder "
                           f"{encoder_id!r} (has {have}); run `lw encode-dataset`")
        path = self.root / rec["file"]
        self._check_file(path, rec["sha256"], None)
        try:
            arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise ShardCorruptError(f"{str(path)!r} is not a readable .npy file: {e}") from e
        if list(arr.shape) != rec["shape"]:
            raise ShardCorruptError(f"{str(path)!r} has shape {list(arr.shape)}, expected {rec['shape']}")
        return arr

    def update_manifest(self, fn: Callable[[dict], None]) -> None:
        update_manifest(self.root, fn)
        self.reload()

    def record_latents(self, shard_index: int, encoder_id: str, file: str, sha256: str,
                       shape: list[int] | tuple[int, ...]) -> None:
        record_latents(self.root, shard_index, encoder_id, file, sha256, shape)
        self.reload()


# ----------------------------------------------------------------------------- summary

def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return ""


def dataset_summary(root: str | Path) -> str:
    """A few lines describing a dataset, from its manifest alone (no shard is read)."""
    m = read_manifest(root)
    shards = m["shards"]
    n_ep = sum(s["n_episodes"] for s in shards)
    n_frames = sum(s["n_frames"] for s in shards)
    steps = sorted({s["episode_steps"] for s in shards})
    size = sum(s["bytes"] for s in shards)
    lat_size = 0
    encoders: set[str] = set()
    for s in shards:
        for enc, rec in s.get("latents", {}).items():
            encoders.add(enc)
            p = Path(root) / rec["file"]
            lat_size += p.stat().st_size if p.is_file() else 0
    policies: Counter = Counter()
    for s in shards:
        policies.update(s["policies"])
    lines = [f"dataset {str(root)!r}: task {m['task']!r}, image {m['image_size']}x{m['image_size']}, "
             f"action dim {m['action_dim']}, state dim {m['state_dim']}",
             f"  {n_ep} episodes, {n_frames} frames, {len(shards)} shards, "
             f"episode steps {steps if len(steps) != 1 else steps[0]}",
             f"  disk: {_fmt_bytes(size)} shards" + (f" + {_fmt_bytes(lat_size)} latents "
                                                    f"({', '.join(sorted(encoders))})" if encoders else "")]
    if shards:
        lo = np.min([s["action_min"] for s in shards], axis=0)
        hi = np.max([s["action_max"] for s in shards], axis=0)
        rng_str = ", ".join(f"[{a:+.3f}, {b:+.3f}]" for a, b in zip(lo, hi))
        mean_r = sum(s["reward_mean"] * s["n_episodes"] for s in shards) / max(n_ep, 1)
        lines.append(f"  actions range per dim: {rng_str}; mean reward {mean_r:.4f}")
        lines.append("  policies: " + ", ".join(f"{k} {v} ({100 * v / n_ep:.0f}%)"
                                                for k, v in sorted(policies.items())))
    return "\n".join(lines)
