"""Rectified flow: time sampling, targets, and that the sampler integrates the true ODE."""
import math

import pytest
import torch

from worldmodel.flow import FlowConfig, RectifiedFlow, resolution_shift


def test_resolution_shift_formula():
    assert resolution_shift(16, 256) == pytest.approx(1.0)
    assert resolution_shift(256, 768) == pytest.approx(math.sqrt(256 * 768 / 4096))


def test_shift_moves_time_toward_noise():
    g = torch.Generator().manual_seed(0)
    low = RectifiedFlow(FlowConfig(shift=1.0), 16, 16).sample_t(20000, generator=g)
    g = torch.Generator().manual_seed(0)
    high = RectifiedFlow(FlowConfig(shift=4.0), 16, 16).sample_t(20000, generator=g)
    assert 0 < float(low.min()) and float(low.max()) < 1
    assert abs(float(low.mean()) - 0.5) < 0.02          # logit-normal(0,1) is symmetric
    assert float(high.mean()) < float(low.mean()) - 0.15  # shift > 1: more noise (t -> 0)


def test_interpolate_endpoints():
    x, eps = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    f = RectifiedFlow(FlowConfig(), 4, 5)
    assert torch.allclose(f.interpolate(x, eps, torch.ones(3)), x)
    assert torch.allclose(f.interpolate(x, eps, torch.zeros(3)), eps)


@pytest.mark.parametrize("prediction", ["x", "v"])
@pytest.mark.parametrize("steps", [1, 4, 25])
def test_sampler_with_exact_predictor_recovers_data(prediction, steps):
    """With the exact conditional prediction for a point mass at x*, sampling returns x*."""
    f = RectifiedFlow(FlowConfig(prediction=prediction, shift=2.0), 4, 3)
    x_star = torch.randn(2, 4, 3)

    def predict(z, t):
        tt = t.reshape(-1, 1, 1)
        eps = (z - tt * x_star) / (1 - tt)   # invert z = t x* + (1-t) eps
        return x_star if prediction == "x" else x_star - eps

    out = f.sample(predict, torch.randn(2, 4, 3), steps=steps)
    assert torch.allclose(out, x_star, atol=1e-4)


def test_sampler_integrates_gaussian_flow():
    """Data ~ N(m, s^2): the exact x-prediction E[x|z_t] transports N(0,1) noise to the data law."""
    m, s = 2.0, 0.5
    f = RectifiedFlow(FlowConfig(prediction="x", shift=1.0), 1, 1)

    def predict(z, t):
        tt = t.reshape(-1, 1, 1)
        var = tt**2 * s**2 + (1 - tt) ** 2
        return m + tt * s**2 * (z - tt * m) / var   # posterior mean of x given z_t

    torch.manual_seed(0)
    out = f.sample(predict, torch.randn(20000, 1, 1), steps=50)
    assert abs(float(out.mean()) - m) < 0.03
    assert abs(float(out.std()) - s) < 0.03


def test_cfg_mixes_predictions():
    f = RectifiedFlow(FlowConfig(prediction="x"), 2, 2)
    a, b = torch.ones(1, 2, 2), torch.zeros(1, 2, 2)
    out = f.sample(lambda z, t: a, torch.randn(1, 2, 2), steps=1, cfg_scale=3.0,
                   predict_uncond=lambda z, t: b)
    assert torch.allclose(out, 3.0 * a)


def test_loss_targets():
    f_x = RectifiedFlow(FlowConfig(prediction="x"), 2, 2)
    f_v = RectifiedFlow(FlowConfig(prediction="v"), 2, 2)
    x, eps = torch.randn(1, 2, 2), torch.randn(1, 2, 2)
    assert torch.equal(f_x.loss(x, x, eps), torch.zeros_like(x))
    assert torch.equal(f_v.loss(x - eps, x, eps), torch.zeros_like(x))
    with pytest.raises(ValueError, match="prediction"):
        FlowConfig(prediction="eps")
