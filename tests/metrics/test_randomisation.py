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
from skimage.metrics import structural_similarity  # installed with quantus
from torch import nn

import innsight as ins
from innsight.metrics.similarity import spearman, ssim


@pytest.mark.parametrize("similarity", ["spearman", "ssim"])
def test_gradient_changes_and_an_edge_detector_does_not(small_cnn, images, edge_detector,
                                                        similarity):
    conv = ins.convert(small_cnn, input_dim=[3, 8, 8])
    results = {"Gradient": ins.run_grad(conv, images, output_idx=[0, 1]),
               "edges": edge_detector(conv, images, output_idx=[0, 1])}
    scores = ins.evaluate(results, [ins.metrics.Randomization(similarity=similarity)], seed=0)
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


def _skimage_ssim(a: np.ndarray, b: np.ndarray, win_size: int = 7) -> float:
    """skimage's SSIM of two (C, *spatial) maps, channels apart, with the range of both
    maps as the data range (as Quantus passes it)."""
    both = np.concatenate([a.ravel(), b.ravel()])
    return structural_similarity(a, b, win_size=win_size, channel_axis=0,
                                 data_range=float(both.max() - both.min()))


@pytest.mark.parametrize("shape, win_size", [((3, 12, 9), 7), ((1, 8, 8), 3), ((2, 15), 5),
                                             ((1, 7, 8, 9), 7)])
def test_ssim_equals_skimage(shape, win_size):
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(4, *shape, generator=generator, dtype=torch.float64)
    b = a + 0.3 * torch.randn(4, *shape, generator=generator, dtype=torch.float64)
    b[1] = a[1]  # identical maps: 1
    b[2] = -a[2] + 5
    ours = ssim(a, b, win_size)
    for i in range(4):
        np.testing.assert_allclose(ours[i], _skimage_ssim(a[i].numpy(), b[i].numpy(), win_size),
                                   atol=1e-12)
    np.testing.assert_allclose(ours[1], 1.0, atol=1e-12)


def test_random_logit_ssim_equals_skimage_on_the_maps(small_cnn, images):
    conv = ins.convert(small_cnn, input_dim=[3, 8, 8], dtype="double")
    res = ins.run_grad(conv, images.double(), output_idx=[0, 2], dtype="double")
    metric = ins.metrics.RandomLogit(similarity="ssim", absolute=False)
    scores = ins.evaluate(res, [metric], seed=0)
    assert set(scores["metric"]) == {"random_logit_ssim"}
    # the other node drawn for each explained one, recovered by rerunning on every node
    every = ins.run_grad(conv, images.double(), output_idx=[0, 1, 2, 3], dtype="double")
    values = every.get_result()  # (5, 3, 8, 8, 4)
    for row in scores.itertuples():
        node = int(row.output_node[1:]) - 1
        candidates = [_skimage_ssim(values[row.data, ..., node], values[row.data, ..., other])
                      for other in range(4) if other != node]
        assert min(abs(row.value - c) for c in candidates) < 1e-10


def test_ssim_needs_maps_as_large_as_its_window(small_cnn, images):
    conv = ins.convert(small_cnn, input_dim=[3, 8, 8])
    with pytest.raises(ValueError, match="`similarity='ssim'`.*at least `win_size` \\(9\\)"):
        ins.evaluate(ins.run_grad(conv, images, output_idx=[0]),
                     [ins.metrics.RandomLogit(similarity="ssim", win_size=9)])
    tabular = ins.convert(nn.Linear(3, 2).eval(), input_dim=[3])
    with pytest.raises(ValueError, match="`similarity='ssim'`.*shape \\[\\(3,\\)\\]"):
        ins.evaluate(ins.run_grad(tabular, torch.randn(2, 3)), ["random_logit_ssim"])


@pytest.mark.parametrize("kwargs, match", [({"similarity": "cosine"}, "`similarity` must be one"),
                                           ({"win_size": 4}, "`win_size` must be an odd int"),
                                           ({"win_size": 1}, "`win_size` must be an odd int")])
def test_similarity_settings_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ins.metrics.Randomization(**kwargs)
