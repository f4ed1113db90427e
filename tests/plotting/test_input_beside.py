"""plot(layout="side_by_side"): each input image in greys in a first facet column, then
its heatmaps, in plotnine and plotly. Expected grey levels come from the data given to
the method (recomputed with numpy), expected values from get_result()."""

from __future__ import annotations

import numpy as np
import plotnine as p9
import pytest
import torch
from torch import nn

import innsight as ins
from innsight.plotting import plot

go = pytest.importorskip("plotly.graph_objects")


def grey(images: np.ndarray) -> np.ndarray:
    """``(n, C, H, W)`` images as grey levels: channel mean, stretched per image to [0, 1]."""
    mean = images.mean(axis=1)
    low, high = mean.min(axis=(1, 2), keepdims=True), mean.max(axis=(1, 2), keepdims=True)
    return (mean - low) / (high - low)


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(3 * 5 * 6, 4)).eval()
    conv = ins.convert(model, input_dim=[2, 5, 6])
    x = torch.randn(3, 2, 5, 6)
    return ins.run_grad(conv, x, output_idx=[1, 3], times_input=True), x.numpy()


def test_plotnine_puts_each_input_image_first_in_its_row(images, tmp_path):
    res, x = images
    figure = res.plot(data_idx=[0, 2], layout="side_by_side")
    rasters = [layer for layer in figure.layers if isinstance(layer.geom, p9.geom_raster)]
    beside = next(layer._data for layer in rasters if layer._data is not None)
    assert set(beside["output_node"]) == {"input"}
    assert list(beside["output_node"].cat.categories) == ["input", "Y2", "Y4"]
    d = np.array([[0, 2].index(i) for i in beside["data"]])
    expected = grey(x)[[0, 2]][d, 5 - beside["y"].to_numpy(), beside["x"].to_numpy() - 1]
    np.testing.assert_allclose(1.0 - beside["shade"].to_numpy(), expected, atol=1e-6)
    values = figure.data  # the heatmaps: no value in the input column, no overlay
    assert "input" not in set(values["output_node"]) and "input" not in values
    array = res.get_result().sum(axis=1)  # (n, H, W, nodes): channels summed
    d = np.array([[0, 2].index(i) for i in values["data"]])
    node = values["output_node"].cat.codes.to_numpy() - 1
    np.testing.assert_allclose(values["value"], array[[0, 2]][d, 5 - values["y"].to_numpy(),
                                                          values["x"].to_numpy() - 1, node],
                               rtol=1e-6)
    assert isinstance(figure.facet, p9.facet_grid)   # a row per sample, never wrapped
    label = next(layer for layer in figure.layers if isinstance(layer.geom, p9.geom_label))
    assert "input" not in set(label._data["output_node"].astype(str))   # no info box there
    figure.save(tmp_path / "beside.png", verbose=False)


def test_show_input_also_overlays_the_heatmaps(images):
    res, _ = images
    figure = res.plot(data_idx=0, layout="side_by_side", show_input=True)
    assert "input" in figure.data   # the values carry the grey level under them
    facets = figure.facet
    assert isinstance(facets, p9.facet_grid)


def test_plotly_has_a_grey_image_then_the_heatmaps_per_row(images):
    res, x = images
    figure = res.plot(data_idx=[1, 2], layout="side_by_side", as_plotly=True)
    heatmaps = [t for t in figure.data if isinstance(t, go.Heatmap)]
    assert len(heatmaps) == 2 * 3   # per sample: the input, then two nodes
    for row, sample in enumerate([1, 2]):
        image, *values = heatmaps[3 * row:3 * row + 3]
        np.testing.assert_allclose(np.asarray(image.z), grey(x)[sample], atol=1e-6)
        assert image.colorscale[0][1] == "black" and not image.showscale
        for node, trace in enumerate(values):
            np.testing.assert_allclose(np.asarray(trace.z),
                                       res.get_result().sum(axis=1)[sample, ..., node], rtol=1e-6)
    titles = [a.text for a in figure.layout.annotations if "sample" in (a.text or "")]
    assert titles[:3] == ["input · sample 1", "Y2 · sample 1", "Y4 · sample 1"]
    boxes = [a.text for a in figure.layout.annotations if "sum" in (a.text or "")]
    assert len(boxes) == 4   # none on the input images


def test_layout_errors(images):
    res, _ = images
    with pytest.raises(ValueError, match=r"`layout` must be one of \['facets', 'side_by_side', 'strip'\]"):
        res.plot(layout="beside")
    tabular = ins.run_grad(ins.convert(nn.Linear(3, 2).eval(), input_dim=[3]), torch.randn(2, 3))
    with pytest.raises(ValueError, match="puts each input image beside its heatmaps"):
        tabular.plot(layout="side_by_side")
    with pytest.raises(ValueError, match="at most 50 facets"):
        ins.run_grad(res.converter, torch.randn(20, 2, 5, 6)).plot(
            data_idx=list(range(20)), output_idx=[0, 1], layout="side_by_side")


def test_comparison_plot_side_by_side(images):
    res, x = images
    cmp = ins.compare_models({"a": res.converter, "b": res.converter}, x[:2], method="Gradient",
                             output_idx=[0])
    figure = cmp.plot(data_idx=[0, 1], layout="side_by_side")
    assert list(figure.data["output_node"].cat.categories) == ["input", "Y1 (a)", "Y1 (b)"]
