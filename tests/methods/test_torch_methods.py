"""Direct torch methods on an ``nn.Module`` without conversion: ``torch_grad``,
``torch_smoothgrad``, ``torch_intgrad`` and ``torch_expgrad``.

They explain the module's (first) output as it is, final softmax included.
References: torch autograd, Captum's ``IntegratedGradients`` (riemann_right), and
closed forms on linear models.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

import innsight as ins

MODELS = {
    "mlp": ("softmax_mlp", (5,)),
    "cnn": ("softmax_cnn", (2, 8, 8)),
}
DTYPES = {"float": torch.float32, "double": torch.float64}


def _case(request, make_data, name, dtype):
    fixture, shape = MODELS[name]
    model = request.getfixturevalue(fixture)
    x = make_data(3, *shape, seed=1, dtype=DTYPES[dtype])
    return model, x


@pytest.mark.parametrize("times_input", [False, True])
@pytest.mark.parametrize("dtype", ["float", "double"])
@pytest.mark.parametrize("name", list(MODELS))
def test_torch_grad_equals_autograd(request, make_data, as_dtype, grad_ref, close, tolerances,
                                    name, dtype, times_input):
    model, x = _case(request, make_data, name, dtype)
    values = ins.torch_grad(model, x, times_input=times_input, dtype=dtype)
    assert isinstance(values, torch.Tensor) and values.dtype == DTYPES[dtype]
    assert values.shape == (3, *x.shape[1:], 3)
    expected = grad_ref(as_dtype(model, dtype), x, [0, 1, 2])[0]
    if times_input:
        expected = expected * x.unsqueeze(-1)
    close(values, expected, tolerances[dtype])


@pytest.mark.parametrize("baseline", ["zero", "one_sample", "per_sample"])
@pytest.mark.parametrize("dtype", ["float", "double"])
@pytest.mark.parametrize("name", list(MODELS))
def test_torch_intgrad_equals_captum(request, make_data, as_dtype, captum_ig, close, tolerances,
                                     name, dtype, baseline):
    model, x = _case(request, make_data, name, dtype)
    x_ref = {
        "zero": None,
        "one_sample": make_data(1, *x.shape[1:], seed=2, dtype=x.dtype),
        "per_sample": make_data(3, *x.shape[1:], seed=3, dtype=x.dtype),
    }[baseline]
    values = ins.torch_intgrad(model, x, x_ref=x_ref, n=8, dtype=dtype)
    expected = captum_ig(as_dtype(model, dtype), x, 0.0 if x_ref is None else x_ref, [0, 1, 2], 8)
    close(values, expected, tolerances[dtype])


def test_torch_intgrad_object_keeps_the_goal(softmax_mlp, make_data, close):
    x, x_ref = make_data(3, 5, seed=4), make_data(1, 5, seed=5)
    res = ins.torch_intgrad(softmax_mlp, x, x_ref=x_ref, n=4, dtype="double", return_object=True)
    assert isinstance(res, ins.Result)
    with torch.no_grad():
        reference = copy.deepcopy(softmax_mlp).double()
        goal = reference(x) - reference(x_ref)
        preds = reference(x)
    close(res.decomp_goal[0], goal, 1e-10, "decomp_goal")
    frame = res.get_result("data.frame")
    np.testing.assert_allclose(frame["pred"].to_numpy(),
                               preds.numpy()[frame["data"].to_numpy(),
                                             frame["output_node"].str[1:].astype(int) - 1],
                               rtol=1e-12)


@pytest.mark.parametrize(("fn", "kwargs", "name"), [
    (ins.torch_grad, {}, "Gradient"), (ins.torch_smoothgrad, {"n": 3}, "SmoothGrad"),
    (ins.torch_intgrad, {"n": 3}, "IntegratedGradient"),
    (ins.torch_expgrad, {"n": 3}, "ExpectedGradient"),
])
def test_return_object_gives_a_result_equal_to_the_tensor(softmax_cnn, make_data, fn, kwargs,
                                                          name):
    x = make_data(2, 2, 8, 8, dtype=torch.float32)
    res = fn(softmax_cnn, x, return_object=True, **kwargs)
    assert isinstance(res, ins.Result)
    assert res.get_result().shape == (2, 2, 8, 8, 3)
    assert name in str(res)
    if fn in (ins.torch_grad, ins.torch_intgrad):  # deterministic: the tensor equals the object
        np.testing.assert_array_equal(fn(softmax_cnn, x, **kwargs).numpy(), res.get_result())
    np.testing.assert_array_equal(res.get_result("torch_tensor").numpy(), res.get_result())


def test_default_output_idx_takes_the_first_ten_nodes(make_data, grad_ref, close):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 12), nn.Tanh(), nn.Linear(12, 12)).eval()
    x = make_data(3, 4, dtype=torch.float32)
    values = ins.torch_grad(model, x)
    assert values.shape == (3, 4, 10)
    close(values, grad_ref(model, x, list(range(10)))[0], 1e-5)
    picked = ins.torch_grad(model, x, output_idx=[11, 3])
    close(picked, grad_ref(model, x, [11, 3])[0], 1e-5)
    assert ins.torch_grad(model, x, output_idx=5).shape == (3, 4, 1)


@pytest.mark.parametrize("n", [1, 9])
def test_torch_smoothgrad_on_a_linear_model_is_the_weights(linear_model, make_data, close, n):
    x = make_data(4, 6, dtype=torch.float32)
    values = ins.torch_smoothgrad(linear_model, x, n=n, noise_level=1.5)
    assert values.shape == (4, 6, 3)
    close(values, linear_model.weight.detach().T.unsqueeze(0).expand(4, 6, 3), 1e-6)


def test_torch_smoothgrad_without_noise_is_the_gradient(softmax_cnn, make_data, grad_ref, close):
    x = make_data(2, 2, 8, 8)
    values = ins.torch_smoothgrad(softmax_cnn, x, n=2, noise_level=0.0, dtype="double")
    close(values, grad_ref(copy.deepcopy(softmax_cnn).double(), x, [0, 1, 2])[0], 1e-10)


def test_torch_expgrad_on_a_linear_model_approaches_its_expectation(linear_model, make_data):
    data_ref = 1 + make_data(25, 6, seed=6)
    x = make_data(2, 6, seed=7)
    n = 4000
    values = ins.torch_expgrad(linear_model, x, data_ref=data_ref, n=n, dtype="double").numpy()
    w = linear_model.weight.detach().double()
    expected = (w.T.unsqueeze(0) * (x - data_ref.mean(0)).unsqueeze(-1)).numpy()
    tol = 6 * (w.T.abs() * data_ref.std(0, unbiased=False).unsqueeze(-1)).numpy() / math.sqrt(n)
    assert (np.abs(values - expected) <= tol).all()


def test_torch_methods_with_several_inputs(two_in_two_out, make_data, grad_ref, close):
    """A list of inputs gives a list of values; the module's first output is explained."""
    model = two_in_two_out
    xs = [make_data(2, 2, 6, 6, dtype=torch.float32), make_data(2, 4, dtype=torch.float32)]
    values = ins.torch_grad(model, xs)
    expected = grad_ref(model, xs, [0, 1, 2], output=0)
    assert isinstance(values, list) and len(values) == 2
    for v, e in zip(values, expected):
        close(v, e, 1e-5)


