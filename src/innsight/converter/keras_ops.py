"""The Keras layers and operations the converter understands, keyed by their class.

A handler receives the translator (see :mod:`innsight.converter.keras_front`),
the Keras graph node, the values it reads
(:class:`~innsight.converter.keras_tensors.Value`: layer index and Keras shape)
and the Keras shapes of its outputs. It emits layer entries with ``t.emit``
and returns, per output of the node, the index of the layer holding it in the
channels-first layout.

Handlers are registered under ``"module:Class"`` names and resolved against the
installed Keras on first use, so this module imports no Keras itself.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from innsight.converter.attention import emit_multi_head_attention
from innsight.converter.keras_tensors import (
    Value,
    channels_first,
    internal_axis,
    sample_axis,
    to_internal_array,
    to_numpy,
)
from innsight.converter.normalization import emit_group_norm
from innsight.converter.recurrent import emit_gru, emit_lstm, emit_rnn

#: ``handler(translator, node, xs, out_shapes) -> indices`` (see the module's docstring).
Handler = Callable[[Any, Any, list[Value], list[tuple[int, ...]]], list[int]]

_REGISTRY: dict[str, Handler] = {}


def _register(*names: str) -> Callable[[Handler], Handler]:
    """Register a handler under class names; bare names mean ``keras.layers:Name``."""

    def add(handler: Handler) -> Handler:
        for name in names:
            _REGISTRY[name if ":" in name else f"keras.layers:{name}"] = handler
        return handler

    return add


@lru_cache(maxsize=4)
def handlers(keras: Any) -> dict[type, Handler]:
    """The registry resolved to the classes of the installed Keras (missing ones skipped)."""
    resolved: dict[type, Handler] = {}
    for name, handler in _REGISTRY.items():
        module_name, class_name = name.split(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            continue  # not in this Keras version
        resolved[cls] = handler
    return resolved


# ---- activation functions ---------------------------------------------------------

#: ``build(translator, index, suffix) -> index``: emits the layers of an activation
#: function applied to the layer ``index`` and returns the last one.
ActivationBuilder = Callable[[Any, int, str], int]


def _one_activation(act_name: str, **params: Any) -> ActivationBuilder:
    """Builds one Activation layer ``act_name`` with ``params``."""

    def emit_one(t: Any, index: int, suffix: str) -> int:
        return t.emit("Activation", [index], suffix, act_name=act_name, **params)

    return emit_one


#: Keras activation names -> how to build them. Softmax is over the last Keras
#: axis, which is axis 0 (channels) inside.
ACTIVATION_BUILDERS: dict[str, ActivationBuilder | None] = {
    "linear": None,  # the identity: no layer
    "relu": _one_activation("relu"),
    "relu6": _one_activation("relu6"),
    "leaky_relu": _one_activation("leaky_relu", negative_slope=0.2),  # Keras' default slope
    "elu": _one_activation("elu", alpha=1.0),
    "selu": _one_activation("selu"),  # torch's constants are Keras' (Klambauer et al. 2017)
    "celu": _one_activation("celu", alpha=1.0),  # Keras' default alpha
    "gelu": _one_activation("gelu", approximate="none"),  # Keras' default: the exact gelu
    "silu": _one_activation("silu"),
    "swish": _one_activation("silu"),
    "softplus": _one_activation("softplus"),
    "sigmoid": _one_activation("sigmoid"),
    "tanh": _one_activation("tanh"),
    "hard_sigmoid": _one_activation("hardsigmoid"),
    "hard_silu": _one_activation("hardswish"),
    "hard_swish": _one_activation("hardswish"),
    "hard_tanh": _one_activation("hardtanh"),
    "log_sigmoid": _one_activation("logsigmoid"),
    "tanh_shrink": _one_activation("tanhshrink"),
    "mish": _one_activation("mish"),
    "softsign": _one_activation("softsign"),
    "exponential": _one_activation("exp"),
    "softmax": _one_activation("softmax", axis=0),
}
#: Keras activations that no layer family expresses.
REFUSED_ACTIVATIONS = (
    "log_softmax", "glu", "hard_shrink", "soft_shrink",
    "sparse_plus", "sparse_sigmoid", "sparsemax", "squareplus", "threshold",
)


@lru_cache(maxsize=4)
def _activation_table(keras: Any) -> dict[Any, tuple[str, ActivationBuilder | None]]:
    table = {}
    for name, build in ACTIVATION_BUILDERS.items():
        fn = getattr(keras.activations, name, None)
        if fn is not None:
            table.setdefault(fn, (name, build))
    return table


def apply_activation(t: Any, index: int, fn: Any, suffix: str) -> int:
    """``index`` followed by the Keras activation function ``fn``."""
    if fn is None:
        return index
    entry = _activation_table(t.keras).get(fn)
    if entry is None:
        name = getattr(fn, "__name__", repr(fn))
        reason = (
            "No layer family expresses it. " if name in REFUSED_ACTIVATIONS
            else "Only Keras' built-in activations (by name or keras.activations.*) convert. "
        )
        raise t.unsupported(f"the activation '{name}'", reason)
    name, build = entry
    return index if build is None else build(t, index, suffix)


def _activation_suffix(op: Any) -> str:
    return "/" + getattr(op.activation, "__name__", "activation")


# ---- skipped at inference ------------------------------------------------------------


@_register(
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianDropout",
    "GaussianNoise", "AlphaDropout",
)
def _skip_random(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    if node.arguments.kwargs.get("training") is True:  # given by the user (default False)
        raise t.unsupported("a random layer called with training=True",
                            "It stays random at inference. ")
    return [xs[0].index]


# Augmentation layers default to training=True in their signature; Keras turns them off
# at inference (model(x, training=False)) all the same.
@_register(
    "ActivityRegularization", "Identity", "RandomFlip", "RandomRotation", "RandomTranslation",
    "RandomZoom", "RandomContrast", "RandomBrightness",
)
def _skip(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    return [xs[0].index]


# ---- weighted layers -------------------------------------------------------------------


def _bias(op: Any) -> np.ndarray | None:
    """The bias of a weighted Keras layer, or ``None`` where it has none."""
    return None if op.bias is None else to_numpy(op.bias)


@_register("Dense")
def _dense(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    op, x = node.operation, xs[0]
    # Dense acts on the last Keras axis, the channels axis 0 inside: move it last and back.
    source = t.to_keras_layout(x, "/channels_last")
    dense = t.emit("Dense", [source], weight=to_numpy(op.kernel).T, bias=_bias(op))
    out = t.from_keras_layout(dense, x.rank, "/channels_first")
    return [apply_activation(t, out, op.activation, _activation_suffix(op))]


def _spatial_sizes(shape: tuple[int, ...], data_format: str) -> tuple[int, ...]:
    return shape[1:] if data_format == "channels_first" else shape[:-1]


def _spatial_in(t: Any, x: Value, data_format: str) -> tuple[int, tuple[int, ...]]:
    """The layer holding ``x`` as ``(C, *spatial)`` and its spatial sizes."""
    if data_format == "channels_first":  # the Keras layout is (C, *spatial) already
        return t.to_keras_layout(x, "/channels_first_data"), x.shape[1:]
    return x.index, x.shape[:-1]


def _spatial_out(t: Any, index: int, rank: int, data_format: str) -> int:
    """A ``(C, *spatial)`` result back in the inside layout of its Keras tensor."""
    if data_format == "channels_first":
        return t.from_keras_layout(index, rank, "/channels_first_result")
    return index


def explicit_padding(mode: str, sizes: Sequence[int], kernel: Sequence[int],
                     strides: Sequence[int], dilation: Sequence[int]) -> list[list[int]]:
    """``[before, after]`` per spatial axis for Keras padding ``valid``/``same``/``causal``
    (``same`` as in TensorFlow: the odd pixel goes after)."""
    pairs = []
    for n, k, s, d in zip(sizes, kernel, strides, dilation):
        span = (k - 1) * d + 1
        if mode == "valid":
            pairs.append([0, 0])
        elif mode == "same":
            total = max((math.ceil(n / s) - 1) * s + span - n, 0)
            pairs.append([total // 2, total - total // 2])
        else:  # causal: everything before
            pairs.append([span - 1, 0])
    return pairs


def _conv_weight(kernel: np.ndarray) -> np.ndarray:
    """A Keras kernel ``(*kernel, C_in, C_out)`` as a torch weight ``(C_out, C_in, *kernel)``."""
    n = kernel.ndim - 2
    return np.transpose(kernel, (n + 1, n, *range(n)))


def _conv_common(t: Any, node: Any, x: Value, weight: np.ndarray, bias: Any, groups: int,
                 suffix: str = "") -> int:
    """Emit the convolution of ``node`` (kernel sizes from ``weight``)."""
    op = node.operation
    source, sizes = _spatial_in(t, x, op.data_format)
    n = weight.ndim - 2
    pads = explicit_padding(op.padding, sizes, weight.shape[2:], op.strides, op.dilation_rate)
    conv = t.emit(
        f"Conv{n}D", [source], suffix, weight=weight, bias=bias, stride=list(op.strides),
        padding=pads, dilation=list(op.dilation_rate), groups=groups,
    )
    return conv


def _finish_conv(t: Any, node: Any, conv: int, rank: int) -> list[int]:
    """The convolution ``conv`` of a tensor of ``rank`` axes back in the inside layout,
    followed by the layer's activation."""
    op = node.operation
    out = _spatial_out(t, conv, rank, op.data_format)
    return [apply_activation(t, out, op.activation, _activation_suffix(op))]


