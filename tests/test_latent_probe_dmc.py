"""pretrain.latent_probe on dmc_reacher (moved out of tests/test_goals.py: it tests the uncommitted
pretrain/latent_probe.py change of the training helper; commit it with that change)."""
from __future__ import annotations

import numpy as np


def test_probe_scores_dmc_reacher_by_what_its_frames_show():
    """latent_probe's references for dmc_reacher: the pose features wrap the unwrapped angles, and the
    pair distance is finger to finger (the target, where the task's own distance looks, is hidden)."""
    from envs.tasks.dmc_reacher import finger
    from pretrain.latent_probe import pair_distance, pose_features

    a = np.array([0.3, -1.0, 0.5, 0.2, 0.1, 0.1])
    b = a.copy()
    b[0] += 2 * np.pi                 # the same pose, one turn on
    b[4:6] = (-0.1, 0.05)             # another (hidden) target
    assert np.allclose(pose_features("dmc_reacher", a), pose_features("dmc_reacher", b))
    assert pair_distance("dmc_reacher")(a, b) < 1e-12
    c = a.copy()
    c[1] = 0.0
    d = pair_distance("dmc_reacher")(np.stack([a, a]), np.stack([b, c]))
    assert d.shape == (2,) and np.isclose(d[1], np.linalg.norm(finger(a[:2]) - finger(c[:2])))
