"""The deterministic metrics equal Quantus' on the same model, inputs and explanations.

Conventions that differ (see :mod:`innsight.metrics.faithfulness` and
:mod:`innsight.metrics.complexity`): our deletion curve starts at the unchanged input,
which Quantus' ``PixelFlipping`` leaves out, and its area is taken over the fraction
of features removed rather than over step numbers; Quantus' ``"black"`` baseline is
our ``"min"``; Quantus offsets sparseness and entropy by 1e-7 and 1e-12.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import innsight as ins

quantus = pytest.importorskip("quantus")  # torchvision is imported first by tests/conftest.py

TOL = 1e-5
CLASS = 2


def _quantus_flipping(model, x, values, features_in_step, baseline):
    metric = quantus.PixelFlipping(features_in_step=features_in_step, perturb_baseline=baseline,
                                   normalise=False, abs=False, disable_warnings=True)
    return np.asarray(metric(model=model, x_batch=x.numpy(), y_batch=np.full(len(x), CLASS),
                             a_batch=values.numpy(), softmax=False, channel_first=True,
                             device="cpu"))


def _tie_free(images: torch.Tensor) -> torch.Tensor:
    """Explanations without ties (so that every order is unique), ``(n, 3, 8, 8, 1)``."""
    return torch.randn(images.shape, generator=torch.Generator().manual_seed(2))[..., None]


@pytest.mark.parametrize(("order", "sign", "baseline", "ours"), [
    ("most_relevant_first", 1, 0.0, "zeros"),
    ("most_relevant_first", 1, "black", "min"),
    ("least_relevant_first", -1, 0.5, 0.5),  # Quantus flips most relevant first: negate
])
def test_deletion_curve_equals_pixel_flipping(small_cnn, images, given, order, sign, baseline,
                                              ours):
    values = _tie_free(images)
    res = given(ins.convert(small_cnn, input_dim=[3, 8, 8]), images, values=values,
                output_idx=CLASS)
    metric = ins.metrics.Deletion(order=order, baseline=ours, features_in_step=8)
    scores = ins.evaluate(res, [metric])
    curves = scores.attrs["curves"]
    reference = _quantus_flipping(small_cnn, images, sign * values[..., 0], 8, baseline)
    assert reference.shape == (5, 24)
    ours_curves = curves.pivot(index="data", columns="step", values="value").to_numpy()
    np.testing.assert_allclose(ours_curves[:, 1:], reference, atol=TOL, rtol=0)
    with torch.no_grad():  # the first point is the unchanged input's logit
        np.testing.assert_allclose(ours_curves[:, 0], small_cnn(images)[:, CLASS], atol=TOL)
    # the area over fractions removed (24 equal steps) from Quantus' area over steps
    start = small_cnn(images)[:, CLASS].detach().numpy()
    area = (np.trapezoid(reference, axis=1) + (start + reference[:, 0]) / 2) / 24
    np.testing.assert_allclose(scores["value"], area, atol=TOL, rtol=0)


def test_one_feature_per_step(small_cnn, images, given):
    values = _tie_free(images)[:2]
    res = given(ins.convert(small_cnn, input_dim=[3, 8, 8]), images[:2], values=values,
                output_idx=CLASS)
    scores = ins.evaluate(res, [ins.metrics.Deletion(features_in_step=1)])
    ours = scores.attrs["curves"].pivot(index="data", columns="step", values="value").to_numpy()
    reference = _quantus_flipping(small_cnn, images[:2], values[..., 0], 1, 0.0)
    np.testing.assert_allclose(ours[:, 1:], reference, atol=TOL, rtol=0)


@pytest.mark.parametrize(("ours", "theirs"), [("sparseness", "Sparseness"),
                                              ("complexity", "Complexity")])
def test_sparseness_and_complexity(small_cnn, images, given, ours, theirs):
    values = _tie_free(images) * torch.linspace(0, 3, 8)[:, None]  # uneven magnitudes along W
    res = given(ins.convert(small_cnn, input_dim=[3, 8, 8]), images, values=values,
                output_idx=CLASS)
    reference = getattr(quantus, theirs)(disable_warnings=True)(
        model=small_cnn, x_batch=images.numpy(), y_batch=np.full(5, CLASS),
        a_batch=values[..., 0].numpy(), channel_first=True, device="cpu")
    np.testing.assert_allclose(ins.evaluate(res, [ours])["value"], reference, atol=TOL, rtol=0)
