"""Gradient, SmoothGrad, IntegratedGradient and ExpectedGradient against independent
references.

References: torch autograd on the original model (its logits before the final
softmax when ``ignore_last_act=True``), Captum's ``IntegratedGradients`` with
``method="riemann_right"``, closed forms on linear models (gradient ``W[j]``
everywhere), the completeness axiom of path methods, and Monte-Carlo estimates
drawn here with autograd, compared with tolerances derived from the number of
draws. float32 results are compared at 1e-5 and float64 results at 1e-10
relative to the reference's largest magnitude.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import innsight as ins

#: name -> (fixture, input_dim, the explained function before a final softmax, has softmax)
MODELS = {
    "mlp": ("softmax_mlp", [5], lambda m: m[:-1], True),
    "cnn": ("softmax_cnn", [2, 8, 8], lambda m: m.logits, True),
    "residual": ("residual_net", [3, 16, 16], lambda m: m, False),
}
N_DATA = 4


def _case(request, as_dtype, make_data, name, dtype):
    """(converter of the float model, reference model in ``dtype``, its logits function,
    data in ``dtype``, the indices of all output nodes)."""
    fixture, input_dim, logits_of, _ = MODELS[name]
    model = request.getfixturevalue(fixture)
    conv = ins.convert(model, input_dim=input_dim)
    reference = as_dtype(model, dtype)
    x = make_data(N_DATA, *input_dim, seed=11, dtype=reference_dtype(dtype))
    n_out = conv.output_dim[0][0]
    return conv, reference, logits_of(reference), x, list(range(n_out))


def reference_dtype(dtype):
    return torch.float64 if dtype == "double" else torch.float32


# ---- Gradient --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float", "double"])
@pytest.mark.parametrize("ignore_last_act", [True, False])
@pytest.mark.parametrize("name", list(MODELS))
def test_gradient_equals_autograd(request, as_dtype, make_data, grad_ref, close, tolerances,
                                  name, dtype, ignore_last_act):
    conv, model, logits, x, idx = _case(request, as_dtype, make_data, name, dtype)
    res = ins.run_grad(conv, x, dtype=dtype, ignore_last_act=ignore_last_act, verbose=False)
    explained = logits if ignore_last_act else model
    expected = grad_ref(explained, x, idx)[0]
    actual = res.get_result("array")
    assert actual.dtype == (np.float64 if dtype == "double" else np.float32)
    close(actual, expected, tolerances[dtype], f"{name} gradient")


def test_ignore_last_act_selects_logits_or_softmax(softmax_mlp, make_data, grad_ref, close):
    """The two settings explain different functions (softmax vs logits) on a softmax model."""
    conv = ins.convert(softmax_mlp, input_dim=[5])
    x = make_data(3, 5, dtype=torch.float32)
    with_act = ins.run_grad(conv, x, ignore_last_act=False, verbose=False).get_result()
    without = ins.run_grad(conv, x, ignore_last_act=True, verbose=False).get_result()
    close(with_act, grad_ref(softmax_mlp, x, [0, 1, 2])[0], 1e-5)
    close(without, grad_ref(softmax_mlp[:-1], x, [0, 1, 2])[0], 1e-5)
    # softmax outputs sum to one: their gradients sum to zero over the output nodes
    assert np.abs(with_act.sum(-1)).max() < 1e-6
    assert np.abs(without.sum(-1)).max() > 1e-2


@pytest.mark.parametrize("dtype", ["float", "double"])
@pytest.mark.parametrize("name", list(MODELS))
def test_gradient_times_input_is_gradient_times_input(request, as_dtype, make_data, grad_ref,
                                                       close, tolerances, name, dtype):
    conv, _, logits, x, idx = _case(request, as_dtype, make_data, name, dtype)
    res = ins.run_grad(conv, x, dtype=dtype, times_input=True, verbose=False)
    expected = grad_ref(logits, x, idx)[0] * x.unsqueeze(-1)
    close(res.get_result(), expected, tolerances[dtype], f"{name} gradient x input")


@pytest.mark.parametrize("ignore_last_act, passes", [(False, 1), (True, 2)])
def test_gradient_reads_predictions_from_its_own_forward(softmax_cnn, make_data, close,
                                                          ignore_last_act, passes):
    """A plain Gradient runs the model once over the data when the predictions are the
    explained outputs (the softmax, ``ignore_last_act=False``); explaining the logits of
    a softmax model needs one pass more for the predictions. Either way the predictions
    are the original model's outputs."""
    conv = ins.convert(softmax_cnn, input_dim=[2, 8, 8])
    calls = []
    conv.model.layers[1].register_forward_hook(lambda *_: calls.append(1))
    x = make_data(5, 2, 8, 8, dtype=torch.float32)
    res = ins.run_grad(conv, x, ignore_last_act=ignore_last_act, verbose=False)
    assert len(calls) == passes
    with torch.no_grad():
        close(res.preds[0], softmax_cnn(x), 1e-6, "predictions")


