"""Report pieces shared by `lw demo` and the examples: loss curves, side-by-side GIFs, the summary table."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

LOSS_KEYS = ("group/text", "group/frames", "group/action_video")


def training_metrics_file(model: str | Path) -> Path | None:
    """The metrics.jsonl of the run that produced a model folder, if it can be found."""
    model = Path(model)
    for p in (model / "training_metrics.jsonl", model.parent / "metrics.jsonl"):
        if p.is_file():
            return p
    return None


def plot_loss_curves(metrics: Path, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pretrain.metrics import read_jsonl

    rows = read_jsonl(metrics)
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in LOSS_KEYS:
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if not pts:
            continue
        steps, vals = np.array(pts).T
        k = max(1, len(vals) // 50)  # moving average: per-step losses of tiny batches are noisy
        smooth = np.convolve(vals, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], smooth, label=key.split("/")[1].replace("_", "-"))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (moving average)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def side_by_side_gif(model: str | Path, task: str | None, out: str | Path, seed: int = 1_000_000,
                     steps: int = 20, sample_steps: int | None = None, device: str | None = None,
                     scale: int = 4, fps: int = 8) -> Path:
    """MuJoCo (left) | LearnedWorld-v0 (right), both from the same real start, same random actions."""
    import gymnasium as gym
    import imageio.v2 as imageio

    import envs
    from envs.mujoco_tasks import make_task

    gym.register_envs(envs)
    env = gym.make("LearnedWorld-v0", model=str(model), task=task, obs="pixels", render_mode="rgb_array",
                   sample_steps=sample_steps, device=device, max_episode_steps=-1)
    core = env.unwrapped.core
    imagined, _ = env.reset(seed=seed)
    # The env reset the ground-truth task with this seed and took tc-1 zero actions for its
    # context; a second task doing the same reaches the same state (deterministic physics).
    real_task = make_task(core.task_name, image_size=core.world.image_size)
    real, _ = real_task.reset(seed=seed)
    zero = np.zeros(env.action_space.shape, np.float32)
    for _ in range(core.tc - 1):
        real = real_task.step(zero)[0]
    rng = np.random.default_rng(seed)
    pairs = [(real, imagined)]
    for _ in range(steps):
        a = rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
        real = real_task.step(a)[0]
        imagined, *_ = env.step(a)
        pairs.append((real, imagined))
    env.close()
    real_task.close()
    gap = np.full((pairs[0][0].shape[0], 2, 3), 255, np.uint8)
    frames = [np.concatenate([r, gap, i], 1).repeat(scale, 0).repeat(scale, 1) for r, i in pairs]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".mp4":
        imageio.mimsave(out, frames, fps=fps, macro_block_size=1)
    else:
        imageio.mimsave(out, frames, duration=1000 / fps, loop=0)
    return out


def write_report(model: str | Path, task: str, out: str | Path, seed: int, steps: int,
                 sample_steps: int | None = None) -> list[Path]:
    """Loss curves, imagined-vs-real GIF and executed-plan GIF into `out`."""
    out = Path(out)
    files = []
    metrics = training_metrics_file(model)
    if metrics is not None:
        files.append(plot_loss_curves(metrics, out / "loss_curves.png", f"pretraining losses ({Path(model).name})"))
    else:
        print(f"report: no training metrics found beside {model}; skipping loss_curves.png")
    files.append(side_by_side_gif(model, task, out / "imagine.gif", seed=seed, steps=steps,
                                  sample_steps=sample_steps))
    plans = sorted((out / "benchmark" / "videos").glob(f"{task}_learned_*.gif"))
    if plans:
        shutil.copyfile(plans[0], out / "plan.gif")
        files.append(out / "plan.gif")
    return files


def summary_table(prediction_json: Path, benchmark_json: Path, model: str, task: str, seconds: float) -> dict:
    """The demo's one table: prediction PSNR vs copy-last, planning success per row."""
    pred = json.loads(Path(prediction_json).read_text())
    bench = json.loads(Path(benchmark_json).read_text())
    per = pred["per_step"]
    horizon = len(per["model_psnr"])
    steps = sorted({1, min(5, horizon), horizon})
    lines = [f"## LearnedWorld demo: {task}, model `{model}` ({seconds / 60:.1f} min)", "",
             "Prediction on held-out episodes (open loop from real context frames; PSNR in dB, higher is better):", "",
             "| imagined step | " + " | ".join(str(s) for s in steps) + " |",
             "|---" * (len(steps) + 1) + "|",
             "| model | " + " | ".join(f"{per['model_psnr'][s - 1]:.2f}" for s in steps) + " |",
             "| copy-last-frame | " + " | ".join(f"{per['copy_last_psnr'][s - 1]:.2f}" for s in steps) + " |",
             "| action gain (latent MSE, shuffled / true actions; 1.00 = ignored) | "
             + " | ".join(f"{per['action_gain'][s - 1]:.2f}" if "action_gain" in per else "–" for s in steps) + " |",
             "", "Planning, executed and scored in MuJoCo:", "",
             "| row | planner | success | 95% CI | final dist | s / replan |", "|---|---|---|---|---|---|"]
    rows = []
    for r in bench["results"]:
        if r.get("task") != task:
            continue
        if not r.get("episodes"):
            lines.append(f"| {r['row']} | {r['planner']} | – | – | – | – |")
            continue
        lo, hi = r["ci95"]
        lines.append(f"| {r['row']} | {r['planner']} | {r['successes']}/{r['episodes']} | "
                     f"[{100 * lo:.0f}, {100 * hi:.0f}]% | {r['final_distance']:.3f} m | "
                     f"{r['seconds_per_replan']:.2f} |")
        rows.append({k: r[k] for k in ("row", "planner", "successes", "episodes", "success_rate", "ci95",
                                       "final_distance", "seconds_per_replan")})
    data = {"task": task, "model": str(model), "seconds": seconds,
            "prediction_psnr": {str(s): {"model": per["model_psnr"][s - 1],
                                         "copy_last": per["copy_last_psnr"][s - 1]} for s in steps},
            "action_gain": {str(s): per["action_gain"][s - 1] for s in steps if "action_gain" in per},
            "planning": rows}
    return {"markdown": "\n".join(lines), "json": data}
