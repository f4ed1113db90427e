"""The result object: ``get_result`` as array, torch tensor and long data frame,
``print``, and the plot entry points.

Expected values come from the original torch model (predictions, decomposition
goals) and torch autograd; the data frame is checked row by row against the array
through the documented default labels (``X1..``, ``C1..``/``H1..``/``W1..``,
``C1..``/``L1..``, ``Y1..``).
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

import innsight as ins

COLUMNS = ["data", "model_input", "model_output", "feature", "feature_2", "channel",
           "output_node", "value", "pred", "decomp_sum", "decomp_goal", "input_dimension"]


def label_index(labels: pd.Series, prefix: str) -> np.ndarray:
    """``"H3" -> 2``: the 0-based position encoded in a default label."""
    assert labels.str.startswith(prefix).all(), labels.unique()
    return labels.str[len(prefix):].astype(int).to_numpy() - 1


@pytest.fixture
def tabular(softmax_mlp, make_data):
    """(model, converter, data (4, 5), Gradient result for output nodes 0 and 2)."""
    conv = ins.convert(softmax_mlp, input_dim=[5])
    x = make_data(4, 5, seed=1, dtype=torch.float32)
    return softmax_mlp, conv, x, ins.run_grad(conv, x, output_idx=[0, 2], verbose=False)


# ---- get_result forms ---------------------------------------------------------------------


def test_array_and_torch_tensor_agree(tabular, grad_ref, close):
    model, _, x, res = tabular
    array = res.get_result()
    assert isinstance(array, np.ndarray) and array.shape == (4, 5, 2)
    np.testing.assert_array_equal(res.get_result("array"), array)
    tensor = res.get_result("torch_tensor")
    assert isinstance(tensor, torch.Tensor) and not tensor.requires_grad
    np.testing.assert_array_equal(tensor.numpy(), array)
    close(array, grad_ref(model[:-1], x, [0, 2])[0], 1e-5)


def test_torch_tensor_for_several_layers(two_in_two_out, make_data):
    conv = ins.convert(two_in_two_out, input_dim=[[2, 6, 6], [4]])
    xs = [make_data(2, 2, 6, 6, dtype=torch.float32), make_data(2, 4, dtype=torch.float32)]
    res = ins.run_grad(conv, xs, output_idx=[None, [0, 1]], verbose=False)
    arrays, tensors = res.get_result("array"), res.get_result("torch_tensor")
    assert arrays[0] is None and tensors[0] is None
    for a, t in zip(arrays[1], tensors[1]):
        assert isinstance(t, torch.Tensor)
        np.testing.assert_array_equal(t.numpy(), a)


@pytest.mark.parametrize("bad", ["numpy", "dataframe", "tensor", None, 1])
def test_unknown_result_type_is_refused(tabular, bad):
    with pytest.raises(ValueError, match="type"):
        tabular[3].get_result(bad)


# ---- the data frame ------------------------------------------------------------------------


def test_data_frame_of_tabular_data(tabular):
    model, _, x, res = tabular
    frame = res.get_result("data.frame")
    assert list(frame.columns) == COLUMNS
    assert len(frame) == 4 * 5 * 2
    assert not frame.duplicated(["data", "feature", "output_node"]).any()
    assert set(frame["output_node"]) == {"Y1", "Y3"}
    assert (frame["model_input"] == 0).all() and (frame["model_output"] == 0).all()
    assert (frame["input_dimension"] == 1).all()
    assert frame["channel"].isna().all() and frame["feature_2"].isna().all()
    assert frame["decomp_goal"].isna().all()  # the gradient has no decomposition goal

    array = res.get_result()
    sample = frame["data"].to_numpy()
    feature = label_index(frame["feature"], "X")
    node = label_index(frame["output_node"], "Y")
    position = np.searchsorted([0, 2], node)
    np.testing.assert_array_equal(frame["value"].to_numpy(), array[sample, feature, position])
    with torch.no_grad():
        preds = model(x).double().numpy()  # after the softmax
    np.testing.assert_allclose(frame["pred"].to_numpy(), preds[sample, node], rtol=1e-6)
    sums = array.astype(np.float64).sum(1)
    np.testing.assert_allclose(frame["decomp_sum"].to_numpy(), sums[sample, position],
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("channels_first", [True, False])
def test_data_frame_of_images_and_intgrad_goal(softmax_cnn, make_data, channels_first):
    model = softmax_cnn.double()
    conv = ins.convert(model, input_dim=[2, 8, 8], dtype="double")
    x, x_ref = make_data(3, 2, 8, 8, seed=2), make_data(1, 2, 8, 8, seed=3)
    data, ref = (x, x_ref) if channels_first else (x.permute(0, 2, 3, 1), x_ref.permute(0, 2, 3, 1))
    res = ins.run_intgrad(conv, data, x_ref=ref, n=4, output_idx=[1, 2], dtype="double",
                          channels_first=channels_first, verbose=False)
    frame = res.get_result("data.frame")
    assert list(frame.columns) == COLUMNS
    assert len(frame) == 3 * 2 * 8 * 8 * 2
    assert (frame["input_dimension"] == 3).all()

    array = res.get_result()
    sample = frame["data"].to_numpy()
    c = label_index(frame["channel"], "C")
    h = label_index(frame["feature"], "H")
    w = label_index(frame["feature_2"], "W")
    node = label_index(frame["output_node"], "Y")
    position = node - 1
    value = array[sample, c, h, w, position] if channels_first else array[sample, h, w, c, position]
    np.testing.assert_array_equal(frame["value"].to_numpy(), value)

    with torch.no_grad():
        preds = model(x).numpy()
        goal = (model.logits(x) - model.logits(x_ref)).numpy()
    np.testing.assert_allclose(frame["pred"].to_numpy(), preds[sample, node], rtol=1e-12)
    np.testing.assert_allclose(frame["decomp_goal"].to_numpy(), goal[sample, node], rtol=1e-10,
                               atol=1e-12)
    sums = array.reshape(3, -1, 2).sum(1)
    np.testing.assert_allclose(frame["decomp_sum"].to_numpy(), sums[sample, position],
                               rtol=1e-10, atol=1e-12)


def test_data_frame_of_signals(cnn1d, make_data):
    conv = ins.convert(cnn1d, input_dim=[2, 20])
    x = make_data(2, 2, 20, dtype=torch.float32)
    res = ins.run_grad(conv, x, verbose=False)
    frame = res.get_result("data.frame")
    assert list(frame.columns) == COLUMNS and len(frame) == 2 * 2 * 20 * 2
    assert (frame["input_dimension"] == 2).all() and frame["feature_2"].isna().all()
    array = res.get_result()
    value = array[frame["data"].to_numpy(), label_index(frame["channel"], "C"),
                  label_index(frame["feature"], "L"), label_index(frame["output_node"], "Y")]
    np.testing.assert_array_equal(frame["value"].to_numpy(), value)


def test_data_frame_of_several_layers(two_in_two_out, make_data):
    model = two_in_two_out.double()
    conv = ins.convert(model, input_dim=[[2, 6, 6], [4]], dtype="double")
    xs = [make_data(3, 2, 6, 6, seed=4), make_data(3, 4, seed=5)]
    res = ins.run_grad(conv, xs, output_idx=[[0, 2], [1]], dtype="double", verbose=False)
    frame = res.get_result("data.frame")
    assert list(frame.columns) == COLUMNS
    per_output = [2, 1]
    assert len(frame) == sum(3 * (2 * 6 * 6 + 4) * k for k in per_output)
    arrays = res.get_result()
    with torch.no_grad():
        outputs = [o.numpy() for o in model(*xs)]  # softmax and regression, after activations
    for o, idx in enumerate(([0, 2], [1])):
        rows = frame[frame["model_output"] == o]
        assert set(rows["output_node"]) == {f"Y{j + 1}" for j in idx}
        node = label_index(rows["output_node"], "Y")
        position = np.searchsorted(idx, node)
        sample = rows["data"].to_numpy()
        np.testing.assert_allclose(rows["pred"].to_numpy(), outputs[o][sample, node], rtol=1e-12)
        # the decomposition sum adds both input layers
        sums = sum(a.reshape(3, -1, len(idx)).sum(1) for a in arrays[o])
        np.testing.assert_allclose(rows["decomp_sum"].to_numpy(), sums[sample, position],
                                   rtol=1e-10, atol=1e-12)
        image = rows[rows["model_input"] == 0]
        assert (image["input_dimension"] == 3).all() and len(image) == 3 * 72 * len(idx)
        vector = rows[rows["model_input"] == 1]
        assert (vector["input_dimension"] == 1).all() and len(vector) == 3 * 4 * len(idx)
        np.testing.assert_array_equal(
            vector["value"].to_numpy(),
            arrays[o][1][vector["data"].to_numpy(), label_index(vector["feature"], "X"),
                         np.searchsorted(idx, label_index(vector["output_node"], "Y"))])


# ---- printing and plots --------------------------------------------------------------------


@pytest.mark.parametrize(("method", "kwargs", "name"), [
    (ins.run_grad, {}, "Gradient"), (ins.run_smoothgrad, {"n": 2}, "SmoothGrad"),
    (ins.run_intgrad, {"n": 2}, "IntegratedGradient"),
    (ins.run_expgrad, {"n": 2}, "ExpectedGradient"),
])
def test_print_names_the_method(softmax_mlp, make_data, capsys, method, kwargs, name):
    conv = ins.convert(softmax_mlp, input_dim=[5])
    res = method(conv, make_data(3, 5), verbose=False, **kwargs)
    text = str(res)
    assert name in text and text.strip()
    assert name in repr(res)
    print(res)
    assert name in capsys.readouterr().out


def test_print_several_layers(two_in_two_out, make_data):
    conv = ins.convert(two_in_two_out, input_dim=[[2, 6, 6], [4]])
    xs = [make_data(2, 2, 6, 6), make_data(2, 4)]
    text = str(ins.run_intgrad(conv, xs, n=2, output_idx=[None, [0]], verbose=False))
    assert "IntegratedGradient" in text


# ---- equality -------------------------------------------------------------------------------
# Axioms of a value equality: reflexive and symmetric, equal for the same computation run
# twice, unequal as soon as one field differs; never raising on tensors.


@pytest.mark.parametrize(("method", "kwargs"), [
    (ins.run_grad, {"times_input": True}),
    (ins.run_intgrad, {"n": 3, "x_ref": torch.full((1, 5), 0.5)}),   # a tensor among the args
    (ins.run_lrp, {"rule_name": {"Dense": "epsilon"}, "rule_param": {"Dense": 0.1}}),
    (ins.run_deeplift, {"x_ref": np.zeros((1, 5), dtype=np.float32)}),   # a numpy argument
    (ins.run_lime, {"data_ref": pd.DataFrame(np.eye(5, dtype=np.float32)), "n": 20, "seed": 1}),
    (ins.run_cw, {}),
], ids=["Gradient", "IntegratedGradient", "LRP", "DeepLift", "LIME", "ConnectionWeights"])
def test_results_of_one_computation_are_equal(softmax_mlp, make_data, method, kwargs):
    conv = ins.convert(softmax_mlp, input_dim=[5])
    x = None if method is ins.run_cw else make_data(3, 5, dtype=torch.float32)
    first = method(conv, x, verbose=False, **kwargs)
    again = method(conv, x, verbose=False, **kwargs)
    assert first == first and first == again and again == first and not first != again
    if method is ins.run_cw:  # no data: the predictions are NaN, and NaN equals NaN here
        assert torch.isnan(first.preds[0]).all()


def test_results_differ_in_any_field(tabular):
    _, conv, x, res = tabular

    def changed(**fields) -> ins.Result:
        other = copy.deepcopy(res)
        for name, value in fields.items():
            setattr(other, name, value)
        return other

    value = res.values[0][0]
    bumped = value.clone()
    bumped[0, 0, 0] = torch.nextafter(bumped[0, 0, 0], torch.tensor(np.inf))  # one ulp
    assert changed() == res
    unequal = [
        changed(values=[[bumped]]),
        changed(values=[[value.double()]]),        # same numbers, other dtype
        changed(values=[[value[:, :, :1]]]),        # other shape
        changed(preds=[None]),
        changed(args={"times_input": True}),
        changed(output_labels=[["Y1", "Y4"]]),
        changed(channels_first=False),
        changed(data=None),
        ins.run_grad(conv, x, output_idx=[0, 1], verbose=False),
        ins.run_grad(conv, x + 1, output_idx=[0, 2], verbose=False),
        ins.run_smoothgrad(conv, x, output_idx=[0, 2], verbose=False, n=2),  # another class
    ]
    for other in unequal:
        assert other != res and res != other


FRAME = pd.DataFrame({"a": [1.0, np.nan], "b": [3.0, 4.0]})


@pytest.mark.parametrize(("first", "second", "equal"), [
    (torch.tensor([1.0, np.nan]), torch.tensor([1.0, np.nan]), True),
    (torch.tensor([1, 2]), torch.tensor([1, 3]), False),                 # integers
    (torch.zeros(2), np.zeros(2, dtype=np.float32), False),             # tensor vs array
    (np.array([1.0, np.nan]), np.array([1.0, np.nan]), True),
    (np.zeros(2), np.zeros(2, dtype=np.float32), False),                # dtype
    (np.zeros(2), np.zeros((1, 2)), False),                             # shape
    (FRAME, FRAME.copy(), True),
    (FRAME, FRAME.assign(b=[3.0, 5.0]), False),
    (FRAME, FRAME.to_numpy(), False),
    ([0.0, 1.0], FRAME, False),                                         # == gives no truth value
    ({"Dense": 0.1}, {"Dense": 0.1}, True),
    ({"Dense": 0.1}, {"Conv2d": 0.1}, False),
    ((1, 2), [1, 2], False),
    (abs, abs, True),
], ids=lambda v: type(v).__name__)
def test_arguments_compare_by_value(tabular, first, second, equal):
    res = tabular[-1]
    a, b = copy.deepcopy(res), copy.deepcopy(res)
    a.args, b.args = {"x_ref": first}, {"x_ref": second}
    assert (a == b) is equal and (b == a) is equal


def test_equality_with_other_objects_and_hashing(tabular):
    res = tabular[-1]
    assert res != 3 and res != "Gradient" and res != res.values
    with pytest.raises(TypeError, match="unhashable"):
        hash(res)


def test_a_plain_result_and_comparisons_compare_by_value(softmax_mlp, make_data):
    x, logits = make_data(3, 5, dtype=torch.float32), softmax_mlp[:-1].eval()
    plain = ins.torch_grad(logits, x, return_object=True)
    assert plain == ins.torch_grad(logits, x, return_object=True)
    assert plain != ins.torch_grad(logits, 2 * x, return_object=True)
    convs = [ins.convert(softmax_mlp, input_dim=[5]) for _ in range(2)]
    cmp = ins.compare_models(convs, x, "Gradient", output_idx=[0])
    assert cmp == ins.compare_models(convs, x, "Gradient", output_idx=[0])
    assert cmp != ins.compare_models(convs, x, "Gradient", output_idx=[1])
