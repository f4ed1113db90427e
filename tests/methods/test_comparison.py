"""``ins.compare_models``: one method on several converted models, side by side.

References: each model's own ``run_*`` result, differences computed by hand
from those, and the models' outputs.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import plotnine as p9
import pytest
import torch
from torch import nn

import innsight as ins


@pytest.fixture
def pair():
    """Two converters of an MLP (5 -> 3, softmax) and a third with other weights."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3), nn.Softmax(dim=1)).eval()
    other = copy.deepcopy(model)
    with torch.no_grad():
        other[0].weight.add_(0.1)
    return (ins.convert(model, input_dim=[5]), ins.convert(copy.deepcopy(model), input_dim=[5]),
            ins.convert(other, input_dim=[5]))


@pytest.fixture
def x():
    return torch.randn(4, 5, generator=torch.Generator().manual_seed(1))


def test_results_are_each_models_own(pair, x):
    a, b, c = pair
    cmp = ins.compare_models({"a": a, "b": b, "c": c}, x, method="IntegratedGradient", n=10)
    assert isinstance(cmp, ins.Comparison) and cmp.models == ["a", "b", "c"]
    for name, conv in zip("abc", pair):
        expected = ins.run_intgrad(conv, x, n=10).get_result()
        np.testing.assert_allclose(cmp.get_result()[name], expected, rtol=1e-6, atol=1e-7)


def test_differences_are_zero_for_identical_models_and_match_by_hand(pair, x):
    a, b, c = pair
    cmp = ins.compare_models({"a": a, "b": b, "c": c}, x, "Gradient", output_idx=[0, 2])
    diffs = cmp.differences().set_index(["model_a", "model_b"])
    assert list(diffs.index) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert diffs.loc[("a", "b"), "max_abs_diff"] == 0.0
    assert diffs.loc[("a", "b"), "max_pred_diff"] == 0.0
    va, vc = cmp.get_result()["a"], cmp.get_result()["c"]
    expected = np.abs(va - vc).max()
    assert diffs.loc[("a", "c"), "max_abs_diff"] == pytest.approx(expected, rel=1e-6)
    scale = max(np.abs(va).max(), np.abs(vc).max())
    assert diffs.loc[("a", "c"), "max_rel_diff"] == pytest.approx(expected / scale, rel=1e-6)
    with torch.no_grad():
        preds = [conv.model(x)[:, [0, 2]] for conv in (a, c)]
    assert diffs.loc[("a", "c"), "max_pred_diff"] == pytest.approx(
        (preds[0] - preds[1]).abs().max().item(), rel=1e-5)
    assert "a vs c" in str(cmp)


def test_long_data_frame_has_a_model_column(pair, x):
    a, b, _ = pair
    cmp = ins.compare_models([a, b], x, ins.Gradient, output_idx=[1])
    frame = cmp.get_result("data.frame")
    single = ins.run_grad(a, x, output_idx=[1]).get_result("data.frame")
    assert list(frame.columns) == ["model", *single.columns]
    assert list(frame["model"].cat.categories) == ["model_1", "model_2"]
    assert len(frame) == 2 * len(single)
    pd.testing.assert_frame_equal(
        frame[frame["model"] == "model_1"].drop(columns="model").reset_index(drop=True), single)


@pytest.mark.parametrize("method", ["Gradient", "gradient", "SmoothGrad", ins.IntegratedGradient,
                                    "LRP", "DeepLift"])
def test_any_method_by_class_or_name(pair, x, method):
    a, b, _ = pair
    cmp = ins.compare_models({"a": a, "b": b}, x, method, output_idx=[0])
    # same weights, and the same seed for stochastic methods: identical values
    np.testing.assert_array_equal(cmp.get_result()["a"], cmp.get_result()["b"])


def test_seed_can_be_given(pair, x):
    a, b, _ = pair
    first = ins.compare_models([a, b], x, "SmoothGrad", n=5, seed=3).get_result()["model_1"]
    again = ins.run_smoothgrad(a, x, n=5, seed=3).get_result()
    np.testing.assert_allclose(first, again, rtol=1e-6)


