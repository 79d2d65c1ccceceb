"""Golden losses (torchtitan's habit): a short deterministic `lw pretrain` whose per-step losses are
stored in the repo, so that a silent change to the model, its init, the data packing, the loss or
the optimiser shows up as a failing test.

The run goes through the real code path, `pretrain.train.main(overrides)`: Hydra compose, the
episode/text mixture packed into rows, the Transfusion MoE, AdamW with warmup, the metrics log.
Data: test_train's tiny world (a random-weight RAE and 12 episodes of a moving dot with their
cached latents); text: those episodes' captions (not pydoc, which changes with the Python version).
It runs in a subprocess with one thread (OMP/MKL and torch.set_num_threads), CPU, fp32, no
compile, fixed seeds, so the parent's thread setting is left alone.

Compared: the resolved config (a changed schema or YAML default is named), the tokens of each
kind per step exactly (the packing), and per step the loss, its text / flow / MoE-aux parts and
the gradient norm with a tolerance:
- recorded torch version: rtol 1e-4 (atol 1e-6). On one machine the run is bit-exact (one thread
  fixes the reduction order); the slack is for another CPU, whose MKL/oneDNN kernels pick other
  vector widths (AVX2 / AVX-512) and so other float32 summation orders (~1e-7 relative, grown
  by 8 Adam steps). It still catches small changes: init_std 0.02 -> 0.0201 (0.5%) moves the
  losses by 1e-4..1e-3 and the gradient norms by ~7e-4.
- another torch version: rtol 1e-2, loud in the message rather than skipped, since kernels
  legitimately change between releases. That catches only coarse changes (the LR off by 10%);
  re-record the file when a torch bump is checked.

Regenerate (after an intended change, say why in the commit):
    LW_UPDATE_GOLDEN=1 python -m pytest tests/test_golden_loss.py
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden" / "pretrain_tiny_losses.json"
STEPS = 8
# compared with the tolerance below: the total loss, its parts and the gradient norm, every step
KEYS = ("loss", "loss_text", "loss_flow", "moe_aux", "grad_norm")
EXACT = ("text_tokens", "flow_tokens")  # how the rows were packed: compared exactly
RTOL_SAME_TORCH, RTOL_OTHER_TORCH, ATOL = 1e-4, 1e-2, 1e-6

# The run, spelled out here (not borrowed from test_train's tiny_overrides) so that what the
# golden numbers measure changes only with this file. {root} is a temporary folder.
OVERRIDES = {
    "run_dir": "{root}/run", "rae.path": "{root}/rae", "data.dataset": "{root}/data",
    "data.text_sources": "[captions:{root}/data]",
    "device": "cpu", "threads": 1, "precision": "fp32", "compile": "off", "prefetch": 0, "seed": 0,
    "steps": STEPS, "batch_size": 4, "eval_rows": 0, "export": False, "checkpoint.every": -1,
    "data.seq_len": 128, "data.holdout": 0.2, "data.predict_frames": 1, "data.video_frames": 3, "data.seed": 0,
    "model.d_model": 32, "model.n_layers": 2, "model.n_heads": 2, "model.moe.n_experts": 4,
    "model.moe.top_k": 1, "model.moe.granularity": 4,
    "optim.lr": 3e-3, "optim.warmup_steps": 2,
    "metrics.log_every": 1, "metrics.tensorboard": False, "metrics.progress": False,
}

_RUN = """
import json, sys, tempfile
from pathlib import Path
import torch
torch.set_num_threads(1)
from tests.test_train import make_world
from lw.pretrain import main
overrides = json.loads(sys.argv[1])
with tempfile.TemporaryDirectory() as root:
    make_world(Path(root))
    assert main([f"{k}={v}".replace("{root}", root) for k, v in overrides.items()]) == 0
    rows = [json.loads(ln) for ln in (Path(root) / "run" / "metrics.jsonl").read_text().splitlines()]
    config = json.loads((Path(root) / "run" / "config.json").read_text().replace(root, "{root}"))
print("GOLDEN " + json.dumps({"rows": rows, "config": config}))
"""


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def run_tiny_pretrain() -> tuple[list[dict], dict]:
    """The per-step metric records and the resolved config (flat) of the golden run, from a
    one-thread subprocess."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    overrides = {k: str(v).lower() if isinstance(v, bool) else v for k, v in OVERRIDES.items()}
    p = subprocess.run([sys.executable, "-c", _RUN, json.dumps(overrides)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"the golden run failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("GOLDEN "))
    out = json.loads(line[len("GOLDEN "):])
    return [r for r in out["rows"] if "lr" in r], _flat(out["config"])  # training steps, not evals


def test_tiny_pretrain_matches_golden_losses():
    rows, config = run_tiny_pretrain()
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    got = {k: [r[k] for r in rows] for k in KEYS + EXACT}
    if os.environ.get("LW_UPDATE_GOLDEN", "") not in ("", "0"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps({
            "torch": torch.__version__, "python": sys.version.split()[0], "numpy": np.__version__,
            "regenerate": "LW_UPDATE_GOLDEN=1 python -m pytest tests/test_golden_loss.py",
            "steps": STEPS, "losses": got, "config": config}, indent=1) + "\n")
        print(f"rewrote {GOLDEN.relative_to(ROOT)} (torch {torch.__version__})")
        return
    assert GOLDEN.is_file(), f"{GOLDEN} is missing; record it with LW_UPDATE_GOLDEN=1"
    golden = json.loads(GOLDEN.read_text())
    same = golden["torch"] == torch.__version__
    rtol = RTOL_SAME_TORCH if same else RTOL_OTHER_TORCH
    note = "" if same else f"; recorded with torch {golden['torch']}, running {torch.__version__}"
    # a changed default (schema or YAML) of the run's resolved config, named; keys added or
    # removed since the recording are left to the numbers
    bad = [f"  config {k}: golden {v!r}, now {config[k]!r}" for k, v in golden["config"].items()
           if k in config and config[k] != v]
    bad += [f"  {k}: golden {golden['losses'][k]}, now {got[k]}" for k in EXACT if golden["losses"][k] != got[k]]
    for k in KEYS:
        want, have = np.asarray(golden["losses"][k]), np.asarray(got[k])
        off = ~np.isclose(have, want, rtol=rtol, atol=ATOL)
        bad += [f"  step {s + 1:>2} {k:<10} golden {want[s]:.7f}  now {have[s]:.7f}  "
                f"rel {abs(have[s] - want[s]) / abs(want[s]):.1e}" for s in np.flatnonzero(off)]
    assert not bad, (f"the golden run differs from {GOLDEN.relative_to(ROOT)} (numbers: beyond rtol {rtol:g}"
                     f"{note}):\n"
                     + "\n".join(bad) + "\nAn intended change? Re-record with "
                     "LW_UPDATE_GOLDEN=1 python -m pytest tests/test_golden_loss.py and say why in the commit.")
