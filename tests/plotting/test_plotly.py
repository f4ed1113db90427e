"""as_plotly=True: plotly figures, their traces and hover texts against get_result()."""

from __future__ import annotations

import sys

import numpy as np
import pytest

go = pytest.importorskip("plotly.graph_objects")

from innsight.plotting import plot, plot_global  # noqa: E402


def f64(array: object) -> np.ndarray:
    return np.asarray(array, dtype=np.float64)


def test_tabular_bars_and_hover(tabular_result):
    figure = plot(tabular_result, data_idx=[0, 2], output_idx=[0, 2], as_plotly=True)
    assert isinstance(figure, go.Figure)
    array = f64(tabular_result.get_result())
    preds = tabular_result.get_result("data.frame").groupby(["data", "output_node"])["pred"].first()
    assert len(figure.data) == 4  # 2 samples x 2 nodes
    for trace, (d, j) in zip(figure.data, [(0, 0), (0, 2), (2, 0), (2, 2)]):
        assert isinstance(trace, go.Bar)
        np.testing.assert_allclose(trace.y, array[d, :, j], rtol=1e-12)
        assert list(trace.x) == ["X1", "X2", "X3", "X4"]
        label = f"Y{j + 1}"
        assert trace.hovertext[1] == (f"feature: X2<br>value: {array[d, 1, j]:.4g}"
                                      f"<br>prediction: {preds[(d, label)]:.4g}")
    titles = [a.text for a in figure.layout.annotations if "sample" in a.text]
    assert titles == ["Y1 · sample 0", "Y3 · sample 0", "Y1 · sample 2", "Y3 · sample 2"]
    assert sum("pred:" in a.text for a in figure.layout.annotations) == 4
    no_preds = plot(tabular_result, as_plotly=True, show_preds=False)
    assert not any("pred:" in a.text for a in no_preds.layout.annotations)


def test_signal_lines_per_channel(signal_result):
    figure = plot(signal_result, data_idx=1, aggr_channels=None, as_plotly=True, same_scale=True)
    array = f64(signal_result.get_result())
    assert len(figure.data) == 3 * 2  # channels x nodes
    for n, trace in enumerate(figure.data):
        j, c = divmod(n, 3)
        np.testing.assert_allclose(trace.y, array[1, c, :, j], rtol=1e-12)
        assert trace.name == f"C{c + 1}" and trace.showlegend == (j == 0)
    bound = np.abs(array[1]).max()
    np.testing.assert_allclose(figure.layout.yaxis.range, (-bound, bound), rtol=1e-6)


def test_image_heatmaps(image_result):
    figure = plot(image_result, data_idx=[0, 3], aggr_channels="norm", as_plotly=True)
    array = np.sqrt((f64(image_result.get_result()) ** 2).sum(1))
    frame = image_result.get_result("data.frame")
    assert len(figure.data) == 2 * 3
    for trace, (d, j) in zip(figure.data, [(d, j) for d in (0, 3) for j in range(3)]):
        assert isinstance(trace, go.Heatmap)
        np.testing.assert_allclose(np.asarray(trace.z), array[d, :, :, j], rtol=1e-12)
        pred = frame[(frame["data"] == d) & (frame["output_node"] == f"Y{j + 1}")]["pred"].iloc[0]
        assert trace.hovertemplate == ("feature: %{y}, %{x}<br>value: %{z:.4g}"
                                       f"<br>prediction: {pred:.4g}<extra></extra>")
        assert (trace.x[5], trace.y[2]) == ("W6", "H3")
    assert figure.layout.yaxis.autorange == "reversed"
    same = plot(image_result, data_idx=[0, 3], as_plotly=True, same_scale=True)
    bound = np.abs(f64(image_result.get_result()).sum(1)[[0, 3]]).max()
    assert {t.coloraxis for t in same.data} == {"coloraxis"}
    np.testing.assert_allclose((same.layout.coloraxis.cmin, same.layout.coloraxis.cmax), (-bound, bound), rtol=1e-6)


def test_global(tabular_result, image_result, two_in_two_out_result):
    boxes = plot_global(tabular_result, as_plotly=True)
    array = np.abs(f64(tabular_result.get_result()))
    assert len(boxes.data) == 3 and all(isinstance(t, go.Box) for t in boxes.data)
    np.testing.assert_allclose(boxes.data[1].y, array[..., 1].ravel(), rtol=1e-12)
    assert list(boxes.data[1].x[:4]) == ["X1", "X2", "X3", "X4"]
    heat = plot_global(image_result, as_plotly=True)
    np.testing.assert_allclose(np.asarray(heat.data[2].z), np.abs(f64(image_result.get_result())).sum(1).mean(0)[..., 2])
    both = plot_global(two_in_two_out_result, as_plotly=True)
    assert len(both.data) == 2 * 2 + 2 * 1  # per input layer: 2 nodes of output 0, 1 of output 1


def test_two_inputs_two_outputs_local(two_in_two_out_result):
    figure = plot(two_in_two_out_result, data_idx=[0, 1], as_plotly=True)
    arrays = two_in_two_out_result.get_result()
    assert len(figure.data) == 2 * (2 + 1) * 2  # samples x nodes x input layers
    kinds = [type(t).__name__ for t in figure.data]
    assert kinds.count("Heatmap") == kinds.count("Bar") == 6
    np.testing.assert_allclose(figure.data[-1].y, f64(arrays[1][1])[1, :, 0], rtol=1e-12)
    titles = {a.text for a in figure.layout.annotations}  # panels name their layers
    assert {"out 0 · in 0 · Y1 · sample 0", "out 1 · in 1 · Y2 · sample 1"} <= titles
    bars = [t for t in figure.data if type(t).__name__ == "Bar"][0]
    low, high = figure.layout.yaxis3.range  # headroom above the bars for the info box
    assert high >= max(bars.y) + 0.3 * (max(max(bars.y), 0) - min(min(bars.y), 0))


def test_missing_plotly_names_the_extra(tabular_result, monkeypatch):
    monkeypatch.setitem(sys.modules, "plotly", None)
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)
    monkeypatch.setitem(sys.modules, "plotly.subplots", None)
    monkeypatch.delitem(sys.modules, "innsight.plotting.plotly_plots", raising=False)
    with pytest.raises(ImportError, match=r"pip install innsight\[plotly\]"):
        plot(tabular_result, as_plotly=True)


def test_many_image_facets_one_mosaic_heatmap(many_images):
    with pytest.warns(UserWarning, match="drawn as one mosaic"):
        figure = plot(many_images, data_idx=list(range(20)), as_plotly=True)
    array = f64(many_images.get_result())[:, 0]  # (20, 8, 8, 3)
    assert len(figure.data) == 1
    trace = figure.data[0]
    z = np.asarray(trace.z)
    assert z.shape == (20 * 8, 3 * 8)
    np.testing.assert_allclose(z[8 * 5 + 2, 8 * 1 + 3], array[5, 2, 3, 1], rtol=1e-12)
    np.testing.assert_allclose(z.reshape(20, 8, 3, 8).transpose(0, 1, 3, 2), array, rtol=1e-12)
    assert trace.x[8 + 3] == "Y2 · W4" and trace.y[8 * 5 + 2] == "sample 5 · H3"
    assert list(figure.layout.xaxis.ticktext) == ["Y1", "Y2", "Y3"]
    assert figure.layout.yaxis.ticktext[:2] == ("sample 0", "sample 1")
    assert figure.layout.height > 1000  # tiles stay about square
