"""The shared method arguments: several input and output layers, output selection,
channels-last data, pandas input, dtype, device, batch_size, verbose, and every
argument check (each error names its argument).

Values are compared with torch autograd or Captum on the original model; where a
layout or input type changes, the result must equal the reference in that layout.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch

import innsight as ins

METHODS = {
    "grad": ins.run_grad,
    "smoothgrad": ins.run_smoothgrad,
    "intgrad": ins.run_intgrad,
    "expgrad": ins.run_expgrad,
}


@pytest.fixture
def multi_io(two_in_two_out, make_data):
    """(model in float64, converter, data [image (3, 2, 6, 6), vector (3, 4)])."""
    model = two_in_two_out.double()
    conv = ins.convert(model, input_dim=[[2, 6, 6], [4]], dtype="double")
    xs = [make_data(3, 2, 6, 6, seed=1), make_data(3, 4, seed=2)]
    return model, conv, xs


# ---- several input and output layers -----------------------------------------------------


@pytest.mark.parametrize("ignore_last_act", [True, False])
def test_several_inputs_and_outputs_equal_autograd(multi_io, grad_ref, close, ignore_last_act):
    model, conv, xs = multi_io
    res = ins.run_grad(conv, xs, output_idx=[[0, 1], [1]], dtype="double",
                       ignore_last_act=ignore_last_act, verbose=False)
    arrays = res.get_result("array")
    assert isinstance(arrays, list) and len(arrays) == 2
    assert all(isinstance(layer, list) and len(layer) == 2 for layer in arrays)
    assert [[a.shape for a in layer] for layer in arrays] == [
        [(3, 2, 6, 6, 2), (3, 4, 2)], [(3, 2, 6, 6, 1), (3, 4, 1)]]
    f = model.heads if ignore_last_act else model
    for o, idx in enumerate(([0, 1], [1])):
        expected = grad_ref(f, xs, idx, output=o)
        for k in range(2):
            close(arrays[o][k], expected[k], 1e-10, f"output layer {o}, input layer {k}")


def test_output_label_selects_the_same_nodes_as_output_idx(multi_io):
    _, conv, xs = multi_io
    assert conv.output_names == [[["Y1", "Y2", "Y3"]], [["Y1", "Y2"]]]
    by_idx = ins.run_grad(conv, xs, output_idx=[[0, 1], [1]], verbose=False).get_result()
    by_label = ins.run_grad(conv, xs, output_label=[["Y1", "Y2"], ["Y2"]],
                            verbose=False).get_result()
    for o in range(2):
        for k in range(2):
            np.testing.assert_array_equal(by_idx[o][k], by_label[o][k])
    reordered = ins.run_grad(conv, xs, output_label=["Y3", "Y1"], verbose=False)
    assert reordered.output_idx[0] == [2, 0]
    np.testing.assert_array_equal(
        reordered.get_result()[0][0],
        ins.run_grad(conv, xs, output_idx=[2, 0], verbose=False).get_result()[0][0])
    single = ins.run_grad(conv, xs, output_label="Y3", verbose=False).get_result()
    np.testing.assert_array_equal(
        single[0][1], ins.run_grad(conv, xs, output_idx=2, verbose=False).get_result()[0][1])


def test_unselected_output_layers_are_none(multi_io, grad_ref, close):
    model, conv, xs = multi_io
    only_second = ins.run_grad(conv, xs, output_idx=[None, [0]], dtype="double",
                               verbose=False).get_result()
    assert only_second[0] is None
    expected = grad_ref(model.heads, xs, [0], output=1)
    for k in range(2):
        close(only_second[1][k], expected[k], 1e-10)
    only_first = ins.run_grad(conv, xs, output_idx=[[2]], verbose=False).get_result()
    assert only_first[1] is None
    assert [a.shape for a in only_first[0]] == [(3, 2, 6, 6, 1), (3, 4, 1)]
    default = ins.run_grad(conv, xs, verbose=False).get_result()
    assert default[1] is None and default[0][0].shape[-1] == 3  # first output layer, all 3 nodes


def test_several_inputs_intgrad_equals_the_riemann_sum(multi_io, intgrad_ref, close):
    model, conv, xs = multi_io
    refs = [torch.zeros(1, 2, 6, 6, dtype=torch.float64), torch.ones(1, 4, dtype=torch.float64)]
    res = ins.run_intgrad(conv, xs, x_ref=refs, n=5, output_idx=[[0], [0, 1]], dtype="double",
                          verbose=False)
    values = res.get_result()
    for o, idx in enumerate(([0], [0, 1])):
        expected = intgrad_ref(model.heads, xs, refs, idx, 5, output=o)
        for k in range(2):
            close(values[o][k], expected[k], 1e-10, f"output layer {o}, input layer {k}")
        with torch.no_grad():
            goal = model.heads(*xs)[o][:, idx] - model.heads(*[r.expand_as(x) for r, x in
                                                                zip(refs, xs)])[o][:, idx]
        close(res.decomp_goal[o], goal, 1e-10, "decomp_goal")


# ---- output selection errors -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"output_idx": 3}, ValueError, "output_idx"),
        ({"output_idx": -1}, ValueError, "output_idx"),
        ({"output_idx": [[0], [2]]}, ValueError, "output_idx"),
        ({"output_idx": [[0], [0], [0]]}, ValueError, "output_idx"),
        ({"output_idx": "Y1"}, TypeError, "output_idx"),
        ({"output_idx": [0.5]}, TypeError, "output_idx"),
        ({"output_idx": [True]}, TypeError, "output_idx"),
        ({"output_idx": []}, TypeError, "output_idx"),
        ({"output_label": "Y9"}, ValueError, "output_label"),
        ({"output_label": [["Y1"], ["Y3"]]}, ValueError, "output_label"),
        ({"output_label": 1}, TypeError, "output_label"),
        ({"output_idx": 0, "output_label": "Y1"}, ValueError, "output_idx.*output_label"),
    ],
)
def test_bad_output_selection_is_refused(multi_io, kwargs, error, match):
    _, conv, xs = multi_io
    with pytest.raises(error, match=match):
        ins.run_grad(conv, xs, verbose=False, **kwargs)


@pytest.mark.parametrize("kwargs", [{"output_idx": [0, 0]}, {"output_idx": [[1], [1, 1]]},
                                    {"output_label": [["Y1", "Y1"]]}])
def test_repeated_output_nodes_are_refused(multi_io, kwargs):
    _, conv, xs = multi_io
    with pytest.raises(ValueError, match="repeated"):
        ins.run_grad(conv, xs, verbose=False, **kwargs)


def test_repeated_output_idx_error_names_the_argument(multi_io):
    _, conv, xs = multi_io
    with pytest.raises(ValueError, match="output_idx"):
        ins.run_grad(conv, xs, output_idx=[0, 0], verbose=False)


# ---- channels-last data ------------------------------------------------------------------


def test_channels_last_image_gradient_and_intgrad(softmax_cnn, make_data, grad_ref, captum_ig,
                                                  close):
    model = softmax_cnn.double()
    conv = ins.convert(model, input_dim=[2, 8, 8])
    x = make_data(3, 2, 8, 8, seed=3)
    x_ref = make_data(1, 2, 8, 8, seed=4)
    x_last, ref_last = x.permute(0, 2, 3, 1), x_ref.permute(0, 2, 3, 1)

    grad = ins.run_grad(conv, x_last, channels_first=False, dtype="double", verbose=False)
    assert grad.get_result().shape == (3, 8, 8, 2, 3)
    close(grad.get_result(), grad_ref(model.logits, x, [0, 1, 2])[0].permute(0, 2, 3, 1, 4),
          1e-10)

    ig = ins.run_intgrad(conv, x_last, x_ref=ref_last, n=4, channels_first=False, dtype="double",
                         verbose=False)
    expected = captum_ig(model.logits, x, x_ref, [0, 1, 2], 4).permute(0, 2, 3, 1, 4)
    close(ig.get_result(), expected, 1e-10)


def test_channels_last_signal(cnn1d, make_data, grad_ref, close):
    model = cnn1d.double()
    conv = ins.convert(model, input_dim=[2, 20], dtype="double")
    x = make_data(4, 2, 20, seed=5)
    res = ins.run_grad(conv, x.transpose(1, 2), channels_first=False, dtype="double",
                       verbose=False)
    assert res.get_result().shape == (4, 20, 2, 2)
    close(res.get_result(), grad_ref(model, x, [0, 1])[0].transpose(1, 2), 1e-10)


@pytest.mark.parametrize("method", ["smoothgrad", "expgrad"])
def test_channels_last_stochastic_methods_match_channels_first(softmax_cnn, make_data, close,
                                                               method):
    """With the same seed the noise is drawn alike: channels-last results are the
    channels-first results moved, reference data given in the same layout as the data."""
    conv = ins.convert(softmax_cnn, input_dim=[2, 8, 8], dtype="double")
    x = make_data(3, 2, 8, 8, seed=6)
    data_ref = make_data(5, 2, 8, 8, seed=7)
    extra_first = {"data_ref": data_ref} if method == "expgrad" else {}
    extra_last = {"data_ref": data_ref.permute(0, 2, 3, 1)} if method == "expgrad" else {}
    first = METHODS[method](conv, x, n=4, seed=0, verbose=False, **extra_first)
    last = METHODS[method](conv, x.permute(0, 2, 3, 1), n=4, seed=0, channels_first=False,
                           verbose=False, **extra_last)
    close(last.get_result(), np.moveaxis(first.get_result(), 1, 3), 1e-12)


def test_channels_last_leaves_tabular_data_as_it_is(softmax_mlp, make_data):
    conv = ins.convert(softmax_mlp, input_dim=[5])
    x = make_data(3, 5)
    np.testing.assert_array_equal(
        ins.run_grad(conv, x, channels_first=False, verbose=False).get_result(),
        ins.run_grad(conv, x, verbose=False).get_result())


def test_channels_first_data_given_as_channels_last_is_refused(softmax_cnn, make_data):
    conv = ins.convert(softmax_cnn, input_dim=[2, 8, 8])
    with pytest.raises(ValueError, match="channels_first"):
        ins.run_grad(conv, make_data(3, 2, 8, 8), channels_first=False, verbose=False)


# ---- data types and forms ----------------------------------------------------------------


# pandas' to_numpy() gives a read-only array; torch.as_tensor in methods/data.py warns
# about it once per process (reported as a wart, not what this test checks).
@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")
def test_pandas_data_frame_input_uses_its_column_names(softmax_mlp, make_data, grad_ref, close):
    conv = ins.convert(softmax_mlp, input_dim=[5])
    x = make_data(4, 5, seed=8, dtype=torch.float32)
    names = ["age", "height", "weight", "income", "score"]
    frame = pd.DataFrame(x.numpy(), columns=names)
    from_frame = ins.run_grad(conv, frame, verbose=False)
    from_array = ins.run_grad(conv, x.numpy(), verbose=False)
    np.testing.assert_array_equal(from_frame.get_result(), from_array.get_result())
    close(from_frame.get_result(), grad_ref(softmax_mlp[:-1], x, [0, 1, 2])[0], 1e-5)
    long = from_frame.get_result("data.frame")
    assert list(long["feature"].unique()) == names
    assert list(from_array.get_result("data.frame")["feature"].unique()) == [
        "X1", "X2", "X3", "X4", "X5"]


def test_numpy_tensor_int_and_single_sample_inputs(softmax_mlp, grad_ref, close):
    conv = ins.convert(softmax_mlp, input_dim=[5])
    ints = np.array([[1, -2, 0, 3, 1], [0, 2, 2, -1, 4]])
    x = torch.tensor(ints, dtype=torch.float64)
    expected = grad_ref(softmax_mlp.double()[:-1], x, [0, 1, 2])[0]
    reversed_view = np.ascontiguousarray(x.numpy()[:, ::-1])[:, ::-1]  # negative strides
    for data in (ints, x, x.numpy(), x.float(), reversed_view):
        close(ins.run_grad(conv, data, dtype="double", verbose=False).get_result(), expected,
              1e-10 if data is not x.float() else 1e-6)
    one = ins.run_grad(conv, x[1], dtype="double", verbose=False).get_result()
    assert one.shape == (1, 5, 3)
    close(one, expected[1:], 1e-10)


def test_single_sample_reference_without_batch_axis(softmax_mlp, make_data, captum_ig, close):
    conv = ins.convert(softmax_mlp, input_dim=[5])
    x, x_ref = make_data(3, 5, seed=9), make_data(5, seed=10)
    res = ins.run_intgrad(conv, x, x_ref=x_ref, n=4, dtype="double", verbose=False)
    close(res.get_result(), captum_ig(softmax_mlp.double()[:-1], x, x_ref[None], [0, 1, 2], 4),
          1e-10)


@pytest.mark.parametrize(("conv_dtype", "dtype", "expected"),
                         [("float", "double", np.float64), ("double", "float", np.float32),
                          ("float", torch.float64, np.float64)])
def test_dtype_sets_the_precision_and_leaves_the_converter_alone(softmax_mlp, make_data,
                                                                 conv_dtype, dtype, expected):
    conv = ins.convert(softmax_mlp, input_dim=[5], dtype=conv_dtype)
    before = conv.model.dtype
    res = ins.run_grad(conv, make_data(2, 5), dtype=dtype, verbose=False)
    assert res.get_result().dtype == expected
    assert conv.model.dtype == before


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")])
def test_device_cpu(softmax_mlp, make_data, grad_ref, close, device):
    conv = ins.convert(softmax_mlp, input_dim=[5])
    x = make_data(2, 5, dtype=torch.float32)
    res = ins.run_grad(conv, x, device=device, verbose=False)
    close(res.get_result(), grad_ref(softmax_mlp[:-1], x, [0, 1, 2])[0], 1e-5)


def test_verbose_shows_a_progress_bar_on_stderr(softmax_mlp, make_data, capsys):
    conv = ins.convert(softmax_mlp, input_dim=[5])
    x = make_data(3, 5)
    ins.run_smoothgrad(conv, x, n=20, batch_size=8, verbose=True)
    assert capsys.readouterr().err.strip() != ""
    ins.run_smoothgrad(conv, x, n=20, batch_size=8, verbose=False)
    assert capsys.readouterr().err == ""


# ---- batch_size bounds memory ------------------------------------------------------------


@pytest.mark.parametrize("method", ["smoothgrad", "intgrad", "expgrad"])
def test_batch_size_bounds_the_rows_per_forward_pass(softmax_cnn, make_data, method):
    """n=100 copies of 2 samples go through the graph in chunks of at most 16 rows."""
    conv = ins.convert(softmax_cnn, input_dim=[2, 8, 8])
    seen = []
    handle = conv.model.layers[1].register_forward_pre_hook(
        lambda module, args: seen.append(args[0].shape[0]))
    try:
        METHODS[method](conv, make_data(2, 2, 8, 8, dtype=torch.float32), n=100, batch_size=16,
                        seed=0, verbose=False)
    finally:
        handle.remove()
    assert max(seen) <= 16
    assert sum(seen) >= 2 * 100  # every copy went through the graph


# ---- argument checks ---------------------------------------------------------------------


@pytest.fixture
def mlp_case(softmax_mlp, make_data):
    return ins.convert(softmax_mlp, input_dim=[5]), make_data(3, 5)


BAD_SHARED = [
    ({"channels_first": "yes"}, TypeError, "channels_first"),
    ({"channels_first": 1}, TypeError, "channels_first"),
    ({"ignore_last_act": None}, TypeError, "ignore_last_act"),
    ({"verbose": "no"}, TypeError, "verbose"),
    ({"dtype": "half"}, ValueError, "dtype"),
    ({"dtype": torch.float16}, ValueError, "dtype"),
    ({"batch_size": 0}, (ValueError, TypeError), "batch_size"),
    ({"batch_size": -3}, (ValueError, TypeError), "batch_size"),
    ({"batch_size": 2.5}, (ValueError, TypeError), "batch_size"),
    ({"batch_size": True}, (ValueError, TypeError), "batch_size"),
    ({"seed": "1"}, TypeError, "seed"),
    ({"seed": 1.5}, TypeError, "seed"),
    ({"device": "not_a_device"}, ValueError, "device"),
]


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize(("kwargs", "error", "match"), BAD_SHARED)
def test_bad_shared_arguments_are_refused(mlp_case, method, kwargs, error, match):
    conv, x = mlp_case
    with pytest.raises(error, match=match):
        METHODS[method](conv, x, **kwargs)


BAD_OWN = [
    ("grad", {"times_input": 1}, TypeError, "times_input"),
    ("smoothgrad", {"n": 0}, ValueError, "`n`"),
    ("smoothgrad", {"n": 2.0}, (ValueError, TypeError), "`n`"),
    ("smoothgrad", {"noise_level": -0.1}, ValueError, "noise_level"),
    ("smoothgrad", {"noise_level": float("nan")}, ValueError, "noise_level"),
    ("smoothgrad", {"noise_level": "big"}, (ValueError, TypeError), "noise_level"),
    ("smoothgrad", {"times_input": "no"}, TypeError, "times_input"),
    ("intgrad", {"n": 0}, ValueError, "`n`"),
    ("intgrad", {"times_input": None}, TypeError, "times_input"),
    ("intgrad", {"x_ref": np.zeros((2, 5))}, ValueError, "x_ref"),
    ("intgrad", {"x_ref": np.zeros((3, 4))}, ValueError, "x_ref"),
    ("intgrad", {"x_ref": np.full((1, 5), np.nan)}, ValueError, "x_ref"),
    ("intgrad", {"x_ref": "zeros"}, TypeError, "x_ref"),
    ("expgrad", {"n": 0}, ValueError, "`n`"),
    ("expgrad", {"data_ref": np.zeros((10, 4))}, ValueError, "data_ref"),
    ("expgrad", {"data_ref": np.zeros((10, 5, 1))}, ValueError, "data_ref"),
    ("expgrad", {"data_ref": np.full((10, 5), np.inf)}, ValueError, "data_ref"),
]


@pytest.mark.parametrize(("method", "kwargs", "error", "match"), BAD_OWN)
def test_bad_method_arguments_are_refused(mlp_case, method, kwargs, error, match):
    conv, x = mlp_case
    with pytest.raises(error, match=match):
        METHODS[method](conv, x, verbose=False, **kwargs)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (np.zeros((3, 4)), ValueError),  # wrong feature count
        (np.zeros((3, 5, 1)), ValueError),  # an extra axis
        (np.zeros((0, 5)), ValueError),  # no samples
        ([np.zeros((3, 5)), np.zeros((3, 5))], ValueError),  # two arrays for one input layer
        (np.array([[0.0, 1.0, np.nan, 2.0, 3.0]]), ValueError),
        (np.array([[0.0, 1.0, np.inf, 2.0, 3.0]]), ValueError),
        (np.array([["a", "b", "c", "d", "e"]]), TypeError),
        (np.ones((2, 5), dtype=bool), TypeError),
        (pd.DataFrame({c: ["x", "y"] for c in "abcde"}), TypeError),
        ("data", TypeError),
        (None, TypeError),
    ],
)
def test_bad_data_is_refused(mlp_case, data, error):
    conv, _ = mlp_case
    with pytest.raises(error, match="`data`"):
        ins.run_grad(conv, data, verbose=False)


@pytest.mark.parametrize(
    "data",
    [
        lambda xs: [xs[0]],  # one array for two input layers
        lambda xs: [xs[0], xs[1], xs[1]],
        lambda xs: [xs[0], xs[1][:2]],  # different numbers of samples
        lambda xs: [xs[1], xs[0]],  # swapped
    ],
)
def test_bad_data_for_several_inputs_is_refused(multi_io, data):
    _, conv, xs = multi_io
    with pytest.raises(ValueError, match="data"):
        ins.run_grad(conv, data(xs), verbose=False)


def test_numpy_integer_output_idx_is_accepted(softmax_mlp, make_data, grad_ref, close):
    conv = ins.convert(softmax_mlp, input_dim=[5])
    x = make_data(2, 5, dtype=torch.float32)
    with torch.no_grad():
        best = np.argmax(softmax_mlp(x[:1]).numpy()[0])  # numpy.int64
    res = ins.run_grad(conv, x, output_idx=best, verbose=False)
    close(res.get_result(), grad_ref(softmax_mlp[:-1], x, [int(best)])[0], 1e-5)


@pytest.mark.parametrize("converter", [None, "conv", lambda x: x])
def test_converter_must_be_a_converter(converter, make_data):
    with pytest.raises(TypeError, match="converter"):
        ins.run_grad(converter, make_data(2, 5))


def test_a_torch_model_is_not_a_converter(softmax_mlp, make_data):
    with pytest.raises(TypeError, match="converter"):
        ins.run_intgrad(softmax_mlp, make_data(2, 5))


def test_several_inputs_smoothgrad_and_expgrad(multi_io, grad_ref, close):
    """Noise-free SmoothGrad is the gradient on every input layer; ExpectedGradient's
    goal is f(x) - mean f(data_ref) with references given per input layer."""
    model, conv, xs = multi_io
    smooth = ins.run_smoothgrad(conv, xs, n=3, noise_level=0.0, output_idx=[[1], [0, 1]],
                                dtype="double", verbose=False).get_result()
    for o, idx in enumerate(([1], [0, 1])):
        expected = grad_ref(model.heads, xs, idx, output=o)
        for k in range(2):
            close(smooth[o][k], expected[k], 1e-10, f"output layer {o}, input layer {k}")
    refs = [xs[0][:2] + 1, xs[1][:2] - 1]
    res = ins.run_expgrad(conv, xs, data_ref=refs, n=5, output_idx=[[0], [1]], seed=0,
                          dtype="double", verbose=False)
    assert [[a.shape for a in layer] for layer in res.get_result()] == [
        [(3, 2, 6, 6, 1), (3, 4, 1)], [(3, 2, 6, 6, 1), (3, 4, 1)]]
    with torch.no_grad():
        out, out_ref = model.heads(*xs), model.heads(*refs)
    for o, j in enumerate((0, 1)):
        close(res.decomp_goal[o], (out[o][:, j] - out_ref[o][:, j].mean()).unsqueeze(1), 1e-10)


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
@pytest.mark.parametrize("run", [ins.run_grad, ins.run_intgrad])
def test_methods_work_where_the_caller_turned_autograd_off(context, run):
    """Users often wrap evaluation code in no_grad/inference_mode; gradients must still flow."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).eval()
    conv = ins.convert(model, input_dim=[4], dtype="double")
    x = torch.randn(5, 4, dtype=torch.float64)
    expected = run(conv, x, dtype="double", verbose=False).get_result()
    with context():
        actual = run(conv, x, dtype="double", verbose=False).get_result()
    np.testing.assert_array_equal(actual, expected)
    # and against plain autograd: the gradient, or IntegratedGradient's right Riemann
    # sum (n=50 points k/50 * x from the zero baseline) times the input
    model = model.double()
    alphas = [1.0] if run is ins.run_grad else [k / 50 for k in range(1, 51)]
    reference = torch.zeros_like(x)
    for alpha in alphas:
        xr = (alpha * x).requires_grad_(True)
        reference += torch.autograd.grad(model(xr)[:, 0].sum(), xr)[0] / len(alphas)
    if run is ins.run_intgrad:
        reference *= x
    np.testing.assert_allclose(actual[..., 0], reference.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_direct_methods_work_where_the_caller_turned_autograd_off(context):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    x = torch.randn(5, 4)
    with context():
        grads = ins.torch_grad(model, x)
    expected = model[0].weight.detach().T.expand(5, 4, 3)
    torch.testing.assert_close(grads, expected)


# ---- run_* functions and arguments ------------------------------------------------------

RUNNERS = {"run_grad": ins.Gradient, "run_smoothgrad": ins.SmoothGrad,
           "run_intgrad": ins.IntegratedGradient, "run_expgrad": ins.ExpectedGradient,
           "run_deeplift": ins.DeepLift, "run_deepshap": ins.DeepSHAP, "run_lrp": ins.LRP,
           "run_cw": ins.ConnectionWeights, "run_lime": ins.LIME, "run_shap": ins.SHAP}


@pytest.mark.parametrize("name", list(RUNNERS))
def test_run_functions_carry_their_class_signature_and_docs(name):
    """``help(ins.run_grad)`` shows every argument: the class's own, then the shared ones."""
    import inspect

    run, cls = getattr(ins, name), RUNNERS[name]
    params = inspect.signature(run).parameters
    own = [p for p in inspect.signature(cls.__init__).parameters.values()
           if p.kind is inspect.Parameter.KEYWORD_ONLY]
    shared = [p for p in inspect.signature(ins.InterpretingMethod.__init__).parameters.values()
              if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert all(params[p.name].default == p.default for p in own + shared)
    assert run.__name__ == name and inspect.getdoc(cls) in run.__doc__
    # every argument has a numpydoc entry ("name : type" or "a, b" on a line of its own)
    entries = {name for line in re.findall(r"^(\w+(?:, \w+)*)(?: : .*)?$", run.__doc__, re.M)
               for name in line.split(", ")}
    assert set(params) - {"self"} <= entries, sorted(set(params) - entries)
    assert "Shared parameters (every method)" in run.__doc__


def test_an_unknown_argument_is_refused_with_the_valid_ones(multi_io):
    _, conv, xs = multi_io
    with pytest.raises(TypeError, match=r"SmoothGrad got unexpected argument\(s\) \['n_samples'\]; "
                                        r"its own arguments are \['n', 'noise_level', 'times_input'\]"
                                        r" and the shared ones \['channels_first'"):
        ins.run_smoothgrad(conv, xs, n_samples=4)
