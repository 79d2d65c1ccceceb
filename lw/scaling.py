"""`lw scaling`: IsoFLOP sweeps and power-law fits (Chinchilla approach 2), per modality.

    lw scaling                                   # the micro grid: a smoke test, a few minutes on CPU
    OMP_NUM_THREADS=1 lw scaling scaling_grid=cpu   # budgets that bracket the optimum: ~1 h per modality
    lw scaling scaling_grid=gpu_small            # one GPU
    lw scaling budgets=[1e13,3e13,1e14] widths=[64,96,128,192] device=cuda   # any grid by hand

The sweep and the fits are pretrain.scaling. Outputs in out_dir: scaling.json (every run and
fit), scaling.md (tables), scaling.png (loss vs N per budget with the parabolas, N_opt vs C).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from lw.program import Program
from pretrain.metrics import save_resolved
from pretrain.scaling import ScalingConfig, all_finished, fit_isoflops, narrower_than_latent, sweep


# ---------------------------------------------------------------- report
def markdown(runs: list[dict], fits: dict) -> str:
    lines = ["# IsoFLOP sweep", "", "| modality | budget C | width | N active | tokens D | steps | held-out loss |",
             "|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['modality']} | {r['budget']:.3g} | {r['width']} | {r['n_active']:,} | "
                     f"{r['tokens']:,} | {r['steps']} | {r['loss']:.4f} |")
    lines += ["", "## Compute-optimal points (parabola vertex per budget)", "",
              "Each budget's parabola in ln N is fitted to its best size and two grid neighbours on each side.", "",
              "| modality | budget C | N_opt | D_opt = C/(6 N_opt) | loss at N_opt | bracketed |",
              "|---|---|---|---|---|---|"]
    for mod, f in fits.items():
        for b, p in f["budgets"].items():
            lines.append(f"| {mod} | {b} | {p['n_opt']:,.0f} | {p['d_opt']:,.0f} | {p['loss_opt']:.4f} | "
                         f"{'yes' if p['bracketed'] else 'no: optimum off the grid (best point shown)'} |")
    lines += ["", "## Power laws (bracketed budgets only)", "",
              "| modality | a (N_opt ∝ C^a) | b (D_opt ∝ C^b) |", "|---|---|---|"]
    for mod, f in fits.items():
        if "a" in f:
            lines.append(f"| {mod} | {f['a']:.3f} | {f['b']:.3f} |")
        else:
            lines.append(f"| {mod} | n/a: fewer than 2 budgets bracket the optimum | widen `widths` |")
    return "\n".join(lines) + "\n"


def plot(runs: list[dict], fits: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    mods = list(fits)
    fig, axes = plt.subplots(1, len(mods) + 1, figsize=(4.5 * (len(mods) + 1), 3.8), squeeze=False)
    for ax, mod in zip(axes[0], mods):
        mod_runs = [r for r in runs if r["modality"] == mod]
        too_narrow = [narrower_than_latent(r["width"], r.get("latent_dim")) for r in mod_runs]
        budgets = sorted({r["budget"] for r in mod_runs})
        colors = plt.cm.viridis(np.linspace(0, 0.85, max(1, len(budgets))))
        for color, b in zip(colors, budgets):
            narrow = [r for r, bad in zip(mod_runs, too_narrow) if bad and r["budget"] == b]
            pts = sorted((r["n_active"], r["loss"]) for r, bad in zip(mod_runs, too_narrow)
                         if not bad and r["budget"] == b)
            if narrow:   # drawn, not fitted: their loss is set by the latent's squeeze, not their size
                ax.plot([r["n_active"] for r in narrow], [r["loss"] for r in narrow], "x", color="0.6")
            if not pts:
                continue
            n, loss = np.array(pts).T
            ax.plot(n, loss, "o", color=color, label=f"C={b:.0e}")
            p = fits[mod]["budgets"].get(f"{b:.3g}")
            if p:
                fit_n = np.log(p.get("fit_n", n))   # the sizes the parabola was fitted to
                xs = np.linspace(fit_n.min(), fit_n.max(), 50)
                ax.plot(np.exp(xs), p["a"] * xs ** 2 + p["b"] * xs + p["c"], "-", color=color, alpha=0.7)
                ax.plot(p["n_opt"], p["loss_opt"], "*", color=color, ms=12)
        ax.set_xscale("log")
        if any(too_narrow):
            ax.plot([], [], "x", color="0.6", label="narrower than the latent (not fitted)")
        ax.set(title=f"{mod}: IsoFLOP curves", xlabel="active parameters N", ylabel="held-out loss")
        ax.legend(fontsize=7)
    ax = axes[0][-1]
    for mod in mods:
        bs = fits[mod]["budgets"]
        if bs:
            cs = np.array([float(b) for b in bs])
            line, = ax.plot(cs, [p["n_opt"] for p in bs.values()], "-",
                            label=f"{mod}: a={fits[mod].get('a', float('nan')):.2f}")
            for c, q in zip(cs, bs.values()):   # hollow: the optimum lies off the grid (no estimate)
                ax.plot(c, q["n_opt"], "o", color=line.get_color(),
                        markerfacecolor=line.get_color() if q["bracketed"] else "none")
    ax.set(xscale="log", yscale="log", title="N_opt vs C", xlabel="FLOPs C", ylabel="N_opt")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(runs: list[dict], fits: dict, out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "scaling.json", "md": out / "scaling.md", "png": out / "scaling.png"}
    paths["json"].write_text(json.dumps({"runs": runs, "fits": fits}, indent=1))
    paths["md"].write_text(markdown(runs, fits))
    plot(runs, fits, paths["png"])
    return paths


def run(cfg: ScalingConfig) -> None:
    save_resolved(cfg, cfg.out_dir)
    t0 = time.perf_counter()
    print(f"scaling: {len(cfg.modalities)} modalities x {len(cfg.budgets)} budgets x {len(cfg.widths)} widths "
          f"on {cfg.device}")
    swept = sweep(cfg)
    runs = all_finished(cfg)   # this grid's runs and those of earlier sweeps of the same settings in out_dir
    if len(runs) > len(swept):
        print(f"scaling: fitting {len(runs)} runs, {len(runs) - len(swept)} of them from earlier sweeps in {cfg.out_dir}")
    fits = fit_isoflops(runs)
    paths = write_report(runs, fits, cfg.out_dir)
    for mod, f in fits.items():
        if "a" in f:
            print(f"  {mod}: N_opt ∝ C^{f['a']:.3f}, D_opt ∝ C^{f['b']:.3f}")
        else:
            best = [f"C={b}: N={p['n_opt']:,.0f}" for b, p in f["budgets"].items()]
            print(f"  {mod}: no exponents, the width grid does not bracket the optimum at >= 2 budgets "
                  f"(best sizes {', '.join(best)}); widen `widths`")
    print(f"scaling: {len(swept)} runs in {time.perf_counter() - t0:.0f}s -> {paths['md']}, {paths['png']}")


main = Program(__doc__, ScalingConfig, "scaling", run)

if __name__ == "__main__":
    from lw.cli import module_main
    module_main("lw.scaling")
