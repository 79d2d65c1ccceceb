"""`lw analyze-experts`: how text and vision tokens share the routed experts, per layer.

    lw analyze-experts model_dir=runs/tiny_cpu/model

S = (R_text - R_img) / (R_text + R_img) per MoE layer and routed expert, on held-out rows
(pretrain.analyze_experts): +1 a text-only expert, -1 a vision-only expert, 0 shared evenly.
Outputs in out_dir (default <model_dir>/../experts): experts.png (heatmap layers x experts),
experts.md, experts.json.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lw.program import Program
from pretrain.analyze_experts import AnalyzeConfig, analyze


def heatmap(s_LE: np.ndarray, names: list[str], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    L, E = s_LE.shape
    fig, ax = plt.subplots(figsize=(max(5.0, 1.8 + 0.5 * E), max(2.8, 1.4 + 0.45 * L)))
    im = ax.imshow(s_LE, cmap="coolwarm", vmin=-1, vmax=1, aspect="auto")
    for (l, e), v in np.ndenumerate(s_LE):
        ax.text(e, l, f"{v:+.2f}", ha="center", va="center", fontsize=6)
    ax.set(xticks=range(E), yticks=range(L), xlabel="routed expert", ylabel="layer", title=title)
    ax.set_yticklabels([str(i) for i in range(L)])
    fig.colorbar(im, ax=ax, label="S (+1 text, -1 vision)")
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


def run(cfg: AnalyzeConfig) -> None:
    res = analyze(cfg)
    names, counts, s = res["layers"], res["counts"], res["s"]
    out = Path(cfg.out_dir or Path(cfg.model_dir).parent / "experts")
    out.mkdir(parents=True, exist_ok=True)
    paths = {"png": out / "experts.png", "md": out / "experts.md", "json": out / "experts.json"}
    heatmap(s, names, paths["png"], f"S = (R_text - R_img) / (R_text + R_img)\n{cfg.split} split, {cfg.rows} rows")
    paths["md"].write_text(markdown(names, res, counts))
    paths["json"].write_text(json.dumps({"layers": names, "counts": counts.tolist(),
                                         **{k: res[k].tolist() for k in ("r_text", "r_img", "s")}}, indent=1))
    print(f"analyze-experts: {s.shape[0]} MoE layers x {s.shape[1]} experts; mean |S| per layer "
          + ", ".join(f"{v:.2f}" for v in np.abs(s).mean(1)))
    print(f"  heatmap {paths['png']}\n  table   {paths['md']}")


main = Program(__doc__, AnalyzeConfig, "analyze_experts", run)

if __name__ == "__main__":
    from lw.cli import module_main
    module_main("lw.analyze_experts")
