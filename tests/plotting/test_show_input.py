"""plot(show_input=True): values drawn over the explained input, in plotnine and plotly.

Expected inputs come from the data given to the method (recomputed with numpy),
expected values from get_result(); never from the plotting code.
"""

from __future__ import annotations

import warnings

import numpy as np
import plotnine as p9
import pytest
import torch
from torch import nn

import innsight as ins
from innsight.plotting import plot
from innsight.plotting.colours import (
    INPUT_DARKEST,
    OVERLAY_ALPHA,
    OVERLAY_GAMMA,
    OVERLAY_NEGATIVE,
    OVERLAY_POSITIVE,
)

go = pytest.importorskip("plotly.graph_objects")


def grey(images: np.ndarray) -> np.ndarray:
    """``(n, H, W, C)`` channels-last images as grey levels: channel mean, min-max per image."""
    mean = images.mean(axis=-1)
    low, high = mean.min(axis=(1, 2), keepdims=True), mean.max(axis=(1, 2), keepdims=True)
    return (mean - low) / (high - low)


def shade(level: np.ndarray | float) -> np.ndarray | float:
    """Opacity of black over white that draws grey ``level`` (0 black, 1 white) as a grey
    from INPUT_DARKEST to white: the image under the values is light."""
    return (1 - INPUT_DARKEST) * (1 - level)


def layer_data(figure: p9.ggplot, geom: type, **aes: str) -> list:
    """The data of the layers drawn with ``geom`` whose mapping has ``aes``."""
    found = []
    for layer in figure.layers:
        mapping = {**figure.mapping, **layer.mapping}
        if isinstance(layer.geom, geom) and all(mapping.get(k) == v for k, v in aes.items()):
            found.append(figure.data if layer._data is None else layer._data)
    return found


def at(frame, array: np.ndarray, data_ids: list[int], column: str = "value") -> np.ndarray:
    """``array (n, H, W, ...)`` at the frame's image positions (rows ``y`` counted from
    the bottom)."""
    d = np.array([data_ids.index(i) for i in frame["data"]])
    height = array.shape[1]
    return array[data_ids][d, height - frame["y"].to_numpy(), frame["x"].to_numpy() - 1]


