"""Sanity checks: cascading randomisation and random logits, and the rank correlation.

The published pattern (Adebayo et al. 2018): a gradient's similarity to the original
explanation drops as the model's layers are randomised from the top, while an edge
detector, which never looks at the model, keeps similarity 1 at every step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

import innsight as ins
from innsight.metrics.randomisation import spearman


def test_gradient_changes_and_an_edge_detector_does_not(small_cnn, images, edge_detector):
    conv = ins.convert(small_cnn, input_dim=[3, 8, 8])
    results = {"Gradient": ins.run_grad(conv, images, output_idx=[0, 1]),
               "edges": edge_detector(conv, images, output_idx=[0, 1])}
    scores = ins.evaluate(results, ["randomization"], seed=0)
    curves = scores.attrs["curves"]
    # the three weighted layers (torch names "6", "2", "0"), randomised from the output down
    assert list(curves.drop_duplicates("step")["label"]) == ["6", "2", "0"]
    by_method = curves.groupby(["method", "step"])["value"].mean()
    np.testing.assert_allclose(by_method["edges"], 1.0, atol=1e-12)
    assert by_method["Gradient"].max() < 0.6  # the top layer alone changes the gradient much
    assert (scores[scores["method"] == "Gradient"]["value"] < 0.6).all()
    # the randomised copy is a copy: the converted model is untouched
    with torch.no_grad():
        torch.testing.assert_close(conv.model(images), small_cnn(images))


def test_random_logit(small_cnn, images, edge_detector):
    conv = ins.convert(small_cnn, input_dim=[3, 8, 8])
    scores = ins.evaluate({"Gradient": ins.run_grad(conv, images),
                           "edges": edge_detector(conv, images)}, ["random_logit"], seed=0)
    edges = scores[scores["method"] == "edges"]["value"]
    np.testing.assert_allclose(edges, 1.0, atol=1e-12)  # the same map for every class
    assert scores[scores["method"] == "Gradient"]["value"].mean() < 0.9


def test_spearman_with_ties_equals_scipy():
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(0, 4, (3, 50, 2), generator=generator).double()  # many ties
    b = a + torch.randint(0, 3, (3, 50, 2), generator=generator).double()
    ours = spearman(a, b)
    for i in range(3):
        for k in range(2):
            expected = stats.spearmanr(a[i, :, k], b[i, :, k]).statistic
            np.testing.assert_allclose(ours[i, k], expected, atol=1e-12)


def test_randomization_needs_a_converted_model(small_cnn, images):
    res = ins.run_shap(small_cnn, images[:2], images, n=2, output_idx=0,
                       feature_groups=np.arange(4).repeat(16).reshape(1, 8, 8))
    with pytest.raises(ValueError, match="randomization.*convert the model"):
        ins.evaluate(res, ["randomization"])


def test_random_logit_needs_two_nodes():
    conv = ins.convert(nn.Linear(3, 1).eval(), input_dim=[3])
    with pytest.raises(ValueError, match="random_logit.*two or more nodes.*has 1"):
        ins.evaluate(ins.run_grad(conv, torch.randn(2, 3)), ["random_logit"])
