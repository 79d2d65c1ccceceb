"""`lw ablation` end to end on test_train's tiny world: two arms x one seed of a few steps, scored by
held-out action gain and 2 planning episodes per seed range in real MuJoCo; results.jsonl,
report.md and plot.png; a second invocation reuses the finished runs."""
import json

import pytest

from lw.ablation import main
from lw.config import ConfigError, compose
from pretrain.ablation import AblationConfig, arm_steps, check_arms, read_results, shared_overrides
from pretrain.train import TrainConfig
try:  # tiny_overrides: test_train's tiny `lw pretrain` run
    from tests.test_train import tiny_overrides
except ImportError:  # tests/ not importable as a package: pytest put tests/ itself on sys.path
    from test_train import tiny_overrides

SMALL_PLANNING = ["max_steps=2", "lockstep=2", "learned_budget.samples=4", "learned_budget.elites=2",
                  "learned_budget.iterations=1"]


def tiny_ablation(root, *extra: str) -> list[str]:
    """`lw ablation name=action_free_video` on the tiny world: arms video_plus_labelled and labelled_only."""
    shared = tiny_overrides(root, "unused", steps=3, threads=1)   # run_dir and steps are the ablation's
    return ["name=action_free_video", f"out_dir={root / 'ablation'}", f"pretrain={json.dumps(shared)}",
            "steps=3", "batch_size=4", "threads=1", "train_seeds=[0]", "eval.prediction_episodes=2",
            "eval.episodes=2", f"eval.benchmark={json.dumps(SMALL_PLANNING)}", *extra]


def test_a_tiny_ablation_runs_end_to_end_and_continues(tmp_path, capsys):
    out = tmp_path / "ablation"
    assert main(tiny_ablation(tmp_path)) == 0
    rows = read_results(out / "results.jsonl")
    assert [(r["arm"], r["seed"], r["task"]) for r in rows] == [("video_plus_labelled", 0, "reacher"),
                                                                ("labelled_only", 0, "reacher")]
    for r in rows:
        assert r["train_steps"] == 3 and r["heldout_action_video_loss"] > 0
        assert set(r["action_gain"]) == {"1", "5"} and all(g > 0 for g in r["action_gain"].values())
        assert {k: p["episodes"] for k, p in r["planning"].items()} == {"10000": 2, "20000": 2}
    data = {arm: json.loads((out / "runs" / arm / "seed0" / "config.json").read_text())["data"]
            for arm in ("video_plus_labelled", "labelled_only")}
    assert [(d["labelled"], d["unlabelled_video"]) for d in data.values()] == [(0.1, True), (0.1, False)]
    report = (out / "report.md").read_text()
    assert report.count("| video_plus_labelled | 0 | reacher |") == 1 and "| **labelled_only** | mean of 1 |" in report
    assert "lw ablation name=action_free_video" in report and report.count("lw pretrain ") == 2
    assert (out / "plot.png").stat().st_size > 0
    model = out / "runs" / "labelled_only" / "seed0" / "model" / "model.safetensors"
    trained = model.stat().st_mtime_ns

    capsys.readouterr()
    assert main(tiny_ablation(tmp_path)) == 0          # everything reused: no training, no new lines
    assert "scored before" in capsys.readouterr().out and read_results(out / "results.jsonl") == rows
    assert main(tiny_ablation(tmp_path, "eval.action_gain_steps=[1,2]")) == 0   # scored anew, not trained anew
    assert "exported model found, training skipped" in capsys.readouterr().out
    assert model.stat().st_mtime_ns == trained and len(read_results(out / "results.jsonl")) == 4
    assert "action gain @2" in (out / "report.md").read_text()
    with pytest.raises(ConfigError, match="holds a run of other settings \\(steps: 3 there, 4 now"):
        main(tiny_ablation(tmp_path, "steps=4"))


def test_presets_compose_and_their_arms_are_checked():
    text_vision = compose(AblationConfig, "ablation", ["name=text_vision", "ablation=text_vision"])
    matched = next(a for a in text_vision.arms if a.match_vision_tokens)
    # the recipe's text share is 15%: without it, 85% of the steps give as many episode tokens
    assert arm_steps(text_vision, matched, lambda o: compose(TrainConfig, "pretrain", o)) == round(0.85 * 700)
    transfer = compose(AblationConfig, "ablation", ["name=transfer", "ablation=transfer"])
    with pytest.raises(ConfigError, match="arm 'finetuned' starts from \\{base\\}.*expected base=<model folder"):
        check_arms(transfer)
    # from a generalist: its architecture and shared RAE, on reacher alone (one dataset, no weights left over)
    unseen = compose(AblationConfig, "ablation", ["name=transfer_generalist", "ablation=transfer_generalist",
                                                  "base=runs/generalist_no_reacher/model"])
    check_arms(unseen)
    arm = compose(TrainConfig, "pretrain", shared_overrides(unseen, unseen.arms[0]))
    assert arm.model.d_model == 192 and arm.data.dataset == "data/reacher" and list(arm.data.dataset_weights) == []
    assert arm.init_from == "runs/generalist_no_reacher/model" and arm.data.labelled == 0.1
    assert arm.rae.path == "runs/rae_generalist"
    gpu = compose(AblationConfig, "ablation", ["ablation=transfer", "ablation_scale=gpu_small"])
    assert gpu.device == "cuda" and "model=small" in gpu.size and gpu.steps > text_vision.steps
    with pytest.raises(ConfigError, match="name='nosuch', expected one of \\['action_free_video', 'text_vision'"):
        main(["name=nosuch"])
