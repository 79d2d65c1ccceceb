"""Small statistics for benchmark tables."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (better than p +- z*se near 0 and 1)."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"successes={successes}, n={n}: expected n >= 1 and 0 <= successes <= n")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_sem(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the finite values (nan, nan when there are none)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
