"""Pickle-free files for nested training state: train state, RNG states, optimizer and model state.

One safetensors file per state: tensors and numpy arrays are stored as tensors, everything
else as JSON in the file's metadata. Reading runs no code from the file: safetensors parses
a JSON header and raw bytes, JSON yields plain values, and the only objects rebuilt are the
classes in `allowed_classes()` (the documents a data mixture holds between rows). Python
values round-trip exactly: ints of any size, floats (shortest repr), tuples, dicts with
non-string keys, numpy scalars.

    save_state(path, {"step": 3, "rng": np.random.get_state(), "w": torch.ones(2)})
    state = load_state(path)
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

FORMAT = "learnedworld-state"
VERSION = "1"
TAGS = ("__tensor__", "__ndarray__", "__tuple__", "__items__", "__numpy__", "__dataclass__")


def allowed_classes() -> dict[str, type]:
    """The dataclasses a state may hold (rebuilt field by field, never unpickled)."""
    from worldmodel.sequence import Action, Document, Frame, Text
    return {c.__name__: c for c in (Action, Document, Frame, Text)}


class _Encoder:
    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self._storages: set[int] = set()

    def tensor(self, t: torch.Tensor) -> str:
        t = t.detach().to("cpu")
        ptr = t.untyped_storage().data_ptr()
        if ptr in self._storages or not t.is_contiguous():  # safetensors refuses shared memory
            t = t.clone(memory_format=torch.contiguous_format)
        if t.numel():
            self._storages.add(t.untyped_storage().data_ptr())
        name = f"t{len(self.tensors)}"
        self.tensors[name] = t
        return name

    def __call__(self, x: Any, where: str) -> Any:
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if isinstance(x, torch.Tensor):
            return {"__tensor__": self.tensor(x)}
        if isinstance(x, np.ndarray):
            if x.dtype == object:
                raise TypeError(f"state at {where}: numpy object arrays cannot be stored without pickle")
            return {"__ndarray__": self.tensor(torch.from_numpy(np.ascontiguousarray(x)))}
        if isinstance(x, np.generic):
            return {"__numpy__": x.dtype.str, "value": x.item()}
        if isinstance(x, list):
            return [self(v, f"{where}[{i}]") for i, v in enumerate(x)]
        if isinstance(x, tuple):
            return {"__tuple__": [self(v, f"{where}[{i}]") for i, v in enumerate(x)]}
        if isinstance(x, dict):
            if all(isinstance(k, str) and k not in TAGS for k in x):
                return {k: self(v, f"{where}.{k}") for k, v in x.items()}
            return {"__items__": [[self(k, where), self(v, f"{where}[{k!r}]")] for k, v in x.items()]}
        name = type(x).__name__
        if dataclasses.is_dataclass(x) and allowed_classes().get(name) is type(x):
            return {"__dataclass__": name, "fields": {f.name: self(getattr(x, f.name), f"{where}.{f.name}")
                                                      for f in dataclasses.fields(x)}}
        raise TypeError(f"state at {where}: a {type(x).__module__}.{name} cannot be stored without pickle; "
                        f"store plain values, tensors or arrays (or add the class to allowed_classes)")


def _decode(x: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(x, list):
        return [_decode(v, tensors) for v in x]
    if not isinstance(x, dict):
        return x
    if "__tensor__" in x:
        return tensors[x["__tensor__"]]
    if "__ndarray__" in x:
        return tensors[x["__ndarray__"]].numpy()
    if "__numpy__" in x:
        return np.dtype(x["__numpy__"]).type(x["value"])
    if "__tuple__" in x:
        return tuple(_decode(v, tensors) for v in x["__tuple__"])
    if "__items__" in x:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in x["__items__"]}
    if "__dataclass__" in x:
        cls = allowed_classes()[x["__dataclass__"]]  # KeyError for anything else
        return cls(**{k: _decode(v, tensors) for k, v in x["fields"].items()})
    return {k: _decode(v, tensors) for k, v in x.items()}


def save_state(path: str | Path, state: Any) -> None:
    """Write `state` to `path` (a new file; callers make it atomic by writing into a temp folder)."""
    enc = _Encoder()
    tree = enc(state, "state")
    save_file(enc.tensors, str(path), metadata={"format": FORMAT, "version": VERSION, "tree": json.dumps(tree)})
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)  # safetensors writes 0600; run folders are shared like torch.save's files


def load_state(path: str | Path) -> Any:
    """Read a file written by save_state; anything else is refused, naming the file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT or meta.get("version") != VERSION:
                raise ValueError(f"format {meta.get('format')!r} version {meta.get('version')!r}, expected "
                                 f"{FORMAT!r} version {VERSION!r}")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        return _decode(json.loads(meta["tree"]), tensors)
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{str(path)!r} is not a readable state file written by pretrain.safe_state "
                         f"(damaged, or not ours): {e}") from e
