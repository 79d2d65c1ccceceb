"""The `lw` entry point: user errors are one line and exit 2, bugs keep their traceback; --help."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lw import cli
from lw.cli import main as lw
from worldmodel.errors import ConfigError, DataError, ModelFolderError, SystemLibraryError, UserError

REPO = Path(__file__).resolve().parents[1]
SHIPPED_RAE = REPO / "checkpoints" / "reacher-tiny" / "rae"


def _boom(overrides):
    raise ValueError("a bug deep inside")  # a plain ValueError, as torch or numpy raise them


def _user_error(overrides):
    raise SystemLibraryError("no headless OpenGL backend works")


def _one_line_error(capsys, command: str, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lw {command}: error: "), err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, (n, err)
    return err


def test_config_error_is_one_line_exit_2(capsys):
    assert lw(["pretrain", "stepz=3"]) == 2
    _one_line_error(capsys, "pretrain", "unknown config key", "stepz")
    # a value a schema rejects in __post_init__ is a config error too (was a bare ValueError)
    assert lw(["pretrain", "optim.schedule=bogus"]) == 2
    _one_line_error(capsys, "pretrain", "optim.schedule='bogus'")


def test_missing_model_folder_and_dataset_exit_2(capsys, tmp_path):
    assert lw(["eval-prediction", f"model={tmp_path / 'nope'}"]) == 2
    _one_line_error(capsys, "eval-prediction", "nope", "does not exist")
    assert lw(["encode-dataset", f"data={tmp_path / 'nodata'}"]) == 2
    _one_line_error(capsys, "encode-dataset", "nodata", "not an episode dataset")


def test_corrupt_dataset_exit_2(capsys, tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    assert lw(["pretrain", f"rae.path={SHIPPED_RAE}", f"data.dataset={tmp_path}",
               f"run_dir={tmp_path / 'run'}"]) == 2
    _one_line_error(capsys, "pretrain", "manifest.json", "is not valid JSON")


def test_a_bug_keeps_its_traceback(monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "boom", (f"{__name__}:_boom", "raises a bug"))
    with pytest.raises(ValueError, match="a bug deep inside"):
        lw(["boom"])


def test_lw_traceback_shows_user_errors_too(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "gl", (f"{__name__}:_user_error", "a missing system library"))
    assert lw(["gl"]) == 2
    _one_line_error(capsys, "gl", "OpenGL")
    monkeypatch.setenv("LW_TRACEBACK", "1")
    with pytest.raises(SystemLibraryError):
        lw(["gl"])


def test_error_classes_keep_their_builtin_bases():
    from lw.config import ConfigError as ReExported
    from pretrain.data.shards import ShardCorruptError
    assert ReExported is ConfigError
    for cls, base in ((ConfigError, ValueError), (DataError, ValueError), (ShardCorruptError, ValueError),
                      (ModelFolderError, ValueError), (SystemLibraryError, RuntimeError)):
        assert issubclass(cls, UserError) and issubclass(cls, base)


def test_gl_failure_is_a_system_library_error(monkeypatch):
    from envs import rendering
    monkeypatch.setattr(rendering, "_selection_error", "no headless OpenGL backend works (test)")
    with pytest.raises(SystemLibraryError, match="OpenGL"):
        rendering.select_gl_backend()


def test_a_mujoco_gl_backend_without_its_library_is_a_system_library_error(monkeypatch):
    """MUJOCO_GL=osmesa without libOSMesa failed inside PyOpenGL ('NoneType' object has no attribute
    'glGetError') with a traceback; `import mujoco` failing is simulated here."""
    from envs import rendering
    monkeypatch.setitem(sys.modules, "mujoco", None)  # `import mujoco` raises ImportError
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    with pytest.raises(SystemLibraryError, match="MUJOCO_GL='osmesa'.*libosmesa6"):
        rendering.import_mujoco()
    monkeypatch.delenv("MUJOCO_GL")
    with pytest.raises(ImportError):  # no backend chosen by anyone: the plain error
        rendering.import_mujoco()


def test_console_shows_no_traceback():
    r = subprocess.run([sys.executable, "-m", "lw.cli", "pretrain", "stepz=3"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "lw pretrain: error: unknown config key" in r.stderr, r.stderr


# ---------------------------------------------------------------- lw <command> --help
def _help(capsys, *argv: str) -> str:
    assert lw(list(argv)) == 0
    return capsys.readouterr().out


def _key_line(text: str, key: str) -> str:
    return next(line for line in text.splitlines() if line.strip().startswith(f"{key} "))


def test_command_help_lists_keys_defaults_and_comments(capsys):
    out = _help(capsys, "benchmark", "--help")
    assert out.startswith("`lw benchmark` and `lw plan`: plan in a model, execute in real MuJoCo")
    assert "usage: lw benchmark [key=value ...]" in out
    assert _key_line(out, "episodes").split() == ["episodes", "=", "20", "#", "per", "(task,", "row,", "planner)"]
    assert "= 300" in _key_line(out, "plan.cem.samples")          # nested dicts and dataclasses, dotted
    assert "# world-model folder" in _key_line(out, "model")      # the comment of the YAML file
    assert "# seed of the sampling-noise generator" in _key_line(out, "learned.seed")  # the schema's comment
    # a comment wrapped over two YAML lines is read whole
    imagine = out.split("learned.imagine", 1)[1].split("learned.", 1)[0]
    assert "data.max_jump" in imagine and ">= 2" in imagine
    assert _help(capsys, "benchmark", "-h") == out


def test_help_shows_groups_and_applies_the_other_arguments(capsys):
    out = _help(capsys, "pretrain", "--help")
    assert "model=tiny" in out and "choices: 1b, base, small, tiny, tiny_dense" in out
    assert "= 128" in _key_line(out, "model.d_model")
    assert "resume" in out and "run_dir" in out
    small = _help(capsys, "pretrain", "model=small", "--help")
    assert "model=small" in small and "= 384" in _key_line(small, "model.d_model")


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_every_command_has_help(command, capsys):
    out = _help(capsys, command, "--help")
    assert f"usage: lw {command} " in out and "config keys" in out, out[:500]
    assert "not of the form key=value" not in out


def test_top_level_help_lists_commands_and_points_to_command_help(capsys):
    out = _help(capsys, "--help")
    assert all(name in out for name in cli.COMMANDS) and "lw <command> --help" in out
