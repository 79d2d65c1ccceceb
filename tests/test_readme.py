"""The README's commands are real: every `lw` line parses its config, the Python snippets run.

The `lw` lines are checked with `--cfg` (the config is composed strictly, so a misspelt key or a
wrong value fails here); the long-running ones are run for real by CI through `make test`
(tests of each command) and by `make demo`. Python blocks run against the embedded checkpoint.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from lw.cli import main as lw

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def _commands() -> list[list[str]]:
    cmds = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("lw "):
                cmds.append(shlex.split(line)[1:])
    for m in re.finditer(r"`(lw [^`]+|torchrun [^`]+)`", README):
        argv = shlex.split(m.group(1))
        if argv[0] == "torchrun":           # torchrun ... -m lw.pretrain <overrides>
            argv = ["pretrain", *argv[argv.index("lw.pretrain") + 1:]]
        else:
            argv = argv[1:]
        if argv and not argv[0].startswith("<") and "..." not in argv and "key=value" not in argv:
            cmds.append(argv)
    return cmds


COMMANDS = _commands()


def test_readme_has_the_two_quick_start_commands():
    quick = README.split("## Quick start", 1)[1].split("##", 1)[0]
    lines = [l.split("#")[0].strip() for l in _blocks("bash")[0].splitlines() if l.strip()]
    assert lines == ["make demo", "make test"] and "make demo" in quick
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_readme_commands_were_found():
    names = {c[0] for c in COMMANDS}
    assert {"collect", "train-encoder", "train-rae", "encode-dataset", "pretrain", "plan", "benchmark",
            "scaling", "analyze-experts", "model-info", "eval-prediction"} <= names


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(c)[:60] for c in COMMANDS])
def test_readme_lw_command_config_is_valid(argv, capsys):
    if argv[0] == "plan" and any(a.startswith("model=") for a in argv):
        pytest.fail("lw plan takes the model as bench.model=...")
    assert lw([*argv, "--cfg"]) == 0


@pytest.mark.skipif(not (ROOT / "checkpoints" / "reacher-tiny" / "config.json").is_file(),
                    reason="embedded checkpoint not present")
@pytest.mark.parametrize("i", range(len(_blocks("python"))))
def test_readme_python_snippets_run(i, monkeypatch):
    monkeypatch.chdir(ROOT)
    code = "\n".join(_blocks("python")[: i + 1])   # later snippets build on earlier ones
    exec(compile(code, f"README.md python block {i}", "exec"), {})
