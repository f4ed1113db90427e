"""plot(): plotnine figures of single samples, checked against get_result() with numpy."""

from __future__ import annotations

import time
import warnings

import numpy as np
import plotnine as p9
import pytest
import torch
from plotnine.composition import Compose
from torch import nn

import innsight as ins
from innsight.plotting import plot
from innsight.plotting.selection import MAX_FACETS


def ggplots(figure: object) -> list[p9.ggplot]:
    """The ggplot objects of a plot or composition, in reading order."""
    if isinstance(figure, p9.ggplot):
        return [figure]
    return [g for item in figure for g in ggplots(item)]


def check_values(frame, array: np.ndarray, data_ids: list[int], labels: list[str]) -> None:
    """``frame`` rows equal ``array`` ``(n_data, *spatial, n_nodes)`` at their positions."""
    assert len(frame) == array[data_ids].size
    d = np.array([data_ids.index(i) for i in frame["data"]])
    node = np.array([labels.index(str(v)) for v in frame["output_node"]])
    if array.ndim == 4:  # image: rows y counted from the bottom
        height = array.shape[1]
        expected = array[data_ids][d, height - frame["y"].to_numpy(), frame["x"].to_numpy() - 1, node]
    else:
        expected = array[data_ids][d, frame["x"].to_numpy() - 1, node]
    np.testing.assert_allclose(frame["value"].to_numpy(), expected, rtol=1e-12, atol=1e-12)


def f64(array: object) -> object:
    """Arrays of get_result() in float64 (the plots aggregate in float64), nested lists kept."""
    if isinstance(array, list):
        return [f64(a) for a in array]
    return np.asarray(array, dtype=np.float64)


def save(figure: object, path) -> None:
    figure.save(path, verbose=False) if isinstance(figure, p9.ggplot) else figure.save(path)
    assert path.exists() and path.stat().st_size > 1000


def test_tabular_bars(tabular_result, tmp_path):
    figure = plot(tabular_result, data_idx=[0, 3])
    assert isinstance(figure, p9.ggplot)
    save(figure, tmp_path / "tab.png")
    check_values(figure.data, tabular_result.get_result(), [0, 3], ["Y1", "Y2", "Y3"])
    assert list(figure.data["output_node"].cat.categories) == ["Y1", "Y2", "Y3"]
    assert isinstance(figure.layers[0].geom, p9.geoms.geom_col)
    assert (figure.data["sign"] == np.where(figure.data["value"] >= 0, "positive", "negative")).all()
    assert figure.facet.rows == ["data"] and figure.facet.cols == ["output_node"]
    assert figure.labels.title == "Gradient" and figure.labels.y == "gradient"


def test_annotation_has_pred_sum_and_goal(tabular_result, image_result):
    frame = tabular_result.get_result("data.frame")
    label = plot(tabular_result, data_idx=1, output_idx=[2]).layers[-1]
    assert isinstance(label.geom, p9.geoms.geom_label)
    row = frame[(frame["data"] == 1) & (frame["output_node"] == "Y3")].iloc[0]
    assert label._data["text"].tolist() == [f" pred: {row.pred:.3g}\n sum: {row.decomp_sum:.3g}"]
    frame = image_result.get_result("data.frame")  # integrated gradient has a goal
    row = frame[(frame["data"] == 0) & (frame["output_node"] == "Y1")].iloc[0]
    text = plot(image_result, output_idx=0).layers[-1]._data["text"].tolist()
    assert text == [f" pred: {row.pred:.3g}\n sum: {row.decomp_sum:.3g}\n goal: {row.decomp_goal:.3g}"]
    assert not any(isinstance(layer.geom, p9.geoms.geom_label)
                   for layer in plot(image_result, show_preds=False).layers)


@pytest.mark.parametrize("aggr", [None, "sum", "mean", "norm", lambda a: a.max(axis=0)])
def test_signal_lines(signal_result, aggr, tmp_path):
    figure = plot(signal_result, data_idx=2, aggr_channels=aggr)
    array = f64(signal_result.get_result())  # (n, C, L, nodes)
    reference = {None: None, "sum": array.sum(1), "mean": array.mean(1),
                 "norm": np.sqrt((array**2).sum(1))}.get(aggr) if not callable(aggr) else array.max(1)
    frame = figure.data
    if aggr is None:
        channel = np.array([int(str(c)[1:]) - 1 for c in frame["channel"]])
        per_channel = np.moveaxis(array, 1, -1)  # (n, L, nodes, C)
        np.testing.assert_allclose(frame["value"], per_channel[2, frame["x"] - 1,
                                   [["Y1", "Y2"].index(str(v)) for v in frame["output_node"]], channel])
        assert set(frame["channel"]) == {"C1", "C2", "C3"}
    else:
        check_values(frame, reference, [2], ["Y1", "Y2"])
    assert isinstance(figure.layers[1].geom, p9.geoms.geom_line)
    assert figure.labels.y == "gradient x input"
    if aggr in (None, "norm"):
        save(figure, tmp_path / "signal.png")


