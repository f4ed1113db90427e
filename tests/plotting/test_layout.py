"""Many output nodes wrap into a grid; top_k, normalize, axis titles, sequential scales
and the info box's names. Checked on the figure objects (facets, sizes, scales,
titles, texts), with expected values recomputed from get_result() with numpy.
"""

from __future__ import annotations

import numpy as np
import plotnine as p9
import pytest
import torch
from torch import nn

import innsight as ins
from innsight.plotting import plot, plot_global

go = pytest.importorskip("plotly.graph_objects")

LABELS = [f"Y{i + 1}" for i in range(10)]


@pytest.fixture(scope="module")
def ten_classes() -> ins.Converter:
    """A CNN on 1 x 5 x 5 images with 10 classes and a final softmax."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 3 * 3, 10),
                          nn.Softmax(dim=-1)).eval()
    return ins.convert(model, input_dim=[1, 5, 5])


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 1, 5, 5, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def wide_table() -> ins.Result:
    """Gradient x input of an MLP on 8 features with very different weights per feature."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 2)).eval()
    with torch.no_grad():
        model[0].weight.mul_(torch.tensor([1.0, 8, 0.1, 4, 0.5, 2, 16, 0.2]))
    x = torch.randn(6, 8, generator=torch.Generator().manual_seed(1))
    return ins.run_grad(ins.convert(model, input_dim=[8]), x, times_input=True)


def size(figure: p9.ggplot) -> tuple[float, float]:
    return figure.theme.getp("figure_size")


def grid(figure: go.Figure) -> tuple[int, int]:
    """Rows and columns of a plotly figure's subplots (distinct axis domains)."""
    layout = figure.layout.to_plotly_json()
    rows = {tuple(axis["domain"]) for name, axis in layout.items() if name.startswith("yaxis")}
    cols = {tuple(axis["domain"]) for name, axis in layout.items() if name.startswith("xaxis")}
    return len(rows), len(cols)


def test_three_models_by_ten_classes_wrap_into_rows_of_whole_nodes(ten_classes, images):
    cmp = ins.compare_models({"a": ten_classes, "b": ten_classes, "c": ten_classes}, images,
                             output_idx=list(range(10)))
    figure = cmp.plot(data_idx=0)
    assert isinstance(figure.facet, p9.facet_wrap) and figure.facet._ncol == 6  # 2 nodes x 3 models
    width, height = size(figure)
    assert width < 17 and height > width / 2  # 5 rows of 6, not one row of 30
    wide = cmp.plot(data_idx=0, as_plotly=True)
    assert grid(wide) == (5, 6) and wide.layout.width < 1800
    titles = [a.text for a in wide.layout.annotations if "sample" in a.text]
    assert titles[:7] == [f"Y{n} ({m}) · sample 0" for n in (1, 2) for m in "abc"] + ["Y3 (a) · sample 0"]
    summary = cmp.plot_global(normalize=True, output_idx=[0, 1])
    assert summary.data["value"].max() == pytest.approx(1.0)
    assert "per facet" in summary.scales.get_scales("fill").name


def test_ten_nodes_wrap_in_global_and_local_plots(ten_classes, images):
    result = ins.run_grad(ten_classes, images, output_idx=list(range(10)))
    figure = plot_global(result)
    assert isinstance(figure.facet, p9.facet_wrap) and figure.facet._ncol == 5
    assert size(figure)[0] < 15
    assert grid(plot_global(result, as_plotly=True)) == (2, 5)
    two = plot(result, data_idx=[0, 2])  # 20 facets: 4 rows of 5, sample by sample
    assert two.facet.vars == ["data", "output_node"] and two.facet._ncol == 5
    assert grid(plot(result, data_idx=[0, 2], as_plotly=True)) == (4, 5)
    few = plot(result, output_idx=[0, 1, 2])  # few nodes keep one row per sample
    assert isinstance(few.facet, p9.facet_grid) and few.facet.cols == ["output_node"]