@pytest.fixture(scope="module")
def channels_last_images():
    """A CNN explained on channels-last images (as Keras users pass them): the data,
    the result."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(2 * 7 * 6, 2)).eval()
    data = np.random.default_rng(3).uniform(-1, 2, size=(3, 7, 6, 3))  # (n, H, W, C)
    conv = ins.convert(model, input_dim=[3, 7, 6])
    return data, ins.run_grad(conv, data, channels_first=False, times_input=True, dtype="double")


def test_image_overlay_plotnine(channels_last_images, tmp_path):
    data, result = channels_last_images
    figure = plot(result, data_idx=[2, 0], show_input=True)
    figure.save(tmp_path / "overlay.png", verbose=False)
    values = result.get_result().sum(axis=3)  # (n, H, W, nodes): channels last, aggregated
    (image,) = layer_data(figure, p9.geoms.geom_raster, alpha="shade")
    (heat,) = layer_data(figure, p9.geoms.geom_raster, fill="value")
    np.testing.assert_allclose(image["shade"], shade(at(image, grey(data), [2, 0])), atol=1e-12)
    node = np.array([["Y1", "Y2"].index(str(v)) for v in heat["output_node"]])
    np.testing.assert_allclose(heat["value"], at(heat, values, [2, 0])[np.arange(len(heat)), node],
                               rtol=1e-12)
    # each value more opaque with its magnitude, the largest at OVERLAY_ALPHA
    largest = np.abs(values[[2, 0]]).max()
    np.testing.assert_allclose(heat["opacity"], OVERLAY_ALPHA * (np.abs(heat["value"]) / largest)**OVERLAY_GAMMA,
                               rtol=1e-12)
    assert figure.scales.get_scales("alpha") is not None
    # in the full colour of their sign: blue below 0, red above, on a scale symmetric about 0
    fill = figure.scales.get_scales("fill")
    assert fill.limits == (-largest, largest) and "opacity" in fill.name
    assert [c.lower() for c in fill.palette(np.array([0.0, 0.49, 0.51, 1.0]))] == [
        OVERLAY_NEGATIVE.lower()] * 2 + [OVERLAY_POSITIVE.lower()] * 2


def test_signal_overlay_plotnine(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 3, 5, padding=2), nn.Tanh(), nn.Flatten(),
                          nn.Linear(3 * 20, 2)).eval()
    data = torch.randn(3, 2, 20, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    result = ins.run_intgrad(ins.convert(model, input_dim=[2, 20]), data, n=10, dtype="double")
    values = result.get_result()  # (n, C, L, nodes)
    for aggr, colours in ((None, values), ("sum", np.broadcast_to(values.sum(1, keepdims=True), values.shape))):
        figure = plot(result, data_idx=1, aggr_channels=aggr, show_input=True)
        figure.save(tmp_path / f"signal-{aggr}.png", verbose=False)
        (line,) = layer_data(figure, p9.geoms.geom_line)
        channel = np.array([int(str(c)[1:]) - 1 for c in line["channel"]])
        position = line["x"].to_numpy() - 1
        node = np.array([["Y1", "Y2"].index(str(v)) for v in line["output_node"]])
        assert len(line) == 2 * 20 * 2  # channels x positions x nodes: every input channel drawn
        np.testing.assert_allclose(line["input"], data.numpy()[1, channel, position], rtol=1e-12)
        np.testing.assert_allclose(line["value"], colours[1, channel, position, node], rtol=1e-12)
        assert figure.labels.y == "input" and figure.mapping["color"] == "value"
        assert figure.facet.free["y"]  # inputs differ by sample


def test_tabular_overlay_plotnine(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)).eval()
    data = torch.tensor([[0.5, -1.25, 3.0, 0.001], [2.0, 0.0, -4.5, 1.5]])
    result = ins.run_deeplift(ins.convert(model, input_dim=[4]), data)
    figure = plot(result, data_idx=[0, 1], show_input=True)
    figure.save(tmp_path / "tabular.png", verbose=False)
    texts = [layer for layer in figure.layers if type(layer.geom) is p9.geoms.geom_text]
    assert [layer.geom.aes_params["va"] for layer in texts] == ["bottom", "top"]
    shown = {(int(r.data), int(r.x), str(r.output_node)): (r.label, r.value)
             for layer in texts for r in layer._data.itertuples()}
    values = result.get_result()
    assert len(shown) == 2 * 4 * 2
    for (d, x, node), (label, value) in shown.items():
        assert label == f"{float(data[d, x - 1]):.3g}"
        assert value == pytest.approx(values[d, x - 1, int(node[1:]) - 1], rel=1e-12)
        # positive bars carry their text above, negative ones below
        above = next(layer for layer in texts if layer.geom.aes_params["va"] == "bottom")._data
        assert ((above["data"] == d) & (above["x"] == x) & (above["output_node"] == node)).any() == (value >= 0)


def test_two_inputs_compose_with_inputs(two_in_two_out, tmp_path):
    images = torch.rand(2, 2, 6, 6, generator=torch.Generator().manual_seed(0))
    table = torch.randn(2, 4, generator=torch.Generator().manual_seed(1))
    result = ins.run_grad(ins.convert(two_in_two_out, input_dim=[[2, 6, 6], [4]]), [images, table],
                          output_idx=[0])
    figure = plot(result, data_idx=1, show_input=True)
    plots = list(figure)  # the image and the table side by side
    (image,) = layer_data(plots[0], p9.geoms.geom_raster, alpha="shade")
    expected = grey(np.moveaxis(images.numpy(), 1, -1).astype(np.float64))
    np.testing.assert_allclose(image["shade"], shade(at(image, expected, [1])), atol=1e-6)
    labels = {int(row.x): row.label for layer in plots[1].layers
              if type(layer.geom) is p9.geoms.geom_text for row in layer._data.itertuples()}
    assert labels == {x + 1: f"{float(v):.3g}" for x, v in enumerate(table[1])}
    figure.save(tmp_path / "composed.png")


def test_plotly_overlays(channels_last_images):
    data, result = channels_last_images
    figure = plot(result, data_idx=[0, 1], output_idx=[1], show_input=True, as_plotly=True)
    values = result.get_result().sum(axis=3)
    assert [trace.type for trace in figure.data] == ["heatmap"] * 4  # (grey, values) per sample
    for d, (image, heat) in enumerate(zip(figure.data[::2], figure.data[1::2])):
        np.testing.assert_allclose(np.asarray(image.z), grey(data)[d], atol=1e-12)
        assert image.showscale is False and image.hoverinfo == "skip"
        np.testing.assert_allclose(np.asarray(heat.z), values[d, ..., 1], rtol=1e-12)
        assert (image.xaxis, image.yaxis) == (heat.xaxis, heat.yaxis)
    scale = figure.layout.coloraxis.colorscale
    middle = next(colour for at, colour in scale if at == 0.5)
    assert middle.endswith(",0)")  # zero is transparent: the image shows
    assert scale[0][1] == "rgba(31,120,209,{})".format(OVERLAY_ALPHA)  # OVERLAY_NEGATIVE, most opaque
    assert figure.data[0].colorscale[0][1] == "rgba(0,0,0,{})".format(1 - INPUT_DARKEST)  # light greys


def test_plotly_signal_and_tabular_overlays():
    torch.manual_seed(0)
    signal = nn.Sequential(nn.Conv1d(2, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 8, 1)).eval()
    data = torch.randn(2, 2, 10, generator=torch.Generator().manual_seed(2))
    result = ins.run_grad(ins.convert(signal, input_dim=[2, 10]), data)
    figure = plot(result, data_idx=1, show_input=True, as_plotly=True)
    values = result.get_result().sum(1)  # (n, L, nodes)
    assert len(figure.data) == 2  # one line per input channel
    for c, trace in enumerate(figure.data):
        np.testing.assert_allclose(trace.y, data.numpy()[1, c], rtol=1e-6)
        np.testing.assert_allclose(trace.marker.color, values[1, :, 0], rtol=1e-6)
        assert trace.marker.coloraxis == "coloraxis"
        assert f"input: {float(data[1, c, 3]):.4g}" in trace.hovertext[3]
    assert figure.layout.yaxis.title.text == "input"
    tabular = nn.Sequential(nn.Linear(3, 2)).eval()
    table = torch.tensor([[1.5, -2.0, 0.25]])
    bars = plot(ins.run_grad(ins.convert(tabular, input_dim=[3]), table), show_input=True, as_plotly=True)
    assert list(bars.data[0].text) == ["1.5", "-2", "0.25"]
    assert "input: -2" in bars.data[0].hovertext[1]


def test_mosaic_overlay(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Flatten(), nn.Linear(16, 2)).eval()
    data = torch.rand(30, 1, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    result = ins.run_grad(ins.convert(model, input_dim=[1, 6, 6]), data, dtype="double")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the mosaic warning is tested elsewhere
        figure = plot(result, data_idx=list(range(30)), show_input=True)
        interactive = plot(result, data_idx=list(range(30)), show_input=True, as_plotly=True)
    figure.save(tmp_path / "mosaic.png", verbose=False)
    (image,) = layer_data(figure, p9.geoms.geom_raster, alpha="shade")
    # tiles: sample i, node j at rows i*6.., columns j*6..; both nodes show the same image
    tiles = np.tile(grey(np.moveaxis(data.numpy(), 1, -1)).reshape(30 * 6, 6), (1, 2))
    rows = tiles.shape[0] - image["y"].to_numpy()
    np.testing.assert_allclose(image["shade"], shade(tiles[rows, image["x"].to_numpy() - 1]), atol=1e-12)
    np.testing.assert_allclose(np.asarray(interactive.data[0].z), tiles, atol=1e-12)
    assert len(interactive.data) == 2


def test_direct_method_and_comparison_results_plot_inputs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 2)).eval()
    data = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    direct = ins.torch_grad(model, data, return_object=True)
    (image,) = layer_data(plot(direct, show_input=True), p9.geoms.geom_raster, alpha="shade")
    expected = grey(np.moveaxis(data.numpy(), 1, -1).astype(np.float64))
    np.testing.assert_allclose(image["shade"], shade(at(image, expected, [0])), atol=1e-6)
    conv = ins.convert(model, input_dim=[3, 6, 6])
    comparison = ins.compare_models({"a": conv, "b": conv}, data)
    figure = comparison.plot(data_idx=1, show_input=True)
    (image,) = layer_data(figure, p9.geoms.geom_raster, alpha="shade")
    np.testing.assert_allclose(image["shade"], shade(at(image, expected, [1])), atol=1e-6)
    assert set(map(str, image["output_node"])) == {"Y1 (a)", "Y1 (b)", "Y2 (a)", "Y2 (b)"}


def test_show_input_errors():
    model = nn.Sequential(nn.Linear(3, 2)).eval()
    conv = ins.convert(model, input_dim=[3])
    result = ins.run_grad(conv, torch.randn(2, 3))
    with pytest.raises(TypeError, match="`show_input` must be True or False, got"):
        plot(result, show_input="yes")
    without_data = ins.run_cw(conv)
    with pytest.raises(ValueError, match="`show_input=True` needs the explained data.*ConnectionWeights"):
        without_data.plot(show_input=True)


def test_constant_image_is_mid_grey():
    model = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Flatten(), nn.Linear(4, 1)).eval()
    result = ins.run_grad(ins.convert(model, input_dim=[1, 4, 4]), torch.full((1, 1, 4, 4), 3.0))
    (image,) = layer_data(plot(result, show_input=True), p9.geoms.geom_raster, alpha="shade")
    np.testing.assert_allclose(image["shade"], shade(0.5))
