"""`lw ablation`: the paper's findings as one-command experiments, arms x training seeds, one report.

    lw ablation name=action_free_video                      # action-free video + 10% labelled vs those 10% alone
    lw ablation name=text_vision                            # text + vision vs vision only
    lw ablation name=transfer base=runs/base/model          # fine-tuned on 10% of a task vs from scratch
    lw ablation name=action_free_video scale=gpu_small      # the same on one GPU: model small, more steps
    lw ablation name=action_free_video steps=200 eval.episodes=4 threads=1   # any knob from the command line

`name=` picks the preset lw/conf/ablation/<name>.yaml (the arms), `scale=` the size
lw/conf/ablation_scale/<scale>.yaml. Training, scoring and results.jsonl are pretrain.ablation; this
module plans with the planning benchmark's learned row (planners.benchmark, each run's table in
<run>/benchmark/) and writes report.md (every run, the mean per arm, the commands) and plot.png
(action gain and success per arm, one point per training seed) to out_dir. Run it again to
continue: finished runs and scores are reused.
"""
from __future__ import annotations

import shlex
from functools import partial
from pathlib import Path

from lw.benchmark import write_results
from lw.config import CONF_DIR, ConfigError, compose
from lw.program import Program
from planners.benchmark import BenchmarkConfig, benchmark, preload_model_stack
from pretrain.ablation import AblationConfig, arm_means, run_ablation
from pretrain.metrics import save_resolved
from pretrain.train import TrainConfig

PRESETS, SCALES = CONF_DIR / "ablation", CONF_DIR / "ablation_scale"   # the groups name= and scale= choose