def test_top_k_keeps_the_largest_features_in_order(wide_table):
    values = np.abs(wide_table.get_result())  # (n, features, nodes)
    names = wide_table.input_names[0][0]
    expected = [names[i] for i in np.argsort(-values[[0, 1]].mean(axis=(0, 2)))[:3]]
    figure = plot(wide_table, data_idx=[0, 1], top_k=3)
    assert [figure.scales.get_scales("x").labels[i] for i in range(3)] == expected
    frame = figure.data
    assert sorted(set(frame["x"])) == [1, 2, 3] and len(frame) == 2 * 3 * 2
    for row in frame.itertuples():  # each bar is the value of the feature it is labelled with
        feature = names.index(expected[row.x - 1])
        assert row.value == pytest.approx(wide_table.get_result()[row.data, feature, int(row.output_node[1:]) - 1])
    shown = [t.x for t in wide_table.plot(data_idx=[0, 1], top_k=3, as_plotly=True).data]
    assert all(list(x) == expected for x in shown)
    boxes = wide_table.plot_global(top_k=2)  # over all samples
    assert set(boxes.data["feature"]) == {names[i] for i in np.argsort(-values.mean(axis=(0, 2)))[:2]}
    assert len(plot(wide_table, top_k=100).data["x"].unique()) == 8  # all, sorted


@pytest.mark.parametrize("top_k", [0, -1, 2.5, "3", True])
def test_top_k_refused(wide_table, top_k):
    with pytest.raises(ValueError, match="`top_k` must be a positive int or None"):
        plot(wide_table, top_k=top_k)


def test_top_k_needs_a_tabular_input(ten_classes, images):
    result = ins.run_grad(ten_classes, images, output_idx=[0])
    with pytest.raises(ValueError, match="`top_k` keeps the largest tabular features.*'image'"):
        plot(result, top_k=3)


def test_normalize_scales_each_facet(ten_classes, images):
    grad = ins.run_grad(ten_classes, images, output_idx=[0, 1])
    lrp = ins.run_lrp(ten_classes, images, output_idx=[0, 1])
    figure = plot({"grad": grad, "lrp": lrp}, data_idx=[1, 2], normalize=True)
    for name, result in (("grad", grad), ("lrp", lrp)):
        values = result.get_result()[:, 0]  # (n, H, W, nodes)
        for d in (1, 2):
            for j, node in enumerate(["Y1", "Y2"]):
                rows = figure.data[(figure.data["data"] == d) & (figure.data["output_node"] == f"{node} ({name})")]
                expected = values[d, 5 - rows["y"], rows["x"] - 1, j] / np.abs(values[d, ..., j]).max()
                np.testing.assert_allclose(rows["value"], expected, rtol=1e-6)
                text = figure.layers[-1]._data
                box = text[(text["data"] == d) & (text["output_node"] == f"{node} ({name})")]["text"].item()
                assert f"max |value|: {np.abs(values[d, ..., j]).max():.3g}" in box
    assert "each facet scaled" in figure.labels.title
    fill = figure.scales.get_scales("fill")
    assert fill.limits == (-1, 1) and "per facet" in fill.name
    wide = plot({"grad": grad, "lrp": lrp}, normalize=True, as_plotly=True)
    assert (wide.layout.coloraxis.cmin, wide.layout.coloraxis.cmax) == (-1, 1)
    assert "per facet" in wide.layout.coloraxis.colorbar.title.text
    # plot_global: each node over all samples
    boxes = plot_global(grad, normalize=True).data
    mean = np.abs(grad.get_result()[:, 0]).mean(0)  # (H, W, nodes)
    for j, node in enumerate(["Y1", "Y2"]):
        rows = boxes[boxes["output_node"] == node]
        np.testing.assert_allclose(rows["value"].max(), 1.0)
        np.testing.assert_allclose(rows["value"].min(), mean[..., j].min() / mean[..., j].max(), rtol=1e-6)


