"""Independent references for the Keras front-end tests: the Keras model's own
forward pass and ``tf.GradientTape`` gradients, both in the Keras (channels-last)
layout. Nothing here is computed by innsight.

Imported by the ``test_keras_*`` modules (torchvision is imported first by
``tests/conftest.py``; importing it after tensorflow segfaults).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

#: Largest max-abs deviation from Keras, relative to the reference's scale.
DOUBLE_TOL = 1e-10
FLOAT_TOL = 1e-4  # the converter's own dry-run tolerance; float32 convolutions in TF differ


@contextmanager
def float64(seed: int = 0) -> Iterator[None]:
    """Build Keras models in float64 (Keras' floatx), with seeded initial weights."""
    old, old_policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")  # Keras caches the policy made from floatx
    keras.utils.set_random_seed(seed)
    try:
        yield
    finally:
        keras.config.set_floatx(old)
        keras.config.set_dtype_policy(old_policy)


def as_list(x: Any) -> list[np.ndarray]:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def keras_outputs(model: Any, xs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The model's outputs (channels last) for inputs ``xs`` (channels last)."""
    feed = xs[0] if len(xs) == 1 else list(xs)
    return [np.asarray(o) for o in as_list(model(feed, training=False))]


def tape_gradients(model: Any, xs: Sequence[np.ndarray], output: int,
                   nodes: Sequence[int]) -> list[np.ndarray]:
    """Per input, ``d sum_batch(y[:, j]) / d x`` stacked over ``j in nodes`` on a last axis:
    ``(n, *input_shape_channels_last, len(nodes))``."""
    tensors = [tf.constant(x) for x in xs]
    with tf.GradientTape(persistent=True) as tape:
        for x in tensors:
            tape.watch(x)
        y = as_list(model(tensors[0] if len(tensors) == 1 else tensors, training=False))[output]
        y = tf.reshape(y, (y.shape[0], -1))
        sums = [tf.reduce_sum(y[:, j]) for j in nodes]
    grads = [[np.asarray(g) for g in tape.gradient(s, tensors)] for s in sums]
    return [np.stack([g[k] for g in grads], axis=-1) for k in range(len(xs))]


def channels_first(x: np.ndarray) -> np.ndarray:
    """Keras data ``(n, *spatial, C)`` as ``(n, C, *spatial)``; tabular stays."""
    return np.moveaxis(x, -1, 1) if x.ndim > 2 else x


def max_rel_error(actual: Any, expected: np.ndarray) -> float:
    """Max abs difference over the reference's largest magnitude (at least 1e-300)."""
    actual = np.asarray(actual.detach() if hasattr(actual, "detach") else actual)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-300))


def norm_rel_error(actual: Any, expected: np.ndarray) -> float:
    """``||actual - expected|| / ||expected||`` over the whole tensor (all samples)."""
    actual = np.asarray(actual.detach() if hasattr(actual, "detach") else actual)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-300))


#: Smallest input side of the Keras applications that refuse 32 x 32 pixels.
APPLICATION_MIN_SIZE = {"InceptionResNetV2": 75, "InceptionV3": 75, "Xception": 71}


def application(name: str, size: int = 32, n: int = 2, seed: int = 0) -> tuple[Any, np.ndarray]:
    """The Keras application ``name`` with random weights (Keras' seed ``seed``) and
    logits out, at ``size`` pixels or its smallest size, and ``n`` uniform [0, 255]
    images (channels last, float32) through its own ``preprocess_input``: the input
    range it expects."""
    size = max(size, APPLICATION_MIN_SIZE.get(name, 0))
    build = getattr(keras.applications, name)
    keras.utils.set_random_seed(seed)
    model = build(weights=None, input_shape=(size, size, 3), classifier_activation=None)
    images = np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")
    preprocess = importlib.import_module(build.__module__).preprocess_input
    return model, np.ascontiguousarray(preprocess(images))  # caffe-style BGR flips are views


def randomize_batch_norm(model: Any, seed: int = 1) -> None:
    """Random statistics and affine parameters in every BatchNormalization layer
    (fresh ones are the identity map, which would hide layout mistakes)."""
    rng = np.random.default_rng(seed)
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(0.1 * rng.standard_normal(n))
            layer.moving_variance.assign(0.75 + 0.5 * rng.random(n))
            if layer.scale:
                layer.gamma.assign(0.75 + 0.5 * rng.random(n))
            if layer.center:
                layer.beta.assign(0.1 * rng.standard_normal(n))


def randomize_scales(model: Any, seed: int = 2) -> None:
    """Random scales and offsets in every LayerNormalization (fresh ones are ones and
    zeros) and random gammas in ConvNeXt's LayerScale layers (fresh ones are 1e-6)."""
    rng = np.random.default_rng(seed)
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.LayerNormalization):
            layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape))
            layer.beta.assign(0.1 * rng.standard_normal(layer.beta.shape))
        elif type(layer).__name__ == "LayerScale":
            layer.gamma.assign(rng.uniform(0.1, 0.3, layer.gamma.shape))


def _all_layers(model: Any) -> Iterator[Any]:
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
