"""`lw probe-latent`: fast proxy scores of a latent space for control: is it action-predictable,
is it a planning cost?

    lw probe-latent data=data/reacher rep=runs/jepa_reacher minutes=2

Prints the scores as JSON (and writes them to `out` when given). The scores and what they
mean: pretrain.latent_probe.
"""
from __future__ import annotations

import json
from pathlib import Path

from lw.program import Program
from pretrain.latent_probe import ProbeLatentConfig, probe


def run(cfg: ProbeLatentConfig) -> None:
    text = json.dumps(probe(cfg), indent=2)
    print(text)
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(text + "\n")


main = Program(__doc__, ProbeLatentConfig, "probe_latent", run)

if __name__ == "__main__":
    from lw.cli import module_main
    module_main("lw.probe_latent")
