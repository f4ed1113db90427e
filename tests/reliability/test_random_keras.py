"""Property-based differential tests on random Keras networks (:mod:`random_keras`):
each must convert, reproduce Keras' own output in float64, give Gradient equal to
``tf.GradientTape`` on the Keras model, give DeepLift contributions that sum to the
difference of Keras' outputs, and, without biases, give LRP epsilon relevances that
sum to Keras' output. Data and results are channels last, as Keras users pass them.

Building a Keras model takes far longer than a torch one, so the default run draws
:data:`KERAS_SHARE` of the torch suite's count.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from random_keras import KerasSpec, build, keras_nets
from random_nets import examples

import innsight as ins

tf = pytest.importorskip("tensorflow")

FORWARD_TOL = 1e-10
GRAD_TOL = 1e-9
SUM_TOL = 1e-8
EPSILON = 1e-13  # as in test_random_architectures.py
N_DATA = 3
#: Share of the profile's ``max_examples`` (100 by default: 30 networks, 15 bias-free).
KERAS_SHARE = 0.3


def _data(spec: KerasSpec, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((N_DATA, *spec.input_shape))


def _assert_close(actual: np.ndarray, expected: np.ndarray, tol: float, what: str) -> None:
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs {expected.shape}"
    scale = max(np.abs(expected).max(), 1e-3)
    error = np.abs(actual - expected).max()
    assert error <= tol * scale, f"{what}: max abs error {error:.3g} at scale {scale:.3g}"


def _keras(model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model(x, training=False))


def _tape_gradients(model, x: np.ndarray, n_out: int) -> np.ndarray:
    """``(n, *input_shape, n_out)``: the gradient of each output of the Keras model."""
    x = tf.constant(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        out = model(x, training=False)
        sums = [tf.reduce_sum(out[:, j]) for j in range(n_out)]
    return np.stack([np.asarray(tape.gradient(s, x)) for s in sums], -1)


def _sum_over_input(values: np.ndarray) -> np.ndarray:
    return values.reshape(values.shape[0], -1, values.shape[-1]).sum(1)


def _run(method, conv: ins.Converter, x: np.ndarray, spec: KerasSpec, **args) -> np.ndarray:
    return method(conv, x, channels_first=False, output_idx=list(range(spec.n_out)),
                  dtype="double", verbose=False, **args).get_result("array")


def check_against_keras(spec: KerasSpec) -> None:
    model = build(spec)
    conv = ins.convert(model, dtype="double")
    x, x_ref = _data(spec, 1), _data(spec, 2)
    expected = _keras(model, x)
    with torch.no_grad():
        forward = conv.model(torch.as_tensor(np.moveaxis(x, -1, 1) if x.ndim > 2 else x))
    _assert_close(forward.numpy(), expected, FORWARD_TOL, "forward")

    grad = _run(ins.run_grad, conv, x, spec)
    _assert_close(grad, _tape_gradients(model, x, spec.n_out), GRAD_TOL, "Gradient")

    deeplift = _run(ins.run_deeplift, conv, x, spec, x_ref=x_ref)
    _assert_close(_sum_over_input(deeplift), expected - _keras(model, x_ref), SUM_TOL,
                  "DeepLift sum")


def check_lrp_conservation(spec: KerasSpec) -> None:
    model = build(spec)
    x = _data(spec, 1)
    relevance = _run(ins.run_lrp, ins.convert(model, dtype="double"), x, spec,
                     rule_name="epsilon", rule_param=EPSILON)
    _assert_close(_sum_over_input(relevance), _keras(model, x), SUM_TOL, "LRP epsilon sum")


@settings(max_examples=examples(KERAS_SHARE))
@given(spec=keras_nets())
def test_random_keras_network_matches_keras_tape_and_deeplift_axiom(spec: KerasSpec) -> None:
    check_against_keras(spec)


@settings(max_examples=examples(KERAS_SHARE / 2))
@given(spec=keras_nets(bias_free=True))
def test_random_bias_free_keras_network_conserves_lrp_epsilon_relevance(spec: KerasSpec) -> None:
    check_lrp_conservation(spec)
