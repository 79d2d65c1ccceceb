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


def test_probe_scores_each_part_of_the_pusht_pose_alone():
    """probe_r2_parts: a latent that holds only the pusher scores the agent near 1 and the block
    near 0, while the pooled probe_r2 sits between (it is what the parts hide)."""
    import torch

    from pretrain.latent_probe import pose_features, score_latents

    rng = np.random.default_rng(0)
    E, T1 = 24, 12
    states = np.zeros((E, T1, 10))
    states[..., :4] = rng.uniform(50, 460, (E, T1, 4))   # agent xy, block xy
    states[..., 4] = rng.uniform(-np.pi, np.pi, (E, T1))
    feats = pose_features("pusht", states)
    assert feats.shape == (E, T1, 6) and np.allclose(feats[..., 4] ** 2 + feats[..., 5] ** 2, 1)
    z = torch.tensor(np.concatenate([feats[..., :2], 0.01 * rng.standard_normal((E, T1, 6))], -1), dtype=torch.float32)
    a = torch.zeros(E, T1 - 1, 2)
    res = score_latents(z[:16], z[16:], a[16:], states[:16], states[16:], "pusht",
                        lambda zh, acts: zh[:, -1:].expand(-1, acts.shape[1], -1), history=1)
    parts = res["probe_r2_parts"]
    assert set(parts) == {"agent", "block", "block_angle"}
    assert parts["agent"] > 0.99 and parts["block"] < 0.2 and parts["block_angle"] < 0.2
    assert parts["block"] < res["probe_r2"] < parts["agent"]
