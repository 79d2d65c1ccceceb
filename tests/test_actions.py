"""envs.actions.check_action: the one action rule of every env (no MuJoCo, no model)."""
import numpy as np
import pytest
import torch
from gymnasium import spaces

from envs.actions import ACTION_TOLERANCE, check_action

SPACE = spaces.Box(np.float32(-2.0), np.float32(2.0), (2,), np.float32)


def test_float_arrays_lists_and_tensors_pass_as_float64():
    for a in (np.array([0.5, -1.0], np.float32), [0.5, -1.0], [0, 1], torch.tensor([0.5, -1.0])):
        out = check_action(a, SPACE)
        assert out.dtype == np.float64 and out.shape == (2,)
    assert check_action(np.zeros((3, 2), np.float32), SPACE, batch=3).shape == (3, 2)


def test_the_tolerance_is_relative_to_the_bound_and_clips():
    edge = 2.0 * (1 + 0.5 * ACTION_TOLERANCE)  # inside max(1, |high|) * tolerance: clipped to the bound
    assert check_action(np.array([edge, -edge]), SPACE).tolist() == [2.0, -2.0]
    with pytest.raises(ValueError, match="out of bounds"):
        check_action(np.array([2.0 * (1 + 2 * ACTION_TOLERANCE), 0.0]), SPACE)


def test_integer_arrays_and_non_numbers_are_refused():
    for a, msg in ((np.zeros(2, np.int32), "dtype int32, expected a float"),
                   (np.zeros(2, bool), "dtype bool, expected a float"),
                   ("up", "is a string"), (["a", "b"], "not numeric"),
                   (np.zeros(3, np.float32), r"shape \(3,\), expected \(2,\)")):
        with pytest.raises(ValueError, match=msg):
            check_action(a, SPACE)
