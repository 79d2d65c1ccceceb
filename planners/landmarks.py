"""A landmark graph in latent space: a cost-to-go that sees past walls.

The latent MSE to the goal image is a straight line through latent space. In a maze the
goal can be close in a straight line and far along the corridors, and a representation
trained for prediction folds space besides (on point_maze the latent distance of the
shipped encoder ranks corridor distances with Spearman 0.20). A planner with a 5-step
horizon that descends that cost pushes the ball into walls.

The graph is built from the collected episodes, pixels and actions only (SPTM, SoRB): the
encoded frames are clustered into K landmarks (k-means in the flattened latent), every
observed decision t -> t+1 that moves from landmark i to j adds an edge i -> j of one
step, and all-pairs shortest paths give `steps[i, j]`, the fewest decisions seen to get from
i to j. Walls are respected because the data never crosses one. The planning cost of a
latent z towards goal g is

    steps[landmark(z), landmark(g)]  +  ||z - g|| / diameter

where the second term, below 1 (`diameter` is the largest distance between landmarks),
only orders candidates that reach the same landmark distance: inside the goal's landmark it
is the plain latent distance, so the last centimetres are planned as before.

    graph = LandmarkGraph.build(latents_ETD, k=200, fingerprint=rae.fingerprint())   # (E, T+1, N*C) episodes
    graph.save_pretrained("runs/model/landmarks")
    cost = latent_cost(z_MKNC, goal_M1NC, graph)            # (M,) mean over the K scored steps

The graph term has no gradient (a nearest-landmark lookup): a gradient planner sees only
the tie-break distance.

Legend: E episodes, T+1 frames per episode, D = N*C latent size, L landmarks, M candidates,
K scored horizon steps.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from worldmodel import hub
from worldmodel.errors import ModelFolderError

KIND = "landmark_graph"


def kmeans(x: Tensor, k: int, iters: int = 25, seed: int = 0) -> Tensor:
    """(P, D) points -> (k, D) centres (Lloyd's algorithm from k distinct random points)."""
    if not 1 <= k <= len(x):
        raise ValueError(f"k={k} landmarks from {len(x)} latents, expected 1 <= k <= {len(x)}")
    g = torch.Generator().manual_seed(seed)
    centres = x[torch.randperm(len(x), generator=g)[:k]].clone()
    for _ in range(iters):
        a = torch.cdist(x, centres).argmin(1)
        counts = torch.bincount(a, minlength=k)
        sums = torch.zeros_like(centres).index_add_(0, a, x)
        empty = counts == 0                                       # keep an empty cluster's centre where it was
        centres = torch.where(empty[:, None], centres, sums / counts.clamp(min=1)[:, None])
    return centres


def shortest_steps(edges: Tensor) -> Tensor:
    """(L, L) bool adjacency -> (L, L) fewest edges from i to j (inf: never), Floyd-Warshall on
    whole rows (L iterations of one (L, L) min: ~0.1 s for L = 400)."""
    L = len(edges)
    d = torch.full((L, L), float("inf"))
    d[edges] = 1.0
    d.fill_diagonal_(0.0)
    for k in range(L):
        d = torch.minimum(d, d[:, k:k + 1] + d[k:k + 1, :])
    return d


class LandmarkGraph:
    """Landmark latents and the fewest observed decisions between them; see the module docstring."""

    def __init__(self, centres: Tensor, steps: Tensor, fingerprint: str = "", meta: dict | None = None):
        if centres.ndim != 2 or steps.shape != (len(centres), len(centres)):
            raise ValueError(f"landmark graph has centres {tuple(centres.shape)} and steps {tuple(steps.shape)}, "
                             "expected (L, D) and (L, L)")
        self.centres = centres.float()
        self.steps = steps.float()
        self.fingerprint = fingerprint          # of the encoder whose latents the graph was built in
        self.meta = dict(meta or {})
        reach = torch.isfinite(self.steps)
        # an unreachable pair costs more than any reachable one, so candidates still move towards reachable landmarks
        self._cost_steps = torch.where(reach, self.steps, self.steps[reach].max() + 1)
        self.diameter = float(torch.cdist(self.centres, self.centres).max().clamp(min=1e-6))
        self._on_device: dict[torch.device, tuple[Tensor, Tensor]] = {}   # (centres, cost steps), copied once

    @property
    def dim(self) -> int:
        return self.centres.shape[1]

    def __len__(self) -> int:
        return len(self.centres)

    # -- building --------------------------------------------------------------------
    @classmethod
    def build(cls, latents: Tensor, k: int = 200, iters: int = 25, seed: int = 0, fit_points: int = 50_000,
              fingerprint: str = "", meta: dict | None = None) -> "LandmarkGraph":
        """Latents of whole episodes (E, T+1, D), consecutive frames one decision apart."""
        if latents.ndim != 3 or latents.shape[1] < 2:
            raise ValueError(f"latents have shape {tuple(latents.shape)}, expected (E episodes, T+1 >= 2 frames, D)")
        z = latents.float()
        E, T1, D = z.shape
        flat = z.reshape(-1, D)
        g = torch.Generator().manual_seed(seed)
        fit = flat[torch.randperm(len(flat), generator=g)[:fit_points]]        # k-means on a subsample
        centres = kmeans(fit, k, iters, seed)
        a = torch.cat([torch.cdist(flat[i:i + 65536], centres).argmin(1) for i in range(0, len(flat), 65536)])
        a = a.view(E, T1)
        edges = torch.zeros(k, k, dtype=torch.bool)
        edges[a[:, :-1].reshape(-1), a[:, 1:].reshape(-1)] = True
        info = {"episodes": E, "frames": E * T1, "k": k, "iters": iters, "seed": seed, **(meta or {})}
        return cls(centres, shortest_steps(edges), fingerprint, info)

    # -- the cost --------------------------------------------------------------------
    def _tensors(self, device: torch.device) -> tuple[Tensor, Tensor]:
        if device not in self._on_device:                 # the cost runs once per planner iteration: copy once
            self._on_device[device] = (self.centres.to(device), self._cost_steps.to(device))
        return self._on_device[device]

    def assign(self, z: Tensor) -> Tensor:
        """(..., D) latents -> (...) index of the nearest landmark."""
        centres = self._tensors(z.device)[0]
        flat = z.reshape(-1, z.shape[-1]).float()
        return torch.cdist(flat, centres).argmin(1).view(z.shape[:-1])

    def cost(self, z: Tensor, goal: Tensor) -> Tensor:
        """Predicted latents (..., K, N, C) and goal latents broadcastable to them -> (...) cost-to-go,
        the mean over the K scored steps."""
        if z.shape[-2] * z.shape[-1] != self.dim:
            raise ValueError(f"latents of shape {tuple(z.shape)} have {z.shape[-2] * z.shape[-1]} numbers per frame; "
                             f"the landmark graph was built on {self.dim}")
        zf, gf = z.flatten(-2), goal.flatten(-2)                                 # (..., K, D), broadcastable
        steps = self._tensors(z.device)[1]
        to_go = steps[self.assign(zf), self.assign(gf)]                          # each goal assigned once, broadcast
        tie = (zf - gf).norm(dim=-1) / self.diameter
        return (to_go + tie).mean(-1)

    # -- folders (worldmodel.hub: atomic, checksummed safetensors) ------------------------
    def save_pretrained(self, path: str | Path) -> Path:
        return hub.save_pretrained(path, KIND, {"landmarks": len(self), "dim": self.dim},
                                   {"centres": self.centres, "steps": self.steps},
                                   extra={"fingerprint": self.fingerprint, "meta": self.meta})

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "LandmarkGraph":
        meta = hub.read_config(path, KIND)
        t = hub.load_state_dict(path)
        return cls(t["centres"], t["steps"], str(meta.get("fingerprint", "")), meta.get("meta", {}))

    def check_fingerprint(self, fingerprint: str, what: str) -> None:
        """Refuse to score latents of another encoder than the graph was built with."""
        if self.fingerprint and fingerprint and self.fingerprint != fingerprint:
            raise ModelFolderError(f"the landmark graph was built on latents of encoder {self.fingerprint[:16]}..., "
                                   f"but {what} encodes with {fingerprint[:16]}...; rebuild it with `lw build-landmarks`")


def graph_dir(folder: str | Path, task: str, multi_task: bool) -> Path:
    """Where `lw build-landmarks` writes a model folder's graph of `task`: `<folder>/landmarks` for a
    one-task model (the shipped layout), `<folder>/landmarks/<task>` for a model of several tasks."""
    return Path(folder) / "landmarks" / task if multi_task else Path(folder) / "landmarks"


def find_graph(folder: str | Path, task: str) -> Path | None:
    """The landmark graph a model folder keeps for `task`, or None. A graph built on another task's
    data is never returned: its landmarks and edges describe that task's scene, not this one."""
    per_task = Path(folder) / "landmarks" / task
    if (per_task / "config.json").is_file():
        return per_task
    shared = Path(folder) / "landmarks"
    if not (shared / "config.json").is_file():
        return None
    built_on = hub.read_config(shared, KIND).get("meta", {}).get("task")
    return shared if built_on in (None, task) else None


def latent_cost(z: Tensor, goal: Tensor, landmarks: LandmarkGraph | None = None) -> Tensor:
    """The latent planning cost of the learned models and the latent-cost oracle: predicted latents
    (..., K, N, C) against goal latents broadcastable to them -> (...): the MSE over the K scored
    steps, or the landmark graph's cost-to-go when there is one."""
    if landmarks is not None:
        return landmarks.cost(z, goal)
    return (z - goal).pow(2).mean((-1, -2, -3))
