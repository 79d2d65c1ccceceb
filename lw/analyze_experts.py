"""`lw analyze-experts`: how text and vision tokens share the routed experts, per layer, and for a
model of several tasks how each task's vision tokens do.

    lw analyze-experts model_dir=runs/tiny_cpu/model

S = (R_text - R_img) / (R_text + R_img) per MoE layer and routed expert, on held-out rows
(pretrain.analyze_experts): +1 a text-only expert, -1 a vision-only expert, 0 shared evenly.
Outputs in out_dir (default <model_dir>/../experts): experts.png (heatmap layers x experts),
experts.md, experts.json. A model of several datasets (a generalist) adds, from rows of each
dataset alone: experts_by_task.md (per layer, each task's share R_t per expert, the tasks'
Jensen-Shannon divergence and its noise floor, the JS of a task against itself over split halves),
experts_by_task.png (S_t = (R_t - R_rest) / (R_t + R_rest), one panel per task) and
experts.json["by_task"]; a model of one dataset writes none of them.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lw.program import Program
from pretrain.analyze_experts import AnalyzeConfig, analyze


def _panel(fig, ax, s_LE: np.ndarray, title: str, label: str) -> None:
    """One layers x experts panel of scores in [-1, 1], each cell annotated."""
    L, E = s_LE.shape
    im = ax.imshow(s_LE, cmap="coolwarm", vmin=-1, vmax=1, aspect="auto")
    for (l, e), v in np.ndenumerate(s_LE):
        ax.text(e, l, f"{v:+.2f}", ha="center", va="center", fontsize=6)
    ax.set(xticks=range(E), yticks=range(L), ylabel="layer", title=title)
    fig.colorbar(im, ax=ax, label=label)


def heatmap(s_LE: np.ndarray, names: list[str], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    L, E = s_LE.shape
    fig, ax = plt.subplots(figsize=(max(5.0, 1.8 + 0.5 * E), max(2.8, 1.4 + 0.45 * L)))
    _panel(fig, ax, s_LE, title, "S (+1 text, -1 vision)")
    ax.set_xlabel("routed expert")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(names: list[str], spec: dict[str, np.ndarray], counts: np.ndarray) -> str:
    s = spec["s"]
    E = s.shape[1]
    lines = ["# Expert specialisation (S = (R_text - R_img) / (R_text + R_img))", "",
             "| layer | " + " | ".join(f"e{i}" for i in range(E)) + " | mean abs S | text tok | vision tok |",
             "|---" * (E + 4) + "|"]
    for l, name in enumerate(names):
        lines.append(f"| {l} ({name}) | " + " | ".join(f"{v:+.2f}" for v in s[l])
                     + f" | {np.abs(s[l]).mean():.2f} | {counts[l, 0].sum():.0f} | {counts[l, 1].sum():.0f} |")
    return "\n".join(lines) + "\n"


def task_heatmap(by_task: dict, path: Path, title: str) -> None:
    """One panel per task: S_t (layers x experts), +1 an expert the task uses more than the others."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    s_TLE, tasks = by_task["s"], by_task["tasks"]
    T, L, E = s_TLE.shape
    fig, axes = plt.subplots(T, 1, squeeze=False, figsize=(max(5.0, 1.8 + 0.5 * E), T * max(2.0, 1.0 + 0.45 * L)))
    for t, ax in enumerate(axes[:, 0]):
        _panel(fig, ax, s_TLE[t], tasks[t], "S_t")
    axes[-1, 0].set_xlabel("routed expert")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def task_markdown(names: list[str], by_task: dict) -> str:
    """Per layer: the tasks' JS against its noise floor, then each task's share R_t of its vision assignments
    per expert (S_t in brackets)."""
    shares, s, tasks = by_task["shares"], by_task["s"], by_task["tasks"]
    js, floor = by_task["summary"], by_task["noise_floor"]
    E = shares.shape[2]
    lines = ["# Expert specialisation by task (vision tokens)", "",
             "R_t: share of task t's vision-token assignments routed to each expert; in brackets "
             "S_t = (R_t - R_rest) / (R_t + R_rest), R_rest the mean share of the other tasks. "
             "JS: Jensen-Shannon divergence of the tasks' shares / log T (0 the same routing, 1 disjoint experts). "
             "Noise floor: the mean over tasks of the JS between a task's even and odd rows / log 2, what JS reads "
             "from sampling alone (each half has half the rows, so it errs high); a JS near it is noise.", "",
             "| layer | JS between tasks | JS of a task against itself (split halves): the noise floor |",
             "|---|---|---|"]
    lines += [f"| {l} ({name}) | {js[l]:.3f} | {floor[l]:.3f} |" for l, name in enumerate(names)]
    lines.append("")
    for l, name in enumerate(names):
        lines += [f"## layer {l} ({name}): JS {js[l]:.3f}, noise floor {floor[l]:.3f}", "",
                  "| task | " + " | ".join(f"e{i}" for i in range(E)) + " | vision tok |", "|---" * (E + 2) + "|"]
        lines += [f"| {task} | " + " | ".join(f"{r:.2f} ({v:+.2f})" for r, v in zip(shares[t, l], s[t, l]))
                  + f" | {by_task['counts'][t, l].sum():.0f} |" for t, task in enumerate(tasks)]
        lines.append("")
    return "\n".join(lines)


