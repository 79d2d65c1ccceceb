"""Where a program runs: the one device resolver and the CPU thread count.

Every program (trainers, evaluation, the env, the benchmarks) takes a `device` string and
resolves it here, so "cuda if available" is decided in one place and a bad name fails the
same way everywhere. It lives in `worldmodel` (the lowest layer) so every package can use it.
"""
from __future__ import annotations

import torch

AUTO = ("auto", "", None)  # names that mean: CUDA when available, else the CPU


def resolve_device(name: str | torch.device | None = "auto", index: int | None = None) -> torch.device:
    """'auto' (or '' / None) -> cuda if available else cpu; 'cpu', 'cuda', 'cuda:N', 'mps' as torch names them.

    `index` pins a bare 'cuda' (or 'auto' on a CUDA machine) to device N, as a torchrun rank does
    with its LOCAL_RANK. Asking for CUDA without CUDA is an error, not a silent fall back to the CPU.
    """
    if isinstance(name, torch.device):
        name = str(name)
    if name in AUTO:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device={name!r} is not a torch device; expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={name!r} but CUDA is not available; expected device='cpu' or 'auto'")
        if device.index is None and index is not None:
            device = torch.device("cuda", index)
    return device


def set_threads(threads: int) -> None:
    """torch's CPU threads; 0 keeps torch's default (every core), so configs can leave it unset."""
    if threads > 0:
        torch.set_num_threads(threads)
