"""Dense predictions: an output layer that is a map ``(classes, H, W)``.

Its nodes are the entries of the flattened map (channels first); the expected
node names are built here from ``output_names`` with ``numpy.unravel_index``, the
expected values and predictions come from the original model and torch autograd.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import innsight as ins

CLASSES, ROWS, COLS = ["road", "sky", "car"], [f"h{i}" for i in range(6)], [f"w{i}" for i in range(6)]


def _model() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                         nn.ConvTranspose2d(4, 3, 2, stride=2)).eval().double()


@pytest.fixture(scope="module")
def segmentation():
    model = _model()
    conv = ins.convert(model, input_dim=[2, 6, 6], output_names=[[CLASSES, ROWS, COLS]],
                       dtype="double")
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    nodes = [0 * 36 + 4 * 6 + 1, 2 * 36 + 0 * 6 + 5]
    return model, x, nodes, ins.run_grad(conv, x, output_idx=nodes, dtype="double")


def _name(node: int) -> str:
    c, h, w = np.unravel_index(node, (3, 6, 6))
    return f"{CLASSES[c]}_{ROWS[h]}_{COLS[w]}"


def test_nodes_of_the_flattened_map_are_named_by_class_row_and_column(segmentation):
    model, x, nodes, res = segmentation
    assert res.output_labels == [[_name(n) for n in nodes]] == [["road_h4_w1", "car_h0_w5"]]
    with torch.no_grad():
        expected = model(x).flatten(1)[:, nodes]
    torch.testing.assert_close(res.preds[0], expected)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(xg).flatten(1)[:, nodes[1]].sum(), xg)
    torch.testing.assert_close(res.get_result("torch_tensor")[..., 1], grad)


def test_the_data_frame_has_the_map_nodes_by_name(segmentation):
    _, _, nodes, res = segmentation
    frame = res.get_result("data.frame")
    assert list(frame["output_node"].unique()) == [_name(n) for n in nodes]
    values = res.get_result()
    one = frame[(frame["output_node"] == _name(nodes[1])) & (frame["data"] == 1)]
    assert len(one) == 2 * 6 * 6
    np.testing.assert_allclose(np.sort(one["value"].to_numpy()), np.sort(values[1, ..., 1].ravel()))


def test_plots_select_and_name_map_nodes(segmentation):
    _, _, nodes, res = segmentation
    plot = res.plot(data_idx=[0, 1], output_label=[_name(nodes[1])])
    assert list(plot.data["output_node"].cat.categories) == ["car_h0_w5"]
    values = res.get_result()[..., 1].sum(axis=1)  # channels summed: (n, H, W)
    heat = plot.data[plot.data["data"] == 1]
    np.testing.assert_allclose(heat.sort_values(["y", "x"], ascending=[False, True])["value"],
                               values[1].ravel())
    pytest.importorskip("plotly")
    fig = res.plot(data_idx=0, as_plotly=True)
    titles = [a.text for a in fig.layout.annotations if a.text in {"road_h4_w1 · sample 0",
                                                                    "car_h0_w5 · sample 0"}]
    assert len(titles) == 2


def test_output_idx_beyond_the_flattened_map_is_refused(segmentation):
    model, x, _, _ = segmentation
    conv = ins.convert(model, input_dim=[2, 6, 6], dtype="double")
    with pytest.raises(ValueError, match=r"`output_idx` \[108\] not found in output layer 0: "
                                         r"it has 108 nodes \(valid: 0..107\)"):
        ins.run_grad(conv, x, output_idx=[108], dtype="double")


def test_a_channels_last_map_is_indexed_channels_first():
    keras = pytest.importorskip("keras")
    inputs = keras.Input((6, 6, 2))
    hidden = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(hidden))
    conv = ins.convert(model)
    x = np.random.default_rng(4).normal(size=(2, 6, 6, 2)).astype("float32")
    res = ins.run_grad(conv, x, channels_first=False, output_idx=[0 * 36 + 4 * 6 + 1, 2 * 36 + 5])
    assert res.output_labels == [["Y1_H5_W2", "Y3_H1_W6"]]
    out = np.asarray(model(x))  # (n, H, W, classes)
    np.testing.assert_allclose(res.preds[0].numpy(), out[:, [4, 0], [1, 5], [0, 2]], rtol=1e-5)
