"""Random Keras networks from the layer families Keras shares with torch, as hypothesis
strategies.

A network is a :class:`KerasSpec` (plain data, as :class:`random_nets.NetSpec`): an
input shape in Keras' channels-last layout, a tuple of blocks and a dense head.
:func:`build` makes a float64 functional Keras model with weights from ``spec.seed``
(a numpy generator: Keras' global seeds are left alone).

Families: ``tabular`` ``(W,)``, ``signal`` ``(L, C)`` (Conv1D) and ``image``
``(H, W, C)`` (Conv2D). Blocks: Dense and Conv with strides, ``valid``/``same``
padding, dilations and a fused activation; max and average pooling (``valid`` and
``same``); BatchNormalization; LayerNormalization over the channels or the whole
sample; Activation layers; residual ``Add`` and ``Concatenate`` branches. ``bias_free``
specs have no bias or shift anywhere and only activations with ``f(0) = 0``, so that
LRP epsilon conserves relevance exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

keras = pytest.importorskip("keras")
layers = keras.layers

#: Keras activations with ``f(0) = 0``, and those without (never drawn bias-free: fed
#: an exact 0, LRP has nowhere to send their relevance).
ZERO_AT_ZERO = ("relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "tanh",
                "hard_silu", "mish", "softsign", "tanh_shrink", "hard_tanh", "linear")
NONZERO_AT_ZERO = ("sigmoid", "softplus", "hard_sigmoid", "log_sigmoid")
FAMILIES = ("tabular", "signal", "image")
Block = tuple[str, tuple[tuple[str, Any], ...]]
DTYPE = "float64"


@dataclass(frozen=True)
class KerasSpec:
    """One random Keras network: ``blocks`` between the input (channels last) and a
    dense head with ``n_out`` outputs (after global average pooling when ``pool_head``,
    else after flattening)."""

    family: str
    input_shape: tuple[int, ...]
    blocks: tuple[Block, ...]
    n_out: int
    pool_head: bool
    bias: bool
    seed: int


def _block(block_name: str, /, **params: Any) -> Block:
    return block_name, tuple(sorted(params.items()))


def _out_size(size: int, k: int, stride: int, dilation: int, padding: str) -> int:
    if padding == "same":
        return -(-size // stride)
    return (size - dilation * (k - 1) - 1) // stride + 1


@st.composite
def _conv_block(draw: Any, shape: tuple[int, ...], acts: Sequence[str],
                bias: bool) -> tuple[Block, tuple[int, ...]]:
    spatial = shape[:-1]
    k, stride = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    dilation = draw(st.integers(1, 2)) if stride == 1 else 1  # Keras: not both above 1
    padding = draw(st.sampled_from(["valid", "same"]))
    if min(_out_size(s, k, stride, dilation, padding) for s in spatial) < 1:
        padding = "same"
    filters = draw(st.integers(1, 5))
    block = _block("conv", filters=filters, k=k, stride=stride, dilation=dilation,
                   padding=padding, act=draw(st.sampled_from(acts)), bias=bias)
    return block, (*(_out_size(s, k, stride, dilation, padding) for s in spatial), filters)


@st.composite
def _pool_block(draw: Any, shape: tuple[int, ...]) -> tuple[Block, tuple[int, ...]]:
    spatial = shape[:-1]
    k = draw(st.integers(1, min(3, min(spatial))))
    stride = draw(st.integers(1, k))
    padding = draw(st.sampled_from(["valid", "same"]))  # an even k at stride 1 pads one side
    out = tuple(_out_size(s, k, stride, 1, padding) for s in spatial)
    return _block("pool", kind=draw(st.sampled_from(["max", "avg"])), k=k, stride=stride,
                  padding=padding), (*out, shape[-1])


@st.composite
def _any_block(draw: Any, shape: tuple[int, ...], acts: Sequence[str],
               bias: bool) -> tuple[Block, tuple[int, ...]]:
    """One block on ``shape``: convolutional blocks for signals and images, dense ones
    for vectors."""
    spatial = len(shape) > 1
    kinds = ["conv", "conv", "pool"] if spatial else ["dense", "dense"]
    kind = draw(st.sampled_from(kinds + ["act", "bn", "ln", "residual", "concat"]))
    c = shape[-1]
    if kind == "conv":
        return draw(_conv_block(shape, acts, bias))
    if kind == "pool":
        return draw(_pool_block(shape))
    if kind == "dense":
        units = draw(st.integers(1, 6))
        return _block("dense", units=units, act=draw(st.sampled_from(acts)), bias=bias), (units,)
    if kind == "act":
        return _block("act", name=draw(st.sampled_from(acts))), shape
    if kind == "bn":
        return _block("bn", bias=bias), shape
    if kind == "ln":
        return _block("ln", whole=spatial and draw(st.booleans()), bias=bias), shape
    if kind == "residual":
        return _block("residual", c=c, act=draw(st.sampled_from(acts)), bias=bias), shape
    widths = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    return _block("concat", widths=widths, bias=bias), (*shape[:-1], sum(widths))


@st.composite
def keras_nets(draw: Any, families: Sequence[str] = FAMILIES, bias_free: bool = False,
               max_blocks: int = 4) -> KerasSpec:
    """A random :class:`KerasSpec` of one of ``families``."""
    acts = ZERO_AT_ZERO if bias_free else ZERO_AT_ZERO + NONZERO_AT_ZERO
    family = draw(st.sampled_from(list(families)))
    if family == "tabular":
        shape: tuple[int, ...] = (draw(st.integers(1, 6)),)
    elif family == "signal":
        shape = (draw(st.integers(3, 12)), draw(st.integers(1, 3)))
    else:
        shape = (draw(st.integers(3, 7)), draw(st.integers(3, 7)), draw(st.integers(1, 3)))
    input_shape, bias = shape, not bias_free
    blocks = []
    for _ in range(draw(st.integers(1, max_blocks))):
        block, shape = draw(_any_block(shape, acts, bias))
        blocks.append(block)
    return KerasSpec(family, input_shape, tuple(blocks), n_out=draw(st.integers(1, 4)),
                     pool_head=len(shape) > 1 and draw(st.booleans()), bias=bias,
                     seed=draw(st.integers(0, 2**16)))


# ---- building -------------------------------------------------------------------------------

CONV = {1: layers.Conv1D, 2: layers.Conv2D}
POOL = {("max", 1): layers.MaxPooling1D, ("max", 2): layers.MaxPooling2D,
        ("avg", 1): layers.AveragePooling1D, ("avg", 2): layers.AveragePooling2D}
GLOBAL_POOL = {1: layers.GlobalAveragePooling1D, 2: layers.GlobalAveragePooling2D}


def _apply(name: str, p: dict[str, Any], x: Any) -> Any:
    """Block ``name`` applied to the Keras tensor ``x``."""
    n_spatial = len(x.shape) - 2
    f64 = {"dtype": DTYPE}
    if name == "conv":
        return CONV[n_spatial](p["filters"], p["k"], strides=p["stride"], padding=p["padding"],
                               dilation_rate=p["dilation"], activation=p["act"],
                               use_bias=p["bias"], **f64)(x)
    if name == "pool":
        return POOL[p["kind"], n_spatial](p["k"], strides=p["stride"], padding=p["padding"],
                                          **f64)(x)
    if name == "dense":
        return layers.Dense(p["units"], activation=p["act"], use_bias=p["bias"], **f64)(x)
    if name == "act":
        return layers.Activation(p["name"], **f64)(x)
    if name == "bn":
        return layers.BatchNormalization(center=p["bias"], **f64)(x)
    if name == "ln":
        axes = list(range(1, len(x.shape))) if p["whole"] else -1
        return layers.LayerNormalization(axis=axes, center=p["bias"], **f64)(x)
    c = x.shape[-1]
    if n_spatial:
        def inner(width: int, k: int) -> Any:
            return CONV[n_spatial](width, k, padding="same", use_bias=p["bias"], **f64)
    else:
        def inner(width: int, k: int) -> Any:
            return layers.Dense(width, use_bias=p["bias"], **f64)
    if name == "residual":
        body = inner(c, 1)(layers.Activation(p["act"], **f64)(inner(c, 3)(x)))
        return layers.Add(**f64)([x, body])
    if name == "concat":
        a, b = p["widths"]
        return layers.Concatenate(**f64)([inner(a, 1)(x), inner(b, 3)(x)])
    raise ValueError(f"unknown block {name!r}")


def _randomise(model: Any, seed: int, bias: bool) -> None:
    """Weights from ``seed``: kernels N(0, 1/fan_in), biases N(0, 0.3^2), scales in
    [0.5, 1.5], batch norm statistics away from the identity (means and shifts 0
    without ``bias``)."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape, name = tuple(variable.shape), variable.path.rsplit("/", 1)[-1]
        if name == "kernel":
            value = rng.normal(0, 1 / math.sqrt(math.prod(shape[:-1])), shape)
        elif name in ("gamma", "moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        elif bias:  # bias, beta, moving_mean
            value = rng.normal(0, 0.3, shape)
        else:
            value = np.zeros(shape)
        variable.assign(value)


def build(spec: KerasSpec) -> Any:
    """The float64 functional Keras model of ``spec``."""
    inputs = keras.Input(spec.input_shape, dtype=DTYPE)
    x = inputs
    for name, params in spec.blocks:
        x = _apply(name, dict(params), x)
    if len(x.shape) > 2:
        x = GLOBAL_POOL[len(x.shape) - 2](dtype=DTYPE)(x) if spec.pool_head else (
            layers.Flatten(dtype=DTYPE)(x))
    outputs = layers.Dense(spec.n_out, use_bias=spec.bias, dtype=DTYPE)(x)
    model = keras.Model(inputs, outputs)
    _randomise(model, spec.seed, spec.bias)
    return model