@_register("Conv1D", "Conv2D", "Conv3D")
def _conv(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    op = node.operation
    weight = _conv_weight(to_numpy(op.kernel))  # Keras: (*kernel, C_in / groups, C_out)
    conv = _conv_common(t, node, xs[0], weight, _bias(op), op.groups)
    return _finish_conv(t, node, conv, xs[0].rank)


def _depthwise_weight(kernel: np.ndarray) -> np.ndarray:
    """Keras ``(*kernel, C_in, multiplier)`` as torch ``(C_in * multiplier, 1, *kernel)``;
    output channel ``c * multiplier + m`` reads input channel ``c`` in both."""
    n = kernel.ndim - 2
    flat = kernel.reshape(*kernel.shape[:n], -1)
    return np.transpose(flat, (n, *range(n)))[:, None]


@_register("DepthwiseConv1D", "DepthwiseConv2D")
def _depthwise(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    op = node.operation
    kernel = to_numpy(op.kernel)
    conv = _conv_common(t, node, xs[0], _depthwise_weight(kernel), _bias(op), kernel.shape[-2])
    return _finish_conv(t, node, conv, xs[0].rank)


@_register("SeparableConv1D", "SeparableConv2D")
def _separable(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    op = node.operation
    depthwise = to_numpy(op.depthwise_kernel)
    pointwise = to_numpy(op.pointwise_kernel)  # (*ones, C_in * multiplier, C_out)
    conv = _conv_common(t, node, xs[0], _depthwise_weight(depthwise), None,
                        depthwise.shape[-2], "/depthwise")
    point = t.emit(f"Conv{pointwise.ndim - 2}D", [conv], weight=_conv_weight(pointwise),
                   bias=_bias(op))
    return _finish_conv(t, node, point, xs[0].rank)


@_register("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
def _conv_transpose(t: Any, node: Any, xs: list[Value],
                    outs: list[tuple[int, ...]]) -> list[int]:
    """A transposed convolution: the full (scatter) result cropped to Keras' output size,
    ``total // 2`` before and the rest after, as TensorFlow's ``same`` does; the odd
    pixel, which torch's symmetric ``padding`` cannot take, is sliced off the end."""
    op, x = node.operation, xs[0]
    if op.output_padding is not None:
        raise t.unsupported("a transposed convolution with output_padding",
                            "Leave output_padding=None. ")
    # Keras (*kernel, C_out, C_in) -> torch's (C_in, C_out, *kernel)
    weight = _conv_weight(to_numpy(op.kernel))
    source, sizes = _spatial_in(t, x, op.data_format)
    out_sizes = _spatial_sizes(outs[0], op.data_format)
    totals = [(n - 1) * s + (k - 1) * d + 1 - out for n, s, k, d, out in
              zip(sizes, op.strides, weight.shape[2:], op.dilation_rate, out_sizes)]
    conv = t.emit(f"ConvTranspose{weight.ndim - 2}D", [source], weight=weight, bias=_bias(op),
                  stride=list(op.strides), padding=[max(total, 0) // 2 for total in totals],
                  output_padding=[max(-total, 0) for total in totals],
                  dilation=list(op.dilation_rate))
    if any(total > 0 and total % 2 for total in totals):
        conv = t.emit("Slice", [conv], "/crop",
                      ranges=[[0, weight.shape[1], 1], *[[0, out, 1] for out in out_sizes]])
    return _finish_conv(t, node, conv, x.rank)


#: Keras interpolation names -> the ``mode`` of an Upsample layer.
_KERAS_INTERPOLATION = {"nearest": "nearest", "bilinear": "linear"}


def _upsample(t: Any, node: Any, x: Value, mode: str, **target: Any) -> list[int]:
    """An Upsample layer over the spatial axes of ``x`` (``size`` or ``scale_factor`` in
    ``target``), in the inside layout ``(C, *spatial)``."""
    op = node.operation
    data_format = getattr(op, "data_format", "channels_last")
    if mode not in _KERAS_INTERPOLATION:
        raise t.unsupported(f"interpolation {mode!r}",
                            f"Interpolations that convert: {sorted(_KERAS_INTERPOLATION)}. ")
    source, _ = _spatial_in(t, x, data_format)
    linear = _KERAS_INTERPOLATION[mode] == "linear"
    resized = t.emit("Upsample", [source], mode=_KERAS_INTERPOLATION[mode],
                     align_corners=False if linear else None, **target)
    return [_spatial_out(t, resized, x.rank, data_format)]


@_register("UpSampling1D", "UpSampling2D", "UpSampling3D")
def _upsampling(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    op = node.operation
    size = op.size if isinstance(op.size, (list, tuple)) else [op.size]
    return _upsample(t, node, xs[0], getattr(op, "interpolation", "nearest"),
                     scale_factor=[float(v) for v in size])


@_register("Resizing")
def _resizing(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    op = node.operation
    if op.crop_to_aspect_ratio or op.pad_to_aspect_ratio or getattr(op, "antialias", False):
        raise t.unsupported("Resizing with crop_to_aspect_ratio, pad_to_aspect_ratio or "
                            "antialias")
    return _upsample(t, node, xs[0], op.interpolation, size=[op.height, op.width])


@_register("GroupNormalization")
def _group_norm(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    op, x = node.operation, xs[0]
    if _one_internal_axis(t, op.axis, x.rank, "group normalisation") != 0:
        raise t.unsupported("group normalisation over another axis than the channels")
    return [emit_group_norm(
        lambda type_name, reads, part, **params: t.emit(
            type_name, reads, part and f"/{part}", **params),
        x, channels_first(x.shape), op.groups, to_numpy(op.gamma) if op.scale else None,
        to_numpy(op.beta) if op.center else None, op.epsilon)]


#: Keras GRU's gate blocks (z, r, h) in torch's order (r, z, n).
_GRU_ORDER = (1, 0, 2)


def _gru_blocks(array: np.ndarray, hidden: int) -> np.ndarray:
    """The gate blocks of ``array`` (along its first axis) in torch's order."""
    return np.concatenate([array[k * hidden:(k + 1) * hidden] for k in _GRU_ORDER])


def _unroll(t: Any, node: Any, op: Any, x: Value, source: int, reverse: bool,
            part: str) -> int:
    """The hidden states ``(L, H)`` of the recurrent layer ``op`` over ``source (L, E)``
    (``x`` in Keras' time-major layout), unrolled over time (see
    :mod:`innsight.converter.recurrent`); ``reverse`` reads the sequence backwards (the
    backward layer of a ``Bidirectional``) and the states stay in time order."""
    cell, kind = op.cell, type(op).__name__
    given = {k: v for k, v in node.arguments.kwargs.items()
             if k in ("mask", "initial_state") and v is not None}
    act = cell.activation.__name__
    gate_act = getattr(getattr(cell, "recurrent_activation", None), "__name__", None)
    refused = [name for name, used in (
        ("go_backwards", op.go_backwards != reverse), ("stateful", op.stateful),
        ("return_state", op.return_state), ("a mask or an initial state", given),
        ("reset_after=False", kind == "GRU" and not cell.reset_after),
        (f"activation {act}", act not in (("tanh", "relu") if kind == "SimpleRNN" else ("tanh",))),
        (f"recurrent_activation {gate_act}", kind != "SimpleRNN" and gate_act != "sigmoid"),
    ) if used]
    if refused or x.rank != 2:
        raise t.unsupported(f"{kind} with {', '.join(refused) or f'samples of rank {x.rank}'}",
                            "Recurrent layers convert over (time steps, features) with their "
                            "default activations, forwards (backwards inside Bidirectional), "
                            "without masks or states. ")
    emit = lambda type_name, reads, name, **params: t.emit(  # noqa: E731
        type_name, reads, f"/{part}_{name}" if name else f"/{part}", **params)
    kernel, recurrent = to_numpy(cell.kernel).T, to_numpy(cell.recurrent_kernel).T
    bias = to_numpy(cell.bias) if cell.use_bias else None
    hidden = recurrent.shape[1]
    if kind == "LSTM":
        return emit_lstm(emit, source, x.shape, kernel, recurrent, bias, None, reverse, "")[0]
    if kind == "GRU":
        b_in, b_rec = (None, None) if bias is None else (_gru_blocks(bias[0], hidden),
                                                         _gru_blocks(bias[1], hidden))
        return emit_gru(emit, source, x.shape, _gru_blocks(kernel, hidden),
                        _gru_blocks(recurrent, hidden), b_in, b_rec, reverse, "")
    return emit_rnn(emit, source, x.shape, kernel, recurrent, bias, None, act, reverse, "")


def _last_state(t: Any, seq: int, length: int, hidden: int, reverse: bool, part: str) -> int:
    """The state ``(H,)`` after the last step read: row ``L - 1`` of the states ``(L, H)``,
    row 0 where the sequence is read backwards."""
    row = 0 if reverse else length - 1
    last = t.emit("Slice", [seq], f"/{part}_last", ranges=[[row, row + 1, 1], [0, hidden, 1]])
    return t.emit("Reshape", [last], f"/{part}_last_state", shape=[hidden])


@_register("LSTM", "GRU", "SimpleRNN")
def _recurrent(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    """A recurrent layer over ``(time steps, features)`` unrolled over time; the sequence
    (``return_sequences``) or its last hidden state."""
    op, x = node.operation, xs[0]
    seq = _unroll(t, node, op, x, t.to_keras_layout(x, "/time_major"), False, "cell")
    if op.return_sequences:
        return [t.from_keras_layout(seq, 2, "/channels_first")]
    return [_last_state(t, seq, x.shape[0], outs[0][-1], False, "cell")]


#: ``Bidirectional``'s merge modes: the layer that joins the two directions, its
#: parameters given the axis of the features, and an affine map after it.
_MERGES: dict[str, tuple[str, Callable[[int], dict[str, Any]], float]] = {
    "concat": ("Concatenate", lambda axis: {"axis": axis}, 1.0),
    "sum": ("Add", lambda axis: {}, 1.0),
    "ave": ("Add", lambda axis: {}, 0.5),
    "mul": ("Multiply", lambda axis: {}, 1.0),
}


@_register("Bidirectional")
def _bidirectional(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]
                   ) -> list[int]:
    """A recurrent layer read forwards and backwards, both unrolled over time; the two
    sequences (the backward one in time order, as Keras flips it) or last states
    merged by ``merge_mode`` (``concat``, ``sum``, ``ave``, ``mul``; ``None``: both)."""
    op, x = node.operation, xs[0]
    if op.return_state:
        raise t.unsupported("Bidirectional with return_state")
    source = t.to_keras_layout(x, "/time_major")
    sequences = op.forward_layer.return_sequences
    directions = []
    for layer, reverse, part in ((op.forward_layer, False, "forward"),
                                 (op.backward_layer, True, "backward")):
        seq = _unroll(t, node, layer, x, source, reverse, part)
        hidden = layer.cell.units
        directions.append(seq if sequences else _last_state(t, seq, x.shape[0], hidden,
                                                            reverse, part))
    if op.merge_mode is None:
        merged = directions
    else:
        type_name, params, scale = _MERGES[op.merge_mode]
        merged = [t.emit(type_name, directions, f"/{op.merge_mode}",
                         **params(1 if sequences else 0))]
        if scale != 1.0:
            merged = [t.emit("Affine", merged, "/mean", scale=scale)]
    if not sequences:
        return merged
    return [t.from_keras_layout(m, 2, f"/channels_first{k or ''}") for k, m in
            enumerate(merged)]


@_register("Embedding")
def _embedding(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    """The lookup of a model input of token ids ``(T,)`` in the table ``(vocab, D)``:
    the embedding ``(T, D)`` (what methods explain the ids through), held as ``(D, T)``.
    The input becomes an input of integers (``_Translator.mark_token_ids``)."""
    op, x = node.operation, xs[0]
    refused = [name for name, used in (
        ("mask_zero=True", op.mask_zero),
        (f"quantization mode {op.quantization_mode}", op.quantization_mode),
        (f"ids of shape {list(x.shape)}", x.rank != 1),
        ("ids computed by other layers", t.layers[x.index]["type"] != "Input"),
    ) if used]
    if refused:
        raise t.unsupported(f"Embedding with {', '.join(refused)}",
                            "Embeddings convert on a model input of token ids of shape "
                            "(tokens,), without masks or quantization. ")
    lookup = t.emit("Embedding", [x], weight=to_numpy(op.embeddings))
    return [t.from_keras_layout(lookup, 2, "/channels_first")]


def _one_internal_axis(t: Any, keras_axis: Any, rank: int, what: str) -> int:
    """A layer's Keras ``axis`` (an int or a one-element list) as an internal sample
    axis; several axes are refused naming ``what``."""
    axes = keras_axis if isinstance(keras_axis, (list, tuple)) else [keras_axis]
    if len(axes) != 1:
        raise t.unsupported(f"{what} over several axes {list(axes)}")
    return internal_axis(sample_axis(axes[0], rank, t.where), rank)


@_register("BatchNormalization")
def _batch_norm(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    op, x = node.operation, xs[0]
    axis = _one_internal_axis(t, op.axis, x.rank, "batch normalisation")
    mean, var = to_numpy(op.moving_mean), to_numpy(op.moving_variance)
    gamma = to_numpy(op.gamma) if op.scale else None
    beta = to_numpy(op.beta) if op.center else None
    if axis == 0:
        return [t.emit("BatchNorm", [x], running_mean=mean, running_var=var, weight=gamma,
                       bias=beta, eps=float(op.epsilon))]
    # Another axis than the channels: the same map as an affine layer along that axis.
    scale = 1.0 / np.sqrt(var.astype(np.float64) + op.epsilon)
    scale = scale if gamma is None else scale * gamma
    shift = -mean * scale + (0.0 if beta is None else beta)
    shape = [1] * x.rank
    shape[axis] = -1
    return [t.emit("Affine", [x], scale=scale.reshape(shape), shift=shift.reshape(shape))]


@_register("LayerNormalization")
def _layer_norm(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    op, x = node.operation, xs[0]
    if op.rms_scaling:
        raise t.unsupported("LayerNormalization with rms_scaling=True",
                            "It divides by the standard deviation without subtracting "
                            "the mean, which no layer computes. ")
    keras_axes = op.axis if isinstance(op.axis, (list, tuple)) else [op.axis]
    sample_axes = [sample_axis(a, x.rank, t.where) for a in keras_axes]
    axes = sorted(internal_axis(a, x.rank) for a in sample_axes)
    # Keras reshapes gamma and beta to broadcast against the sample, then so do we.
    shape = [size if a in sample_axes else 1 for a, size in enumerate(x.shape)]

    def param(value: Any) -> np.ndarray | None:
        if value is None:
            return None
        inside = np.asarray(to_internal_array(to_numpy(value).reshape(shape), x.rank))
        return inside.reshape([inside.shape[a] for a in axes])

    return [t.emit("LayerNorm", [x], axes=axes, weight=param(op.gamma), bias=param(op.beta),
                   eps=float(op.epsilon))]


# ---- attention -----------------------------------------------------------------------------

#: Arguments of ``MultiHeadAttention.call`` that do not convert, with their defaults.
_ATTENTION_DEFAULTS = {
    "query_mask": None, "value_mask": None, "key_mask": None, "attention_mask": None,
    "use_causal_mask": False, "return_attention_scores": False,
}


def _einsum_kernel(t: Any, dense: Any, rows: int) -> tuple[np.ndarray, np.ndarray | None]:
    """An ``EinsumDense`` sub-layer of attention as a Dense ``(weight (out, in), bias)``:
    its kernel, ``(width, heads, dim)`` for a projection (``rows=1``) or ``(heads, dim,
    *output_shape)`` for the output (``rows=2``), flattened row-major to ``(in, out)``
    with the first ``rows`` axes as inputs, and transposed; its bias flattened."""
    mode = getattr(dense, "quantization_mode", None)
    if mode is not None:
        raise t.unsupported(f"a quantized ({mode}) attention projection")
    kernel = to_numpy(dense.kernel)
    weight = kernel.reshape(int(np.prod(kernel.shape[:rows])), -1).T
    return weight, None if dense.bias is None else to_numpy(dense.bias).reshape(-1)


@_register("MultiHeadAttention")
def _multi_head_attention(t: Any, node: Any, xs: list[Value],
                          outs: list[tuple[int, ...]]) -> list[int]:
    """Self- or cross-attention (gated or not) without masks, attention over all axes
    but the last (Keras' default), as :func:`~innsight.converter.attention.emit_multi_head_attention`
    on token-major tensors: each input ``(..., C)`` (held ``(C, ...)``) becomes
    ``(tokens, C)``, the result ``(tokens, out)`` goes back to ``(..., *output_shape)``."""
    op = node.operation
    call = inspect.signature(op.call).bind(*node.arguments.args, **node.arguments.kwargs)
    given = [name for name, value in call.arguments.items()
             if name in _ATTENTION_DEFAULTS and value is not _ATTENTION_DEFAULTS[name]]
    if given:
        raise t.unsupported(f"a call with {', '.join(given)}",
                            "Only attention without masks, returning its output alone, "
                            "converts. ")
    if call.arguments.get("training") is True and op.dropout > 0:
        raise t.unsupported("dropout called with training=True", "It stays random at inference. ")
    values = dict(zip(map(id, node.input_tensors), xs))
    key = call.arguments.get("key")
    inputs = [values[id(call.arguments["query"])],
              values[id(call.arguments["value"] if key is None else key)],
              values[id(call.arguments["value"])]]
    rank = inputs[0].rank
    options = {"sliding_window": getattr(op, "_sliding_window", None),  # newer Keras only
               "attention_axes": tuple(op.attention_axes)}
    defaults = {"sliding_window": None, "attention_axes": tuple(range(1, rank))}
    refused = [f"{name}={value!r}" for name, value in options.items() if value != defaults[name]]
    if refused or any(x.rank != rank for x in inputs):
        raise t.unsupported(
            f"attention with {', '.join(refused) or 'inputs of different ranks'}",
            f"Attention over all axes but the last (attention_axes={defaults['attention_axes']} "
            "here) of query, key and value of the same rank converts, without a sliding "
            "window. ")
    tokens: dict[int, int] = {}  # one token-major copy per distinct input
    for name, x in zip(("query", "key", "value"), inputs):
        if x.index not in tokens:
            index = t.to_keras_layout(x, f"/{name}_tokens")
            if rank > 2:
                index = t.emit("Reshape", [index], f"/{name}_flat",
                               shape=[math.prod(x.shape[:-1]), x.shape[-1]])
            tokens[x.index] = index
    dense = (op.query_dense, op.key_dense, op.value_dense)
    output = _einsum_kernel(t, op.output_dense, 2)
    lengths = [math.prod(x.shape[:-1]) for x in inputs]
    out = emit_multi_head_attention(
        lambda type_name, reads, part, **params: t.emit(
            type_name, reads, part and f"/{part}", **params),
        [tokens[x.index] for x in inputs], lengths, [_einsum_kernel(t, d, 1) for d in dense],
        output, op.num_heads, 1 / math.sqrt(op.key_dim),
        _einsum_kernel(t, op._gate_dense, 1) if getattr(op, "_use_gate", False) else None,
    )
    shape = outs[0]
    if tuple(shape) != (lengths[0], output[0].shape[0]):  # several axes of tokens or outputs
        out = t.emit("Reshape", [out], "/unflat", shape=list(shape))
    return [t.from_keras_layout(out, len(shape), "")]


# ---- pooling -------------------------------------------------------------------------------


def _window_counts(sizes: Sequence[int], pool: Sequence[int], strides: Sequence[int],
                   pads: Sequence[Sequence[int]], out_sizes: Sequence[int]) -> np.ndarray:
    """How many real inputs each pooling window covers: ``(1, *out_sizes)``."""
    counts = np.ones([1], dtype=np.float64)
    for n, k, s, (before, _), m in zip(sizes, pool, strides, pads, out_sizes):
        start = np.arange(m) * s - before
        counts = np.multiply.outer(counts, np.minimum(start + k, n) - np.maximum(start, 0))
    return counts


def _pool(kind: str) -> Handler:
    def handler(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
        op = node.operation
        source, sizes = _spatial_in(t, xs[0], op.data_format)
        n = len(sizes)
        pads = explicit_padding(op.padding, sizes, op.pool_size, op.strides, [1] * n)
        params: dict[str, Any] = {"kernel_size": list(op.pool_size), "stride": list(op.strides)}
        if all(before == after for before, after in pads):  # as torch pads
            params["padding"] = [before for before, _ in pads]
            if kind == "Avg":
                params["count_include_pad"] = False  # TensorFlow averages the real inputs
            pool = t.emit(f"{kind}Pool{n}D", [source], **params)
            return [_spatial_out(t, pool, xs[0].rank, op.data_format)]
        # TensorFlow's 'same' puts the odd pixel after, which torch's symmetric padding
        # cannot: pad explicitly. A max pool pads copies of the edge (every window that
        # reaches into the padding holds the edge value, so its max is unchanged); an
        # average pool pads zeros and rescales each window's mean to its real inputs.
        padded = t.emit("Padding", [source], "/pad", padding=pads,
                        mode="replicate" if kind == "Max" else "constant")
        pool = t.emit(f"{kind}Pool{n}D", [padded], "/pool" if kind == "Avg" else "", **params)
        if kind == "Avg":
            counts = _window_counts(sizes, op.pool_size, op.strides, pads,
                                    _spatial_sizes(outs[0], op.data_format))
            pool = t.emit("Affine", [pool], scale=math.prod(op.pool_size) / counts)
        return [_spatial_out(t, pool, xs[0].rank, op.data_format)]

    return handler


_register("MaxPooling1D", "MaxPooling2D", "MaxPooling3D")(_pool("Max"))
_register("AveragePooling1D", "AveragePooling2D", "AveragePooling3D")(_pool("Avg"))


def _global_pool(kind: str) -> Handler:
    def handler(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
        op = node.operation
        source, sizes = _spatial_in(t, xs[0], op.data_format)
        n = len(sizes)
        pool = t.emit(f"Adaptive{kind}Pool{n}D", [source], output_size=[1] * n)
        if op.keepdims:
            return [_spatial_out(t, pool, xs[0].rank, op.data_format)]
        return [t.emit("Flatten", [pool], "/flatten")]

    return handler


_register("GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D")(_global_pool("Max"))
_register("GlobalAveragePooling1D", "GlobalAveragePooling2D",
          "GlobalAveragePooling3D")(_global_pool("Avg"))


# ---- activations ----------------------------------------------------------------------------


@_register("Activation")
def _activation_layer(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    return [apply_activation(t, xs[0].index, node.operation.activation, "")]


@_register("ReLU")
def _relu(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    op = node.operation
    slope = float(op.negative_slope or 0.0)
    top = None if op.max_value is None else float(op.max_value)
    if float(op.threshold or 0.0) != 0.0:
        raise t.unsupported(
            f"ReLU with threshold={op.threshold}",
            "Its output jumps at the threshold, which no activation layer expresses. ",
        )
    if slope == 0.0 and top is None:
        return [t.emit("Activation", [xs[0]], act_name="relu")]
    if slope == 0.0 and top == 6.0:
        return [t.emit("Activation", [xs[0]], act_name="relu6")]
    if slope == 0.0:
        return [t.emit("Activation", [xs[0]], act_name="hardtanh", min_val=0.0, max_val=top)]
    leaky = t.emit("Activation", [xs[0]], "" if top is None else "/leaky",
                   act_name="leaky_relu", negative_slope=slope)
    if top is None:
        return [leaky]
    # min(leaky_relu(x), max_value) = max_value - relu(max_value - leaky_relu(x))
    gap = t.emit("Affine", [leaky], "/gap", scale=-1.0, shift=top)
    relu = t.emit("Activation", [gap], "/cap", act_name="relu")
    return [t.emit("Affine", [relu], scale=-1.0, shift=top)]


@_register("LeakyReLU")
def _leaky_relu(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    slope = float(node.operation.negative_slope)
    return [t.emit("Activation", [xs[0]], act_name="leaky_relu", negative_slope=slope)]


@_register("ELU")
def _elu(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    return [t.emit("Activation", [xs[0]], act_name="elu", alpha=float(node.operation.alpha))]


def _softmax_over(t: Any, x: Value, keras_axis: Any) -> int:
    """``x`` followed by a softmax over the Keras ``keras_axis`` (an int or a one-element
    list; several axes are refused)."""
    axis = _one_internal_axis(t, keras_axis, x.rank, "softmax")
    return t.emit("Activation", [x], act_name="softmax", axis=axis)


@_register("Softmax")
def _softmax_layer(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    return [_softmax_over(t, xs[0], node.operation.axis)]


# ---- merging ----------------------------------------------------------------------------------


def _same_rank(t: Any, xs: list[Value], rank: int) -> list[Value]:
    return [t.expand_rank(x, rank) for x in xs]


@_register("Add")
def _add_layer(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    return [t.emit("Add", _same_rank(t, xs, len(outs[0])))]


@_register("Subtract")
def _subtract_layer(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    a, b = _same_rank(t, xs, len(outs[0]))
    neg = t.emit("Affine", [b], "/neg", scale=-1.0)
    return [t.emit("Add", [a, neg])]


@_register("Average")
def _average(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    total = t.emit("Add", _same_rank(t, xs, len(outs[0])), "/sum")
    return [t.emit("Affine", [total], scale=1.0 / len(xs))]


@_register("Multiply")
def _multiply_layer(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    values = _same_rank(t, xs, len(outs[0]))
    out = values[0].index
    for k, x in enumerate(values[1:]):
        out = t.emit("Multiply", [out, x], "" if k == len(values) - 2 else f"/{k}")
    return [out]


@_register("Concatenate")
def _concatenate(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    rank = xs[0].rank
    if any(x.rank != rank for x in xs):
        raise t.unsupported(f"concatenating tensors of ranks {[x.rank for x in xs]}")
    axis = internal_axis(sample_axis(node.operation.axis, rank, t.where), rank)
    return [t.emit("Concatenate", xs, axis=axis)]


# ---- shapes -------------------------------------------------------------------------------------


def _keras_order_perm(order: Sequence[int], rank: int) -> list[int]:
    """The Permute taking the inside layout to the Keras axes ``order``."""
    return [internal_axis(a, rank) for a in order]


@_register("Flatten")
def _flatten(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    x = xs[0]
    if x.rank < 2:
        return [x.index]
    order = list(range(x.rank))
    if getattr(node.operation, "data_format", "channels_last") == "channels_first":
        order = [*range(1, x.rank), 0]  # Keras moves axis 1 last before flattening
    source = t.permute(x.index, _keras_order_perm(order, x.rank), "/keras_order")
    return [t.emit("Flatten", [source])]


@_register("Reshape")
def _reshape(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    x, shape = xs[0], outs[0]
    source = t.to_keras_layout(x, "/keras_order")
    reshaped = t.emit("Reshape", [source], "" if len(shape) < 2 else "/reshape", shape=list(shape))
    return [t.from_keras_layout(reshaped, len(shape), "")]


@_register("Permute")
def _permute(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    x = xs[0]
    dims = [int(d) - 1 for d in node.operation.dims]  # Keras counts the batch axis
    r = x.rank
    keras_axis_of = [r - 1, *range(r - 1)]  # inside axis i holds Keras axis keras_axis_of[i]
    perm = [internal_axis(dims[keras_axis_of[i]], r) for i in range(r)]
    return [t.permute(x.index, perm, "")]


def _pairs(value: Any, n: int) -> list[list[int]]:
    """Keras padding/cropping (an int, n ints or n pairs) as n ``[before, after]`` pairs."""
    if isinstance(value, (int, np.integer)):
        return [[int(value)] * 2 for _ in range(n)]
    value = list(value)
    if n == 1 and len(value) == 2 and all(isinstance(v, (int, np.integer)) for v in value):
        return [[int(value[0]), int(value[1])]]
    return [[int(v), int(v)] if isinstance(v, (int, np.integer)) else [int(v[0]), int(v[1])]
            for v in value]


@_register("ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D")
def _zero_padding(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    op = node.operation
    data_format = getattr(op, "data_format", "channels_last")
    source, sizes = _spatial_in(t, xs[0], data_format)
    padded = t.emit("Padding", [source], padding=_pairs(op.padding, len(sizes)))
    return [_spatial_out(t, padded, xs[0].rank, data_format)]


@_register("Cropping1D", "Cropping2D", "Cropping3D")
def _cropping(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    op, x = node.operation, xs[0]
    data_format = getattr(op, "data_format", "channels_last")
    source, sizes = _spatial_in(t, x, data_format)
    channels = x.shape[0] if data_format == "channels_first" else x.shape[-1]
    crops = _pairs(op.cropping, len(sizes))
    ranges = [[0, channels, 1]] + [[b, n - a, 1] for n, (b, a) in zip(sizes, crops)]
    cropped = t.emit("Slice", [source], ranges=ranges)
    return [_spatial_out(t, cropped, x.rank, data_format)]


# ---- preprocessing and scaling ----------------------------------------------------------------


def _keras_constant(value: Any) -> Any:
    """A number as it is; a Keras variable or tensor, or an array, as a numpy array."""
    return value if isinstance(value, (int, float)) else to_numpy(value)


@_register("Rescaling")
def _rescaling(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    op, x = node.operation, t.expand_rank(xs[0], len(outs[0]))
    # the values Keras computes with: it casts a number through float32 (the default
    # dtype of a Python float in every backend), even in a float64 model
    scale, shift = (to_internal_array(to_numpy(t.keras.ops.cast(c, op.compute_dtype)), x.rank)
                    for c in (_keras_constant(op.scale), _keras_constant(op.offset)))
    return [t.emit("Affine", [x], scale=scale, shift=shift)]


@_register("Normalization")
def _normalization(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    op, x = node.operation, xs[0]
    mean = to_numpy(op.mean).astype(np.float64)
    std = np.maximum(np.sqrt(to_numpy(op.variance).astype(np.float64)), t.keras.config.epsilon())
    mean, std = (a.reshape(a.shape[1:]) if a.ndim == x.rank + 1 else a for a in (mean, std))
    if op.invert:  # mean + x * std
        return [t.emit("Affine", [x], scale=to_internal_array(std, x.rank),
                       shift=to_internal_array(mean, x.rank))]
    # (x - mean) / std, centred first as Keras does: folded into x / std - mean / std it
    # would lose float32 digits to cancellation for inputs near a large mean.
    centred = t.emit("Affine", [x], "/centre", shift=to_internal_array(-mean, x.rank))
    return [t.emit("Affine", [centred], scale=to_internal_array(1.0 / std, x.rank))]


@_register("keras.src.applications.inception_resnet_v2:CustomScaleLayer")
def _custom_scale(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    a, b = xs  # inputs[0] + inputs[1] * scale
    scaled = t.emit("Affine", [b], "/scale", scale=float(node.operation.scale))
    return [t.emit("Add", [a, scaled])]


@_register("keras.src.applications.convnext:LayerScale")
def _layer_scale(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    x = xs[0]  # x * gamma, gamma over the last Keras axis
    gamma = to_internal_array(to_numpy(node.operation.gamma), x.rank)
    return [t.emit("Affine", [x], scale=gamma)]


# ---- arithmetic on Keras tensors (x + 3, x * 0.5, keras.ops.add(a, b), ...) --------------------


def _operands(t: Any, node: Any, xs: list[Value], rank: int) -> list[Any]:
    """The two operands of a binary op: Values (expanded to ``rank``) or constants."""
    tensors = iter(xs)
    operands = []
    for arg in node.arguments.args[:2]:
        if isinstance(arg, t.keras.KerasTensor):
            operands.append(t.expand_rank(next(tensors), rank))
        else:
            operands.append(_keras_constant(arg))
    return operands


def _arith(kind: str) -> Handler:
    def handler(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
        rank = len(outs[0])
        a, b = _operands(t, node, xs, rank)
        if isinstance(a, Value) and isinstance(b, Value):
            if kind == "add":
                return [t.emit("Add", [a, b])]
            if kind == "multiply":
                return [t.emit("Multiply", [a, b])]
            if kind == "subtract":
                return [t.emit("Add", [a, t.emit("Affine", [b], "/neg", scale=-1.0)])]
            raise t.unsupported("dividing a tensor by a tensor")
        x, c, x_first = (a, b, True) if isinstance(a, Value) else (b, a, False)
        c = np.asarray(c, dtype=np.float64)
        if kind == "divide" and not x_first:
            raise t.unsupported("dividing a constant by a tensor")
        scale, shift = {
            "add": (1.0, c),
            "subtract": (1.0, -c) if x_first else (-1.0, c),
            "multiply": (c, 0.0),
            "divide": (1.0 / c, 0.0),
        }[kind]
        return [t.emit("Affine", [x], scale=to_internal_array(scale, rank),
                       shift=to_internal_array(shift, rank))]

    return handler


_register("keras.src.ops.numpy:Add")(_arith("add"))
_register("keras.src.ops.numpy:Subtract")(_arith("subtract"))
_register("keras.src.ops.numpy:Multiply")(_arith("multiply"))
_register("keras.src.ops.numpy:TrueDivide", "keras.src.ops.numpy:Divide")(_arith("divide"))


@_register("keras.src.ops.numpy:Negative")
def _negative(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    return [t.emit("Affine", [xs[0]], scale=-1.0)]


@_register("PReLU")
def _prelu(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    x = xs[0]
    alpha = to_numpy(node.operation.alpha).astype(np.float64)
    if np.all(alpha == alpha.flat[0]):  # one slope: a leaky relu
        return [t.emit("Activation", [x], act_name="leaky_relu",
                       negative_slope=float(alpha.flat[0]))]
    # relu(x) - alpha * relu(-x), alpha laid out like the channels-first sample
    positive = t.emit("Activation", [x], "/positive", act_name="relu")
    flipped = t.emit("Affine", [x], "/flip", scale=-1.0)
    negative = t.emit("Activation", [flipped], "/negative", act_name="relu")
    scaled = t.emit("Affine", [negative], "/slope", scale=to_internal_array(-alpha, x.rank))
    return [t.emit("Add", [positive, scaled])]


# ---- activation functions called as Keras ops (keras.ops.relu(x), ...) -------------------------


def _op_activation(builder_of: Callable[[Any], ActivationBuilder]) -> Handler:
    def handler(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
        return [builder_of(node.operation)(t, xs[0].index, "")]

    return handler


@_register("keras.src.ops.nn:Softmax")
def _op_softmax(t: Any, node: Any, xs: list[Value], outs: list[tuple[int, ...]]) -> list[int]:
    axis = node.operation.axis
    return [_softmax_over(t, xs[0], -1 if axis is None else axis)]


for _name, _builder_of in {
    "Relu": lambda op: ACTIVATION_BUILDERS["relu"],
    "Relu6": lambda op: ACTIVATION_BUILDERS["relu6"],
    "Sigmoid": lambda op: ACTIVATION_BUILDERS["sigmoid"],
    "Softplus": lambda op: ACTIVATION_BUILDERS["softplus"],
    "Silu": lambda op: ACTIVATION_BUILDERS["silu"],
    "HardSigmoid": lambda op: ACTIVATION_BUILDERS["hard_sigmoid"],
    "HardSilu": lambda op: ACTIVATION_BUILDERS["hard_silu"],
    "Selu": lambda op: ACTIVATION_BUILDERS["selu"],
    "LeakyRelu": lambda op: _one_activation("leaky_relu", negative_slope=float(op.negative_slope)),
    "Elu": lambda op: _one_activation("elu", alpha=float(op.alpha)),
    "Gelu": lambda op: _one_activation("gelu", approximate="tanh" if op.approximate else "none"),
}.items():
    _register(f"keras.src.ops.nn:{_name}")(_op_activation(_builder_of))
_register("keras.src.ops.numpy:Tanh")(_op_activation(lambda op: ACTIVATION_BUILDERS["tanh"]))
