"""`lw benchmark` and `lw plan`: plan in a model, execute in real MuJoCo, score there.

    lw benchmark model=runs/tiny_cpu/model episodes=20 tasks=[reacher]
    lw benchmark rows=[oracle_state,random] planners=[cem,mppi] video=true
    lw benchmark tasks=[pusht] model=checkpoints/pusht-small rae= budget=anchors episodes=50
    lw benchmark tasks=[] model=runs/generalist/model rae=   # every task of a model trained on several
    lw plan task=reacher row=oracle_state planner=cem seed=10000

Rows (what the planner plans in):
    learned        the world model (`model=<folder>`), pixels-only observations, latent cost
    jepa           the deterministic latent predictor of the JEPA encoder (`jepa=<folder>`), same
                   planner, pixels and latent cost: the baseline a generative world model must match
    oracle_latent  MuJoCo itself with the SAME latent cost (RAE of the goal image): model error = 0
    oracle_state   MuJoCo with the true-state task cost: the upper bound
    random         uniform random actions (no model)
Every episode: seed `seed + i` (held out: data collection uses seeds 0, 1, ...), start and goal
from the protocol, `max_steps` decisions, receding horizon `receding_horizon`, success and final
distance judged by the real task after executing. The protocol: `goals=auto` gives pusht and
dmc_reacher the anchors' goals (the state 25 environment steps later on a held-out trajectory of
the data policy; 50 environment steps = 10 decisions; pusht judged by DINO-WM's state rule),
our own tasks their own random goals; `goals=random` the task's own everywhere. `budget=anchors`
plans learned and jepa with the anchors' CEM (300 x 30, top 30, horizon 5); the default `cpu`
keeps the CPU budgets. The table states the protocol and prints the anchors' published
figures beside ours (planners.published: published, not measured here). Episodes run `lockstep`
at a time so that one planner call covers them (one batched network call for the learned
model, one spread over the oracle's worker processes); that is the parallelism over
episodes, on top of the oracle's workers, sized for 2 cores.

The harness (rows, budgets, lockstep episodes, the summaries) is planners.benchmark; this
module is the command: results.json, results.md (the Markdown table), success.png (the bar
plot) and videos/*.gif under `out`.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from lw.program import Program
from planners.benchmark import BenchmarkConfig, benchmark, describe_budget, protocol, with_model_tasks
from planners.published import ANCHORS, MARK, published_for
from pretrain.metrics import save_resolved


def markdown_table(rows: list[dict]) -> str:
    head = ("| task | row | planner | success | 95% CI | final dist (m) | s / replan | model calls / replan "
            "| rollouts / replan | note |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        if not r.get("episodes"):
            lines.append(f"| {r['task']} | {r['row']} | {r['planner']} | – | – | – | – | – | – | skipped: {r['note']} |")
            continue
        lo, hi = r["ci95"]
        lines.append(f"| {r['task']} | {r['row']} | {r['planner']} | {r['successes']}/{r['episodes']} "
                     f"({100 * r['success_rate']:.0f}%) | [{100 * lo:.0f}, {100 * hi:.0f}]% | "
                     f"{r['final_distance']:.4f} ± {r['final_distance_sem']:.4f} | {r['seconds_per_replan']:.3f} | "
                     f"{r['model_calls_per_replan']:.1f} | {r['rollouts_per_replan']:.0f} | {r['note']} |")
    return "\n".join(lines)


def bar_plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.get("episodes")]
    if not done:
        return
    tasks = list(dict.fromkeys(r["task"] for r in done))
    keys = list(dict.fromkeys(f"{r['row']}/{r['planner']}" for r in done))
    width = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(max(5, 1.8 * len(tasks) * max(1, len(keys) / 3)), 3.5))
    for j, key in enumerate(keys):
        xs, ys, err = [], [], [[], []]
        for i, t in enumerate(tasks):
            r = next((r for r in done if r["task"] == t and f"{r['row']}/{r['planner']}" == key), None)
            if r is None:
                continue
            xs.append(i + (j - (len(keys) - 1) / 2) * width)
            ys.append(r["success_rate"])
            err[0].append(r["success_rate"] - r["ci95"][0])
            err[1].append(r["ci95"][1] - r["success_rate"])
        ax.bar(xs, ys, width, yerr=err, capsize=3, label=key)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (95% Wilson CI)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_gif(path: Path, frames: np.ndarray, goal: np.ndarray | None, fps: int = 10) -> None:
    """Executed frames, with the goal image beside each one."""
    import imageio.v2 as imageio

    if goal is not None:
        frames = np.concatenate([frames, np.broadcast_to(goal, frames.shape)], axis=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(path, list(frames), duration=1000 / fps, loop=0)


def goal_frame(task: str, seed: int, image_size: int, goal_state: np.ndarray | None = None) -> np.ndarray:
    """The goal image of episode `seed` (its goal state when given: the episode's own, e.g. the anchors')."""
    from envs.mujoco_tasks import make_task

    t = make_task(task, image_size=image_size, render=True)
    t.reset(seed=seed, options=None if goal_state is None else {"goal_state": goal_state})
    g = np.array(t.goal_image)
    t.close()
    return g


def published_table(tasks: list[str]) -> str:
    """The anchors' published figures for `tasks` (planners.published), marked as not measured here."""
    pubs = published_for(tasks)
    if not pubs:
        return ""
    lines = [f"Published figures ({MARK}; their protocol: {ANCHORS.describe()}; GPU, 224 px, large encoders):",
             "", "| task | method | success | source | note |", "|---|---|---|---|---|"]
    lines += [f"| {p.task} | {p.method} ({MARK}) | {p.rate()} | {p.source} | {p.note} |" for p in pubs]
    return "\n".join(lines)


