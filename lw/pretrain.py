"""`lw pretrain`: train the unified Transfusion MoE model on the data mixture.

    lw pretrain experiment=tiny_cpu                      # ~10 min on 2 CPU cores
    lw pretrain experiment=tiny_cpu resume=true          # continue a killed run exactly
    lw pretrain experiment=tiny_cpu resume=auto          # continue if run_dir has a checkpoint, else start
    torchrun --nproc_per_node=8 -m lw.pretrain model=base data.seq_len=2048

The trainer (one code path for one process and many, the run folder) is pretrain.train.
"""
from __future__ import annotations

import os

from lw.program import Program
from pretrain import distributed as dist_mod
from pretrain.train import GROUPS, TrainConfig, train


def run(cfg: TrainConfig) -> None:
    try:
        out = train(cfg)
    finally:
        dist_mod.destroy()
    if out["history"] and int(os.environ.get("RANK", "0")) == 0:
        last = out["history"][-1]
        keys = [k for k in ("loss", *GROUPS) if k in last]
        # a group's first value: the first step that had its source (a short run's step 1 may have none)
        first = {k: next(h[k] for h in out["history"] if k in h) for k in keys}
        print("pretrain: " + ", ".join(f"{k} {first[k]:.3f} -> {last[k]:.3f}" for k in keys)
              + (f"; {last['tok_s']:.0f} tokens/s" if "tok_s" in last else ""))
        if out["final_eval"]:
            print("held-out: " + ", ".join(f"{k[4:]} {v:.3f}" for k, v in out["final_eval"].items()
                                           if k[4:] in ("loss", *GROUPS)))
        if out["export"]:
            print(f"exported {out['export']}")


main = Program(__doc__, TrainConfig, "pretrain", run)

if __name__ == "__main__":  # torchrun --nproc_per_node=N -m lw.pretrain key=value ...: the same --help and errors
    from lw.cli import module_main
    module_main("lw.pretrain")