# ---- IntegratedGradient ----------------------------------------------------------------


@pytest.mark.parametrize("baseline", ["zero", "one_sample", "per_sample"])
@pytest.mark.parametrize("dtype", ["float", "double"])
@pytest.mark.parametrize("name", list(MODELS))
def test_intgrad_equals_captum(request, as_dtype, make_data, captum_ig, close, tolerances,
                               name, dtype, baseline):
    conv, _, logits, x, idx = _case(request, as_dtype, make_data, name, dtype)
    dim = list(x.shape[1:])
    x_ref = {
        "zero": None,
        "one_sample": make_data(1, *dim, seed=5, dtype=x.dtype),
        "per_sample": make_data(N_DATA, *dim, seed=6, dtype=x.dtype),
    }[baseline]
    n = 8
    res = ins.run_intgrad(conv, x, x_ref=x_ref, n=n, dtype=dtype, verbose=False)
    expected = captum_ig(logits, x, 0.0 if x_ref is None else x_ref, idx, n)
    close(res.get_result(), expected, tolerances[dtype], f"{name} integrated gradient")


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_intgrad_without_times_input_is_the_mean_path_gradient(request, as_dtype, make_data,
                                                              intgrad_ref, close, name):
    conv, _, logits, x, idx = _case(request, as_dtype, make_data, name, "double")
    x_ref = make_data(1, *x.shape[1:], seed=8)
    res = ins.run_intgrad(conv, x, x_ref=x_ref, n=6, times_input=False, dtype="double",
                          verbose=False)
    expected = intgrad_ref(logits, x, x_ref, idx, 6, times_input=False)[0]
    close(res.get_result(), expected, 1e-10)


@pytest.mark.parametrize("ignore_last_act", [True, False])
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_intgrad_decomp_goal_is_output_difference(request, as_dtype, make_data, close, name,
                                                  ignore_last_act):
    conv, model, logits, x, idx = _case(request, as_dtype, make_data, name, "double")
    x_ref = make_data(N_DATA, *x.shape[1:], seed=9)
    res = ins.run_intgrad(conv, x, x_ref=x_ref, n=4, dtype="double",
                          ignore_last_act=ignore_last_act, verbose=False)
    f = logits if ignore_last_act else model
    with torch.no_grad():
        expected = f(x) - f(x_ref)
    assert len(res.decomp_goal) == 1
    close(res.decomp_goal[0], expected, 1e-10, "decomp_goal")


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_intgrad_sum_approaches_goal_as_n_grows(request, as_dtype, make_data, name):
    """Completeness: the values of a sample sum to about f(x) - f(x_ref), closer for more steps."""
    conv, _, logits, x, idx = _case(request, as_dtype, make_data, name, "double")
    x = 2 * x  # longer paths: the Riemann error for few steps is clearly visible
    with torch.no_grad():
        goal = (logits(x) - logits(torch.zeros_like(x))).numpy()
    errors = {}
    for n in (5, 200):
        values = ins.run_intgrad(conv, x, n=n, dtype="double", verbose=False).get_result()
        sums = values.reshape(values.shape[0], -1, values.shape[-1]).sum(1)
        errors[n] = np.abs(sums - goal).max()
    scale = np.abs(goal).max()
    assert errors[200] < errors[5]
    assert errors[200] < 0.01 * scale, (errors, scale)


