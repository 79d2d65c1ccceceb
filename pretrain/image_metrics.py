"""Image quality metrics on float images in [0, 1], shape (B, 3, H, W).

`psnr` and `ssim` are public: the RAE trainer, the prediction evaluator and the
benchmarks all report the same numbers. Both average the per-image score over the
batch (`reduction="mean"`) or return it per image (`reduction="none"`, shape (B,)).
SSIM follows Wang et al. 2004: 11x11 Gaussian window (sigma 1.5), K1=0.01, K2=0.03,
"valid" filtering (no padding), averaged over channels and positions.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(a: torch.Tensor, b: torch.Tensor, name: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name}: images have shapes {tuple(a.shape)} and {tuple(b.shape)}, expected equal shapes")
    if a.ndim != 4:
        raise ValueError(f"{name}: images have shape {tuple(a.shape)}, expected (B, C, H, W)")
    if not (a.is_floating_point() and b.is_floating_point()):
        raise ValueError(f"{name}: images have dtypes {a.dtype}, {b.dtype}, expected float in [0, 1]")


def _reduce(x: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return x.mean()
    if reduction == "none":
        return x
    raise ValueError(f"reduction={reduction!r}, expected 'mean' or 'none'")


@torch.no_grad()
def psnr(a: torch.Tensor, b: torch.Tensor, reduction: str = "mean", eps: float = 1e-10) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB (peak 1.0), computed per image then reduced."""
    _check(a, b, "psnr")
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1)  # (B,)
    return _reduce(10.0 * torch.log10(1.0 / (mse + eps)), reduction)


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    w = g[:, None] * g[None, :]  # (size, size)
    return w.expand(channels, 1, size, size).contiguous()


@torch.no_grad()
def ssim(a: torch.Tensor, b: torch.Tensor, reduction: str = "mean", window: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (data range 1.0). Window shrinks (odd) for images smaller than it."""
    _check(a, b, "ssim")
    a, b = a.float(), b.float()
    C, H, W = a.shape[1:]
    size = min(window, H, W)
    size -= (size + 1) % 2  # keep it odd
    if size < 3:
        raise ValueError(f"ssim: images of size {H}x{W} are too small, expected at least 3x3")
    w = _gaussian_window(size, sigma, C, a.device, a.dtype)
    filt = lambda x: F.conv2d(x, w, groups=C)  # noqa: E731  (B,C,H,W) -> (B,C,H-s+1,W-s+1)
    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a ** 2
    var_b = filt(b * b) - mu_b ** 2
    cov = filt(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return _reduce(s.flatten(1).mean(1), reduction)
