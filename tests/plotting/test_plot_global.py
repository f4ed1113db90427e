"""plot_global() and Result.boxplot(): summaries over samples against numpy."""

from __future__ import annotations

import warnings

import numpy as np
import plotnine as p9
import pytest
import torch
from plotnine.composition import Compose
from torch import nn

import innsight as ins
from innsight.plotting import plot_global


def f64(array: object) -> np.ndarray:
    return np.asarray(array, dtype=np.float64)


def check_boxes(frame, array: np.ndarray, data_ids: list[int], labels: list[str]) -> None:
    """Box data: one row per (sample, position, node) equal to ``array (n, L, nodes)``."""
    assert len(frame) == array[data_ids].size
    node = np.array([labels.index(str(v)) for v in frame["output_node"]])
    expected = array[frame["data"].to_numpy(), frame["x"].to_numpy() - 1, node]
    np.testing.assert_allclose(frame["value"].to_numpy(), expected, rtol=1e-12, atol=1e-12)
    assert sorted(set(frame["data"])) == sorted(data_ids)


def test_tabular_boxes(tabular_result, tmp_path):
    figure = plot_global(tabular_result)
    check_boxes(figure.data, np.abs(f64(tabular_result.get_result())), list(range(5)), ["Y1", "Y2", "Y3"])
    assert isinstance(figure.layers[0].geom, p9.geoms.geom_boxplot)
    assert figure.facet.cols == ["output_node"]
    figure.save(tmp_path / "boxes.png", verbose=False)
    assert (tmp_path / "boxes.png").exists()
    raw = plot_global(tabular_result, preprocess_fun=None, data_idx=[1, 4], output_idx=1)
    check_boxes(raw.data, f64(tabular_result.get_result())[..., [1]], [1, 4], ["Y2"])


def test_signal_boxes_aggregate_after_preprocess(signal_result, tmp_path):
    array = f64(signal_result.get_result())
    figure = plot_global(signal_result, preprocess_fun=np.square, aggr_channels="sum")
    check_boxes(figure.data, (array**2).sum(1), list(range(4)), ["Y1", "Y2"])
    figure.save(tmp_path / "signal_boxes.png", verbose=False)
    assert (tmp_path / "signal_boxes.png").exists()
    per_channel = plot_global(signal_result, aggr_channels=None)
    assert set(per_channel.data["channel"]) == {"C1", "C2", "C3"}
    assert len(per_channel.data) == array.size


def test_image_mean_heatmap(image_result, tmp_path):
    array = f64(image_result.get_result())  # (n, C, H, W, nodes)
    figure = plot_global(image_result, data_idx=[0, 2], aggr_channels="mean")
    expected = np.abs(array[[0, 2]]).mean(1).mean(0)  # (H, W, nodes)
    frame = figure.data
    node = np.array([["Y1", "Y2", "Y3"].index(str(v)) for v in frame["output_node"]])
    np.testing.assert_allclose(frame["value"], expected[8 - frame["y"], frame["x"] - 1, node], rtol=1e-12)
    assert len(frame) == 8 * 8 * 3 and isinstance(figure.layers[0].geom, p9.geoms.geom_raster)
    figure.save(tmp_path / "mean.png", verbose=False)
    assert (tmp_path / "mean.png").exists()


def test_two_inputs_two_outputs(two_in_two_out_result, tmp_path):
    figure = plot_global(two_in_two_out_result)
    assert isinstance(figure, Compose)
    figure.save(tmp_path / "global.png")
    assert (tmp_path / "global.png").exists()


def test_boxplot_alias_warns_for_images(image_result, tabular_result, two_in_two_out_result):
    with pytest.warns(UserWarning, match="mean heatmaps"):
        image_result.boxplot()
    with pytest.warns(UserWarning, match="mean heatmaps"):
        two_in_two_out_result.boxplot(output_idx=[[0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figure = tabular_result.boxplot(output_idx=0)
    assert set(map(str, figure.data["output_node"])) == {"Y1"}


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"preprocess_fun": "abs"}, TypeError, "`preprocess_fun` must be a callable or None, got 'abs'"),
    ({"preprocess_fun": lambda a: a.sum()}, ValueError, r"`preprocess_fun` must keep the shape \(5, 4, 3\)"),
    ({"data_idx": "some"}, TypeError, "`data_idx` must be .* or \"all\", got 'some'"),
    ({"data_idx": [9]}, ValueError, r"`data_idx` must lie in \[0, 4\]"),
    ({"as_plotly": 1}, TypeError, "`as_plotly` must be True or False"),
])
def test_argument_errors(tabular_result, kwargs, error, match):
    with pytest.raises(error, match=match):
        plot_global(tabular_result, **kwargs)


@pytest.mark.parametrize(("preprocess_fun", "label"),
                         [(abs, "|gradient|"), (np.square, "square(gradient)"), (None, "gradient")])
def test_value_label_says_what_was_preprocessed(tabular_result, preprocess_fun, label):
    assert tabular_result.method == "Gradient" and not tabular_result.args.get("times_input")
    assert plot_global(tabular_result, preprocess_fun=preprocess_fun).labels.y == label


def test_connection_weights_without_data(tmp_path):
    """A global result with one row and NaN predictions: no sample facets, bars, no pred."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)).eval()
    cw = ins.run_cw(ins.convert(model, input_dim=[4]))
    array = f64(cw.get_result())  # (1, 4, 2)
    local = cw.plot()
    np.testing.assert_allclose(local.data["value"], array[0, local.data["x"] - 1,
                               [int(str(v)[1:]) - 1 for v in local.data["output_node"]]], rtol=1e-12)
    assert local.labels.y == "importance" and local.facet.rows == []
    texts = local.layers[-1]._data["text"].tolist()
    assert texts == [f" sum: {array[0, :, j].sum():.3g}" for j in range(2)]
    local.save(tmp_path / "cw.png", verbose=False)
    summary = plot_global(cw)
    assert isinstance(summary.layers[0].geom, p9.geoms.geom_col)  # a box of one value is a line
    check_boxes(summary.data, np.abs(array), [0], ["Y1", "Y2"])
    assert summary.labels.y == "|importance|"
    summary.save(tmp_path / "cw_global.png", verbose=False)
    boxes = plot_global(cw, as_plotly=True)
    assert [type(t).__name__ for t in boxes.data] == ["Bar", "Bar"]
    np.testing.assert_allclose(boxes.data[1].y, np.abs(array[0, :, 1]), rtol=1e-12)
    titles = [a.text for a in cw.plot(as_plotly=True).layout.annotations]
    assert "Y1" in titles and not any("sample" in t or "pred" in t for t in titles)


@pytest.mark.parametrize(("method", "kwargs", "label"), [
    ("run_lrp", {}, "relevance"), ("run_deeplift", {}, "contribution"),
    ("run_deepshap", {"data_ref": torch.zeros(3, 4)}, "contribution"),
    ("run_cw", {"times_input": True}, "importance x input"),
    ("run_intgrad", {"n": 4}, "attribution"), ("run_smoothgrad", {"n": 4}, "gradient"),
])
def test_value_names_per_method(method, kwargs, label):
    torch.manual_seed(0)
    conv = ins.convert(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval(), input_dim=[4])
    result = getattr(ins, method)(conv, torch.randn(3, 4), **kwargs)
    figure = plot_global(result, preprocess_fun=None)
    assert result.plot(data_idx=2).labels.y == label and figure.labels.y == label
    assert figure.layers[0].geom.__class__ is p9.geoms.geom_boxplot
    assert result.plot(as_plotly=True).layout.yaxis.title.text == label
