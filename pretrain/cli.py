"""`lw` — the LearnedWorld command line.

Every subcommand is a Hydra-configured program: `lw <command> key=value ...`.
Subcommands are imported lazily so that `lw --help` is instant and a broken
optional stage never breaks the others.
"""
from __future__ import annotations

import importlib
import os
import sys

# subcommand -> ("module:function", one-line help). Each function takes the list of
# Hydra overrides (strings like "task=reacher") and returns an exit code or None.
COMMANDS: dict[str, tuple[str, str]] = {
    "collect": ("pretrain.data.collect:main", "collect MuJoCo episodes into checksummed shards"),
    "train-encoder": ("pretrain.train_encoder:main",
                      "train the representation encoder: method=mae (MAE ViT) or method=jepa (for control)"),
    "probe-latent": ("pretrain.latent_probe:main", "minutes-long proxy: action gain and latent-cost quality of a latent"),
    "train-rae": ("pretrain.train_rae:main", "train the RAE pixel decoder on a frozen encoder"),
    "encode-dataset": ("pretrain.data.latent_cache:main", "cache the frozen encoder's latents beside each shard"),
    "model-info": ("pretrain.model_info:main", "print parameter counts (total / active) of the model sizes"),
    "pretrain": ("pretrain.train:main", "pretrain the unified Transfusion MoE model"),
    "scaling": ("pretrain.scaling:main", "IsoFLOP sweeps and power-law fits"),
    "analyze-experts": ("pretrain.analyze_experts:main", "text-vs-vision routing specialisation per expert"),
    "eval-prediction": ("pretrain.eval_prediction:main", "imagined vs MuJoCo rollouts: PSNR/SSIM per horizon step"),
    "build-landmarks": ("pretrain.build_landmarks:main",
                        "landmark graph of a model's latent space: a planning cost that sees past walls"),
    "plan": ("planners.evaluate:plan_main", "plan one episode in a model and execute it in MuJoCo"),
    "benchmark": ("planners.evaluate:main", "planning benchmark: learned vs oracle vs random, scored in MuJoCo"),
    "demo": ("pretrain.demo:main", "the whole chain end to end on reacher, with a report"),
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
    from pretrain.config import HelpRequested
    from worldmodel.errors import UserError
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(overrides) or 0)
    except HelpRequested as h:  # `lw <command> --help`: raised by the command's config compose
        print(h.text)
        return 0
    except (UserError, FileNotFoundError) as e:
        # Something the user can fix (config, data, model folder, system library, a path):
        # the message says what, a traceback would only bury it. Anything else is a bug and
        # keeps its traceback. LW_TRACEBACK=1 shows it for these too.
        if os.environ.get("LW_TRACEBACK", "") not in ("", "0"):
            raise
        print(f"lw {name}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
