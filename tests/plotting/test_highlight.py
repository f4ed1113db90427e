"""plot_global(ref_data_idx=...): one sample highlighted among the box plots (as innsight
R's boxplot(ref_data_idx=)), in plotnine and plotly; expected values from get_result()."""

from __future__ import annotations

import numpy as np
import plotnine as p9
import pytest
import torch
from torch import nn

import innsight as ins

go = pytest.importorskip("plotly.graph_objects")


@pytest.fixture(scope="module")
def tabular():
    torch.manual_seed(0)
    conv = ins.convert(nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).eval(),
                       input_dim=[5])
    return ins.run_grad(conv, torch.randn(12, 5), times_input=True)


def points(figure: p9.ggplot):
    return next(layer._data for layer in figure.layers if isinstance(layer.geom, p9.geom_point))


def test_plotnine_draws_the_sample_over_the_boxes(tabular, tmp_path):
    figure = tabular.plot_global(ref_data_idx=7, output_idx=[0, 2])
    frame = points(figure)
    expected = np.abs(tabular.get_result())[7][:, [0, 2]]   # (features, nodes shown) of sample 7
    node = frame["output_node"].cat.codes.to_numpy()
    np.testing.assert_allclose(frame["value"], expected[frame["x"].to_numpy() - 1, node], rtol=1e-6)
    assert set(frame["output_node"]) == {"Y1", "Y3"} and set(frame["data"]) == {7}
    assert figure.labels.caption == "orange: sample 7"
    figure.save(tmp_path / "highlight.png", verbose=False)


def test_highlight_follows_top_k_and_normalize(tabular):
    array = np.abs(tabular.get_result())                  # (n, features, nodes)
    frame = points(tabular.plot_global(ref_data_idx=3, top_k=2, normalize=True))
    order = np.argsort(-array.mean(axis=(0, 2)))[:2]
    expected = array[3][order] / array.max(axis=(0, 1))
    node = frame["output_node"].cat.codes.to_numpy()
    np.testing.assert_allclose(frame["value"], expected[frame["x"].to_numpy() - 1, node], rtol=1e-6)


def test_plotly_adds_one_marker_trace_per_facet(tabular):
    figure = tabular.boxplot(ref_data_idx=4, as_plotly=True, preprocess_fun=None)
    marks = [t for t in figure.data if isinstance(t, go.Scatter)]
    assert [t.name for t in marks] == ["sample 4"] * 3 and [t.showlegend for t in marks] == [True, False, False]
    for j, trace in enumerate(marks):
        np.testing.assert_allclose(trace.y, tabular.get_result()[4, :, j], rtol=1e-6)


def test_signals_get_a_line_per_kept_channel():
    torch.manual_seed(1)
    conv = ins.convert(nn.Sequential(nn.Conv1d(2, 3, 3), nn.Flatten(), nn.Linear(3 * 6, 2)).eval(),
                       input_dim=[2, 8])
    res = ins.run_grad(conv, torch.randn(6, 2, 8))
    figure = res.plot_global(ref_data_idx=2, aggr_channels=None)
    line = next(layer._data for layer in figure.layers if isinstance(layer.geom, p9.geom_line))
    expected = np.abs(res.get_result())[2]                # (channels, length, nodes)
    channel = line["channel"].cat.codes.to_numpy()
    node = line["output_node"].cat.codes.to_numpy()
    np.testing.assert_allclose(line["value"], expected[channel, line["x"].to_numpy() - 1, node],
                               rtol=1e-6)
    plotly = res.plot_global(ref_data_idx=2, as_plotly=True)   # channels summed
    marks = [t for t in plotly.data if isinstance(t, go.Scatter)]
    np.testing.assert_allclose(marks[0].y, np.abs(res.get_result())[2].sum(0)[:, 0], rtol=1e-6)


def test_comparison_highlights_each_model(tabular):
    cmp = ins.compare_models({"a": tabular.converter, "b": tabular.converter},
                             tabular.data[0][:4], method="Gradient", output_idx=[0])
    frame = points(cmp.plot_global(ref_data_idx=1))
    assert list(frame["output_node"].cat.categories) == ["Y1 (a)", "Y1 (b)"]
    expected = np.abs(cmp.results["a"].get_result()[1, :, 0])   # both models: the same values
    np.testing.assert_allclose(frame["value"], expected[frame["x"].to_numpy() - 1], rtol=1e-6)
    assert len(frame) == 2 * 5


@pytest.mark.parametrize("ref", [12, -1, 1.5, True, "3"])
def test_bad_ref_data_idx(tabular, ref):
    with pytest.raises(ValueError, match=r"`ref_data_idx` must be an int in \[0, 11\]"):
        tabular.plot_global(ref_data_idx=ref)


def test_images_refuse_ref_data_idx():
    conv = ins.convert(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 2)).eval(),
                       input_dim=[1, 6, 6])
    with pytest.raises(ValueError, match=r"image inputs are drawn as mean heatmaps: plot one "
                                         r"sample's heatmaps with plot\(data_idx=0\)"):
        ins.run_grad(conv, torch.randn(3, 1, 6, 6)).plot_global(ref_data_idx=0)