@pytest.mark.parametrize("aggr", ["sum", "norm"])
def test_image_heatmap(image_result, aggr, tmp_path):
    figure = plot(image_result, data_idx=[1, 2], output_label=["Y3", "Y1"], aggr_channels=aggr)
    array = f64(image_result.get_result())  # (n, C, H, W, nodes)
    reduced = array.sum(1) if aggr == "sum" else np.sqrt((array**2).sum(1))
    check_values(figure.data, reduced[..., [2, 0]], [1, 2], ["Y3", "Y1"])
    assert list(figure.data["output_node"].cat.categories) == ["Y3", "Y1"]
    assert isinstance(figure.layers[0].geom, p9.geoms.geom_raster)
    save(figure, tmp_path / "image.png")


def test_same_scale(image_result, tabular_result):
    array = f64(image_result.get_result()).sum(1)[[0]]
    bound = np.abs(array).max()
    scale = plot(image_result, same_scale=True).scales.get_scales("fill")
    np.testing.assert_allclose(scale.limits, (-bound, bound))
    assert plot(image_result).scales.get_scales("fill").limits is None
    assert plot(tabular_result, same_scale=True).facet.free == {"x": False, "y": False}
    assert plot(tabular_result).facet.free["y"]


def test_two_inputs_two_outputs_compose(two_in_two_out_result, tmp_path):
    result = two_in_two_out_result
    figure = plot(result, data_idx=[0, 2])
    assert isinstance(figure, Compose)
    save(figure, tmp_path / "composed.png")
    plots = ggplots(figure)
    arrays = f64(result.get_result())  # [output layer][input layer]
    expected = [(arrays[0][0].sum(1), ["Y1", "Y3"]), (arrays[0][1], ["Y1", "Y3"]),
                (arrays[1][0].sum(1), ["Y2"]), (arrays[1][1], ["Y2"])]
    assert len(plots) == 4
    for plot_, (array, labels) in zip(plots, expected):
        check_values(plot_.data, array, [0, 2], labels)
        assert sorted(set(map(str, plot_.data["output_node"]))) == sorted(labels)
    one_output = plot(result, output_idx=[None, [1]])
    assert [set(map(str, g.data["output_node"])) for g in ggplots(one_output)] == [{"Y2"}, {"Y2"}]


def _shown_nodes(figure) -> list[list[str]]:
    return [sorted(set(map(str, g.data["output_node"]))) for g in ggplots(figure)]


def test_output_label_means_what_it_means_in_run(two_in_two_out_result):
    # a flat list selects in the first output layer (as in run_*); a list per output
    # layer reaches the others
    assert _shown_nodes(plot(two_in_two_out_result, output_label=["Y3"])) == [["Y3"], ["Y3"]]
    assert _shown_nodes(plot(two_in_two_out_result, output_label=[["Y3"], ["Y2"]])) == [
        ["Y3"], ["Y3"], ["Y2"], ["Y2"]]
    with pytest.raises(ValueError, match=r"`output_label` \['Y2'\] not found in output layer 0"):
        plot(two_in_two_out_result, output_label=["Y3", "Y2"])


@pytest.mark.parametrize("kwargs", [{"output_idx": [2, 2]}, {"output_label": ["Y3", "Y3"]}])
def test_repeated_nodes_are_refused_as_in_run(two_in_two_out, two_in_two_out_result, kwargs):
    match = r"has repeated output nodes in output layer 0"
    with pytest.raises(ValueError, match=match):
        plot(two_in_two_out_result, **kwargs)
    conv = ins.convert(two_in_two_out, input_dim=[[2, 6, 6], [4]])
    with pytest.raises(ValueError, match=match):
        ins.run_grad(conv, [torch.zeros(1, 2, 6, 6), torch.zeros(1, 4)], **kwargs)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"data_idx": 5}, ValueError, r"`data_idx` must lie in \[0, 4\].*got \[5\]"),
    ({"data_idx": [0, -1]}, ValueError, r"`data_idx`.*got \[-1\]"),
    ({"data_idx": "all"}, TypeError, "`data_idx` must be an int or a non-empty list of ints, got 'all'"),
    ({"data_idx": []}, TypeError, "`data_idx`"),
    ({"data_idx": 1.0}, TypeError, "`data_idx`"),
    ({"output_idx": 7}, ValueError, r"`output_idx` \[7\] not found in output layer 0: only \[0, 1, 2\] were computed"),
    ({"output_idx": [[0], [1]]}, ValueError, "`output_idx` has 2 entries per output layer but the model has 1"),
    ({"output_idx": "Y1"}, TypeError, "`output_idx` must be an int, a list of them"),
    ({"output_idx": [[0, "a"]]}, TypeError, "`output_idx` must be an int, a list of them"),
    ({"output_label": "Y9"}, ValueError, r"`output_label` \['Y9'\] not found in output layer 0"),
    ({"output_label": [["Y9"]]}, ValueError, r"`output_label` \['Y9'\] not found in output layer 0"),
    ({"output_idx": 0, "output_label": "Y1"}, ValueError, "either `output_idx` or `output_label`"),
    ({"output_idx": [None]}, ValueError, "`output_idx` selects no output node"),
    ({"same_scale": "yes"}, TypeError, "`same_scale` must be True or False"),
])
def test_argument_errors(tabular_result, kwargs, error, match):
    with pytest.raises(error, match=match):
        plot(tabular_result, **kwargs)


