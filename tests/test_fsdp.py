"""FSDP2 on CPU (gloo): a 2-process torchrun run matches the 1-process run with the same global
batch, its DCP checkpoint resumes in one process (resharded), and its export loads."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lw.pretrain import main

from tests.test_train import make_world, tiny_overrides

REPO = Path(__file__).resolve().parents[1]
# Same data and flow noise per micro-batch; only the order of fp32 sums differs (gradient
# reduce-scatter vs local accumulation). Measured: <= 4e-8 relative over 6 steps. 1e-5 leaves
# room for the odd MoE routing near-tie while any real divergence (wrong data slice, missing
# gradient sync) shows up at 1e-2 or more.
RTOL = 1e-5


def step_losses(run: Path) -> dict[int, float]:
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "lr" in r}


@pytest.mark.slow  # two fresh interpreters (~30 s of imports on 2 busy cores); still runs in CI
def test_two_process_fsdp_matches_one_process(tmp_path):
    make_world(tmp_path)
    common = {"steps": 6, "batch_size": 4, "eval_rows": 0, "checkpoint.every": 0}
    # one process, 2 micro-batches of 2 rows == two ranks with 1 micro-batch of 2 rows each
    assert main(tiny_overrides(tmp_path, "one", grad_accum=2, **common)) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    with socket.socket() as sock:  # torchrun's --master_port=0 hangs on this torch; pick a free port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           "-m", "lw.pretrain", *tiny_overrides(tmp_path, "two", grad_accum=1, max_steps_this_run=4, **common)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    one, two = step_losses(tmp_path / "one"), step_losses(tmp_path / "two")
    assert sorted(two) == [1, 2, 3, 4]
    np.testing.assert_allclose([two[s] for s in range(1, 5)], [one[s] for s in range(1, 5)], rtol=RTOL)
    assert two[1] != two[4]  # it trained
    # the sharded (DCP) checkpoint of the 2-rank run resumes in one process
    assert main(tiny_overrides(tmp_path, "two", grad_accum=2, resume=True, **common)) == 0
    two = step_losses(tmp_path / "two")
    np.testing.assert_allclose([two[s] for s in range(1, 7)], [one[s] for s in range(1, 7)], rtol=RTOL)
    from worldmodel.transfusion import Transfusion
    a = Transfusion.from_pretrained(tmp_path / "one" / "model").state_dict()
    b = Transfusion.from_pretrained(tmp_path / "two" / "model").state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-4)