def choices(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


def with_preset_files(overrides: list[str]) -> list[str]:
    """`name=X` and `scale=Y` also choose the files lw/conf/ablation/X.yaml and ablation_scale/Y.yaml."""
    out = list(overrides)
    for o in overrides:
        key, _, value = o.partition("=")
        for field_, group, folder in (("name", "ablation", PRESETS), ("scale", "ablation_scale", SCALES)):
            if key == field_:
                if value not in choices(folder):
                    raise ConfigError(f"{key}={value!r}, expected one of {choices(folder)} (lw/conf/{folder.name}/)")
                out.append(f"{group}={value}")
    return out


def benchmark_overrides(cfg: AblationConfig, model: str, task: str, first: int, out: Path) -> list[str]:
    """The `lw benchmark` command line of one run's learned row on one seed range."""
    return [f"tasks=[{task}]", "rows=[learned]", f"model={model}", "rae=", f"episodes={cfg.eval.episodes}",
            f"seed={first}", f"device={cfg.device}", f"threads={cfg.threads}", f"out={out}", "progress=false",
            *cfg.eval.benchmark]


def plan_learned(cfg: AblationConfig):
    """The planning score of pretrain.ablation: the benchmark's learned row, its table left in `out`."""
    def score(model: str, task: str, first: int, out: Path) -> dict:
        bc = compose(BenchmarkConfig, "benchmark", benchmark_overrides(cfg, model, task, first, out))
        save_resolved(bc, out)
        results = benchmark(bc)
        write_results(bc, results)
        return next(r for r in results if r["row"] == "learned")
    return score


# ---------------------------------------------------------------- report
def _cell(v, fmt: str = ".3f") -> str:
    return "–" if v is None else f"{v:{fmt}}"


def markdown(cfg: AblationConfig, results: list[dict], command: str) -> str:
    ev = cfg.eval
    ranges = [f"success seeds {s}..{s + ev.episodes - 1}" for s in ev.seed_ranges]
    gains = [f"action gain @{k}" for k in ev.action_gain_steps]
    head = ["arm", "seed", "task", "steps", "held-out action-video loss", *gains, *ranges]
    lines = [f"# Ablation `{cfg.name}` (scale {cfg.scale})", "", cfg.question, "",
             f"Each arm trained once per seed {cfg.train_seeds}; action gain = held-out open-loop latent error with "
             f"another episode's actions / with the true ones ({ev.prediction_episodes} episodes, 1.00: actions "
             f"ignored); success = the learned model planning, judged in MuJoCo ({ev.episodes} episodes per seed "
             f"range).", "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in results:
        plan = [r["planning"][str(s)] for s in ev.seed_ranges]
        lines.append(f"| {r['arm']} | {r['seed']} | {r['task']} | {r['steps']} | "
                     f"{_cell(r['heldout_action_video_loss'], '.4f')} | "
                     + " | ".join(_cell(r["action_gain"][str(k)], ".2f") for k in ev.action_gain_steps) + " | "
                     + " | ".join(f"{p['successes']}/{p['episodes']}" if p.get("episodes") else "–" for p in plan)
                     + " |")
    for m in arm_means(results):
        lines.append(f"| **{m['arm']}** | mean of {len(m['seeds'])} | {m['task']} | | "
                     f"{_cell(m['heldout_action_video_loss'], '.4f')} | "
                     + " | ".join(_cell(m["action_gain"][str(k)], ".2f") for k in ev.action_gain_steps) + " | "
                     + " | ".join(_cell(m["success_rate"][str(s)], ".0%") for s in ev.seed_ranges) + " |")
    runs = list(dict.fromkeys((r["arm"], r["seed"], shlex.join(r["pretrain"])) for r in results))
    lines += ["", "## Reproduce", "", "```bash", command, "```", "",
              "One run alone, then its scores (`<run>` = the run_dir):", "", "```bash",
              *(f"lw pretrain {overrides}   # {arm}, seed {seed}" for arm, seed, overrides in runs),
              f"lw eval-prediction model=<run>/model task=<task> episodes={ev.prediction_episodes} "
              f"horizon={max(ev.action_gain_steps)}",
              "lw benchmark " + shlex.join(benchmark_overrides(cfg, "<run>/model", "<task>", ev.seed_ranges[0],
                                                             Path("<run>/benchmark"))), "```"]
    return "\n".join(lines) + "\n"


def plot(cfg: AblationConfig, results: list[dict], path: Path) -> None:
    """Action gain and success per arm: one point per training seed (and task), a bar at the mean."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = cfg.eval
    # (title, value of a result, reference line: 1.0 = actions ignored; success is a rate in [0, 1])
    panels = [(f"action gain @{k}", lambda r, k=str(k): r["action_gain"][k], 1.0) for k in ev.action_gain_steps]
    panels += [(f"success, seeds {s}..", lambda r, s=str(s): r["planning"][s]["success_rate"], None)
               for s in ev.seed_ranges]
    arms = list(dict.fromkeys(r["arm"] for r in results))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False)
    for ax, (title, value, reference) in zip(axes[0], panels):
        for i, arm in enumerate(arms):
            ys = [value(r) for r in results if r["arm"] == arm and value(r) is not None]
            xs = [i + 0.08 * (j - (len(ys) - 1) / 2) for j in range(len(ys))]
            ax.plot(xs, ys, "o", color=f"C{i}")
            if ys:
                ax.hlines(sum(ys) / len(ys), i - 0.25, i + 0.25, color=f"C{i}")
        if reference is None:
            ax.set_ylim(-0.05, 1.05)
        else:
            ax.axhline(reference, color="gray", ls="--", lw=0.8)
            ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_xticks(range(len(arms)), arms, rotation=25, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(f"ablation {cfg.name} ({cfg.scale}): one point per training seed", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(cfg: AblationConfig, command: str = "lw ablation") -> None:
    if not cfg.name:
        raise ConfigError(f"name is required: lw ablation name=<preset>, one of {choices(PRESETS)}")
    out = cfg.out()
    save_resolved(cfg, out)
    print(f"ablation {cfg.name} (scale {cfg.scale}): arms {[a.name for a in cfg.arms]} x seeds {cfg.train_seeds}, "
          f"scored on {cfg.eval.tasks} -> {out}", flush=True)
    preload_model_stack()   # the model code before the first MuJoCo renderer (as lw benchmark does)
    results = run_ablation(cfg, partial(compose, TrainConfig, "pretrain"), plan_learned(cfg))
    report = markdown(cfg, results, command)
    (out / "report.md").write_text(report)
    plot(cfg, results, out / "plot.png")
    print(report)
    print(f"wrote {out / 'report.md'}, {out / 'plot.png'}, {out / 'results.jsonl'}")


def main(overrides: list[str]) -> int:
    """`lw ablation name=<preset> [scale=<scale>] key=value ...` (the command line goes into the report)."""
    command = shlex.join(["lw", "ablation", *overrides])
    return Program(__doc__, AblationConfig, "ablation", partial(run, command=command))(with_preset_files(overrides))


if __name__ == "__main__":
    from lw.cli import module_main
    module_main("lw.ablation")
