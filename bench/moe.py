"""MoE FFN step time against a dense FFN at equal active FLOPs.

One training step of a lone FeedForward (forward + backward, grads of input and weights)
on `--tokens` tokens of width `--d-model`. The dense FFN is SwiGLU with hidden 4*d; an MoE of
granularity G has experts of hidden 4*d/G and top_k = G - 1 routed experts + 1 shared expert
(or top_k = G without shared experts), so its active FFN FLOPs equal the dense layer's
(plus a router of E*d per token). Each MoE config is timed with both dispatches
(torch._grouped_mm and the padded-block "sorted" fallback).

    OMP_NUM_THREADS=2 .venv/bin/python bench/moe.py                # table + bench/results/moe.json
    .venv/bin/python bench/moe.py --granularity 4 --profile         # + where the MoE step time goes

Prints a table (median ms per step, median per-step ratio to dense) and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from worldmodel.device import resolve_device
from worldmodel.moe import FeedForward, MoEConfig, ffn_flops_per_token, grouped_mm_supported


def make_configs(granularities: list[int], experts_per_g: int, shared_only: bool) -> list[tuple[str, MoEConfig]]:
    rows = [("dense", MoEConfig(kind="dense")), ("modality", MoEConfig(kind="modality"))]
    for g in granularities:
        n_experts = experts_per_g * g
        for shared in (True,) if shared_only else (True, False):
            top_k = g - 1 if shared else g
            if top_k < 1:
                continue
            for dispatch in ("grouped_mm", "sorted"):
                cfg = MoEConfig(
                    kind="moe", n_experts=n_experts, top_k=top_k, granularity=g,
                    shared_experts=shared, dispatch=dispatch,
                )
                rows.append((f"moe G={g} E={n_experts} k={top_k}{'+1sh' if shared else ''} {dispatch}", cfg))
    return rows


def step_fn(layer: FeedForward, x, modality, dtype, compile: bool):
    """One forward + backward of the layer; returns a callable timing it in seconds."""
    fn = torch.compile(layer, fullgraph=True) if compile else layer
    g_out = torch.randn_like(x)

    def step() -> float:
        x.grad = None
        layer.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype != torch.float32):
            y = fn(x, modality)
        y.backward(g_out.to(y.dtype))
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    return step


def profile_step(layer: FeedForward, x: torch.Tensor, modality: torch.Tensor, top: int = 12) -> str:
    from torch.profiler import ProfilerActivity, profile

    g_out = torch.randn_like(x)
    for _ in range(2):
        layer(x, modality).backward(g_out)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            layer(x, modality).backward(g_out)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--tokens", type=int, default=4096, help="tokens per step (batch 1 x tokens)")
    p.add_argument("--granularity", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--experts-per-g", type=int, default=4, help="routed experts = this * G")
    p.add_argument("--shared-only", action="store_true", help="skip the configs without shared experts")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="autocast dtype")
    p.add_argument("--compile", action="store_true", help="time torch.compile'd layers (slow to build on CPU)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--profile", action="store_true", help="print the top ops of the first MoE grouped_mm config")
    p.add_argument("--out", default="bench/results/moe.json")
    args = p.parse_args(argv)

    device, dtype = resolve_device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    x = torch.randn(1, args.tokens, args.d_model, device=device, requires_grad=True)
    modality = (torch.rand(1, args.tokens, device=device) < 0.5).long()  # half text, half vision
    print(f"MoE bench: d_model={args.d_model} tokens={args.tokens} device={device} dtype={args.dtype} "
          f"threads={torch.get_num_threads()} steps={args.steps} compile={args.compile}")

    # Build every layer, then interleave them step by step: on a shared, busy CPU the load
    # drifts over minutes, and per-step ratios to the dense step just before are far steadier
    # than medians taken minutes apart.
    layers = []
    for name, cfg in make_configs(args.granularity, args.experts_per_g, args.shared_only):
        layer = FeedForward(args.d_model, cfg).to(device)
        if cfg.dispatch == "grouped_mm" and not grouped_mm_supported(device, dtype, args.d_model, layer.experts.hidden):
            print(f"  skip {name}: torch._grouped_mm unsupported here")
            continue
        layers.append((name, cfg, step_fn(layer, x, modality, dtype, args.compile)))
    times: dict[str, list[float]] = {name: [] for name, _, _ in layers}
    for i in range(args.warmup + args.steps):
        for name, _, step in layers:
            t = step()
            if i >= args.warmup:
                times[name].append(t)

    results = []
    dense = times["dense"]
    for name, cfg, _ in layers:
        ms = statistics.median(times[name]) * 1e3
        ratio = statistics.median(t / d for t, d in zip(times[name], dense))
        flops = ffn_flops_per_token(args.d_model, cfg)
        moe = cfg.kind == "moe"
        results.append({
            "name": name, "kind": cfg.kind, "granularity": cfg.granularity if moe else None,
            "n_experts": cfg.n_experts if moe else None, "top_k": cfg.top_k if moe else None,
            "shared_experts": cfg.shared_experts if moe else None, "dispatch": cfg.dispatch if moe else None,
            "fwd_flops_per_token": flops, "step_ms": ms, "step_ms_all": [t * 1e3 for t in times[name]],
            "ratio_to_dense": ratio,
            # forward + backward = 3x the forward matmul FLOPs
            "gflops_per_s": 3 * flops * args.tokens / (ms * 1e-3) / 1e9,
        })
        r = results[-1]
        print(f"  {name:<40s} {ms:9.2f} ms   x{ratio:5.2f} dense   "
              f"{flops / 1e6:6.2f} MFLOP/tok  {r['gflops_per_s']:6.1f} GFLOP/s", flush=True)

    report = {
        "bench": "moe", "d_model": args.d_model, "tokens": args.tokens, "device": str(device),
        "dtype": args.dtype, "threads": torch.get_num_threads(), "compile": args.compile,
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(), "results": results,
    }
    if args.profile:  # where the time of the first grouped_mm MoE config goes
        first = next(cfg for _, cfg, _ in layers if cfg.kind == "moe")
        print(profile_step(FeedForward(args.d_model, first).to(device), x, modality))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
