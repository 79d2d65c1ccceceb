"""`lw demo` end to end on a tiny random world: stages run, are reused, and the report is written."""
from __future__ import annotations

import json

import pytest

from lw.cli import main as lw
from tests.test_world import build_tiny_world


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_world(tmp_path_factory.mktemp("demo_world"))


def _demo(model, out, *extra):
    return lw(["demo", f"model={model}", f"out={out}", "eval_episodes=2", "horizon=2", "bench_episodes=1",
               "max_steps=3", "bench_rows=[learned,random]",
               "bench_overrides=[learned_budget.samples=4,learned_budget.elites=2,learned_budget.iterations=1,learned.sample_steps=1]",
               *extra])


def test_demo_runs_reuses_stages_and_writes_report(tiny_model, tmp_path, capsys):
    out = tmp_path / "report"
    assert _demo(tiny_model, out) == 0
    printed = capsys.readouterr().out
    assert "Prediction on held-out episodes" in printed and "| learned | cem |" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert [r["row"] for r in summary["planning"]] == ["learned", "random"]
    assert set(summary["prediction_psnr"]) == {"1", "2"}
    assert (out / "imagine.gif").stat().st_size > 0 and (out / "plan.gif").stat().st_size > 0
    assert (out / "summary.md").read_text().startswith("## LearnedWorld demo")

    assert _demo(tiny_model, out) == 0       # second run: finished stages are reused
    again = capsys.readouterr().out
    assert again.count("reusing finished stage") == 2


def test_demo_missing_model_fails_before_work(tmp_path, capsys):
    assert lw(["demo", f"model={tmp_path / 'nope'}", f"out={tmp_path / 'r'}"]) == 2
    assert "does not exist" in capsys.readouterr().err