def test_double_leaves_the_users_model_alone(softmax_cnn, make_data, grad_ref, close):
    params = {k: v.clone() for k, v in softmax_cnn.state_dict().items()}
    x = make_data(2, 2, 8, 8)
    for fn in (ins.torch_grad, ins.torch_smoothgrad, ins.torch_intgrad, ins.torch_expgrad):
        values = fn(softmax_cnn, x, dtype="double")
        assert values.dtype == torch.float64
    assert all(p.dtype == torch.float32 for p in softmax_cnn.parameters())
    for k, v in softmax_cnn.state_dict().items():
        assert torch.equal(v, params[k]), k
    close(ins.torch_grad(softmax_cnn, x, dtype="double"),
          grad_ref(copy.deepcopy(softmax_cnn).double(), x, [0, 1, 2])[0], 1e-10)


class DropoutNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(5, 16)
        self.bn = nn.BatchNorm1d(16)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.bn(self.fc1(x)))))


@pytest.mark.parametrize("dtype", ["float", "double"])
def test_a_model_in_train_mode_is_explained_in_eval_mode(make_data, grad_ref, close, dtype):
    torch.manual_seed(0)
    model = DropoutNet()
    with torch.no_grad():
        model.bn.running_mean.normal_()
        model.bn.running_var.uniform_(0.5, 1.5)
    model.train()
    model.fc2.eval()  # a mixed state must come back as it was
    flags = {name: m.training for name, m in model.named_modules()}
    x = make_data(4, 5, dtype=DTYPES[dtype])
    with pytest.warns(UserWarning, match="train"):
        values = ins.torch_grad(model, x, dtype=dtype)
    assert {name: m.training for name, m in model.named_modules()} == flags
    reference = copy.deepcopy(model).to(DTYPES[dtype]).eval()
    close(values, grad_ref(reference, x, [0, 1, 2])[0], 1e-5 if dtype == "float" else 1e-10)
    with pytest.warns(UserWarning, match="train"):
        again = ins.torch_intgrad(model, x, n=4, dtype=dtype)
    assert {name: m.training for name, m in model.named_modules()} == flags
    np.testing.assert_array_equal(again.numpy(),
                                  ins.torch_intgrad(reference, x, n=4, dtype=dtype).numpy())


