"""Metrics on a linear model ``f(x) = w.x + b``, against their closed forms.

For a linear model every perturbed output is known exactly: removing the features
``S`` (setting them to the baseline ``r``) gives ``f(x) - sum_{i in S} w_i (x_i - r_i)``.
The references below are written with numpy from ``w``, ``b``, ``x`` and the
definitions alone.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import innsight as ins

P = 6


@pytest.fixture
def linear() -> nn.Linear:
    model = nn.Linear(P, 1).double().eval()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.5, -2.0, 0.5, 3.0, -0.25, 1.0]]))
        model.bias.fill_(0.3)
    return model


@pytest.fixture
def x() -> torch.Tensor:
    return torch.tensor([[1.0, 0.5, -2.0, 0.2, 4.0, -1.0],
                         [-0.5, 1.5, 1.0, -1.0, 2.0, 0.25]], dtype=torch.float64)


def _params(linear: nn.Linear) -> tuple[np.ndarray, float]:
    return linear.weight.detach().numpy()[0], linear.bias.item()


def _flip_curve(w, b, x, ref, scores, step, inserting=False, descending=True):
    """The output after removing (or inserting) players in the order of ``scores``,
    ``step`` at a time, from no player changed to all; players are single features."""
    order = np.argsort(-scores if descending else scores, kind="stable")
    counts = [*range(0, len(x), step), len(x)]
    curve = []
    for k in counts:
        changed = np.zeros(len(x), bool)
        changed[order[:k]] = True
        inputs = np.where(changed, x, ref) if inserting else np.where(changed, ref, x)
        curve.append(w @ inputs + b)
    return np.array(curve), np.array(counts) / len(x)


@pytest.mark.parametrize("metric", ["deletion", "insertion", "deletion_lerf", "insertion_lerf"])
@pytest.mark.parametrize("baseline", ["zeros", "mean", 0.7, "reference"])
def test_flipping_curves(linear, x, metric, baseline):
    w, b = _params(linear)
    conv = ins.convert(linear, input_dim=[P], dtype="double")
    res = ins.run_grad(conv, x, times_input=True, dtype="double")
    reference = np.linspace(-1, 1, P)
    spec = torch.tensor(reference)[None] if baseline == "reference" else baseline
    cls = ins.metrics.Insertion if metric.startswith("insertion") else ins.metrics.Deletion
    lerf = metric.endswith("lerf")
    chosen = cls(baseline=spec, features_in_step=2,
                 order="least_relevant_first" if lerf else "most_relevant_first")
    scores = ins.evaluate(res, [chosen])
    curves = scores.attrs["curves"]
    assert list(scores["metric"]) == [metric] * 2
    for i, sample in enumerate(x.numpy()):
        ref = {"zeros": np.zeros(P), "mean": np.full(P, sample.mean()),
               0.7: np.full(P, 0.7), "reference": reference}[baseline]
        expected, fractions = _flip_curve(w, b, sample, ref, w * sample, 2,
                                          inserting=cls is ins.metrics.Insertion,
                                          descending=not lerf)
        ours = curves[curves["data"] == i].sort_values("step")
        np.testing.assert_allclose(ours["value"], expected, atol=1e-12)
        np.testing.assert_allclose(ours["x"], fractions, atol=1e-12)
        area = np.sum((expected[1:] + expected[:-1]) / 2 * np.diff(fractions))
        np.testing.assert_allclose(scores["value"][i], area, atol=1e-12)


def test_feature_groups_flip_together(linear, x):
    w, b = _params(linear)
    conv = ins.convert(linear, input_dim=[P], dtype="double")
    res = ins.run_grad(conv, x, times_input=True, dtype="double")
    groups = np.array([0, 0, 1, 1, 2, 2])
    curves = ins.evaluate(res, [ins.metrics.Deletion(feature_groups=groups, features_in_step=1)]
                          ).attrs["curves"]
    for i, sample in enumerate(x.numpy()):
        contributions = (w * sample).reshape(3, 2).sum(1)  # per group
        order = np.argsort(-contributions, kind="stable")
        expected = [w @ sample + b]
        for k in range(1, 4):
            expected.append(expected[0] - contributions[order[:k]].sum())
        np.testing.assert_allclose(curves[curves["data"] == i]["value"], expected, atol=1e-12)


def test_faithfulness_correlation_is_one_for_gradient_times_input(linear, x):
    conv = ins.convert(linear, input_dim=[P], dtype="double")
    res = ins.run_grad(conv, x, times_input=True, dtype="double")
    scores = ins.evaluate(res, [ins.metrics.FaithfulnessCorrelation(n=20, subset_size=2)], seed=0)
    # the relevance removed, sum_S w_i x_i, is exactly the output drop
    np.testing.assert_allclose(scores["value"], 1.0, atol=1e-12)


def test_infidelity(linear, x):
    w, _ = _params(linear)
    conv = ins.convert(linear, input_dim=[P], dtype="double")
    exact = ins.run_grad(conv, x, dtype="double")  # w: I.w is exactly f(x) - f(x - I)
    doubled = ins.run_grad(conv, x, dtype="double")
    doubled.values[0][0] = 2 * doubled.values[0][0]  # 2w: the error is (I.w)^2
    metric = ins.metrics.Infidelity(n=4000, noise=0.3)
    scores = ins.evaluate({"exact": exact, "doubled": doubled}, [metric], seed=0)
    np.testing.assert_allclose(scores[scores["method"] == "exact"]["value"], 0, atol=1e-20)
    # E (I.w)^2 = noise^2 |w|^2; the mean of 4000 draws is within a few percent
    np.testing.assert_allclose(scores[scores["method"] == "doubled"]["value"],
                               0.09 * np.sum(w**2), rtol=0.1)


def test_sensitivity(x):
    torch.manual_seed(0)
    wide = nn.Linear(400, 1).double().eval()
    data = torch.randn(3, 400, dtype=torch.float64) + 2
    conv = ins.convert(wide, input_dim=[400], dtype="double")
    metrics = ["sensitivity_max", "sensitivity_avg"]
    gradient = ins.evaluate(ins.run_grad(conv, data, dtype="double"), metrics, seed=0)
    np.testing.assert_allclose(gradient["value"], 0, atol=1e-12)  # the gradient is constant
    # connection weights do not depend on the input (one row shared by all samples)
    weights = ins.evaluate(ins.run_cw(conv, data, dtype="double"), metrics, seed=0)
    np.testing.assert_allclose(weights["value"], 0, atol=1e-12)
    # grad x input changes by w * e: ||w * e|| / ||w * x||, e ~ U(-r, r) per entry, which
    # concentrates at r ||w|| / sqrt(3) over 400 entries
    radius = 0.1
    scores = ins.evaluate(ins.run_grad(conv, data, times_input=True, dtype="double"),
                          [ins.metrics.Sensitivity(a, n=20, radius=radius) for a in ("max", "avg")],
                          seed=0)
    w = wide.weight.detach().numpy()[0]
    expected = radius * np.linalg.norm(w) / math.sqrt(3) / np.linalg.norm(w * data.numpy(), axis=1)
    for label in metrics:
        np.testing.assert_allclose(scores[scores["metric"] == label]["value"], expected, rtol=0.08)
    high, mean = (scores[scores["metric"] == m]["value"].to_numpy() for m in metrics)
    assert np.all(high >= mean)


def test_completeness(linear, x):
    conv = ins.convert(linear, input_dim=[P], dtype="double")
    results = {"IntegratedGradient": ins.run_intgrad(conv, x, n=5, dtype="double"),
               "Gradient": ins.run_grad(conv, x, dtype="double")}
    scores = ins.evaluate(results, ["completeness"])
    assert set(scores["method"]) == {"IntegratedGradient"}  # Gradient has no goal: no rows
    np.testing.assert_allclose(scores["value"], 0, atol=1e-12)  # exact on a linear model
    w, b = _params(linear)
    half = ins.run_intgrad(conv, x, n=5, dtype="double")
    half.values[0][0] = half.values[0][0] / 2
    half.decomp_sum = [v.sum(1) for v in half.values[0]]
    gap = ins.evaluate(half, ["completeness"])["value"]
    np.testing.assert_allclose(gap, 0.5, atol=1e-12)  # half the goal f(x) - f(0) is missing


@pytest.mark.parametrize(("values", "sparseness", "entropy"), [
    (np.eye(1, 8)[0], 7 / 8, 0.0),  # one entry holds everything
    (np.full(8, -2.0), 0.0, math.log(8)),  # all equal
    (np.array([1.0, 1, 2, 2, 0, 0, 0, 0]), None, None),
])
def test_sparseness_and_complexity_closed_forms(given, values, sparseness, entropy):
    model = nn.Linear(8, 2).eval()
    res = given(ins.convert(model, input_dim=[8]), torch.zeros(1, 8),
                values=torch.tensor(values)[None, :, None], output_idx=0)
    a = np.sort(np.abs(values))
    if sparseness is None:  # the Gini index from its mean-difference definition
        sparseness = np.abs(a[:, None] - a[None]).sum() / (2 * len(a) ** 2 * a.mean())
        share = a[a > 0] / a.sum()
        entropy = -(share * np.log(share)).sum()
    scores = ins.evaluate(res, ["sparseness", "complexity"]).set_index("metric")["value"]
    np.testing.assert_allclose(scores["sparseness"], sparseness, atol=1e-6)
    np.testing.assert_allclose(scores["complexity"], entropy, atol=1e-6)