@pytest.mark.parametrize("n", [1, 3, 50])
def test_intgrad_is_exact_on_a_linear_model(linear_model, make_data, close, n):
    """For f(x) = W x + b the path gradient is W everywhere: W[j] * (x - x') for any n."""
    conv = ins.convert(linear_model, input_dim=[6])
    x, x_ref = make_data(3, 6, seed=1), make_data(3, 6, seed=2)
    res = ins.run_intgrad(conv, x, x_ref=x_ref, n=n, dtype="double", verbose=False)
    w = linear_model.weight.detach().double()  # (3, 6)
    expected = w.T.unsqueeze(0) * (x - x_ref).unsqueeze(-1)
    close(res.get_result(), expected, 1e-12)
    with torch.no_grad():
        goal = linear_model.double()(x) - linear_model(x_ref)
    close(res.get_result().sum(1), goal, 1e-12, "sum over features")


# ---- SmoothGrad ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float", "double"])
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_smoothgrad_without_noise_is_the_gradient(request, as_dtype, make_data, grad_ref, close,
                                                 tolerances, name, dtype):
    conv, _, logits, x, idx = _case(request, as_dtype, make_data, name, dtype)
    res = ins.run_smoothgrad(conv, x, n=3, noise_level=0, dtype=dtype, verbose=False)
    close(res.get_result(), grad_ref(logits, x, idx)[0], tolerances[dtype])


@pytest.mark.parametrize(("n", "noise_level"), [(1, 0.1), (7, 2.0), (40, 0.5)])
@pytest.mark.parametrize("dtype", ["float", "double"])
def test_smoothgrad_on_a_linear_model_is_the_weights(linear_model, make_data, close, tolerances,
                                                     dtype, n, noise_level):
    conv = ins.convert(linear_model, input_dim=[6])
    x = make_data(5, 6, seed=4, dtype=reference_dtype(dtype))
    res = ins.run_smoothgrad(conv, x, n=n, noise_level=noise_level, dtype=dtype, verbose=False)
    w = linear_model.weight.detach().to(reference_dtype(dtype))  # (3, 6)
    close(res.get_result(), w.T.unsqueeze(0).expand(5, 6, 3), tolerances[dtype])


def test_smoothgrad_seed_reproduces(softmax_mlp, make_data):
    conv = ins.convert(softmax_mlp, input_dim=[5])
    x = make_data(4, 5, dtype=torch.float32)

    def run(seed):
        return ins.run_smoothgrad(conv, x, n=10, noise_level=0.5, seed=seed,
                                  verbose=False).get_result()

    first, again, other = run(7), run(7), run(8)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3


def test_smoothgrad_leaves_the_global_random_state_alone(softmax_mlp, make_data):
    conv = ins.convert(softmax_mlp, input_dim=[5])
    x = make_data(2, 5, dtype=torch.float32)
    state = torch.get_rng_state()
    ins.run_smoothgrad(conv, x, n=5, seed=3, verbose=False)
    ins.run_smoothgrad(conv, x, n=5, verbose=False)
    assert torch.equal(torch.get_rng_state(), state)


