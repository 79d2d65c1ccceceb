"""Rollout throughput: imagined frames/s of LearnedWorld vs ground-truth MuJoCo step+render.

    OMP_NUM_THREADS=2 .venv/bin/python bench/rollout.py --model runs/tiny_cpu/model --horizon 5 \
        --sample-steps 4 --out runs/bench/rollout.json
    .venv/bin/python bench/rollout.py --size tiny      # random-init model of a MODELS size (no folder)

Learned: `LatentWorld.rollout` of B action sequences of H steps in one batched call from a
real encoded context (latents only, and with RAE decoding to pixels), for B = 1..256, with the
B sequences continuing one context (`shared`: a planner's candidates, the context's KV cache
computed once) and with every row bringing its own copy of it (`own`: a vector env's episodes).
Ground truth: one MuJoCo task stepping random actions and rendering each frame (what
LearnedWorld replaces), single process, on the same machine, timed right after each batch
size so that each ratio compares the two under the same machine load. Prints a table of frames/s
and the ratio learned / MuJoCo; writes JSON.
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

from envs.mujoco_tasks import make_task  # noqa: E402
from worldmodel.device import resolve_device  # noqa: E402
from worldmodel.world import LatentWorld  # noqa: E402


def random_world(size: str, task: str, image_size: int, device: str) -> LatentWorld:
    """A randomly initialised world of a MODELS size with the CPU RAE shape (4x4 tokens x 128):
    the same compute per frame as a trained one (used when no model folder exists yet)."""
    from worldmodel.config import MODELS
    from worldmodel.encoders import encoder_from_spec
    from worldmodel.rae import RAE, RAEConfig
    from worldmodel.transfusion import Transfusion

    spec = make_task(task, image_size=image_size, render=False).spec_
    enc = encoder_from_spec({"encoder": "own", "input_size": image_size,
                             "kwargs": dict(image_size=image_size, patch_size=image_size // 4, dim=128, depth=6,
                                            heads=4)})
    rae = RAE(RAEConfig(image_size=image_size), enc)
    cfg = MODELS[size](latent_dim=128, frame_grid=(4, 4), action_dim=spec.action_dim, action_scale=spec.action_scale)
    extras = {"task": task, "image_size": image_size}   # context_frames, sample_steps: LatentWorld's defaults
    return LatentWorld(Transfusion(cfg).to(device), rae.to(device), extras)


def time_it(fn, min_seconds: float, max_reps: int = 50) -> float:
    """Median seconds per call after one warm-up call, repeating for at least min_seconds."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < max_reps and (not times or time.perf_counter() - start < min_seconds):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


class MujocoClock:
    """Ground-truth frames/s: one task stepping random actions and rendering every frame."""

    def __init__(self, task_name: str, image_size: int):
        self.task = make_task(task_name, image_size=image_size, max_steps=10**9)
        self.task.reset(seed=0)
        self.rng = np.random.default_rng(0)
        self.image_size = image_size
        self.fps(10)  # warm-up (renderer context)

    def fps(self, steps: int) -> float:
        space = self.task.action_space
        acts = self.rng.uniform(space.low, space.high, (steps, space.shape[0])).astype(np.float32)
        t0 = time.perf_counter()
        for a in acts:
            frame = self.task.step(a)[0]
        dt = time.perf_counter() - t0
        assert frame is not None and frame.shape == (self.image_size, self.image_size, 3)
        return steps / dt


MATMULS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm")   # where the model's FLOPs are


