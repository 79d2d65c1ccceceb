"""`lw` — the LearnedWorld command line: the command table and its entry point.

Every subcommand is a Hydra-configured program, `lw <command> key=value ...`, in one module
of this package (lw/<command>.py, config lw/conf/<command>.yaml). Each runs through the one
runner (lw.program.Program: compose -> `--cfg` print -> run -> exit code); this module adds the
usage, `--help` and the one-line user errors with exit code 2. Subcommands are imported lazily
so that `lw --help` is instant and a broken optional stage never breaks the others.
"""
from __future__ import annotations

import importlib
import sys

# subcommand -> ("module:function", one-line help). Each function takes the list of Hydra
# overrides (strings like "task=reacher") and returns an exit code: a command module's
# `main`, the one runner lw.program.Program bound to its config and its run function.
COMMANDS: dict[str, tuple[str, str]] = {
    "collect": ("lw.collect:main", "collect MuJoCo episodes into checksummed shards"),
    "train-encoder": ("lw.train_encoder:main",
                      "train the representation encoder: method=mae (MAE ViT) or method=jepa (for control)"),
    "probe-latent": ("lw.probe_latent:main", "minutes-long proxy: action gain and latent-cost quality of a latent"),
    "train-rae": ("lw.train_rae:main", "train the RAE pixel decoder on a frozen encoder"),
    "encode-dataset": ("lw.encode_dataset:main", "cache the frozen encoder's latents beside each shard"),
    "model-info": ("lw.model_info:main", "print parameter counts (total / active) of the model sizes"),
    "pretrain": ("lw.pretrain:main", "pretrain the unified Transfusion MoE model"),
    "scaling": ("lw.scaling:main", "IsoFLOP sweeps and power-law fits"),
    "ablation": ("lw.ablation:main",
                 "arms of pretrain settings x seeds, judged by action gain and planning (name=<preset>)"),
    "analyze-experts": ("lw.analyze_experts:main", "text-vs-vision routing specialisation per expert"),
    "eval-prediction": ("lw.eval_prediction:main", "imagined vs MuJoCo rollouts: PSNR/SSIM per horizon step"),
    "build-landmarks": ("lw.build_landmarks:main",
                        "landmark graph of a model's latent space: a planning cost that sees past walls"),
    "plan": ("lw.plan:main", "plan one episode in a model and execute it in MuJoCo"),
    "benchmark": ("lw.benchmark:main", "planning benchmark: learned vs oracle vs random, scored in MuJoCo"),
    "demo": ("lw.demo:main", "the whole chain end to end on reacher, with a report"),
}


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: lw <command> [key=value ...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Each command takes Hydra overrides; `lw <command> --help` says what it does and lists its",
              "config keys with their defaults, `lw <command> --cfg` prints its resolved config."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, overrides = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"lw: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[name][0].split(":")
    from lw.config import HelpRequested
    from lw.program import exit_code

    try:
        return exit_code(name, getattr(importlib.import_module(module_name), func_name), overrides)
    except HelpRequested as h:  # `lw <command> --help`: raised by the command's config compose
        print(h.text)
        return 0


def module_main(module: str) -> None:
    """`python -m lw.<command> key=value ...` is `lw <command> key=value ...` (torchrun -m lw.pretrain too)."""
    name = next(n for n, (target, _) in COMMANDS.items() if target.split(":")[0] == module)
    raise SystemExit(main([name, *sys.argv[1:]]))


if __name__ == "__main__":
    raise SystemExit(main())
