"""`lw eval-prediction`: imagined vs MuJoCo rollouts, scored per horizon step.

    lw eval-prediction model=runs/tiny_cpu/model task=reacher episodes=32 horizon=10

What is scored (held-out episodes, baselines, action sensitivity, imagine=rollout|jump) is
pretrain.eval_prediction. Writes `prediction.md`, `prediction.json` and `prediction.png` to
`out` (default: <model>/eval_prediction).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lw.program import Program
from pretrain.eval_prediction import EvalPredictionConfig, predict
from pretrain.metrics import save_resolved, to_dict


def markdown_table(res: dict[str, list[float]], horizon: int) -> str:
    cols = [("model_psnr", "PSNR model"), ("copy_last_psnr", "PSNR copy-last"), ("mean_latent_psnr", "PSNR mean"),
            ("rae_psnr", "PSNR RAE"), ("model_ssim", "SSIM model"), ("copy_last_ssim", "SSIM copy-last"),
            ("rae_ssim", "SSIM RAE"), ("model_latent_mse", "latent MSE model"),
            ("shuffled_latent_mse", "latent MSE shuffled actions"), ("action_gain", "action gain"),
            ("copy_last_latent_mse", "latent MSE copy-last"), ("mean_latent_latent_mse", "latent MSE mean")]
    lines = ["| step | " + " | ".join(n for _, n in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for h in range(horizon):
        cells = [f"{res[k][h]:.2f}" if "psnr" in k or k == "action_gain" else f"{res[k][h]:.3f}" for k, _ in cols]
        lines.append(f"| {h + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(res: dict[str, list[float]], horizon: int, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(1, horizon + 1)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, metric, label in zip(axes, ("psnr", "ssim", "latent_mse"), ("PSNR (dB)", "SSIM", "latent MSE")):
        for who, style in (("model", "o-"), ("shuffled", "v-"), ("copy_last", "s--"), ("mean_latent", "x-."),
                           ("rae", ":")):
            if (who == "rae" and metric == "latent_mse") or f"{who}_{metric}" not in res:
                continue  # the RAE's is zero by definition; shuffled actions are scored in latent MSE only
            y, se = np.array(res[f"{who}_{metric}"]), np.array(res[f"{who}_{metric}_se"])
            ax.plot(x, y, style, label=who.replace("_", "-"))
            ax.fill_between(x, y - se, y + se, alpha=0.2)
        ax.set_xlabel("horizon step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(cfg: EvalPredictionConfig) -> None:
    out = Path(cfg.out or Path(cfg.model) / "eval_prediction")
    result = predict(cfg)
    save_resolved(cfg, out)
    res, task, tc, pol, seconds = (result[k] for k in ("per_step", "task", "context_frames", "policy", "seconds"))
    table = markdown_table(res, cfg.horizon)
    head = (f"# Prediction: {cfg.model} on {task}\n\n{cfg.episodes} held-out episodes (seeds "
            f"{cfg.seed}..{cfg.seed + cfg.episodes - 1}, policy {pol['policy']}), {tc} real context frames, "
            f"open-loop horizon {cfg.horizon} ({cfg.imagine}, window {result['window'] or 'all'}), "
            f"{result['sample_steps']} sample steps per frame. "
            f"Means over episodes; shuffled actions = the model given another episode's actions (equal to "
            f"the model's own when it ignores actions); action gain = shuffled / model latent MSE (1.00: ignored); mean = the decoded mean latent (a blurry-mean predictor); "
            f"RAE = decode(encode(true frame)), the pixel ceiling.\n\n")
    (out / "prediction.md").write_text(head + table + "\n")
    payload = {"config": to_dict(cfg), "task": task, "context_frames": tc, "window": result["window"], "policy": pol,
               "seconds": seconds, "per_step": res}
    (out / "prediction.json").write_text(json.dumps(payload, indent=2))
    plot(res, cfg.horizon, out / "prediction.png", f"{Path(cfg.model).name} on {task}: "
         f"{cfg.episodes} episodes, {tc} context frames")
    print(table)
    print(f"wrote {out / 'prediction.md'}, prediction.json, prediction.png "
          f"(ground truth {seconds['ground_truth']:.1f}s, model {seconds['model']:.1f}s)")


main = Program(__doc__, EvalPredictionConfig, "eval_prediction", run)

if __name__ == "__main__":
    from lw.cli import module_main
    module_main("lw.eval_prediction")
