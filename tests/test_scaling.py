"""IsoFLOP fits recover known exponents from synthetic Chinchilla-law data; a tiny real sweep runs."""
import dataclasses
import json
import math

import numpy as np
import pytest

from lw.scaling import write_report
from pretrain.scaling import ScalingConfig, all_finished, fit_isoflops, fit_parabola, fit_power_law, sweep

from tests.test_train import make_world


def chinchilla_runs(alpha, beta, budgets, noise=0.0, seed=0):
    """L(N, D) = E + A/N^alpha + B/D^beta at D = C/(6N): N_opt ~ C^(beta/(alpha+beta))."""
    rng = np.random.default_rng(seed)
    E, A, B = 1.7, 400.0, 410.0
    runs = []
    for c in budgets:
        pts = []
        for n in np.geomspace(1e5, 1e12, 36):
            d = c / (6 * n)
            if d >= 1e5:
                pts.append({"modality": "text", "budget": c, "n_active": float(n),
                            "loss": E + A / n ** alpha + B / d ** beta})
        best = min(pts, key=lambda r: r["loss"])  # a sweep brackets the optimum within 10x
        pts = [r for r in pts if abs(math.log10(r["n_active"] / best["n_active"])) <= 1.01]
        for r in pts:
            r["loss"] *= 1 + noise * rng.standard_normal()
        runs += pts
    return runs


@pytest.mark.parametrize("alpha,beta", [(0.34, 0.28), (0.5, 0.25), (0.3, 0.45)])
def test_fit_recovers_known_exponents(alpha, beta):
    budgets = [1e17, 1e18, 1e19, 1e20, 1e21]
    fits = fit_isoflops(chinchilla_runs(alpha, beta, budgets, noise=1e-3))["text"]
    assert fits["a"] == pytest.approx(beta / (alpha + beta), abs=0.03)
    assert fits["b"] == pytest.approx(alpha / (alpha + beta), abs=0.03)
    assert abs(fits["a"] + fits["b"] - 1) < 1e-6  # D_opt = C / (6 N_opt)


def test_fit_helpers():
    x = np.log(np.array([1e4, 1e5, 1e6, 1e7]))
    p = fit_parabola(x, (x - math.log(3e5)) ** 2 + 2.0)
    assert p["bracketed"] and p["n_opt"] == pytest.approx(3e5, rel=1e-6) and p["loss_opt"] == pytest.approx(2.0)
    edge = fit_parabola(x, -x)  # loss falls monotonically with N: the optimum is off the grid
    assert not edge["bracketed"] and edge["n_opt"] == pytest.approx(1e7)
    runs = [{"modality": "m", "budget": c, "n_active": n, "loss": 1 / n} for c in (1e9, 1e10) for n in (1e3, 1e4, 1e5)]
    fits = fit_isoflops(runs)["m"]
    assert "a" not in fits and fits["unbracketed"] == ["1e+09", "1e+10"]  # no exponent from edge optima
    assert fit_power_law(np.array([1.0, 10.0, 100.0]), np.array([2.0, 20.0, 200.0]))["exponent"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=">= 3 model sizes"):
        fit_parabola(x[:2], x[:2])


def test_fit_ignores_a_plateau_far_from_the_optimum():
    """Widths too narrow for the latent sit on a plateau far above the curve: the parabola through the
    sizes near the best still finds the vertex, where one quadratic through every size would not."""
    n = np.geomspace(1e4, 1e6, 9)
    loss = (np.log(n) - math.log(2e5)) ** 2 * 0.05 + 0.2
    loss[:2] = [1.5, 1.3]  # the plateau
    runs = [{"modality": "vision", "budget": 1e12, "n_active": float(a), "loss": float(b)} for a, b in zip(n, loss)]
    p = fit_isoflops(runs)["vision"]["budgets"]["1e+12"]
    assert p["bracketed"] and p["n_opt"] == pytest.approx(2e5, rel=1e-6) and len(p["fit_n"]) == 5
    assert abs(fit_parabola(np.log(n), loss)["n_opt"] / 2e5 - 1) > 0.1  # the global fit is pulled off
    edge = [dict(r, loss=float(1 / r["n_active"])) for r in runs]  # best at the grid's end: no estimate
    assert not fit_isoflops(edge)["vision"]["budgets"]["1e+12"]["bracketed"]


def test_tiny_real_sweep(tmp_path):
    rae_dir, data_dir = make_world(tmp_path)
    cfg = ScalingConfig(out_dir=str(tmp_path / "scaling"), budgets=[3e8, 1e9], widths=[16, 32, 48], depth=1,
                        modalities=["text", "mixed"], batch_size=2, eval_rows=4, min_steps=2)
    cfg.rae.path, cfg.data.dataset = str(rae_dir), str(data_dir)
    cfg.data.seq_len, cfg.data.video_frames, cfg.data.predict_frames = 128, 3, 1
    cfg.model.moe.n_experts, cfg.model.moe.top_k = 4, 1
    runs = sweep(cfg, log=lambda *_: None)
    assert {r["modality"] for r in runs} == {"text", "mixed"} and len(runs) == 12
    for r in runs:  # each run spent its budget (up to rounding to whole steps)
        assert r["flops"] == pytest.approx(r["budget"], rel=0.5) and np.isfinite(r["loss"])
    fits = fit_isoflops(runs)
    paths = write_report(runs, fits, cfg.out_dir)
    assert paths["png"].stat().st_size > 1000 and "Power laws" in paths["md"].read_text()
    saved = json.loads(paths["json"].read_text())
    assert len(saved["runs"]) == 12 and set(saved["fits"]) == {"text", "mixed"}
    for f in saved["fits"].values():  # exponents exactly when >= 2 budgets bracket the optimum
        assert ("a" in f) == (len(f["budgets"]) - len(f["unbracketed"]) >= 2)