def test_smoothgrad_noise_scale_is_per_sample(make_data):
    """On f(x) = w . x with ``times_input=True`` and n=1 the value of feature i is
    ``w_i (x_i + e_i)``: the noise ``e`` is recovered exactly, and its spread must be
    ``noise_level * (max(x) - min(x))`` of that sample alone, whatever its batch mates
    (``noise_level`` for a constant sample)."""
    p, noise_level = 1000, 0.1
    model = nn.Linear(p, 1).double().eval()
    w = 0.5 + torch.rand(p, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(w.unsqueeze(0))
    conv = ins.convert(model, input_dim=[p], dtype="double")

    small = torch.rand(p, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    large = 100 * torch.rand(p, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    constant = torch.full((p,), 3.0, dtype=torch.float64)

    def noise(batch, seed):
        values = ins.run_smoothgrad(conv, batch, n=1, noise_level=noise_level, times_input=True,
                                    dtype="double", seed=seed, verbose=False).get_result()
        return values[..., 0] / w.numpy() - batch.numpy()

    def expected_sd(x):
        spread = (x.max() - x.min()).item()
        return noise_level * (spread if spread > 0 else 1.0)

    # the sample standard deviation of p draws is within 6 standard errors
    # (about sd / sqrt(2p)) of the true one; their mean within 6 sd / sqrt(p)
    for batch in (small[None], torch.stack([small, large, constant]),
                  torch.stack([large, constant, small])):
        e = noise(batch, seed=0)
        for row, x in zip(e, batch):
            sd = expected_sd(x)
            assert abs(row.std() - sd) < 6 * sd / math.sqrt(2 * p), (row.std(), sd)
            assert abs(row.mean()) < 6 * sd / math.sqrt(p)
    assert expected_sd(large) > 50 * expected_sd(small)  # the test separates the scales


def _smoothgrad_monte_carlo(logits, x, sigma, idx, draws, times_input, seed):
    """Per-draw terms ``grad f(x + e)`` (times ``x + e``), e ~ N(0, sigma^2), from autograd:
    ``(draws, *dim, len(idx))``."""
    from_gen = torch.Generator().manual_seed(seed)
    noisy = x + sigma * torch.randn(draws, *x.shape, generator=from_gen, dtype=x.dtype)
    inputs = noisy.detach().requires_grad_(True)
    out = logits(inputs)
    grads = torch.stack([torch.autograd.grad(out[:, j].sum(), inputs, retain_graph=True)[0]
                         for j in idx], dim=-1)
    return grads * noisy.unsqueeze(-1) if times_input else grads


@pytest.mark.parametrize("times_input", [False, True])
def test_smoothgrad_matches_a_monte_carlo_reference(softmax_mlp, make_data, times_input):
    """Each sample's SmoothGrad is the mean gradient under its own noise scale, even next
    to a batch mate 100 times larger; tolerance from the draws' standard deviation."""
    logits = softmax_mlp.double()[:-1]
    conv = ins.convert(softmax_mlp, input_dim=[5], dtype="double")
    a, b = make_data(1, 5, seed=21)[0], 100 * make_data(1, 5, seed=22)[0]
    n, draws, noise_level = 2000, 20000, 0.2
    res = ins.run_smoothgrad(conv, torch.stack([a, b]), n=n, noise_level=noise_level,
                             times_input=times_input, dtype="double", seed=0,
                             verbose=False).get_result()
    for row, x in enumerate((a, b)):
        sigma = noise_level * (x.max() - x.min()).item()
        terms = _smoothgrad_monte_carlo(logits, x, sigma, [0, 1, 2], draws, times_input,
                                        seed=100 + row).detach()
        mean, sd = terms.mean(0).numpy(), terms.std(0).numpy()
        tol = 6 * sd * math.sqrt(1 / n + 1 / draws) + 1e-12
        assert (np.abs(res[row] - mean) <= tol).all(), (row, res[row], mean, tol)


# ---- ExpectedGradient ------------------------------------------------------------------


def test_expgrad_on_a_linear_model_approaches_its_expectation(linear_model, make_data, close):
    """E[(x - r) * W[j]] = W[j] * (x - mean(data_ref)), for a sample alone and inside a
    batch; the sum over features approaches f(x) - mean f(data_ref). Tolerances: six
    standard errors of the mean of n draws of r (drawn with replacement)."""
    model = linear_model.double()
    conv = ins.convert(model, input_dim=[6], dtype="double")
    data_ref = 1 + 2 * make_data(30, 6, seed=31)
    x = make_data(4, 6, seed=32)
    n = 4000
    w = model.weight.detach()  # (3, 6)
    with torch.no_grad():
        f_ref = model(data_ref)  # (30, 3)
        goal = model(x) - f_ref.mean(0)
    ref_sd = data_ref.std(0, unbiased=False)  # (6,)
    tol_values = 6 * (w.T.abs() * ref_sd.unsqueeze(-1)) / math.sqrt(n)  # (6, 3)
    tol_sums = 6 * f_ref.std(0, unbiased=False) / math.sqrt(n)  # (3,)
    expected = w.T.unsqueeze(0) * (x - data_ref.mean(0)).unsqueeze(-1)

    batch = ins.run_expgrad(conv, x, data_ref=data_ref, n=n, seed=1, dtype="double",
                            verbose=False)
    alone = ins.run_expgrad(conv, x[2:3], data_ref=data_ref, n=n, seed=2, dtype="double",
                            verbose=False)
    for values, exp, goal_rows in ((batch.get_result(), expected, goal),
                                   (alone.get_result(), expected[2:3], goal[2:3])):
        assert values.shape == exp.shape
        assert (np.abs(values - exp.numpy()) <= tol_values.numpy()).all()
        assert (np.abs(values.sum(1) - goal_rows.numpy()) <= tol_sums.numpy()).all()
    close(batch.decomp_goal[0], goal, 1e-10, "decomp_goal")
    close(alone.decomp_goal[0], goal[2:3], 1e-10, "decomp_goal")


def test_expgrad_matches_a_monte_carlo_reference(softmax_mlp, make_data, close):
    """Nonlinear model: the mean of n draws of (x - r) * grad f(r + a(x - r)) against an
    independent estimate from many more draws, within six standard errors; completeness
    holds in expectation: the sum approaches f(x) - mean f(data_ref)."""
    logits = softmax_mlp.double()[:-1]
    conv = ins.convert(softmax_mlp, input_dim=[5], dtype="double")
    data_ref = make_data(20, 5, seed=41)
    x = torch.cat([make_data(1, 5, seed=42), 50 * make_data(1, 5, seed=43)])
    n, draws = 3000, 30000
    res = ins.run_expgrad(conv, x, data_ref=data_ref, n=n, seed=0, dtype="double",
                          verbose=False)
    values = res.get_result()
    generator = torch.Generator().manual_seed(99)
    with torch.no_grad():
        goal = logits(x) - logits(data_ref).mean(0)
    close(res.decomp_goal[0], goal, 1e-10, "decomp_goal")
    for row in range(2):
        r = data_ref[torch.randint(20, (draws,), generator=generator)]
        a = torch.rand(draws, 1, generator=generator, dtype=torch.float64)
        points = (r + a * (x[row] - r)).requires_grad_(True)
        out = logits(points)
        grads = torch.stack([torch.autograd.grad(out[:, j].sum(), points, retain_graph=True)[0]
                             for j in range(3)], dim=-1)
        terms = (grads * (x[row] - r).unsqueeze(-1)).detach()
        tol = 6 * terms.std(0).numpy() * math.sqrt(1 / n + 1 / draws) + 1e-12
        assert (np.abs(values[row] - terms.mean(0).numpy()) <= tol).all()
        sums = terms.sum(1)
        tol_sum = 6 * sums.std(0).numpy() * math.sqrt(1 / n + 1 / draws) + 1e-12
        assert (np.abs(values[row].sum(0) - goal[row].numpy()) <= tol_sum).all()


# ---- batch mates and batch_size --------------------------------------------------------


def _run(method, conv, x, **kwargs):
    runner = {"grad": ins.run_grad, "intgrad": ins.run_intgrad}[method]
    return runner(conv, x, dtype="double", verbose=False, **kwargs).get_result()


@pytest.mark.parametrize("method", ["grad", "intgrad"])
def test_a_sample_does_not_depend_on_its_batch_mates(softmax_cnn, make_data, close, method):
    conv = ins.convert(softmax_cnn, input_dim=[2, 8, 8])
    scales = torch.tensor([1.0, 30.0, 0.01, 5.0, 1.0], dtype=torch.float64).view(-1, 1, 1, 1)
    x = make_data(5, 2, 8, 8, seed=51) * scales
    x_ref = make_data(5, 2, 8, 8, seed=52)
    extra = {"x_ref": x_ref, "n": 6} if method == "intgrad" else {}
    batch = _run(method, conv, x, **extra)
    for i in (0, 3):
        extra_i = {"x_ref": x_ref[i:i + 1], "n": 6} if method == "intgrad" else {}
        alone = _run(method, conv, x[i:i + 1], **extra_i)
        close(batch[i:i + 1], alone, 1e-12, f"sample {i}")


@pytest.mark.parametrize("dtype", ["float", "double"])
@pytest.mark.parametrize("method", ["grad", "intgrad"])
def test_results_do_not_depend_on_batch_size(residual_net, make_data, close, method, dtype):
    conv = ins.convert(residual_net, input_dim=[3, 16, 16])
    x = make_data(3, 3, 16, 16, seed=61, dtype=reference_dtype(dtype))
    runner = {"grad": ins.run_grad, "intgrad": ins.run_intgrad}[method]
    extra = {"n": 5} if method == "intgrad" else {}
    results = [runner(conv, x, batch_size=bs, dtype=dtype, verbose=False, **extra).get_result()
               for bs in (None, 1, 7)]
    tol = 1e-12 if dtype == "double" else 1e-5
    for other in results[1:]:
        close(other, results[0], tol, "batch_size")


# ---- checks every method passes ----------------------------------------------------------

ALL_METHODS = {
    "grad": (ins.run_grad, {}),
    "smoothgrad": (ins.run_smoothgrad, {"n": 6, "noise_level": 0.3}),
    "intgrad": (ins.run_intgrad, {"n": 6}),
    "expgrad": (ins.run_expgrad, {"n": 6}),
}


@pytest.mark.parametrize("method", list(ALL_METHODS))
def test_method_shape_seed_and_output_subset(softmax_cnn, make_data, close, method):
    """Shape ``(n, *input_dim, n_selected)`` in the selection's order; the same seed
    gives the same values; a subset of output nodes gives the same values as those
    columns of a larger selection (the random draws do not depend on the outputs)."""
    conv = ins.convert(softmax_cnn, input_dim=[2, 8, 8], dtype="double")
    x = make_data(3, 2, 8, 8, seed=71)
    run, extra = ALL_METHODS[method]
    if method == "expgrad":
        extra = {**extra, "data_ref": make_data(4, 2, 8, 8, seed=72)}

    def values(output_idx, seed=0):
        return run(conv, x, output_idx=output_idx, seed=seed, batch_size=10, dtype="double",
                   verbose=False, **extra).get_result()

    full = values([0, 1, 2])
    assert full.shape == (3, 2, 8, 8, 3)
    np.testing.assert_array_equal(values([0, 1, 2]), full)
    close(values([2, 0]), full[..., [2, 0]], 1e-12, "output subset")
    close(values(1), full[..., [1]], 1e-12, "single output")
    if method in ("smoothgrad", "expgrad"):
        assert np.abs(values([0, 1, 2], seed=1) - full).max() > 1e-6
