"""Keras layers one by one: each small model's conversion reproduces ``model(x)``
(float64, 1e-10 relative) and its gradients reproduce ``tf.GradientTape``; the
graph features (shared layers, nested models, unknown sizes, files) and every
refusal of the front-end.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from keras_reference import (
    DOUBLE_TOL,
    channels_first,
    float64,
    keras,
    keras_outputs,
    max_rel_error,
    randomize_batch_norm,
    tape_gradients,
)

import innsight as ins
from innsight.converter.keras_ops import ACTIVATION_BUILDERS, REFUSED_ACTIVATIONS

layers = keras.layers
ops = keras.ops


def check(model, input_dim=None, tol=DOUBLE_TOL, seed=0):
    """Forward of every output against Keras, and the gradient of three nodes of the
    flattened first output against tf.GradientTape (channels-last data and results)."""
    rng = np.random.default_rng(seed)
    shapes = [tuple(x.shape[1:]) for x in model.inputs]
    if input_dim is not None:
        dims = input_dim if isinstance(input_dim[0], (list, tuple)) else [input_dim]
        shapes = [(*d[1:], d[0]) if len(d) > 1 else tuple(d) for d in dims]
    xs = [rng.standard_normal((3, *s)) for s in shapes]
    conv = ins.convert(model, input_dim=input_dim, dtype="double")
    with torch.no_grad():
        actual = conv.model([torch.as_tensor(channels_first(x)) for x in xs])
    actual = actual if isinstance(actual, list) else [actual]
    expected = keras_outputs(model, xs)
    for a, e in zip(actual, expected):
        assert max_rel_error(a, channels_first(e)) < tol

    flat = keras.Model(model.inputs, layers.Flatten()(model.outputs[0]))
    n_out = int(np.prod(expected[0].shape[1:]))
    nodes = sorted({0, n_out // 2, n_out - 1})
    res = ins.run_grad(ins.convert(flat, input_dim=input_dim, dtype="double"), xs,
                       channels_first=False, output_idx=nodes, ignore_last_act=False,
                       dtype="double")
    got = res.get_result("array")
    got = got[0] if len(xs) > 1 else [got]  # several inputs: per output layer, per input
    for g, want in zip(got, tape_gradients(flat, xs, 0, nodes)):
        assert max_rel_error(g, want) < tol
    return conv


def sequential(input_shape, *stack):
    return keras.Sequential([keras.Input(input_shape), *stack])


def attention(query_shape, value_shape=None, key_shape=None, name="mha", call=None, **options):
    """``MultiHeadAttention(num_heads=2, key_dim=4)`` with random biases: self-attention,
    or cross-attention reading value (and key) inputs of their own; ``call`` holds
    further arguments of the call, e.g. inputs to use as masks (``{"name": shape}``)."""
    query = keras.Input(query_shape)
    inputs = [query] + [keras.Input(s) for s in (value_shape, key_shape) if s is not None]
    extra = {k: keras.Input(v) if isinstance(v, tuple) else v for k, v in (call or {}).items()}
    inputs += [v for v in extra.values() if isinstance(v, keras.KerasTensor)]
    layer = layers.MultiHeadAttention(
        2, 4, name=name, bias_initializer=keras.initializers.RandomNormal(stddev=0.5), **options)
    if key_shape is not None:
        extra["key"] = inputs[2]
    out = layer(query, inputs[1] if value_shape is not None else query, **extra)
    return keras.Model(inputs if len(inputs) > 1 else query, out)


# ---- single layers ----------------------------------------------------------------------

SLOPES = keras.initializers.RandomUniform(0.0, 0.5)
#: Layer normalisation with random scales and offsets (fresh ones are ones and zeros).
LN_INIT = {"gamma_initializer": keras.initializers.RandomUniform(0.5, 1.5),
           "beta_initializer": keras.initializers.RandomNormal(stddev=0.5)}

LAYER_CASES = {
    "conv2d-same-stride2-odd": lambda:
        sequential((9, 9, 3), layers.Conv2D(4, 3, strides=2, padding="same")),
    "conv2d-same-stride2-even": lambda:
        sequential((8, 10, 3), layers.Conv2D(4, (4, 3), strides=(2, 3), padding="same")),
    "conv2d-same-dilation": lambda:
        sequential((9, 9, 2), layers.Conv2D(3, 3, dilation_rate=2, padding="same")),
    "conv2d-valid-stride3": lambda:
        sequential((10, 11, 2), layers.Conv2D(3, 2, strides=3, use_bias=False)),
    "conv2d-groups": lambda: sequential((7, 7, 4), layers.Conv2D(6, 3, groups=2, padding="same")),
    "conv1d-groups-stride": lambda:
        sequential((15, 6), layers.Conv1D(4, 4, strides=2, groups=2, padding="same")),
    "conv3d-same-stride2": lambda:
        sequential((5, 6, 7, 2), layers.Conv3D(3, 3, strides=2, padding="same")),
    "depthwise2d": lambda:
        sequential((9, 9, 3), layers.DepthwiseConv2D(3, strides=2, depth_multiplier=2,
                                                     padding="same")),
    "depthwise1d": lambda:
        sequential((12, 3), layers.DepthwiseConv1D(3, dilation_rate=2, depth_multiplier=2)),
    "separable2d": lambda:
        sequential((9, 8, 3), layers.SeparableConv2D(4, 3, strides=2, depth_multiplier=2,
                                                     padding="same", activation="relu")),
    "separable1d": lambda: sequential((12, 3), layers.SeparableConv1D(5, 3, use_bias=False)),
    "maxpool2d-same-odd": lambda:
        sequential((9, 9, 2), layers.MaxPooling2D(3, strides=2, padding="same")),
    "maxpool2d-same-even": lambda:
        sequential((8, 7, 2), layers.MaxPooling2D((2, 3), strides=(2, 2), padding="same")),
    "maxpool2d-valid": lambda: sequential((9, 9, 2), layers.MaxPooling2D(2)),
    "avgpool2d-same-stride1": lambda:
        sequential((7, 7, 2), layers.AveragePooling2D(3, strides=1, padding="same")),
    "avgpool2d-same-stride2": lambda:
        sequential((9, 8, 2), layers.AveragePooling2D(2, strides=2, padding="same")),
    "avgpool1d-same": lambda:
        sequential((11, 2), layers.AveragePooling1D(4, strides=3, padding="same")),
    # 'same' with an odd total padding (the odd pixel after): an even window at stride 1
    "maxpool2d-same-even-stride1": lambda:
        sequential((6, 5, 2), layers.MaxPooling2D(2, strides=1, padding="same")),
    "avgpool2d-same-even-stride1": lambda:
        sequential((6, 5, 2), layers.AveragePooling2D((4, 2), strides=1, padding="same")),
    "maxpool1d-same-even-stride1-wider-than-input": lambda:
        sequential((3, 2), layers.MaxPooling1D(6, strides=1, padding="same")),
    "avgpool1d-same-even-stride1-wider-than-input": lambda:
        sequential((3, 2), layers.AveragePooling1D(6, strides=1, padding="same")),
    "avgpool2d-same-mixed-strides": lambda:
        sequential((7, 6, 2), layers.AveragePooling2D((2, 3), strides=(1, 2), padding="same")),
    "maxpool1d-valid": lambda: sequential((11, 2), layers.MaxPooling1D(3)),
    "global-avg2d": lambda: sequential((5, 6, 3), layers.GlobalAveragePooling2D()),
    "global-max2d-keepdims": lambda:
        sequential((5, 6, 3), layers.GlobalMaxPooling2D(keepdims=True)),
    "global-max1d": lambda: sequential((7, 3), layers.GlobalMaxPooling1D()),
    "global-avg1d-keepdims": lambda:
        sequential((7, 3), layers.GlobalAveragePooling1D(keepdims=True)),
    "batchnorm-channels": lambda: sequential((5, 4, 3), layers.BatchNormalization(epsilon=0.01)),
    "batchnorm-other-axis": lambda: sequential((5, 4, 3), layers.BatchNormalization(axis=1)),
    "batchnorm-no-affine": lambda:
        sequential((6,), layers.BatchNormalization(center=False, scale=False)),
    "layernorm-images": lambda:
        sequential((4, 5, 3), layers.LayerNormalization(epsilon=0.01, **LN_INIT)),
    "layernorm-signals": lambda: sequential((6, 3), layers.LayerNormalization(**LN_INIT)),
    "layernorm-tabular": lambda:
        sequential((6,), layers.Dense(4), layers.LayerNormalization(**LN_INIT)),
    "layernorm-spatial-axes": lambda:
        sequential((4, 5, 3), layers.LayerNormalization(axis=[1, 2], **LN_INIT)),
    "layernorm-all-axes": lambda:
        sequential((4, 5, 3), layers.LayerNormalization(axis=[1, 2, 3], **LN_INIT)),
    # Keras sorts [1, -1] to [-1, 1]: gamma (3, 4) is reshaped to the sample's (4, 1, 3)
    "layernorm-mixed-sign-axes": lambda:
        sequential((4, 5, 3), layers.LayerNormalization(axis=[1, -1], **LN_INIT)),
    "layernorm-no-affine": lambda:
        sequential((4, 5, 3), layers.LayerNormalization(axis=-2, center=False, scale=False)),
    "dense-on-images": lambda: sequential((4, 5, 3), layers.Dense(2, activation="softmax")),
    "dense-on-signals": lambda: sequential((6, 3), layers.Dense(4, activation="relu")),
    "flatten": lambda: sequential((3, 4, 2), layers.Flatten()),
    "reshape": lambda: sequential((3, 4, 2), layers.Reshape((6, 4))),
    "reshape-to-images": lambda: sequential((12,), layers.Reshape((2, 3, -1))),
    "permute": lambda: sequential((3, 4, 2), layers.Permute((3, 1, 2))),
    "relu6": lambda: sequential((8,), layers.ReLU(max_value=6.0)),
    "relu-capped": lambda: sequential((8,), layers.ReLU(max_value=0.5)),
    # slopes exact in float32: TensorFlow rounds the slope of leaky relu to float32
    "relu-leaky": lambda: sequential((8,), layers.ReLU(negative_slope=0.125)),
    "relu-leaky-capped": lambda:
        sequential((8,), layers.ReLU(negative_slope=0.125, max_value=0.75)),
    "leaky-relu": lambda: sequential((8,), layers.LeakyReLU(negative_slope=0.25)),
    "elu": lambda: sequential((8,), layers.ELU(alpha=0.7)),
    "prelu-per-channel": lambda:
        sequential((4, 5, 3), layers.PReLU(shared_axes=[1, 2], alpha_initializer=SLOPES)),
    "prelu-per-entry": lambda:
        sequential((4, 3), layers.PReLU(alpha_initializer=SLOPES)),
    "prelu-one-slope": lambda:
        sequential((4, 5, 3), layers.PReLU(shared_axes=[1, 2, 3],
                                           alpha_initializer=keras.initializers.Constant(0.125))),
    "softmax-axis": lambda: sequential((4, 5, 3), layers.Softmax(axis=1)),
    "softmax-last": lambda: sequential((4, 3), layers.Softmax()),
    "zero-padding1d": lambda: sequential((6, 2), layers.ZeroPadding1D((1, 2))),
    "zero-padding2d": lambda: sequential((4, 5, 2), layers.ZeroPadding2D(((1, 0), (2, 3)))),
    "cropping1d": lambda: sequential((8, 2), layers.Cropping1D((1, 2))),
    "cropping2d": lambda: sequential((7, 6, 2), layers.Cropping2D(((2, 1), (0, 3)))),
    "rescaling": lambda: sequential((4, 4, 3), layers.Rescaling(1 / 128, offset=-1.0)),
    # Keras casts a number through float32 even in a float64 model: 1/255 rounded
    "rescaling-inexact": lambda: sequential((4, 4, 3), layers.Rescaling(1 / 255, offset=0.1)),
    "rescaling-per-channel": lambda:
        sequential((4, 4, 3), layers.Rescaling([0.5, 2.0, 3.0], offset=[1.0, 0.0, -1.0])),
    "normalization": lambda:
        sequential((4, 4, 3), layers.Normalization(mean=[0.5, 1.0, -1.0],
                                                   variance=[4.0, 0.25, 1.0])),
    "normalization-invert": lambda:
        sequential((5,), layers.Normalization(mean=0.5, variance=2.0, invert=True)),
    "noops": lambda:
        sequential((6,), layers.Dropout(0.5), layers.GaussianNoise(1.0),
                   layers.GaussianDropout(0.3), layers.AlphaDropout(0.2),
                   layers.ActivityRegularization(0.1), layers.Identity(), layers.Dense(3)),
    "spatial-dropout": lambda:
        sequential((5, 5, 3), layers.SpatialDropout2D(0.5), layers.Conv2D(2, 3)),
    "random-flip": lambda:
        sequential((5, 5, 3), layers.RandomFlip(), layers.RandomRotation(0.2), layers.Conv2D(2, 3)),
    "attention-self": lambda: attention((5, 6), dropout=0.3),
    "attention-cross-key": lambda: attention((5, 6), (7, 3), (7, 2)),
    "attention-value-dim-output-shape": lambda:
        attention((5, 6), (7, 3), value_dim=3, output_shape=5, use_bias=False),
    "attention-over-image-positions": lambda: attention((3, 4, 6), output_shape=(2, 5)),
    "attention-gated": lambda: attention((5, 6), (7, 3), use_gate=True, value_dim=3),
    # decoders: transposed convolutions, up-sampling and resizing, group norm
    "conv2d-transpose-same-stride2-odd-crop": lambda:
        sequential((5, 6, 3), layers.Conv2DTranspose(4, 3, strides=2, padding="same")),
    "conv2d-transpose-valid-kernel-below-stride": lambda:
        sequential((4, 5, 3), layers.Conv2DTranspose(2, 1, strides=3, activation="relu")),
    "conv2d-transpose-same-even-kernel": lambda:
        sequential((5, 5, 2), layers.Conv2DTranspose(3, 4, strides=3, padding="same")),
    "conv1d-transpose-same": lambda:
        sequential((7, 3), layers.Conv1DTranspose(2, 4, strides=2, padding="same")),
    "conv3d-transpose-valid": lambda:
        sequential((3, 3, 2, 2), layers.Conv3DTranspose(2, 2, strides=2, use_bias=False)),
    "upsampling2d-nearest": lambda: sequential((5, 6, 3), layers.UpSampling2D((2, 3))),
    "upsampling2d-bilinear": lambda:
        sequential((5, 6, 3), layers.UpSampling2D(2, interpolation="bilinear")),
    "upsampling1d": lambda: sequential((5, 3), layers.UpSampling1D(3)),
    "upsampling3d": lambda: sequential((2, 3, 2, 2), layers.UpSampling3D((2, 1, 2))),
    "resizing-bilinear-down-and-up": lambda: sequential((5, 6, 3), layers.Resizing(9, 4)),
    "group-normalization": lambda: sequential((5, 6, 4), layers.GroupNormalization(
        2, beta_initializer="random_normal", gamma_initializer="random_normal")),
    "group-normalization-signal-no-affine": lambda:
        sequential((7, 6), layers.GroupNormalization(3, center=False, scale=False)),
    # recurrent layers unrolled over time
    "lstm-last-state": lambda: sequential((6, 4), layers.LSTM(5), layers.Dense(2)),
    "lstm-sequence": lambda: sequential((6, 4), layers.LSTM(3, return_sequences=True)),
    "gru-last-state": lambda: sequential((6, 4), layers.GRU(
        5, bias_initializer="random_normal"), layers.Dense(2)),
    "gru-sequence-no-bias": lambda:
        sequential((5, 3), layers.GRU(4, use_bias=False, return_sequences=True)),
    "simple-rnn": lambda: sequential((6, 4), layers.SimpleRNN(5, bias_initializer="ones")),
    "simple-rnn-relu-stacked": lambda: sequential((6, 4), layers.SimpleRNN(
        4, activation="relu", return_sequences=True), layers.LSTM(3)),
    # Bidirectional: every merge mode, the sequence (the backward one flipped back into
    # time order) and the last states
    **{f"bidirectional-{cell.__name__.lower()}-{mode}-{'sequence' if seq else 'last'}":
       (lambda cell=cell, mode=mode, seq=seq: sequential((5, 3), layers.Bidirectional(
           cell(4, return_sequences=seq, bias_initializer="random_normal"), merge_mode=mode)))
       for cell, mode, seq in [
           (layers.LSTM, "concat", True), (layers.LSTM, "concat", False),
           (layers.GRU, "sum", True), (layers.GRU, "sum", False),
           (layers.SimpleRNN, "mul", True), (layers.LSTM, "mul", False),
           (layers.GRU, "ave", True), (layers.SimpleRNN, "ave", False),
           (layers.LSTM, None, True), (layers.GRU, None, False)]},
}


#: Cases whose Keras layer computes in float32 even in a float64 model, and why.
FLOAT32_INSIDE = {
    "upsampling2d-bilinear": "tf.image.resize casts to float32",
    "resizing-bilinear-down-and-up": "tf.image.resize casts to float32",
}


@pytest.mark.parametrize("case", list(LAYER_CASES))
def test_layer(case):
    with float64():
        model = LAYER_CASES[case]()
    randomize_batch_norm(model)
    check(model, tol=1e-6 if case in FLOAT32_INSIDE else DOUBLE_TOL)


@pytest.mark.parametrize("strides", [2, 1])  # stride 1: the odd pixel after
def test_maxpool3d_in_float32(strides):  # TensorFlow has no float64 MaxPool3D
    keras.utils.set_random_seed(0)
    model = sequential((5, 6, 4, 2), layers.MaxPooling3D(2, strides, padding="same"))
    x = np.random.default_rng(0).standard_normal((2, 5, 6, 4, 2)).astype("float32")
    conv = ins.convert(model)
    assert max_rel_error(conv.model(torch.as_tensor(channels_first(x))), channels_first(
        keras_outputs(model, [x])[0])) == 0


def test_normalization_centres_before_scaling_in_float32():
    """Inputs near a large mean with a small spread: centred first, as Keras computes,
    the float32 conversion keeps Keras' float32 digits (folded into ``x / std - mean /
    std`` it was 3e-4 off)."""
    model = sequential((4,), layers.Normalization(mean=1000.0, variance=1e-4))
    x = (1000 + 0.05 * np.random.default_rng(0).standard_normal((5, 4))).astype("float32")
    conv = ins.convert(model)
    assert max_rel_error(conv.model(torch.as_tensor(x)), keras_outputs(model, [x])[0]) < 1e-6


def test_normalization_adapted():
    with float64():
        norm = layers.Normalization()
        norm.adapt(np.random.default_rng(0).standard_normal((50, 4, 3)) * 3 + 1)
        model = sequential((4, 3), norm, layers.Conv1D(2, 2))
    check(model)


@pytest.mark.parametrize(
    "name", [n for n in ACTIVATION_BUILDERS if n != "gelu"] + ["gelu"]
)
def test_activation_strings(name):
    with float64():
        model = sequential((6,), layers.Dense(5, activation=name), layers.Dense(4, activation=name))
    # TensorFlow's float64 erfc is accurate to 5e-9 only (torch's gelu matches math.erfc),
    # and it rounds leaky_relu's slope 0.2 to float32.
    check(model, tol=1e-7 if name in ("gelu", "leaky_relu") else DOUBLE_TOL)


def test_activation_layer_on_images_keeps_keras_softmax_axis():
    with float64():
        model = sequential((3, 4, 5), layers.Conv2D(6, 2, activation="swish"),
                           layers.Activation("softmax"))
    check(model)


# ---- merging and arithmetic ----------------------------------------------------------------


def merge_model(kind):
    a, b, c = keras.Input((4, 5, 3)), keras.Input((4, 5, 3)), keras.Input((4, 5, 3))
    if kind == "add3":
        return keras.Model([a, b, c], layers.Add()([a, b, c]))
    if kind == "subtract":
        return keras.Model([a, b], layers.Subtract()([a, b]))
    if kind == "multiply":
        return keras.Model([a, b, c], layers.Multiply()([a, b, c]))
    if kind == "average":
        return keras.Model([a, b], layers.Average()([a, b]))
    if kind == "concat-axis1":
        return keras.Model([a, b], layers.Concatenate(axis=1)([a, b]))
    if kind == "concat-axis2":
        return keras.Model([a, b], layers.Concatenate(axis=-2)([a, b]))
    if kind == "concat-channels":
        return keras.Model([a, b], layers.Concatenate()([a, layers.Conv2D(2, 1)(b)]))
    if kind == "se-gate":  # squeeze-excitation: (1, 1, C) gate times (H, W, C)
        gate = layers.GlobalAveragePooling2D(keepdims=True)(a)
        gate = layers.Conv2D(3, 1, activation="hard_sigmoid")(gate)
        return keras.Model(a, layers.Multiply()([a, gate]))
    if kind == "se-gate-rank1":  # (C,) reshaped like EfficientNet
        gate = layers.Dense(3, activation="sigmoid")(layers.GlobalAveragePooling2D()(a))
        return keras.Model(a, layers.Multiply()([a, layers.Reshape((1, 1, 3))(gate)]))
    if kind == "activation-ops":  # keras.ops activations in a Functional graph
        x = ops.relu(a) + ops.sigmoid(b) + ops.tanh(c) + ops.silu(a) + ops.relu6(b)
        x = x + ops.leaky_relu(c, negative_slope=0.125) + ops.elu(a, alpha=0.5) + ops.selu(b)
        x = x + ops.hard_sigmoid(c) + ops.hard_silu(a) + ops.softplus(b)
        return keras.Model([a, b, c], ops.softmax(x, axis=1))
    if kind == "arithmetic":  # Keras ops on tensors, as in MobileNetV3's hard sigmoid
        x = layers.ReLU(6.0)(a + 3.0) * (1.0 / 6.0)
        y = 1.0 - b / 4.0 + ops.negative(c) - 2.0 * ops.add(b, c)
        return keras.Model([a, b, c], ops.subtract(ops.multiply(x, y), x - 0.5))
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["add3", "subtract", "multiply", "average", "concat-axis1",
                                  "concat-axis2", "concat-channels", "se-gate",
                                  "se-gate-rank1", "activation-ops", "arithmetic"])
def test_merging(kind):
    with float64():
        model = merge_model(kind)
    check(model)


# ---- graph features -------------------------------------------------------------------------


def test_shared_layer_used_twice_and_nested_models():
    with float64():
        shared = layers.Dense(4, activation="tanh", name="shared")
        inner_seq = keras.Sequential([layers.Dense(5, activation="relu"), layers.Dense(4)],
                                     name="inner_seq")
        i = keras.Input((4,))
        inner_fun = keras.Model(i, layers.Dense(4, activation="elu")(i), name="inner_fun")
        a, b = keras.Input((6,), name="a"), keras.Input((6,), name="b")
        ha, hb = shared(a), shared(b)
        h = layers.Add()([inner_seq(ha), inner_fun(hb), inner_fun(ha)])
        model = keras.Model([a, b], [layers.Dense(2, name="out")(h), hb])
    conv = check(model)
    names = conv.model.layer_names
    assert "shared" in names and "shared/call_1" in names
    assert any(n.startswith("inner_seq/") for n in names)
    assert any(n.startswith("inner_fun/call_1/") for n in names)
    assert conv.output_dim == [(2,), (4,)]


def test_nested_convolutional_model_as_a_layer():
    with float64():
        backbone = keras.Sequential([keras.Input((8, 8, 3)), layers.Conv2D(4, 3, padding="same"),
                                     layers.BatchNormalization(), layers.ReLU(),
                                     layers.MaxPooling2D()], name="backbone")
        x = keras.Input((8, 8, 3))
        model = keras.Model(x, layers.Dense(3)(layers.Flatten()(backbone(x))))
    randomize_batch_norm(model)
    check(model)


def test_channels_first_data_format_layers():
    with float64():
        model = sequential(
            (3, 6, 7),
            layers.ZeroPadding2D(1, data_format="channels_first"),
            layers.MaxPooling2D(2, data_format="channels_first", padding="same"),
            layers.Cropping2D(((1, 0), (0, 1)), data_format="channels_first"),
            layers.Flatten(data_format="channels_first"),
        )
    check(model)


def test_unknown_sizes_from_input_dim():
    with float64():
        model = sequential((None, 3), layers.Conv1D(4, 3, strides=2, padding="same"),
                           layers.GlobalMaxPooling1D(), layers.Dense(2))
    conv = check(model, input_dim=[3, 17])
    assert conv.input_dim == [(3, 17)]
    with pytest.raises(ValueError, match="unknown sizes; give `input_dim`"):
        ins.convert(model)


def test_input_dim_is_checked_channels_first():
    with float64():
        model = sequential((6, 5, 3), layers.Conv2D(2, 3))
    assert ins.convert(model, input_dim=[3, 6, 5]).input_dim == [(3, 6, 5)]
    with pytest.raises(ValueError, match=r"channels first.*\(3, 6, 5\) channels first"):
        ins.convert(model, input_dim=[6, 5, 3])
    with pytest.raises(ValueError, match="gives 2 shape"):
        ins.convert(model, input_dim=[[3, 6, 5], [4]])


def test_user_names_and_dict_round_trip():
    with float64():
        model = sequential((4, 3), layers.Conv1D(2, 2), layers.Flatten(), layers.Dense(2))
    conv = ins.convert(model, output_names=[["no", "yes"]], dtype="double")
    assert conv.output_names == [[["no", "yes"]]]
    assert conv.input_names == [[["C1", "C2", "C3"], ["L1", "L2", "L3", "L4"]]]
    again = ins.convert(json.loads(json.dumps(conv.to_dict())), dtype="double")
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    assert torch.equal(again.model(x), conv.model(x))


# ---- files -----------------------------------------------------------------------------------


def test_keras_file_loads_in_safe_mode(tmp_path):
    with float64():
        model = sequential((5,), layers.Dense(3, activation="relu"), layers.Dense(2))
    path = tmp_path / "model.keras"
    model.save(path)
    x = np.random.default_rng(0).standard_normal((2, 5))
    for source in (path, str(path)):
        conv = ins.convert(source, dtype="double")
        expected = keras_outputs(model, [x])[0]
        assert max_rel_error(conv.model(torch.as_tensor(x)).detach(), expected) < DOUBLE_TOL

    lambda_model = sequential((5,), layers.Lambda(lambda v: v * 2.0))
    unsafe = tmp_path / "lambda.keras"
    lambda_model.save(unsafe)
    with pytest.raises(ins.ConversionError, match="safe mode"):
        ins.convert(unsafe)
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        ins.convert(tmp_path / "missing.keras")
    corrupt = tmp_path / "corrupt.keras"  # exists: not "File not found"
    corrupt.write_bytes(b"not a zip archive")
    with pytest.raises(ins.ConversionError, match="exists but is no Keras file") as info:
        ins.convert(str(corrupt))
    assert "not found" not in str(info.value)


# ---- refusals -------------------------------------------------------------------------------


def test_unsupported_layer_names_class_and_layer():
    model = sequential((4, 4), layers.UnitNormalization(name="my_norm"), layers.Flatten())
    with pytest.raises(ins.ConversionError, match=r"layer 'my_norm' \(UnitNormalization\)"):
        ins.convert(model)
    x = keras.Input((4,))
    nested = keras.Model(x, layers.Lambda(lambda v: v * 2, name="twice")(x), name="inner")
    y = keras.Input((4,))
    model = keras.Model(y, nested(y))
    with pytest.raises(ins.ConversionError, match=r"'inner/twice' \(Lambda\)"):
        ins.convert(model)


@pytest.mark.parametrize("name", REFUSED_ACTIVATIONS)
def test_refused_activations_are_named(name):
    if getattr(keras.activations, name, None) is None:
        pytest.skip(f"keras has no activation {name}")
    if name == "glu":
        model = sequential((6,), layers.Activation(name))
    else:
        model = sequential((6,), layers.Dense(4, activation=name, name="head"))
    with pytest.raises(ins.ConversionError, match=f"activation '{name}'"):
        ins.convert(model)


def test_custom_activation_function_is_refused():
    model = sequential((6,), layers.Dense(4, activation=lambda v: v * 2, name="head"))
    with pytest.raises(ins.ConversionError, match=r"layer 'head' \(Dense\).*built-in activations"):
        ins.convert(model)


def test_dropout_in_training_mode_is_refused():
    x = keras.Input((4,))
    model = keras.Model(x, layers.Dropout(0.5, name="mc")(x, training=True))
    with pytest.raises(ins.ConversionError, match=r"'mc' \(Dropout\).*training=True"):
        ins.convert(model)


def test_relu_threshold_is_refused():
    model = sequential((6,), layers.ReLU(threshold=0.5, name="thr"))
    with pytest.raises(ins.ConversionError, match=r"'thr' \(ReLU\).*threshold"):
        ins.convert(model)


def test_layer_norm_over_the_batch_axis_is_refused():
    model = sequential((4, 3), layers.LayerNormalization(axis=0, center=False, scale=False,
                                                         name="batch_norm"))
    with pytest.raises(ins.ConversionError,
                       match=r"'batch_norm' \(LayerNormalization\): axis 0 .*batch axis"):
        ins.convert(model)


def test_layer_norm_with_rms_scaling_is_refused():
    with pytest.warns(UserWarning, match="rms_scaling"):
        norm = layers.LayerNormalization(rms_scaling=True, name="rms")
    with pytest.raises(ins.ConversionError,
                       match=r"'rms' \(LayerNormalization\): .*rms_scaling=True.*without "
                             r"subtracting the mean"):
        ins.convert(sequential((4, 3), norm))


@pytest.mark.parametrize("options, what", [
    ({"call": {"attention_mask": (5, 5)}}, "a call with attention_mask"),
    ({"call": {"use_causal_mask": True}}, "a call with use_causal_mask"),
    ({"call": {"return_attention_scores": True}}, "a call with return_attention_scores"),
    ({"call": {"training": True}, "dropout": 0.5}, "dropout called with training=True"),
    ({"sliding_window": 2}, "attention with sliding_window=2"),
    ({"attention_axes": 2, "shape": (3, 5, 6)}, r"attention with attention_axes=\(2,\)"),
])
def test_attention_options_are_refused(options, what):
    model = attention(options.pop("shape", (5, 6)), **options)
    with pytest.raises(ins.ConversionError, match=r"layer 'mha' \(MultiHeadAttention\): " + what):
        ins.convert(model)


def test_standalone_einsum_dense_is_refused():
    model = sequential((5, 6), layers.EinsumDense("abc,cd->abd", (None, 4), name="proj"))
    with pytest.raises(ins.ConversionError, match=r"layer 'proj' \(EinsumDense\)"):
        ins.convert(model)


def test_dividing_by_a_tensor_is_refused():
    a, b = keras.Input((3,)), keras.Input((3,))
    with pytest.raises(ins.ConversionError, match="dividing a tensor by a tensor"):
        ins.convert(keras.Model([a, b], a / b))


def test_unbuilt_and_subclassed_models_are_refused():
    with pytest.raises(ins.ConversionError, match="not built"):
        ins.convert(keras.Sequential([layers.Dense(2)]))

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    sub = Sub()
    sub(np.zeros((1, 3)))
    with pytest.raises(ins.ConversionError, match="subclassed"):
        ins.convert(sub)


def test_other_objects_name_keras_in_the_type_error():
    with pytest.raises(TypeError, match="Keras 3 Sequential/Functional model"):
        ins.convert(42)


def test_missing_keras_names_the_extra(monkeypatch):
    from innsight._import_order import import_keras

    monkeypatch.setitem(sys.modules, "keras", None)
    with pytest.raises(ImportError, match=r"pip install innsight\[keras\]"):
        import_keras()


@pytest.mark.parametrize(("layer", "shape", "what"), [
    (layers.UpSampling2D(2, interpolation="bicubic"), (4, 4, 2), "interpolation 'bicubic'"),
    (layers.Resizing(6, 6, interpolation="lanczos3"), (4, 4, 2), "interpolation 'lanczos3'"),
    (layers.Resizing(6, 8, crop_to_aspect_ratio=True), (4, 4, 2), "crop_to_aspect_ratio"),
    (layers.Conv2DTranspose(2, 3, strides=2, output_padding=1), (4, 4, 2), "output_padding"),
    (layers.GroupNormalization(2, axis=1), (4, 4, 2), "group normalisation over another axis"),
], ids=["bicubic", "lanczos", "crop", "output-padding", "group-norm-axis"])
def test_decoder_layers_refuse_what_does_not_convert(layer, shape, what):
    with pytest.raises(ins.ConversionError, match=what):
        ins.convert(sequential(shape, layer))


def test_a_handler_failure_is_a_conversion_error_naming_the_layer(monkeypatch):
    """Any failure inside a layer's conversion reaches the user as a ConversionError that
    names the layer, with the original error as its cause."""
    import innsight.converter.keras_front as keras_front

    def broken(t, node, xs, outs):
        raise TypeError("an unforeseen form")

    resolved = keras_front.handlers(keras)
    monkeypatch.setattr(keras_front, "handlers",
                        lambda k: {**resolved, layers.Dense: broken})
    model = sequential((4,), layers.Dense(2, name="the_dense"))
    with pytest.raises(ins.ConversionError, match=r"layer 'the_dense' \(Dense\): this use of "
                       r"Dense is not supported.*TypeError: an unforeseen form") as info:
        ins.convert(model)
    assert isinstance(info.value.__cause__, TypeError)


@pytest.mark.parametrize(("layer", "what"), [
    (layers.LSTM(3, go_backwards=True), "LSTM with go_backwards"),
    (layers.GRU(3, reset_after=False), "GRU with reset_after=False"),
    (layers.LSTM(3, recurrent_activation="hard_sigmoid"), "recurrent_activation hard_sigmoid"),
    (layers.SimpleRNN(3, activation="sigmoid"), "SimpleRNN with activation sigmoid"),
    (layers.Bidirectional(layers.GRU(3, reset_after=False)), "GRU with reset_after=False"),
], ids=["backwards", "reset-before", "hard-sigmoid", "sigmoid-rnn", "bidirectional-inner"])
def test_recurrent_layers_refuse_what_does_not_convert(layer, what):
    with pytest.raises(ins.ConversionError, match=what):
        ins.convert(sequential((6, 4), layer))


def test_bidirectional_with_return_state_is_refused():
    x = keras.Input((6, 4))
    out = layers.Bidirectional(layers.LSTM(3, return_state=True))(x)[0]
    with pytest.raises(ins.ConversionError, match="Bidirectional with return_state"):
        ins.convert(keras.Model(x, out))
