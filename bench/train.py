"""Training throughput: tokens/s (and MFU on GPU) of the real `lw pretrain` step for model sizes.

    OMP_NUM_THREADS=2 .venv/bin/python bench/train.py --sizes tiny --seq-len 256 --batch-size 8
    .venv/bin/python bench/train.py --sizes small base --seq-len 2048 --batch-size 16 --device cuda

Each size runs `pretrain.train.Trainer.train_step` (mixture -> packed rows -> loss ->
backward -> clip -> AdamW -> MoE bias update) on synthetic episodes (random normalised
latents of the CPU RAE shape, 4x4 tokens x 128, with random actions and captions) and the
offline text corpus, so no dataset or RAE is needed and the compute per token is that of
a real run. Reported: parameters (total / active non-embedding), step time, tokens/s, the
share of the step the host needs to build its batches (hidden by the prefetch thread when
on), and MFU with the FLOP formula of
pretrain.metrics (6 N_active + 12 L d T per token) against the device's bf16 peak.
Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from pretrain.data.mixture import DataConfig, EpisodeData  # noqa: E402
from pretrain.metrics import MetricsConfig, mfu  # noqa: E402
from pretrain.checkpoint import CheckpointConfig  # noqa: E402
from pretrain.optim import OptimConfig  # noqa: E402
from pretrain.train import DataInfo, RAEArgs, TrainConfig, Trainer  # noqa: E402
from worldmodel.config import MODELS  # noqa: E402


def synthetic_episodes(n: int, steps: int, grid: tuple[int, int], dim: int, action_dim: int,
                       seed: int = 0) -> list[EpisodeData]:
    rng = np.random.default_rng(seed)
    captions = np.array([[f"episode {e}: the arm is at angle {rng.integers(0, 360)} degrees." for _ in range(steps + 1)]
                         for e in range(n)])
    return [EpisodeData(latents=rng.standard_normal((n, steps + 1, grid[0] * grid[1], dim), dtype=np.float32),
                        actions=rng.uniform(-1, 1, (n, steps, action_dim)).astype(np.float32), captions=captions)]


def bench_size(size: str, args) -> dict:
    grid = (args.grid, args.grid)
    model = MODELS[size](latent_dim=args.latent_dim, frame_grid=grid, action_dim=2,
                         action_encoding=args.action_encoding)
    data = DataConfig(dataset="", text_sources=["pydoc"], seq_len=args.seq_len, holdout=0.0)
    cfg = TrainConfig(run_dir="", device=args.device, steps=args.warmup + args.steps, batch_size=args.batch_size,
                      grad_accum=args.grad_accum, precision=args.precision, compile=args.compile, export=False,
                      prefetch=args.prefetch,
                      model=model, rae=RAEArgs(path=""), data=data, optim=OptimConfig(warmup_steps=2),
                      checkpoint=CheckpointConfig(every=-1), metrics=MetricsConfig(tensorboard=False, progress=False))
    info = DataInfo(latent_dim=args.latent_dim, frame_grid=grid, action_dim=2, action_scale=1.0)
    trainer = Trainer(cfg, episodes=synthetic_episodes(64, 50, grid, args.latent_dim, 2), info=info, quiet=True)
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):  # compilation, allocator and autotuning warm-up
        trainer.train_step()
    sync()
    t0 = time.perf_counter()
    losses = [trainer.train_step()["loss"] for _ in range(args.steps)]
    sync()
    step_s = (time.perf_counter() - t0) / args.steps
    trainer.close()  # stop the prefetch thread (if any) before driving the mixture directly
    t0 = time.perf_counter()
    for _ in range(args.steps):  # host-side batch building alone (the mixture moves on; the model is idle)
        trainer._micro_batches()
    data_s = (time.perf_counter() - t0) / args.steps
    tokens = args.batch_size * args.seq_len
    tok_s = tokens / step_s
    u = mfu(tok_s, trainer.flops_per_token, trainer.peak)
    return {"size": size, "params": trainer.n_params, "active_params": trainer.n_active,
            "d_model": model.d_model, "n_layers": model.n_layers, "ffn": model.moe.kind,
            "seq_len": args.seq_len, "batch_size": args.batch_size, "tokens_per_step": tokens,
            "step_s": step_s, "tokens_per_s": tok_s, "data_share": data_s / step_s,
            "flops_per_token": trainer.flops_per_token, "achieved_tflops": tok_s * trainer.flops_per_token / 1e12,
            "peak_tflops": trainer.peak / 1e12 or None, "mfu": u, "precision": "bf16" if trainer.amp else "fp32",
            "device": str(trainer.device), "final_loss": losses[-1]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", default=["tiny"], choices=sorted(MODELS))
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--latent-dim", type=int, default=128)
    p.add_argument("--grid", type=int, default=4, help="latent tokens per frame = grid^2")
    p.add_argument("--action-encoding", default="embed", choices=["embed", "text"])
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--compile", default="auto", choices=["auto", "on", "off"])
    p.add_argument("--prefetch", type=int, default=-1, help="steps built ahead in a thread (-1: 2 on CUDA, 0 on CPU)")
    p.add_argument("--out", default="runs/bench/train.json")
    args = p.parse_args(argv)
    rows = [bench_size(s, args) for s in args.sizes]
    head = f"{'size':6s} {'params':>9s} {'active':>9s} {'tok/step':>8s} {'step s':>8s} {'tok/s':>9s} " \
           f"{'data %':>6s} {'TFLOP/s':>8s} {'MFU':>6s}  device"
    print(head)
    for r in rows:
        mfu_s = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        print(f"{r['size']:6s} {r['params'] / 1e6:8.2f}M {r['active_params'] / 1e6:8.2f}M {r['tokens_per_step']:8d} "
              f"{r['step_s']:8.3f} {r['tokens_per_s']:9.0f} {100 * r['data_share']:5.1f}% "
              f"{r['achieved_tflops']:8.4f} {mfu_s:>6s}  {r['device']} {r['precision']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "args": vars(args)}
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