def test_normalize_refused(wide_table):
    with pytest.raises(TypeError, match="`normalize` must be True or False"):
        plot(wide_table, normalize="facet")
    with pytest.raises(TypeError, match="`normalize` must be True or False"):
        plot_global(wide_table, normalize=1)


def test_plotly_axis_titles(ten_classes, images, wide_table):
    figure = plot(ins.run_grad(ten_classes, images, output_idx=[0, 1]), data_idx=[0, 1], as_plotly=True)
    layout = figure.layout  # 2 x 2: x titles on the bottom row, y titles on the first column
    assert [layout[f"xaxis{n}"].title.text for n in ("", 2, 3, 4)] == [None, None, "width", "width"]
    assert [layout[f"yaxis{n}"].title.text for n in ("", 2, 3, 4)] == ["height", None, "height", None]
    table = plot(wide_table, data_idx=0, as_plotly=True).layout
    assert (table.xaxis.title.text, table.yaxis.title.text) == ("feature", "gradient x input")
    assert table.width > 120 + 2 * 8 * 15  # 8 features' labels fit in each facet


def test_magnitudes_get_a_sequential_scale(ten_classes, images):
    result = ins.run_grad(ten_classes, images, output_idx=[0, 1])
    figure = plot_global(result)
    fill = figure.scales.get_scales("fill")
    assert type(fill) is p9.scale_fill_gradient and fill.limits[0] == 0
    axis = plot_global(result, as_plotly=True).layout.coloraxis
    assert axis.cmin == 0 and axis.cmid is None
    assert axis.colorscale[0][0] == 0 and axis.colorscale[0][1] == "#f7f7f7"  # white at 0
    raw = plot_global(result, preprocess_fun=None)  # signed values: diverging about 0
    assert type(raw.scales.get_scales("fill")) is p9.scale_fill_gradient2
    assert plot_global(result, preprocess_fun=None, as_plotly=True).layout.coloraxis.cmid == 0


@pytest.mark.parametrize(("last", "ignore", "pred_name", "unit"), [
    (nn.Softmax(dim=-1), True, "probability", " (logit)"),
    (nn.Sigmoid(), True, "probability", " (logit)"),
    (nn.Tanh(), True, "pred", " (before tanh)"),
    (nn.Softmax(dim=-1), False, "pred", ""),
    (nn.Identity(), True, "pred", ""),
])
def test_info_box_names_probability_and_logit(last, ignore, pred_name, unit):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), last).eval()
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    result = ins.run_lrp(ins.convert(model, input_dim=[3]), x, ignore_last_act=ignore)
    row = result.get_result("data.frame").query("data == 1 and output_node == 'Y2'").iloc[0]
    text = plot(result, data_idx=1, output_idx=1).layers[-1]._data["text"].item()
    assert text == (f" {pred_name}: {row.pred:.3g}\n sum: {row.decomp_sum:.3g}{unit}\n"
                    f" goal: {row.decomp_goal:.3g}{unit}")
    if ignore and unit == " (logit)":  # the explained logits are not the probabilities
        with torch.no_grad():
            logits = model[0](x)
        assert row.decomp_goal == pytest.approx(float(logits[1, 1]), rel=1e-5)


def test_plotly_boxes_of_merged_results_follow_their_facets(ten_classes, images):
    """Each facet's box shows its own result's prediction (two different models)."""
    torch.manual_seed(1)
    other = ins.convert(nn.Sequential(nn.Flatten(), nn.Linear(25, 10), nn.Softmax(dim=-1)).eval(),
                        input_dim=[1, 5, 5])
    cmp = ins.compare_models({"cnn": ten_classes, "linear": other}, images, output_idx=[0, 1])
    figure = cmp.plot(data_idx=1, as_plotly=True)
    boxes = [a.text for a in figure.layout.annotations if "probability" in a.text]
    expected = [cmp.results[model].preds[0][1, j].item() for j in (0, 1) for model in ("cnn", "linear")]
    assert [box.split("<br>")[0] for box in boxes] == [f"probability: {p:.3g}" for p in expected]
