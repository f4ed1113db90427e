"""plot() and plot_global() of a dict of named results: drawn side by side.

Expected plot data are each result's own get_result(), picked with numpy.
"""

from __future__ import annotations

import numpy as np
import plotnine as p9
import pytest
import torch
from torch import nn

import innsight as ins
from innsight.plotting import plot, plot_global


@pytest.fixture(scope="module")
def mlp_conv() -> ins.Converter:
    torch.manual_seed(0)
    return ins.convert(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).eval(),
                       input_dim=[4])


@pytest.fixture(scope="module")
def tabular_pair(mlp_conv) -> dict[str, ins.Result]:
    """Gradient and LRP of one MLP (4 -> 3) for the same 3 samples and output nodes 0, 2."""
    conv = mlp_conv
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    return {"grad": ins.run_grad(conv, x, output_idx=[0, 2]),
            "lrp": ins.run_lrp(conv, x, output_idx=[0, 2])}


def test_named_results_are_merged_node_by_node(tabular_pair, tmp_path):
    figure = plot(tabular_pair, data_idx=[0, 2])
    assert isinstance(figure, p9.ggplot)
    labels = ["Y1 (grad)", "Y1 (lrp)", "Y3 (grad)", "Y3 (lrp)"]
    frame = figure.data
    assert list(frame["output_node"].cat.categories) == labels
    for label in labels:
        node, name = label.split(" (")
        expected = tabular_pair[name[:-1]].get_result()[:, :, ["Y1", "Y3"].index(node)]
        rows = frame[frame["output_node"] == label]
        np.testing.assert_allclose(rows["value"], expected[rows["data"], rows["x"] - 1],
                                   rtol=1e-6)
    assert figure.labels.title == "Gradient, LRP: grad, lrp"
    assert figure.labels.y == "gradient / relevance"
    figure.save(tmp_path / "pair.png", verbose=False)


def test_one_method_is_named_once(tabular_pair):
    grad = tabular_pair["grad"]
    figure = plot_global({"a": grad, "b": grad})
    assert figure.labels.title == "Gradient: a, b" and figure.labels.y == "|gradient|"
    # box plots over all samples of each result: the same values twice
    a = figure.data[figure.data["output_node"] == "Y3 (a)"]["value"].to_numpy()
    b = figure.data[figure.data["output_node"] == "Y3 (b)"]["value"].to_numpy()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.sort(a), np.sort(np.abs(grad.get_result()[..., 1]).ravel()),
                               rtol=1e-6)


def test_same_scale_spans_all_results(tabular_pair):
    figure = plot(tabular_pair, data_idx=[0, 1, 2], same_scale=True)
    bound = max(np.abs(res.get_result()).max() for res in tabular_pair.values())
    limits = figure.scales.get_scales("y").limits
    np.testing.assert_allclose(limits, (-bound, bound), rtol=1e-6)


def test_plotly_names_the_results(tabular_pair):
    pytest.importorskip("plotly")
    figure = plot(tabular_pair, as_plotly=True)
    assert figure.layout.title.text == "Gradient, LRP: grad, lrp"
    titles = [note.text for note in figure.layout.annotations][:4]
    assert titles == [f"{label} · sample 0" for label in
                      ["Y1 (grad)", "Y1 (lrp)", "Y3 (grad)", "Y3 (lrp)"]]
    np.testing.assert_allclose(figure.data[1].y, tabular_pair["lrp"].get_result()[0, :, 0],
                               rtol=1e-6)
    assert plot_global(tabular_pair, as_plotly=True).layout.title.text == figure.layout.title.text


@pytest.mark.parametrize(("result", "error", "match"), [
    (3, TypeError, "`result` must be a Result .* or a dict of names to Results, got 3"),
    ({}, ValueError, "at least one named Result, got an empty dict"),
    ({"a": 3}, TypeError, r"`result` must map names \(str\) to Results, got \{'a': '3'\}"),
])
def test_refused_results(result, error, match):
    with pytest.raises(error, match=match):
        plot(result)
    with pytest.raises(error, match=match):
        plot_global(result)


def test_results_must_be_alike(tabular_pair, tabular_result, image_result):
    grad = tabular_pair["grad"]
    with pytest.raises(TypeError, match=r"`result` must map names \(str\) to Results, got \{1:"):
        plot({1: grad})
    with pytest.raises(ValueError, match=r"same input and output shapes .* got a: .*tabular.*; "
                                         r"b: .*image"):
        plot({"a": tabular_result, "b": image_result})
    # the same model, other output nodes: 2 against 3 columns of values
    with pytest.raises(ValueError, match=r"as many selected output nodes .* shape \(1, 4, 2\)"):
        plot_global({"grad": grad, "all": tabular_result}, data_idx=0)


def test_show_input_needs_the_same_data(tabular_pair, mlp_conv):
    figure = plot(tabular_pair, data_idx=[0, 1], show_input=True)
    x = tabular_pair["grad"].data[0].double().numpy()
    expected = x[figure.data["data"], figure.data["x"] - 1]
    np.testing.assert_allclose(figure.data["input"], expected)  # the same data under both
    other = ins.run_grad(mlp_conv, torch.zeros(3, 4), output_idx=[0, 2])
    with pytest.raises(ValueError, match=r"show_input=True.* \['zeros'\] explain other data than "
                                         "'grad'"):
        plot({"grad": tabular_pair["grad"], "zeros": other}, show_input=True)
    plot({"grad": tabular_pair["grad"], "zeros": other})  # without inputs: fine
