"""The examples run as scripts (on a tiny random world, so the test is fast)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_world import build_tiny_world

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_world(tmp_path_factory.mktemp("examples_world"))


def _run(script: str, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], capture_output=True,
                         text=True, timeout=300, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_quickstart_writes_gif(tiny_model, tmp_path):
    gif = tmp_path / "q.gif"
    out = _run("quickstart.py", "--model", str(tiny_model), "--steps", "3", "--out", str(gif))
    assert "imagined steps" in out and gif.stat().st_size > 0


def test_plan_reacher_executes_in_mujoco(tiny_model):
    out = _run("plan_reacher.py", "--model", str(tiny_model), "--steps", "5", "--samples", "8", "--iterations", "1")
    assert "final fingertip distance" in out and "steps=5" in out


def test_imagine_writes_side_by_side_gif(tiny_model, tmp_path):
    import imageio.v2 as imageio

    gif = tmp_path / "side.gif"
    out = _run("imagine.py", "--model", str(tiny_model), "--steps", "2", "--scale", "1", "--out", str(gif))
    frames = imageio.mimread(gif)
    assert "left MuJoCo" in out and len(frames) == 3
    assert frames[0].shape[1] == 2 * frames[0].shape[0] + 2   # MuJoCo | gap | imagined


def test_language_command_imagines_goal_and_executes(tiny_model, tmp_path):
    import imageio.v2 as imageio

    gif = tmp_path / "lang.gif"
    out = _run("language_command.py", "--model", str(tiny_model), "--steps", "5", "--samples", "8",
               "--iterations", "1", "--sample-steps", "1", "--out", str(gif))
    assert "reached : The upper arm points" in out and "executed 5 steps" in out
    frames = imageio.mimread(gif)
    assert len(frames) == 6 and frames[0].shape[1] == 2 * frames[0].shape[0] + 2