def test_plot_draws_models_side_by_side(pair, x):
    a, b, _ = pair
    cmp = ins.compare_models({"torch": a, "onnx": b}, x, "Gradient", output_idx=[0, 1])
    figure = cmp.plot(data_idx=[0, 1])
    assert isinstance(figure, p9.ggplot)
    labels = list(figure.data["output_node"].cat.categories)
    assert labels == ["Y1 (torch)", "Y1 (onnx)", "Y2 (torch)", "Y2 (onnx)"]
    figure.draw()
    assert isinstance(cmp.plot_global(), p9.ggplot)


def test_plot_names_the_models_and_warns_of_many_facets(pair, x):
    a, b, _ = pair
    cmp = ins.compare_models({"torch": a, "onnx": b}, x, "Gradient")
    figure = cmp.plot(data_idx=[0, 1])
    assert figure.labels.title == "Gradient: torch, onnx" and figure.labels.y == "gradient"
    bound = max(np.abs(values[[0, 1]]).max() for values in cmp.get_result().values())
    np.testing.assert_allclose(figure.scales.get_scales("y").limits, (-bound, bound), rtol=1e-6)
    # 9 samples x 3 nodes x 2 models: 54 facets in one panel, more than MAX_FACETS (50)
    with pytest.warns(UserWarning, match=r"9 samples x 6 output nodes .* draws 54 facets"):
        cmp.plot(data_idx=[0, 1, 2] * 3)


def test_plotly_figure(pair, x):
    pytest.importorskip("plotly")
    a, b, _ = pair
    figure = ins.compare_models({"a": a, "b": b}, x, "Gradient", output_idx=[0]).plot(as_plotly=True)
    assert type(figure).__name__ == "Figure"
    assert len(figure.data) >= 2


def test_image_inputs_plot(x):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2)).eval()
    convs = [ins.convert(model, input_dim=[2, 6, 6]) for _ in range(2)]
    cmp = ins.compare_models(convs, torch.randn(3, 2, 6, 6), "Gradient")
    cmp.plot(data_idx=0).draw()
    cmp.plot_global().draw()


# ---- refused ------------------------------------------------------------------------------------------


def test_one_model_is_not_a_comparison(pair, x):
    with pytest.raises(ValueError, match="at least two"):
        ins.compare_models([pair[0]], x)


@pytest.mark.parametrize("converters", [{"a": 1, "b": 2}, "ab", 3], ids=["not-converters", "str", "int"])
def test_converters_must_be_converters(x, converters):
    with pytest.raises(TypeError, match="`converters`"):
        ins.compare_models(converters, x)


def test_unknown_method_lists_the_known(pair, x):
    with pytest.raises(ValueError, match="IntegratedGradient") as info:
        ins.compare_models(pair[:2], x, method="Saliency")
    assert "Saliency" in str(info.value)


def test_shapes_must_agree(pair, x):
    other = ins.convert(nn.Linear(5, 2).eval(), input_dim=[5])
    with pytest.raises(ValueError, match="share their input and output shapes"):
        ins.compare_models({"a": pair[0], "b": other}, x)


def test_models_with_two_inputs_and_two_outputs(two_in_two_out):
    convs = {name: ins.convert(two_in_two_out, input_dim=[[2, 6, 6], [4]]) for name in "ab"}
    generator = torch.Generator().manual_seed(0)
    data = [torch.randn(3, 2, 6, 6, generator=generator), torch.randn(3, 4, generator=generator)]
    cmp = ins.compare_models(convs, data, "Gradient", output_idx=[[0], [1]])
    assert (cmp.differences()["max_abs_diff"] == 0).all()
    frame = cmp.get_result("data.frame")
    assert set(frame["model_output"]) == {0, 1} and set(frame["model_input"]) == {0, 1}
    cmp.plot(data_idx=1).draw()


def test_plot_keeps_each_models_output_labels(pair, x):
    a, _, _ = pair
    named = ins.Converter(a.to_dict(), output_names=[["cat", "dog", "fish"]])
    cmp = ins.compare_models({"torch": a, "sklearn": named}, x, "Gradient", output_idx=[0, 2])
    figure = cmp.plot()
    assert list(figure.data["output_node"].cat.categories) == [
        "Y1 (torch)", "cat (sklearn)", "Y3 (torch)", "fish (sklearn)"]
    assert not figure.data["output_node"].isna().any()
    figure.draw()
