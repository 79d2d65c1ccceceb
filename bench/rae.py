"""RAE encode / decode throughput (frames/s) and the timm local-weights check.

    .venv/bin/python bench/rae.py [--rae runs/rae_reacher] [--batch 64] [--iters 5] [--threads 2]
                                  [--timm] [--out bench/results/rae.json]

Rows: the `own` RAE (the trained folder if given, else the default architecture with random
weights), and with --timm DINOv2-S (vit_small_patch14_dinov2) and SigLIP2-B
(vit_base_patch16_siglip_224.v2_webli) at full size. No weights can be downloaded here, so
for those the script creates the model with random weights, saves its state dict to a local
.safetensors file, loads it back through the encoder registry (`timm:<name>` +
encoder_weights=<file>), saves the RAE with save_pretrained, loads it with from_pretrained and
checks the latents are identical; it also times the missing-weights error (must be < 2 s).
Encode = frames (B,3,64,64) in [0,1] -> normalised latents; decode = latents -> frames.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

TIMM_ROWS = {"dinov2-s": "vit_small_patch14_dinov2", "siglip2-b": "vit_base_patch16_siglip_224.v2_webli"}


@torch.no_grad()
def throughput(rae, batch: int, iters: int) -> dict:
    x = torch.rand(batch, 3, rae.image_size, rae.image_size)
    z = rae.encode(x)
    rae.decode(z)  # warm-up
    t0 = time.perf_counter()
    for _ in range(iters):
        z = rae.encode(x)
    t_enc = (time.perf_counter() - t0) / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        rae.decode(z)
    t_dec = (time.perf_counter() - t0) / iters
    return {"grid": list(rae.grid), "latent_dim": rae.latent_dim, "input_size": rae.encoder.input_size,
            "encoder_params_m": round(sum(p.numel() for p in rae.encoder.parameters()) / 1e6, 2),
            "decoder_params_m": round(sum(p.numel() for p in rae.decoder.parameters()) / 1e6, 2),
            "encode_fps": round(batch / t_enc, 1), "decode_fps": round(batch / t_dec, 1)}


def timm_check(key: str, name: str, image_size: int, tmp: Path) -> tuple:
    import timm
    from safetensors.torch import save_file

    from worldmodel.encoders import build_encoder
    from worldmodel.rae import RAE, RAEConfig

    base = name.split(".")[0]
    src = timm.create_model(base, pretrained=False, num_classes=0)
    file = tmp / f"{key}.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(file))
    t0 = time.perf_counter()
    rae = RAE.build(RAEConfig(image_size=image_size), f"timm:{name}", str(file))
    load_s = time.perf_counter() - t0
    x = torch.rand(4, 3, image_size, image_size)
    rae.fit_latent_stats([x])
    rae.save_pretrained(tmp / f"rae-{key}")
    back = RAE.from_pretrained(tmp / f"rae-{key}")
    same = bool(torch.equal(back.encode(x), rae.encode(x)))
    t0 = time.perf_counter()
    try:
        build_encoder(f"timm:{name}", str(tmp / "missing.safetensors"))
        missing = "no error"
    except FileNotFoundError as e:
        missing = str(e)
    missing_s = time.perf_counter() - t0
    return rae, {"timm_name": name, "load_s": round(load_s, 2), "roundtrip_equal": same,
                 "missing_error_s": round(missing_s, 3), "missing_error": missing[:160]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rae", default="runs/rae_reacher", help="trained own RAE folder ('' = random default)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--timm", action="store_true", help="also DINOv2-S and SigLIP2-B (full size)")
    ap.add_argument("--out", default="bench/results/rae.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from worldmodel.encoders import encoder_from_spec
    from worldmodel.rae import RAE, RAEConfig
    from worldmodel.vit import ViTConfig

    rows = {}
    if args.rae and Path(args.rae, "config.json").is_file():
        own, src = RAE.from_pretrained(args.rae), args.rae
    else:
        spec = {"encoder": "own", "input_size": args.image_size, "kwargs": vars(ViTConfig(args.image_size)).copy()}
        own, src = RAE(RAEConfig(image_size=args.image_size), encoder_from_spec(spec)), "random default"
    rows["own"] = {"source": src, **throughput(own.eval(), args.batch, args.iters)}
    if args.timm:
        with tempfile.TemporaryDirectory() as tmp:
            for key, name in TIMM_ROWS.items():
                rae, check = timm_check(key, name, args.image_size, Path(tmp))
                rows[key] = {**check, **throughput(rae.eval(), args.batch, args.iters)}

    hdr = f"{'encoder':<10} {'grid':>6} {'C':>5} {'in px':>6} {'enc M':>6} {'dec M':>6} {'enc fr/s':>9} {'dec fr/s':>9}"
    print(f"RAE throughput, batch {args.batch}, {args.threads} CPU threads, torch {torch.__version__}")
    print(hdr)
    print("-" * len(hdr))
    for k, r in rows.items():
        print(f"{k:<10} {r['grid'][0]}x{r['grid'][1]:<4} {r['latent_dim']:>5} {r['input_size']:>6} "
              f"{r['encoder_params_m']:>6} {r['decoder_params_m']:>6} {r['encode_fps']:>9} {r['decode_fps']:>9}")
    for k, r in rows.items():
        if "timm_name" in r:
            print(f"{k}: timm:{r['timm_name']} loaded from a local file in {r['load_s']}s; from_pretrained "
                  f"round trip equal: {r['roundtrip_equal']}; missing weights fail in {r['missing_error_s']}s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"batch": args.batch, "threads": args.threads, "platform": platform.platform(),
                               "torch": torch.__version__, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