def header_lines(cfg: BenchmarkConfig, results: list[dict] = ()) -> list[str]:
    """What the table was measured under: episodes, seeds, each task's protocol (and how many of its
    episodes start already inside the success region), the planner budget."""
    def trivial(task: str) -> str:
        r = next((r for r in results if r["task"] == task and r.get("episodes")), None)
        return "" if r is None else f" {r['start_successes']}/{r['episodes']} episodes start inside it"

    return [f"Planning benchmark: {cfg.episodes} episodes per row (seeds {cfg.seed}..{cfg.seed + cfg.episodes - 1}); "
            "success and distance judged by the real simulator after executing.",
            *(f"Protocol {protocol(cfg, t).describe()};{trivial(t)}." for t in cfg.tasks),
            f"Planner {describe_budget(cfg)}."]


def write_results(cfg: BenchmarkConfig, results: list[dict]) -> str:
    """results.md (header, table, published figures), results.json, success.png; returns the Markdown."""
    out = Path(cfg.out)
    pub = published_table(cfg.tasks)
    md = "\n".join(f"{line}  " for line in header_lines(cfg, results)) + "\n\n" + markdown_table(results) + "\n" + \
        (f"\n{pub}\n" if pub else "")
    (out / "results.md").write_text(md)
    (out / "results.json").write_text(json.dumps(dict(
        config=dataclasses.asdict(cfg), protocol={t: protocol(cfg, t).to_dict() for t in cfg.tasks},
        budget=describe_budget(cfg), published=[p.to_dict() for p in published_for(cfg.tasks)],
        results=results), indent=2))
    bar_plot(results, out / "success.png")
    return md


def run(cfg: BenchmarkConfig) -> None:
    cfg = with_model_tasks(cfg)     # tasks=[]: the model folder's tasks
    for t in cfg.tasks:
        protocol(cfg, t)            # an unknown goals= / budget= / success= fails before anything is written
    save_resolved(cfg, cfg.out)
    print(f"benchmark: tasks {cfg.tasks}, rows {cfg.rows}, planners {cfg.planners}, {cfg.episodes} episodes each "
          f"from seed {cfg.seed}, goals={cfg.goals}, budget={cfg.budget} -> {cfg.out}", flush=True)

    def write_gifs(task: str, row: str, planner: str, recs) -> None:
        if not cfg.video:
            return
        for r in recs[: cfg.video_episodes]:
            if r.frames is not None:
                write_gif(Path(cfg.out) / "videos" / f"{task}_{row}_{planner}_seed{r.seed}.gif", r.frames,
                          goal_frame(task, r.seed, r.frames.shape[1], r.goal_state))

    print(write_results(cfg, benchmark(cfg, done=write_gifs)))


main = Program(__doc__, BenchmarkConfig, "benchmark", run)

if __name__ == "__main__":
    from lw.cli import module_main
    module_main("lw.benchmark")
