"""Training records: the resolved config, metrics.jsonl, TensorBoard, the progress bar, FLOPs and MFU.

Every trainer (`lw pretrain`, the encoder trainers) and the dataset tools log through the one
`MetricsLogger` and show the one `progress_bar`. torch is imported only where a function needs
it, so the torch-free collector can use the bar too.

FLOP formula (stated once, used by `lw pretrain`, `lw scaling` and bench/train.py):

    flops_per_token = 6 * N_active + 12 * n_layers * d_model * seq_len

`6 * N_active` is the forward (2) + backward (4) matmul cost of the non-embedding
parameters a token actually uses (MoE: shared + top-k routed experts, not all experts).
The attention term counts QK^T and AV for a full (non-causal-discounted) context of
`seq_len` keys: 2 matmuls * 2 FLOPs * d_model * seq_len forward, times 3 for backward
(PaLM appendix B; Chinchilla uses the same). MFU = achieved FLOP/s / peak FLOP/s.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s per device. Matched by substring of
# torch.cuda.get_device_name(); order matters (more specific names first).
PEAK_FLOPS_BF16: list[tuple[str, float]] = [
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A10G", 125e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
    ("V100", 125e12),
    ("T4", 65e12),
]


@dataclass
class MetricsConfig:
    log_every: int = 1            # optimizer steps between metric records
    tensorboard: bool = True      # also write TensorBoard events to run_dir/tb
    progress: bool = True         # tqdm progress bar on rank 0
    peak_flops: float = 0.0       # device peak FLOP/s for MFU; 0 = look up the GPU name (none on CPU)


def flops_per_token(n_active_params: int, n_layers: int, d_model: int, seq_len: int) -> float:
    """Training FLOPs per token: 6*N_active + 12*L*d*T (see module docstring)."""
    return 6.0 * n_active_params + 12.0 * n_layers * d_model * seq_len


def peak_flops(device: torch.device | str, override: float = 0.0) -> float:
    """Peak bf16 FLOP/s of one device; 0.0 when unknown (CPU), which disables MFU."""
    import torch

    if override > 0:
        return float(override)
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return 0.0
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_FLOPS_BF16:
        if key in name:
            return value
    return 0.0


def mfu(tokens_per_s: float, flops_tok: float, peak: float, world_size: int = 1) -> float | None:
    """Model FLOPs utilisation in [0, 1]; None when the peak is unknown."""
    if peak <= 0:
        return None
    return tokens_per_s * flops_tok / (peak * world_size)


def _scalar(v: Any) -> float | None:
    if hasattr(v, "numel") and hasattr(v, "detach"):  # a torch.Tensor (without importing torch)
        return float(v.detach().float().item()) if v.numel() == 1 else None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    return None


class MetricsLogger:
    """metrics.jsonl (one JSON object per line) plus optional TensorBoard. Only rank 0 should create one.

    `append=False` starts the file afresh; `append=True` continues it (a resumed run; the encoder
    trainers, which have always added to what a folder holds).
    """

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, append: bool = False):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a" if append else "w")
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(log_dir=str(Path(run_dir) / "tb"))

    def write(self, **record: Any) -> None:
        """One record as given (nested dicts and flags included); JSON only, not TensorBoard."""
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()  # a run read while it trains (or killed) has every record so far

    def log(self, step: int, metrics: dict[str, Any]) -> dict[str, float]:
        """Write the finite scalar entries of `metrics` at `step` (also to TensorBoard); returns them."""
        row = {k: s for k, v in metrics.items() if (s := _scalar(v)) is not None and math.isfinite(s)}
        self.write(step=step, **row)
        if self.tb is not None:
            for k, v in row.items():
                self.tb.add_scalar(k, v, step)
        return row

    def close(self) -> None:
        self._f.close()
        if self.tb is not None:
            self.tb.close()


def to_dict(cfg: Any) -> dict:
    """A config (dataclass or mapping) as a plain nested dict."""
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)


def save_resolved(cfg: Any, run_dir: str | Path) -> Path:
    """Write the resolved config as YAML (and JSON) into the run folder."""
    from omegaconf import OmegaConf

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    d = to_dict(cfg)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(d)))
    (run_dir / "config.json").write_text(json.dumps(d, indent=2))
    return run_dir / "config.yaml"


def truncate_jsonl(path: str | Path, max_step: int) -> None:
    """Drop records after `max_step` (a resumed run rewrites the steps it repeats)."""
    path = Path(path)
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= max_step]
    path.write_text("".join(ln + "\n" for ln in keep))


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]


class Throughput:
    """Tokens/s over a sliding window of steps (the first step, with compilation, is excluded)."""

    def __init__(self, window: int = 20):
        self.window = window
        self.times: list[float] = []
        self.tokens: list[int] = []

    def update(self, tokens: int) -> float:
        self.times.append(time.perf_counter())
        self.tokens.append(tokens)
        self.times, self.tokens = self.times[-self.window - 1:], self.tokens[-self.window - 1:]
        if len(self.times) < 2:
            return 0.0
        return sum(self.tokens[1:]) / max(1e-9, self.times[-1] - self.times[0])


def progress_bar(total: int | None, desc: str, enabled: bool = True, initial: int = 0, **tqdm_kwargs):
    """A tqdm bar (a no-op one when not enabled). It redraws at most every 2 s, so a log
    redirected to a file stays small; `tqdm_kwargs` (unit, smoothing, ...) go to tqdm."""
    from tqdm import tqdm

    kw = {"dynamic_ncols": True, "mininterval": 2.0, **tqdm_kwargs}
    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, **kw)


def tqdm_write(msg: str) -> None:
    """Print above the progress bar and flush (logs redirected to files stay current)."""
    from tqdm import tqdm

    tqdm.write(msg)
    sys.stdout.flush()


# Metrics shown on `lw pretrain`'s bar: text, frames (image-text + video), action-video, speed.
BAR_KEYS = (("loss", "loss"), ("group/text", "text"), ("group/frames", "frames"),
            ("group/action_video", "act"), ("tok_s", "tok/s"), ("mfu", "mfu"))


def bar_postfix(metrics: dict[str, float]) -> dict[str, str]:
    """The BAR_KEYS entries of a step's metrics, formatted short for the progress bar."""
    post = {}
    for key, short in BAR_KEYS:
        if key in metrics:
            v = metrics[key]
            post[short] = f"{v:.1%}" if key == "mfu" else (f"{v:.0f}" if key == "tok_s" else f"{v:.3f}")
    return post
