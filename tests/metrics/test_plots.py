"""Plots of metric scores: what they draw (checked against the frame's own means, computed
here with pandas), that they render, and refused arguments."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import innsight as ins


@pytest.fixture(scope="module")
def scores():
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 3)).eval()
    conv = ins.convert(model, input_dim=[3, 8, 8])
    x = torch.randn(3, 3, 8, 8)
    results = {"Gradient": ins.run_grad(conv, x, output_idx=[0, 1]),
               "IG": ins.run_intgrad(conv, x, output_idx=[0, 1], n=4)}
    return ins.evaluate(results, [ins.metrics.Deletion(features_in_step=24), "randomization",
                                  "sparseness", "completeness"], seed=0)


def test_curve_means(scores):
    means = ins.metrics.curve_means(scores)
    curves = scores.attrs["curves"]
    expected = curves.groupby(["method", "metric", "step"])["value"].mean()
    ours = means.set_index(["method", "metric", "step"])["value"]
    np.testing.assert_allclose(ours.loc[expected.index], expected)
    # filtering the frame filters the curves: sample 0, node Y2 only
    one = ins.metrics.curve_means(scores[(scores["data"] == 0) & (scores["output_node"] == "Y2")],
                                  "deletion")
    single = curves[(curves["data"] == 0) & (curves["output_node"] == "Y2")
                    & (curves["metric"] == "deletion")]
    np.testing.assert_allclose(one["value"], single["value"])


def test_table_quality_follows_direction(scores):
    table = ins.metrics.table(scores).set_index(["method", "metric"])
    means = scores.groupby(["method", "metric"])["value"].mean()
    np.testing.assert_allclose(table["value"], means.loc[table.index])
    for metric, higher in [("sparseness", True), ("randomization", False)]:
        best = means.xs(metric, level="metric").idxmax() if higher else \
            means.xs(metric, level="metric").idxmin()
        assert table.loc[(best, metric), "quality"] == 1.0
    assert table.loc[("IG", "completeness"), "quality"] == 1.0  # the only one with a goal


def test_plots_render(scores, tmp_path):
    ins.metrics.plot_curves(scores).save(tmp_path / "curves.png", dpi=40, verbose=False)
    ins.metrics.plot_table(scores).save(tmp_path / "table.png", dpi=40, verbose=False)
    figure = ins.metrics.plot_curves(scores, as_plotly=True)
    assert len(figure.data) == 4  # 2 methods x 2 curve metrics
    heat = ins.metrics.plot_table(scores, as_plotly=True).data[0]
    assert list(heat.y) == ["Gradient", "IG"] and len(heat.x) == 4


def test_refused(scores):
    with pytest.raises(TypeError, match="`scores` must be the data frame ins.evaluate"):
        ins.metrics.plot_curves(pd.DataFrame({"value": [1.0]}))
    with pytest.raises(ValueError, match=r"`metrics` must name curve metrics of `scores` "
                                         r"\['deletion', 'randomization'\], got 'insertion'"):
        ins.metrics.plot_curves(scores, "insertion")
    with pytest.raises(TypeError, match="`as_plotly` must be True or False"):
        ins.metrics.plot_table(scores, as_plotly="yes")