def test_aggr_channels_errors(image_result, signal_result):
    with pytest.raises(ValueError, match=r"`aggr_channels` must be one of \['sum', 'mean', 'norm'\].*got 'max'"):
        plot(image_result, aggr_channels="max")
    with pytest.raises(ValueError, match="`aggr_channels` must be one of.*for image inputs, got None"):
        plot(image_result, aggr_channels=None)
    with pytest.raises(ValueError, match=r"must return an array of shape \(8, 8\).*got shape \(3, 8\)"):
        plot(image_result, aggr_channels=lambda a: a.sum(axis=1))
    with pytest.raises(ValueError, match=r"must return an array of shape \(12,\)"):
        plot(signal_result, aggr_channels=lambda a: a)


def test_result_plot_method_and_large_heatmap_ticks(image_result):
    figure = image_result.plot(data_idx=[0, 1], output_idx=[0, 1])
    assert sorted(set(map(str, figure.data["output_node"]))) == ["Y1", "Y2"]
    x_scale = figure.scales.get_scales("x")
    assert len(x_scale.breaks) <= 5 and x_scale.labels[0] == "W1"


def test_many_image_facets_become_one_mosaic(many_images, tmp_path):
    assert MAX_FACETS == 50
    with pytest.warns(UserWarning, match="the 60 heatmaps are drawn as one mosaic"):
        figure = plot(many_images, data_idx=list(range(20)))
    array = f64(many_images.get_result())[:, 0]  # (20, 8, 8, 3)
    frame = figure.data
    assert len(frame) == 20 * 8 * 3 * 8
    row, col = 20 * 8 - frame["y"].to_numpy(), frame["x"].to_numpy() - 1
    np.testing.assert_allclose(frame["value"], array[row // 8, row % 8, col % 8, col // 8], rtol=1e-12)
    x_scale, y_scale = figure.scales.get_scales("x"), figure.scales.get_scales("y")
    assert list(x_scale.labels) == ["Y1", "Y2", "Y3"] and list(x_scale.breaks) == [4.5, 12.5, 20.5]
    assert y_scale.labels[:2] == ["sample 0", "sample 1"] and y_scale.breaks[0] == 19 * 8 + 4.5
    assert isinstance(figure.layers[0].geom, p9.geoms.geom_raster)
    assert not any(isinstance(layer.geom, p9.geoms.geom_label) for layer in figure.layers)
    save(figure, tmp_path / "mosaic.png")
    with warnings.catch_warnings():  # 16 x 3 = 48 facets: drawn one by one, no warning
        warnings.simplefilter("error")
        facets = plot(many_images, data_idx=list(range(16)))
    assert facets.facet.rows == ["data"] and len(facets.data) == 16 * 8 * 8 * 3


def test_many_tabular_facets_warn(tabular_result):
    with pytest.warns(UserWarning, match=r"draws 60 facets, which is slow"):
        plot(tabular_result, data_idx=[0, 1, 2, 3, 4] * 4)


def test_hundred_samples_by_ten_outputs_is_one_raster():
    """Issue 7's size: 100 samples x 10 outputs of 28 x 28 images. One raster layer
    instead of 1000 facets (docs/time_plots.py times the PNG: ~5-8 s on 2 cores)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 26 * 26, 10)).eval()
    result = ins.run_grad(ins.convert(model, input_dim=[1, 28, 28]), torch.randn(100, 1, 28, 28),
                          output_idx=list(range(10)))
    start = time.perf_counter()
    with pytest.warns(UserWarning, match="1000 heatmaps are drawn as one mosaic"):
        figure = plot(result, data_idx=list(range(100)))
    assert time.perf_counter() - start < 5
    assert figure.facet.__class__.__name__ == "facet_null" and len(figure.data) == 100 * 28 * 10 * 28
    array = f64(result.get_result())[:, 0]  # (100, 28, 28, 10)
    row, col = 100 * 28 - figure.data["y"].to_numpy(), figure.data["x"].to_numpy() - 1
    np.testing.assert_allclose(figure.data["value"], array[row // 28, row % 28, col % 28, col // 28])
    width, height = figure.theme.getp("figure_size")
    assert height <= 25 and width < 10
