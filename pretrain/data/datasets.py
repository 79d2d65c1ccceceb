"""Several episode datasets as the data of one model: the `data=` value and what they must share.

Every trainer reads its data through `dataset_roots`: `data=data/reacher` (one root, exactly as
before) or `data=[data/reacher,data/point_maze]` (one representation, RAE or world model over
several tasks). `open_datasets` opens them and refuses a set that one model cannot read: the
frames of every dataset must have one size and its actions one dimension, else a `DataError`
names the dataset and what differs from the first one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from pretrain.data.shards import Dataset
from worldmodel.errors import ConfigError, DataError


def dataset_roots(value: Any, key: str = "data") -> list[str]:
    """The dataset roots of a `data=` value: one path, or a non-empty list of paths."""
    roots = [value] if isinstance(value, (str, Path)) else value
    if not isinstance(roots, (list, tuple)) or not roots or not all(isinstance(r, (str, Path)) and str(r)
                                                                        for r in roots):
        raise ConfigError(f"{key}={value!r}, expected a dataset root or a non-empty list of them "
                          f"(e.g. {key}=data/reacher or {key}=[data/reacher,data/point_maze])")
    return [str(r) for r in roots]


def dataset_shares(weights: Any, n_datasets: int, key: str = "dataset_weights", data_key: str = "data") -> list[float] | None:
    """Each dataset's share of the windows drawn, from per-dataset weights (normalised), or None for
    [] (each dataset in proportion to its windows)."""
    w = [float(v) for v in weights]
    if not w:
        return None
    if len(w) != n_datasets or any(v < 0 for v in w) or sum(w) <= 0:
        raise ConfigError(f"{key}={w}, expected {n_datasets} weights >= 0 (one per dataset of {data_key}) "
                          f"with a positive sum, or [] (each dataset in proportion to its windows)")
    return [v / sum(w) for v in w]


def check_same(datasets: list[Dataset], field: str, value_of) -> None:
    """Every dataset has the first one's `value_of(ds)`; else a DataError naming the dataset."""
    if not datasets:
        return
    first = value_of(datasets[0])
    for ds in datasets[1:]:
        if value_of(ds) != first:
            raise DataError(f"dataset {str(ds.root)!r} has {field} {value_of(ds)!r}, but {str(datasets[0].root)!r} "
                            f"has {first!r}: datasets trained into one model need the same {field}")


def open_datasets(roots: list[str]) -> list[Dataset]:
    """The datasets at `roots`, checked to share one frame size and one action dimension."""
    datasets = [Dataset(r) for r in roots]
    check_same(datasets, "frame size", lambda ds: ds.image_size)
    check_same(datasets, "action dim", lambda ds: ds.action_dim)
    return datasets


def manifest_action_scale(m: dict) -> float:
    """A dataset's action bound: its task spec's, else (older manifests) the largest |action| seen."""
    scale = (m.get("task_spec") or {}).get("action_scale")
    if scale is None and m["shards"]:
        scale = max(max(abs(v) for v in s["action_min"] + s["action_max"]) for s in m["shards"])
    return float(scale or 1.0)


def action_scales(datasets: list[Dataset]) -> tuple[dict[str, float], float]:
    """The action bounds of one world model over `datasets`: ({task: its bound}, the model's scale).
    A task's bound is its datasets' (the largest where they differ); the model's is the largest of all,
    and each task's actions are stretched to it (worldmodel.world.model_actions), so that every task's
    actions reach the model as a fraction of their own bound."""
    return task_bounds((ds.task, manifest_action_scale(ds.manifest)) for ds in datasets)


def task_bounds(bounds: Iterable[tuple[str, float]]) -> tuple[dict[str, float], float]:
    """(task, bound) of each dataset -> ({task: its bound, the largest where datasets differ}, the
    model's: the largest of all). The one rule of the world model (`action_scales`) and the JEPA."""
    scales: dict[str, float] = {}
    for task, scale in bounds:
        scales[task] = max(scale, scales.get(task, scale))
    return scales, max(scales.values())