def run(cfg: AnalyzeConfig) -> None:
    res = analyze(cfg)
    names, counts, s = res["layers"], res["counts"], res["s"]
    out = Path(cfg.out_dir or Path(cfg.model_dir).parent / "experts")
    out.mkdir(parents=True, exist_ok=True)
    paths = {"png": out / "experts.png", "md": out / "experts.md", "json": out / "experts.json"}
    heatmap(s, names, paths["png"], f"S = (R_text - R_img) / (R_text + R_img)\n{cfg.split} split, {cfg.rows} rows")
    paths["md"].write_text(markdown(names, res, counts))
    saved = {"layers": names, "counts": counts.tolist(), **{k: res[k].tolist() for k in ("r_text", "r_img", "s")}}
    by_task = res["by_task"]
    task_paths = {"png": out / "experts_by_task.png", "md": out / "experts_by_task.md"}
    if by_task is not None:
        saved["by_task"] = {k: by_task[k] if k == "tasks" else by_task[k].tolist()
                            for k in ("tasks", "counts", "shares", "s", "summary", "noise_floor")}
        task_heatmap(by_task, task_paths["png"], f"S_t = (R_t - R_rest) / (R_t + R_rest), vision tokens\n"
                                                 f"{cfg.split} split, {cfg.rows} rows per task")
        task_paths["md"].write_text(task_markdown(names, by_task))
    else:
        for p in task_paths.values():   # a stale analysis of another model must not stand beside this one
            p.unlink(missing_ok=True)
    paths["json"].write_text(json.dumps(saved, indent=1))
    print(f"analyze-experts: {s.shape[0]} MoE layers x {s.shape[1]} experts; mean |S| per layer "
          + ", ".join(f"{v:.2f}" for v in np.abs(s).mean(1)))
    print(f"  heatmap {paths['png']}\n  table   {paths['md']}")
    if by_task is None:
        print("  by task: none (one dataset in the mixture, or no episode sources)")
    else:
        print(f"  by task ({', '.join(by_task['tasks'])}): JS divergence of the tasks' routing per layer "
              + ", ".join(f"{v:.3f}" for v in by_task["summary"]) + "; noise floor (a task against itself, "
              + "split halves) " + ", ".join(f"{v:.3f}" for v in by_task["noise_floor"]))
        print(f"  heatmap {task_paths['png']}\n  table   {task_paths['md']}")


main = Program(__doc__, AnalyzeConfig, "analyze_experts", run)

if __name__ == "__main__":
    from lw.cli import module_main
    module_main("lw.analyze_experts")