def test_sweep_resumes_finished_runs(tmp_path, monkeypatch):
    """A sweep run again reads its finished runs back instead of training them; a changed setting
    (here the seed) or a run torn by a kill is trained again."""
    import pretrain.scaling as scaling
    rae_dir, data_dir = make_world(tmp_path)
    cfg = ScalingConfig(out_dir=str(tmp_path / "scaling"), budgets=[3e8], widths=[16, 32, 48], depth=1,
                        modalities=["text"], batch_size=2, eval_rows=4, min_steps=2)
    cfg.data.seq_len = 128
    cfg.model.moe.n_experts, cfg.model.moe.top_k = 4, 1
    first = sweep(cfg, log=lambda *_: None)
    lines = (tmp_path / "scaling" / "runs.jsonl").read_text().splitlines()
    assert len(first) == len(lines) == 3

    class NoTraining:
        def __init__(self, *a, **k):
            raise AssertionError("a finished run was trained again")
    monkeypatch.setattr(scaling, "Trainer", NoTraining)
    again = sweep(cfg, log=lambda *_: None)
    assert [r["loss"] for r in again] == [r["loss"] for r in first]
    cfg.seed = 1
    with pytest.raises(AssertionError, match="trained again"):
        sweep(cfg, log=lambda *_: None)
    cfg.seed = 0  # a kill mid-write: the torn last line is dropped and that run alone is trained again
    (tmp_path / "scaling" / "runs.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])
    with pytest.raises(AssertionError, match="trained again"):
        sweep(cfg, log=lambda *_: None)
    monkeypatch.undo()
    resumed = sweep(cfg, log=lambda *_: None)
    assert [r["loss"] for r in resumed[:2]] == [r["loss"] for r in first[:2]] and len(resumed) == 3
    narrow = dataclasses.replace(cfg, widths=[8])  # a sub-grid extends the sweep: fitted with the rest
    assert len(sweep(narrow, log=lambda *_: None)) == 1
    assert [r["width"] for r in all_finished(cfg)] == [8, 16, 32, 48]
    assert all_finished(dataclasses.replace(cfg, seed=3)) == []  # other settings: none of these runs


@pytest.mark.parametrize("grid", ["micro", "cpu", "gpu_small"])
def test_scaling_grids_compose(grid):
    """Each lw/conf/scaling_grid file sets the sweep's grid, and a command-line value still wins."""
    from lw.config import compose
    cfg = compose(ScalingConfig, "scaling", [f"scaling_grid={grid}"])
    assert len(cfg.budgets) >= 3 and len(cfg.widths) >= 5 and cfg.data.seq_len >= 128
    assert cfg.budgets == sorted(cfg.budgets) and cfg.widths == sorted(cfg.widths)
    if grid != "micro":  # the real grids sweep text and vision on the four tasks' latents
        assert cfg.modalities == ["text", "vision"] and len(cfg.data.dataset) == 4
    assert compose(ScalingConfig, "scaling", [f"scaling_grid={grid}", "budgets=[1e9,2e9]"]).budgets == [1e9, 2e9]


def test_widths_narrower_than_the_latent_are_no_vision_points(tmp_path):
    """A vision or mixed sweep skips a width under the latent's channels (16 here), text keeps it, and
    the fit leaves such a run out even when an older sweep recorded one."""
    rae_dir, data_dir = make_world(tmp_path)
    cfg = ScalingConfig(out_dir=str(tmp_path / "scaling"), budgets=[3e8], widths=[8, 16, 32], depth=1,
                        modalities=["text", "mixed"], batch_size=2, eval_rows=4, min_steps=2)
    cfg.rae.path, cfg.data.dataset = str(rae_dir), str(data_dir)
    cfg.data.seq_len, cfg.data.video_frames, cfg.data.predict_frames = 128, 3, 1
    cfg.model.moe.n_experts, cfg.model.moe.top_k = 4, 1
    runs = sweep(cfg, log=lambda *_: None)
    assert sorted((r["modality"], r["width"]) for r in runs) == [
        ("mixed", 16), ("mixed", 32), ("text", 8), ("text", 16), ("text", 32)]
    assert {r["latent_dim"] for r in runs if r["modality"] == "mixed"} == {16}
    plateau = [{"modality": "vision", "budget": 1e12, "width": w, "latent_dim": 32, "n_active": n, "loss": loss}
               for w, n, loss in [(16, 1e4, 1.2), (24, 2e4, 0.6), (32, 4e4, 0.11), (48, 8e4, 0.10), (64, 1.6e5, 0.12)]]
    p = fit_isoflops(plateau)["vision"]["budgets"]["1e+12"]
    assert p["fit_n"] == [4e4, 8e4, 1.6e5] and p["bracketed"] and 4e4 < p["n_opt"] < 1.6e5
