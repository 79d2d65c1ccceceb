"""The one runner of every `lw` command: compose its config, print it (`--cfg`) or run it.

A command module binds its config and its run function once,

    main = Program(__doc__, TrainConfig, "pretrain", run)    # lw/pretrain.py

and `main(overrides)` is what `lw pretrain key=value ...` calls (lw/cli.py looks the module
up in its table): compose(TrainConfig, "pretrain", overrides) -> `--cfg` prints the resolved
config as YAML and returns 0, else run(cfg) -> its exit code (an int; anything else is 0). `--help` raises
HelpRequested with the command's help (lw/cli.py prints it). User errors (worldmodel.errors.
UserError, FileNotFoundError) propagate; `exit_code` turns them into one line and exit 2.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

from lw.config import ConfigError, compose
from pretrain.metrics import to_dict
from worldmodel.errors import UserError

CFG_FLAG = "--cfg"


@dataclass(frozen=True)
class Program:
    """An `lw` command: its help text (`doc`), config schema, config file lw/conf/<config>.yaml, run."""
    doc: str | None
    schema: type
    config: str
    run: Callable[[Any], int | None]

    def __call__(self, overrides: list[str]) -> int:
        show = CFG_FLAG in overrides
        cfg = compose(self.schema, self.config, [o for o in overrides if o != CFG_FLAG], self.doc)
        if show:
            from omegaconf import OmegaConf

            print(OmegaConf.to_yaml(OmegaConf.create(to_dict(cfg))))
            return 0
        code = self.run(cfg)
        return code if isinstance(code, int) else 0   # None, or the result of a library function bound as run


@dataclass(frozen=True)
class ByKey:
    """A command whose program one override picks, e.g. `lw train-encoder method=jepa`."""
    key: str
    default: str
    programs: dict[str, Program]
    error: str           # what the key accepts, for the message on another value

    def __call__(self, overrides: list[str]) -> int:
        values = [o.split("=", 1)[1] for o in overrides if o.startswith(f"{self.key}=")]
        value = values[-1] if values else self.default
        if value not in self.programs:
            raise ConfigError(f"{self.key}={value!r}, expected {self.error}")
        return self.programs[value](overrides)


def exit_code(command: str, main: Callable[[list[str]], int], overrides: list[str]) -> int:
    """`main(overrides)`, with a user error as one line `lw <command>: error: ...` and exit code 2.

    Something the user can fix (config, data, model folder, system library, a path): the message
    says what, a traceback would only bury it. Anything else is a bug and keeps its traceback.
    LW_TRACEBACK=1 shows it for these too."""
    try:
        return main(overrides)
    except (UserError, FileNotFoundError) as e:
        if os.environ.get("LW_TRACEBACK", "") not in ("", "0"):
            raise
        print(f"lw {command}: error: {e}", file=sys.stderr)
        return 2
