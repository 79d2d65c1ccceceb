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


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_kept_freed_memory = False


def keep_freed_memory(mmap_threshold: int = 64 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Let glibc reuse freed CPU memory instead of handing it back to the kernel (process-wide).

    A rollout allocates its KV caches and activations afresh (MiBs each); by default glibc maps
    large blocks with mmap and returns them on free, so every rollout pays a page fault per
    4 KiB it touches (~1 us each here: 2 ms for one layer's first cache write at batch 256).
    Blocks up to `mmap_threshold` then come from the heap, which keeps up to `trim_threshold`
    bytes free for reuse: the process's resident memory stays at its high-water mark. Called
    once by CPU imagination (`LatentWorld`); a no-op off glibc. True when set (now or before)."""
    global _kept_freed_memory
    if _kept_freed_memory:
        return True
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False                      # not glibc (macOS, musl): nothing to tune
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _kept_freed_memory = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and \
        bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    return _kept_freed_memory