def profile_rollout(fn, frames: int, mujoco_fps: float, reps: int = 5) -> dict:
    """torch.profiler over `reps` calls of fn (one rollout of `frames` frames): prints the top ops by
    self time and the matmuls' share, with the frames/s the matmuls alone would allow (every other op
    free): the most this model can imagine per second on this machine without faster matmuls."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        fn()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(reps):
                fn()
    ka = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in ka) / reps / 1e6
    mm = sum(e.self_cpu_time_total for e in ka if e.key in MATMULS) / reps / 1e6
    ops = sum(e.count for e in ka) / reps
    print(ka.table(sort_by="self_cpu_time_total", row_limit=15))
    ceiling = frames / mm
    print(f"profile: {total * 1e3:.1f} ms of op time per rollout of {frames} frames, {ops:.0f} ops; matmuls "
          f"{mm * 1e3:.1f} ms ({100 * mm / total:.0f}%): with every other op free, {ceiling:.0f} frames/s = "
          f"{ceiling / mujoco_fps:.1f}x MuJoCo ({mujoco_fps:.0f} frames/s)")
    top = sorted(ka, key=lambda e: -e.self_cpu_time_total)[:15]
    return {"seconds_per_rollout": total, "matmul_seconds": mm, "ops_per_rollout": ops, "frames": frames,
            "matmul_ceiling_fps": ceiling, "matmul_ceiling_ratio": ceiling / mujoco_fps, "mujoco_fps": mujoco_fps,
            "top": [{"op": e.key, "self_ms": e.self_cpu_time_total / reps / 1e3, "calls": e.count / reps} for e in top]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="world-model folder (default: a random-init --size model)")
    p.add_argument("--size", default="tiny", help="MODELS size for the random-init model when --model is not given")
    p.add_argument("--task", default=None, help="ground-truth task (default: the model's only task; required for a model of several)")
    p.add_argument("--image-size", type=int, default=64, help="frame side for the random-init model")
    p.add_argument("--batches", default="1,2,4,8,16,32,64,128,256")
    p.add_argument("--horizon", type=int, default=5, help="imagined steps per rollout")
    p.add_argument("--sample-steps", type=int, default=None, help="Euler steps per frame (default: the model's)")
    p.add_argument("--window", type=int, default=None,
                   help="the most frames an imagined frame sees (0: the whole rollout; default: the model's)")
    p.add_argument("--min-seconds", type=float, default=2.0, help="timing per batch size")
    p.add_argument("--mujoco-steps", type=int, default=200, help="MuJoCo steps timed after each batch size")
    p.add_argument("--device", default=None)
    p.add_argument("--contexts", default="shared,own",
                   help="shared: the B sequences continue one context (a planner's candidates; its KV cache is "
                        "computed once); own: every row brings its own copy (a vector env's episodes)")
    p.add_argument("--profile", action="store_true",
                   help="profile the largest batch's latent rollout (shared contexts): the top ops, and the "
                        "matmuls' share with the frames/s they alone would allow (the ceiling of this model here)")
    p.add_argument("--out", default="runs/bench/rollout.json")
    args = p.parse_args()

    device = str(resolve_device(args.device))  # a string: it goes into the JSON record
    if args.model:
        world = LatentWorld.from_pretrained(args.model, device=device)
        source = args.model
    else:
        world = random_world(args.size, args.task or "reacher", args.image_size, device)
        source = f"random-init MODELS[{args.size!r}]"
    world = world.for_task(args.task)             # the model's task, or --task (one of a generalist's tasks)
    task_name = world.task
    steps = world.resolve_sample_steps(args.sample_steps)
    window = world.resolve_window(args.window)
    n_params = sum(p.numel() for p in world.model.parameters())
    print(f"rollout bench: {source} ({n_params / 1e6:.2f}M params, {world.tokens} tokens x {world.latent_dim}), "
          f"task {task_name}, horizon {args.horizon}, {steps} sample steps, window {window or 'all'}, device {device}, "
          f"torch threads {torch.get_num_threads()}")

    clock = MujocoClock(task_name, world.image_size)
    gt_all = []

    task = make_task(task_name, image_size=world.image_size)
    frame, _ = task.reset(seed=0)
    zero = np.zeros(task.action_space.shape, np.float32)
    frames = [frame] + [task.step(zero)[0] for _ in range(world.context_frames - 1)]
    ctx1 = world.encode_frames(np.stack(frames))[None]  # (1,Tc,N,C)
    lo, hi = task.action_space.low, task.action_space.high
    task.close()
    modes = [m.strip() for m in args.contexts.split(",") if m.strip()]
    if not modes or set(modes) - {"shared", "own"}:
        raise SystemExit(f"--contexts={args.contexts!r}, expected 'shared', 'own' or both, comma-separated")
    rows = []
    for B in [int(b) for b in args.batches.split(",")]:
        acts = torch.as_tensor(np.random.default_rng(B).uniform(lo, hi, (B, args.horizon, len(lo))),
                               dtype=torch.float32, device=world.device)
        gen = torch.Generator(device=world.device).manual_seed(0)
        for mode in modes:
            ctx = ctx1 if mode == "shared" else ctx1.expand(B, *ctx1.shape[1:]).contiguous()
            ctx_a = torch.zeros(ctx.shape[0], ctx.shape[1] - 1, world.action_dim, device=world.device)
            with torch.no_grad():
                t_lat = time_it(lambda: world.rollout(ctx, ctx_a, acts, sample_steps=steps, generator=gen,
                                                      window=window),
                                args.min_seconds)
                t_pix = time_it(lambda: world.rollout(ctx, ctx_a, acts, sample_steps=steps, pixels=True,
                                                      generator=gen, window=window), args.min_seconds)
            # MuJoCo timed right after each measurement: a shared machine's load drifts, and each
            # ratio should compare the two under the same conditions.
            gt = clock.fps(args.mujoco_steps)
            gt_all.append(gt)
            fps_lat, fps_pix = B * args.horizon / t_lat, B * args.horizon / t_pix
            rows.append({"batch": B, "contexts": mode, "seconds_latent": t_lat, "seconds_pixels": t_pix,
                         "fps_latent": fps_lat, "fps_pixels": fps_pix, "mujoco_fps": gt,
                         "ratio_latent": fps_lat / gt, "ratio_pixels": fps_pix / gt})
            print(f"  B={B:4d} {mode:>6} contexts: {fps_lat:9.1f} latent frames/s ({fps_lat / gt:6.2f}x), "
                  f"{fps_pix:9.1f} pixel frames/s ({fps_pix / gt:6.2f}x), MuJoCo {gt:.1f} frames/s", flush=True)
    profile = None
    if args.profile:
        B = max(int(b) for b in args.batches.split(","))
        acts = torch.as_tensor(np.random.default_rng(B).uniform(lo, hi, (B, args.horizon, len(lo))),
                               dtype=torch.float32, device=world.device)
        ctx_a = torch.zeros(1, ctx1.shape[1] - 1, world.action_dim, device=world.device)
        profile = profile_rollout(lambda: world.rollout(ctx1, ctx_a, acts, sample_steps=steps, window=window),
                                  B * args.horizon,
                                  clock.fps(args.mujoco_steps))
    clock.task.close()

    lines = ["| batch | contexts | imagined latent frames/s | x MuJoCo | imagined pixel frames/s | x MuJoCo "
             "| MuJoCo frames/s |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['batch']} | {r['contexts']} | {r['fps_latent']:.1f} | {r['ratio_latent']:.2f} | "
              f"{r['fps_pixels']:.1f} | {r['ratio_pixels']:.2f} | {r['mujoco_fps']:.0f} |" for r in rows]
    table = "\n".join(lines)
    gt = float(np.median(gt_all))
    print(f"\nMuJoCo step+render ({world.image_size}px, 1 process, timed after each row): "
          f"median {gt:.1f} frames/s\n{table}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "model": source, "params": n_params, "task": task_name, "horizon": args.horizon, "sample_steps": steps,
        "window": window,
        "device": device, "torch_threads": torch.get_num_threads(), "machine": platform.platform(),
        "cpu": platform.processor() or platform.machine(), "mujoco_fps": gt, "rows": rows,
        "profile": profile}, indent=2))
    out.with_suffix(".md").write_text(f"{source}, horizon {args.horizon}, {steps} sample steps, "
                                      f"window {window or 'all'}, {device}, "
                                      f"{torch.get_num_threads()} torch threads; MuJoCo step+render median "
                                      f"{gt:.1f} frames/s\n\n{table}\n")
    print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
