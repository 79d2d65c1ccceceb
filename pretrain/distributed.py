"""One process or many: process group, device, FSDP2 sharding and cross-rank reductions.

`torchrun --nproc_per_node=N -m lw.pretrain ...` sets RANK/WORLD_SIZE/LOCAL_RANK; then
`init_distributed` starts NCCL (CUDA) or gloo (CPU) and builds a 1-D device mesh, and
`parallelize(model, mesh)` applies FSDP2 (`fully_shard`) to a finished model: every
transformer block, then the root. Without those variables it is a plain single process
and every helper here is a no-op, so the training loop has one code path.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from worldmodel.device import resolve_device


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    mesh: object | None = None    # torch.distributed.device_mesh.DeviceMesh when world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Start the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, index=local_rank)
    if world <= 1:
        return DistInfo(device=dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    from torch.distributed.device_mesh import init_device_mesh
    mesh = init_device_mesh(dev.type, (world,), mesh_dim_names=("dp",))
    return DistInfo(rank=dist.get_rank(), world_size=world, local_rank=local_rank, device=dev, mesh=mesh)


def destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer's blocks: the modules of the outermost ModuleLists holding parameters (the
    units FSDP shards and the trainer compiles one by one)."""
    found: list[nn.ModuleList] = []

    def visit(m: nn.Module) -> None:
        for child in m.children():
            if isinstance(child, nn.ModuleList) and any(True for _ in child.parameters()):
                found.append(child)  # do not descend: experts inside a block stay with the block
            else:
                visit(child)
    visit(model)
    return [block for lst in found for block in lst]


def parallelize(model: nn.Module, mesh, param_dtype: torch.dtype | None = None,
                reshard_after_forward: bool = True,
                forward_methods: tuple[str, ...] = ("loss",)) -> nn.Module:
    """Apply FSDP2 to a finished model: each block of its outermost ModuleLists, then the root.

    `param_dtype` (e.g. bf16) turns on FSDP's mixed precision (fp32 master weights and
    gradient reduction); None keeps fp32 parameters (use autocast instead).
    `forward_methods`: entry points other than forward() (the training loop calls
    `model.loss(batch)`), which FSDP must wrap to gather the root's parameters.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    if mesh is None:
        return model
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32) if param_dtype else None
    kw = {"mesh": mesh, **({"mp_policy": mp} if mp else {})}
    for block in blocks(model):
        fully_shard(block, reshard_after_forward=reshard_after_forward, **kw)
    fully_shard(model, **kw)
    for name in forward_methods:
        if callable(getattr(model, name, None)):
            register_fsdp_forward_method(model, name)
    return model


def all_reduce_mean(values: dict[str, float], device: torch.device | None = None) -> dict[str, float]:
    """Mean of scalar metrics over the ranks that report each key (identity in one process).

    Ranks may hold different keys (a per-source loss exists only where that source was in
    the rank's rows), so the dicts are gathered as objects rather than reduced as a tensor.
    """
    if not dist.is_initialized():
        return values
    gathered: list[dict[str, float]] = [None] * dist.get_world_size()  # type: ignore[list-item]
    dist.all_gather_object(gathered, values)
    out: dict[str, list[float]] = {}
    for d in gathered:
        for k, v in d.items():
            out.setdefault(k, []).append(float(v))
    return {k: sum(v) / len(v) for k, v in out.items()}


def all_reduce_sum_(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj, src: int = 0):
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """An unsharded CPU state dict (collective under FSDP: every rank must call it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    if not dist.is_initialized():
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """Gather a DTensor (FSDP shard) into a plain tensor; plain tensors pass through."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t
