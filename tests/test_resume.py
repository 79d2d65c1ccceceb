"""Kill-and-resume: a run stopped (or SIGKILLed) and resumed has the per-step loss curve and
final weights of an uninterrupted run, bit for bit on CPU."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pretrain import checkpoint as ckpt
from lw.pretrain import main
from worldmodel import hub

from tests.test_train import make_world, tiny_overrides

REPO = Path(__file__).resolve().parents[1]
# exercise every piece of state: EMA weights, expert-bias balancing buffers, held-out evals
EXTRA = {"optim.ema_decay": 0.9, "model.moe.balance": "both", "eval_every": 5, "eval_rows": 2}


def losses(run: Path) -> dict[int, float]:
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    out = {r["step"]: r["loss"] for r in rows if "loss" in r}
    assert len([r for r in rows if "loss" in r]) == len(out), "a step was logged twice"
    return out


def weights(run: Path) -> dict[str, torch.Tensor]:
    return hub.load_state_dict(run / "model")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    make_world(root)
    assert main(tiny_overrides(root, "ref", steps=24, **EXTRA)) == 0
    return root


@pytest.mark.parametrize("prefetch", [0, 2])  # batches built in the loop, or ahead in a thread
def test_stop_and_resume_is_exact(reference, prefetch):
    root = reference
    run = f"stopped{prefetch}"
    over = tiny_overrides(root, run, steps=24, prefetch=prefetch, **EXTRA)
    assert main(over + ["max_steps_this_run=10"]) == 0
    assert [s for s, _ in ckpt.list_checkpoints(root / run / "checkpoints")] == [8, 10]
    assert not (root / run / "model").exists()  # no export before the run is complete
    assert main(over + ["resume=true"]) == 0
    ref, got = losses(root / "ref"), losses(root / run)
    assert sorted(got) == list(range(1, 25)) and got == ref  # bit-exact per-step losses
    a, b = weights(root / "ref"), weights(root / run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # a fresh interpreter (~20 s of imports on 2 busy cores); still runs in CI
def test_sigkill_and_resume_is_exact(reference):
    root = reference
    over = tiny_overrides(root, "killed", steps=24, **{**EXTRA, "checkpoint.every": 3})
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "lw.pretrain", *over], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpts = root / "killed" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (ckpts / "step-00000006").is_dir():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    done = ckpt.list_checkpoints(ckpts)
    assert done and done[-1][0] < 24  # killed mid-run
    assert main(over + ["resume=true"]) == 0
    ref, got = losses(root / "ref"), losses(root / "killed")
    assert got == ref
    a, b = weights(root / "ref"), weights(root / "killed")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_true_without_a_checkpoint_is_refused(tmp_path, capsys):
    """A mistyped or empty run_dir with resume=true used to train from step 0 without a word."""
    from lw.cli import main as lw
    assert lw(["pretrain", f"run_dir={tmp_path / 'typo'}", "resume=true", "device=cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lw pretrain: error: resume=true, but run_dir") and "does not exist" in err, err
    assert "resume=auto" in err
    assert not (tmp_path / "typo").exists()  # refused before anything was written
    (tmp_path / "empty").mkdir()
    assert lw(["pretrain", f"run_dir={tmp_path / 'empty'}", "resume=true", "device=cpu"]) == 2
    assert "checkpoints' holds no checkpoint" in capsys.readouterr().err
    assert lw(["pretrain", "resume=maybe"]) == 2
    assert "expected one of ('false', 'true', 'auto')" in capsys.readouterr().err


def test_resume_auto_starts_fresh_then_continues(tmp_path, capsys):
    make_world(tmp_path)
    over = tiny_overrides(tmp_path, "auto", steps=4, **{"checkpoint.every": 2}) + ["resume=auto"]
    assert main(over + ["max_steps_this_run=2"]) == 0
    out = capsys.readouterr().out
    assert "resume=auto: no checkpoint in" in out and "starting a new run at step 0" in out, out
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "auto" / "checkpoints")] == [2]
    assert main(over) == 0
    out = capsys.readouterr().out
    assert "resuming at step 2" in out and "no checkpoint" not in out, out
    assert sorted(losses(tmp_path / "auto")) == [1, 2, 3, 4]