def test_a_model_in_eval_mode_gives_no_warning(softmax_mlp, make_data, recwarn):
    ins.torch_grad(softmax_mlp, make_data(2, 5))
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)
                and "train" in str(w.message)]


class SqueezedRegression(nn.Module):
    """A regression model returning shape (n,), as ``.squeeze(-1)`` heads do."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        return self.fc(x).squeeze(-1)


def test_direct_methods_explain_a_one_dimensional_output(make_data, close):
    torch.manual_seed(0)
    model = SqueezedRegression().eval()
    x = make_data(3, 4, dtype=torch.float32)
    values = ins.torch_grad(model, x)
    close(values, model.fc.weight.detach().T.unsqueeze(0).expand(3, 4, 1), 1e-6)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda m, x: ins.torch_grad("model", x), TypeError, "model"),
        (lambda m, x: ins.torch_grad(lambda t: t, x), TypeError, "model"),
        (lambda m, x: ins.torch_grad(m, x, output_idx=3), ValueError, "output_idx"),
        (lambda m, x: ins.torch_grad(m, x, output_idx=[0, -1]), ValueError, "output_idx"),
        (lambda m, x: ins.torch_grad(m, x, output_idx="Y1"), TypeError, "output_idx"),
        (lambda m, x: ins.torch_grad(m, x, output_idx=[]), TypeError, "output_idx"),
        (lambda m, x: ins.torch_grad(m, x, return_object="yes"), TypeError, "return_object"),
        (lambda m, x: ins.torch_grad(m, x, times_input=None), TypeError, "times_input"),
        (lambda m, x: ins.torch_grad(m, x, dtype="half"), ValueError, "dtype"),
        (lambda m, x: ins.torch_grad(m, "data"), TypeError, "data"),
        (lambda m, x: ins.torch_grad(m, x.numpy() * np.nan), ValueError, "data"),
        (lambda m, x: ins.torch_smoothgrad(m, x, n=0), ValueError, "`n`"),
        (lambda m, x: ins.torch_smoothgrad(m, x, noise_level=-1.0), ValueError, "noise_level"),
        (lambda m, x: ins.torch_intgrad(m, x, n=0), ValueError, "`n`"),
        (lambda m, x: ins.torch_intgrad(m, x, x_ref=torch.zeros(2, 5)), ValueError, "x_ref"),
        (lambda m, x: ins.torch_intgrad(m, x, x_ref=torch.zeros(1, 4)), ValueError, "x_ref"),
        (lambda m, x: ins.torch_expgrad(m, x, data_ref=torch.zeros(5, 4)), ValueError,
         "data_ref"),
        (lambda m, x: ins.torch_expgrad(m, x, n=-2), ValueError, "`n`"),
    ],
)
def test_bad_arguments_are_refused(softmax_mlp, make_data, call, error, match):
    with pytest.raises(error, match=match):
        call(softmax_mlp, make_data(3, 5))


# ---- one path with the converter-based methods (issue 12, item 4) -----------------------


@pytest.mark.parametrize(("fn", "kwargs"), [
    (ins.torch_smoothgrad, {"n": 6}),
    (ins.torch_expgrad, {"n": 6}),
])
def test_stochastic_direct_methods_are_reproducible_with_a_seed(softmax_cnn, make_data, fn,
                                                                kwargs):
    x = make_data(3, 2, 8, 8)
    first, again = fn(softmax_cnn, x, seed=7, **kwargs), fn(softmax_cnn, x, seed=7, **kwargs)
    other = fn(softmax_cnn, x, seed=8, **kwargs)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


@pytest.mark.parametrize(("fn", "kwargs"), [
    (ins.torch_grad, {}),
    (ins.torch_intgrad, {"n": 5}),
])
def test_direct_methods_do_not_depend_on_batch_size(softmax_cnn, make_data, close, fn, kwargs):
    x = make_data(4, 2, 8, 8, dtype=torch.float64)
    whole = fn(softmax_cnn, x, dtype="double", **kwargs)
    for batch_size in (1, 3):
        close(fn(softmax_cnn, x, dtype="double", batch_size=batch_size, **kwargs), whole, 1e-12)


def test_direct_methods_equal_the_method_on_the_converted_model(softmax_cnn, make_data, close):
    """Same class, same selection, same chunking: the raw module and its conversion
    (softmax kept: ignore_last_act does not apply to a raw module) agree."""
    x = make_data(3, 2, 8, 8, dtype=torch.float64)
    conv = ins.convert(softmax_cnn, input_dim=[2, 8, 8])
    for direct, method, kwargs in [
        (ins.torch_grad, ins.run_grad, {"times_input": True}),
        (ins.torch_smoothgrad, ins.run_smoothgrad, {"n": 4, "seed": 3}),
        (ins.torch_intgrad, ins.run_intgrad, {"n": 6}),
        (ins.torch_expgrad, ins.run_expgrad, {"n": 4, "seed": 3}),
    ]:
        res = direct(softmax_cnn, x, output_idx=[2, 0], dtype="double", return_object=True,
                     **kwargs)
        ref = method(conv, x, output_idx=[2, 0], dtype="double", ignore_last_act=False, **kwargs)
        assert type(res) is type(ref) and res.output_labels == ref.output_labels == [["Y3", "Y1"]]
        close(res.get_result("torch_tensor"), ref.get_result("torch_tensor"), 1e-10)
        close(res.preds[0], ref.preds[0], 1e-12)


def test_output_idx_reaches_every_output_of_the_module(two_in_two_out, make_data, grad_ref,
                                                       close):
    """``output_idx`` per output layer means what it means in ``run_*``: here node 1 of
    the module's second output."""
    xs = [make_data(2, 2, 6, 6, dtype=torch.float64), make_data(2, 4, dtype=torch.float64)]
    values = ins.torch_grad(two_in_two_out, xs, output_idx=[None, [1]], dtype="double")
    model = copy.deepcopy(two_in_two_out).double()
    for v, e in zip(values, grad_ref(model, xs, [1], output=1)):
        close(v, e, 1e-12)
    both = ins.torch_grad(two_in_two_out, xs, output_idx=[[0], [1]], dtype="double")
    assert both[1] is not None and len(both) == 2  # [output][input] when several outputs


def test_rule_based_methods_refuse_a_raw_module(softmax_mlp, make_data):
    from innsight.methods.model_interface import TorchModule

    x = make_data(2, 5)
    with pytest.raises(TypeError, match="`converter` must be an innsight Converter"):
        ins.LRP(TorchModule(softmax_mlp, x, torch.float32), x)
