"""Whole Keras models: the converted graph reproduces ``model(x)`` and its
gradients reproduce ``tf.GradientTape``, in the Keras (channels-last) layout.

Models are built in float64 (tolerance 1e-10 relative to the reference's
scale) unless a test says otherwise; applications are built with
``weights=None`` at 64 x 64 with random batch-norm statistics.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from keras_reference import (
    DOUBLE_TOL,
    FLOAT_TOL,
    application,
    channels_first,
    float64,
    keras,
    keras_outputs,
    max_rel_error,
    norm_rel_error,
    randomize_batch_norm,
    randomize_scales,
    tape_gradients,
)
from torch import nn

import innsight as ins
from innsight.layers.lrp_rules import LRP_RULES

layers = keras.layers


def assert_matches_keras(model, xs, output_nodes, tol=DOUBLE_TOL, dtype="double",
                         ignore_last_act=False, reference=None):
    """Forward and Gradient of the conversion against Keras and tf.GradientTape.

    ``output_nodes`` selects per output layer the nodes whose gradients are
    compared; ``reference`` is the Keras model whose outputs the gradients are
    taken of (default ``model``; the logits model when ``ignore_last_act``).
    """
    conv = ins.convert(model, dtype=dtype)
    expected = keras_outputs(model, xs)
    with torch.no_grad():
        actual = conv.model([torch.as_tensor(channels_first(x)) for x in xs])
    actual = actual if isinstance(actual, list) else [actual]
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert max_rel_error(a, channels_first(e)) < tol

    res = ins.run_grad(conv, list(xs), channels_first=False, output_idx=output_nodes,
                       ignore_last_act=ignore_last_act, dtype=dtype)
    arrays = res.get_result("array")
    for k, nodes in enumerate(output_nodes):
        if not nodes:
            continue
        grads = tape_gradients(reference or model, xs, k, nodes)
        per_input = arrays if len(model.inputs) == 1 and len(model.outputs) == 1 else arrays[k]
        per_input = per_input if isinstance(per_input, list) else [per_input]
        for got, want in zip(per_input, grads):
            assert max_rel_error(got, want) < tol
    return conv


def test_mlp_with_softmax():
    with float64():
        x_in = keras.Input((6,), name="features")
        h = layers.Dense(10, activation="relu")(x_in)
        h = layers.Dense(8, activation="tanh")(h)
        logits = layers.Dense(4, name="logits")(h)
        probs = layers.Activation("softmax", name="probs")(logits)
        model = keras.Model(x_in, probs)
        seq = keras.Sequential([keras.Input((6,)), layers.Dense(10, activation="relu"),
                                layers.Dense(4, activation="softmax")])
    x = np.random.default_rng(0).standard_normal((5, 6))
    conv = assert_matches_keras(model, [x], [[0, 1, 2, 3]])
    assert conv.input_dim == [(6,)] and conv.output_dim == [(4,)]
    assert conv.model.layer_names[0] == "features"
    assert conv.model.layer_names[conv.model.output_nodes[0]] == "probs"
    # ignore_last_act (the default) explains the logits before the softmax
    assert_matches_keras(model, [x], [[0, 3]], ignore_last_act=True,
                         reference=keras.Model(x_in, logits))
    assert_matches_keras(seq, [x], [[1, 2]])


def two_input_two_output_model():
    image = keras.Input((10, 10, 3), name="image")
    tabular = keras.Input((5,), name="tabular")
    a = layers.Conv2D(4, 3, padding="same", activation="relu")(image)
    a = layers.BatchNormalization()(a)
    a = layers.MaxPooling2D(2)(a)
    a = layers.Conv2D(6, 3, strides=2, padding="same")(a)
    a = layers.AveragePooling2D(2, padding="same")(a)
    a = layers.Flatten()(a)
    b = layers.Dense(7, activation="elu")(tabular)
    h = layers.Concatenate()([a, b])
    h = layers.Dropout(0.3)(h)
    cls = layers.Dense(3, activation="softmax", name="species")(h)
    reg = layers.Dense(2, name="size")(h)
    return keras.Model([image, tabular], [cls, reg])


def test_functional_image_and_tabular_inputs_two_outputs():
    with float64():
        model = two_input_two_output_model()
    randomize_batch_norm(model)
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((3, 10, 10, 3)), rng.standard_normal((3, 5))]
    conv = assert_matches_keras(model, xs, [[0, 1, 2], [0, 1]])
    assert conv.input_dim == [(3, 10, 10), (5,)]
    assert conv.output_dim == [(3,), (2,)]
    assert [conv.model.layer_names[i] for i in conv.model.input_nodes] == ["image", "tabular"]
    assert [conv.model.layer_names[i] for i in conv.model.output_nodes] == [
        "species/softmax", "size"]
    assert conv.input_names[0][0] == ["C1", "C2", "C3"]


def test_conv1d_signals():
    """(length, channels) signals; 'causal', dilation, strides, global pooling."""
    with float64():
        model = keras.Sequential([
            keras.Input((40, 3)),
            layers.Conv1D(5, 5, padding="causal", dilation_rate=2, activation="relu"),
            layers.Conv1D(6, 3, strides=2, padding="same", activation="selu"),
            layers.MaxPooling1D(3, strides=2, padding="same"),
            layers.Conv1D(4, 3),
            layers.GlobalAveragePooling1D(),
            layers.Dense(2, activation="sigmoid"),
        ])
    x = np.random.default_rng(2).standard_normal((4, 40, 3))
    conv = assert_matches_keras(model, [x], [[0, 1]])
    assert conv.input_dim == [(3, 40)]
    assert conv.input_names[0][1][:2] == ["L1", "L2"]


@pytest.mark.parametrize("name", ["MobileNetV2", "ResNet50", "DenseNet121"])
def test_applications(name):
    with float64():
        model = getattr(keras.applications, name)(weights=None, input_shape=(64, 64, 3))
    randomize_batch_norm(model)
    x = np.random.default_rng(3).uniform(0, 255, (2, 64, 64, 3))
    assert_matches_keras(model, [x], [[0, 7]], tol=1e-8)


def test_application_in_float32():
    """The acceptance tolerance: float32 Keras model, float32 conversion."""
    keras.utils.set_random_seed(4)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(64, 64, 3), alpha=0.35)
    randomize_batch_norm(model)
    x = np.random.default_rng(4).standard_normal((2, 64, 64, 3)).astype("float32")
    conv = ins.convert(model)
    expected = keras_outputs(model, [x])[0]
    actual = conv.model(torch.as_tensor(channels_first(x))).detach()
    assert max_rel_error(actual, expected) < FLOAT_TOL


def test_convnext_in_float32():
    """Layer normalisation over the channels and LayerScale (both with random scales) in
    the ConvNeXt application at 32 x 32, against Keras in float32 (TensorFlow's float64
    depthwise convolutions take seconds here)."""
    keras.utils.set_random_seed(5)
    model = keras.applications.ConvNeXtTiny(weights=None, input_shape=(32, 32, 3),
                                            classifier_activation=None)
    randomize_scales(model)
    x = np.random.default_rng(5).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    conv = ins.convert(model)
    assert sum(layer.type_name == "LayerNorm" for layer in conv.model.layers) == 23
    expected = keras_outputs(model, [x])[0]
    actual = conv.model(torch.as_tensor(channels_first(x))).detach()
    assert max_rel_error(actual, expected) < FLOAT_TOL


def chaotic_mlp(depth: int = 30) -> keras.Model:
    """``depth`` layers ``tanh(W h)`` (named ``d0``, ``d1``, ...) of width 16 with weights
    N(0, 1) (gain 4), 8 logits: a chaotic map. At depth 30 it amplifies float32 rounding
    to about 1e-3 of its output and float64 rounding to about 1e-11; at depth 150 float64
    rounding to about 1e-2."""
    x = keras.Input((16,))
    h = x
    for k in range(depth):
        h = layers.Dense(16, activation="tanh", use_bias=False, name=f"d{k}",
                         kernel_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=k))(h)
    return keras.Model(x, layers.Dense(8, name="logits", kernel_initializer=(
        keras.initializers.RandomNormal(seed=999)))(h))


def in_float64_too(depth: int) -> tuple[keras.Model, keras.Model]:
    """:func:`chaotic_mlp` in float32, and a float64 model with the same weights."""
    model = chaotic_mlp(depth)
    with float64():
        model64 = chaotic_mlp(depth)
    model64.set_weights([w.astype("float64") for w in model.get_weights()])
    return model, model64


#: The dry run's sample for one input of 16 numbers.
DRY_RUN_SAMPLE = torch.randn(1, 16, generator=torch.Generator().manual_seed(1))


def test_chaotic_float32_model_converts_where_it_agrees_in_float64():
    """TensorFlow's and torch's float32 rounding, amplified by a chaotic map, put the
    converted output outside the dry run's tolerance on its own sample; the dry run
    re-checks against a float64 copy of the Keras model and converts it. The float64
    conversion matches a float64 Keras model with the same weights."""
    model, model64 = in_float64_too(30)
    conv = ins.convert(model)
    x = DRY_RUN_SAMPLE
    single = conv.model(x).detach()
    exact = ins.convert(model, dtype="double").model(x.double()).detach()
    assert max_rel_error(single, keras_outputs(model, [x.numpy()])[0]) > 10 * FLOAT_TOL
    assert max_rel_error(exact, keras_outputs(model64, [x.double().numpy()])[0]) < 1e-9


def test_model_chaotic_beyond_float64_is_checked_layer_by_layer():
    """At depth 150 the map amplifies float64 rounding beyond the tolerance too (against
    a float64 Keras model with the same weights, on the dry run's sample): the dry run
    compares each converted layer, run on Keras' values of the layers it reads, with
    Keras' layer and converts it. A conversion of another model (one kernel 0.1% off)
    is refused there, naming the layer."""
    from innsight.converter.converter import _build_checked
    from innsight.converter.keras_front import describe_keras

    model, model64 = in_float64_too(150)
    x = DRY_RUN_SAMPLE
    exact = ins.convert(model, dtype="double").model(x.double()).detach()  # converts
    assert max_rel_error(exact, keras_outputs(model64, [x.double().numpy()])[0]) > FLOAT_TOL
    wrong = chaotic_mlp(150)
    wrong.get_layer("d70").kernel.assign(1.001 * np.asarray(wrong.get_layer("d70").kernel))
    _, run_wrong = describe_keras(wrong, None)
    description, _ = describe_keras(model, None)
    with pytest.raises(ins.ConversionError, match="layer by layer, layer 'd70") as info:
        _build_checked(description, torch.float32, None, None, wrong, run_wrong)
    assert "in float64" in str(info.value)


# ---- applications in float32, on the inputs they expect ---------------------------------
# (every application: ``python benchmarks/coverage.py keras``)

#: The logits whose gradients are compared.
CLASSES = [0, 7]


def logit_gradients(conv, x, dtype="float"):
    """Gradient of the logits ``CLASSES`` (channels last): ``(n, *x.shape[1:], 2)``."""
    res = ins.run_grad(conv, x, channels_first=False, output_idx=CLASSES, dtype=dtype)
    return np.asarray(res.get_result("array"))


@pytest.mark.parametrize("name", [
    "EfficientNetB0", "MobileNetV3Small",
    # refused by the dry run once (float32 drift), at their smallest sizes
    pytest.param("EfficientNetV2B0", marks=pytest.mark.slow),
    pytest.param("InceptionV3", marks=pytest.mark.slow),
])
def test_application_gradient_in_float32_matches_gradient_tape(name):
    """A float32 application with random weights at its smallest size converts (its dry
    run passes) and the float32 Gradient of two logits is within 1e-4 of Keras' float32
    tf.GradientTape, norm-wise over the whole gradient tensor, on uniform [0, 255] images
    through the application's preprocess_input."""
    model, x = application(name)
    ours = logit_gradients(ins.convert(model), x)
    tape = tape_gradients(model, [x], 0, CLASSES)[0]
    for k in range(len(CLASSES)):
        assert norm_rel_error(ours[..., k], tape[..., k]) < FLOAT_TOL


def test_resnet50_gradient_float32_against_float64():
    """Our float32 Gradient of ResNet50 (float32 weights) is within 1e-5 of our float64
    one (which ``test_applications`` checks against Keras in float64), norm-wise, on
    caffe-preprocessed images."""
    model, x = application("ResNet50")
    single = logit_gradients(ins.convert(model), x)
    double = logit_gradients(ins.convert(model, dtype="double"), x.astype("float64"),
                               dtype="double")
    for k in range(len(CLASSES)):
        assert norm_rel_error(single[..., k], double[..., k]) < 1e-5


# ---- the same network in torch and in Keras ---------------------------------------------


def test_same_network_in_torch_and_keras_gives_the_same_results():
    """A small CNN with identical weights in both frameworks: identical converted
    outputs and identical Gradient results (Keras' after moving the channels axis)."""
    torch.manual_seed(0)
    torch_model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 5, 3, padding=1),
        nn.Tanh(), nn.Flatten(), nn.Linear(5 * 5 * 5, 3), nn.Softmax(dim=1),
    ).double().eval()
    with float64():
        keras_model = keras.Sequential([
            keras.Input((12, 12, 3)), layers.Conv2D(4, 3, activation="relu"),
            layers.MaxPooling2D(2), layers.Conv2D(5, 3, padding="same", activation="tanh"),
            layers.Flatten(), layers.Dense(3, activation="softmax"),
        ])
    conv1, conv2, dense = torch_model[0], torch_model[3], torch_model[6]
    kc1, kc2, kd = keras_model.layers[0], keras_model.layers[2], keras_model.layers[4]
    for k_layer, t_layer in ((kc1, conv1), (kc2, conv2)):
        k_layer.set_weights([t_layer.weight.detach().numpy().transpose(2, 3, 1, 0),
                             t_layer.bias.detach().numpy()])
    # torch flattens (C, H, W), Keras (H, W, C): reorder the dense inputs accordingly.
    w = dense.weight.detach().numpy().reshape(3, 5, 5, 5).transpose(2, 3, 1, 0).reshape(-1, 3)
    kd.set_weights([w, dense.bias.detach().numpy()])

    from_torch = ins.convert(torch_model, input_dim=[3, 12, 12], dtype="double")
    from_keras = ins.convert(keras_model, dtype="double")
    x = np.random.default_rng(5).standard_normal((4, 3, 12, 12))
    x_last = np.moveaxis(x, 1, -1)
    with torch.no_grad():
        out_torch = from_torch.model(torch.as_tensor(x))
        out_keras = from_keras.model(torch.as_tensor(x))
    assert max_rel_error(out_keras, out_torch.numpy()) < DOUBLE_TOL
    assert max_rel_error(out_torch, keras_outputs(keras_model, [x_last])[0]) < DOUBLE_TOL

    for ignore_last_act in (True, False):
        g_torch = ins.run_grad(from_torch, x, ignore_last_act=ignore_last_act,
                               dtype="double").get_result("array")
        g_keras = ins.run_grad(from_keras, x_last, channels_first=False,
                               ignore_last_act=ignore_last_act, dtype="double").get_result("array")
        assert g_keras.shape == (4, 12, 12, 3, 3)
        assert max_rel_error(np.moveaxis(g_keras, 3, 1), g_torch) < DOUBLE_TOL


# ---- a transformer encoder block -------------------------------------------------------------


def keras_encoder():
    """Tokens (5, 6) -> Dense -> self-attention (2 heads of 4) -> Add -> LayerNormalization
    -> feed-forward -> Add -> LayerNormalization -> mean over tokens -> Dense(3)."""
    x = keras.Input((5, 6), name="tokens")
    h = layers.Dense(8, name="embed")(x)
    a = layers.MultiHeadAttention(2, 4, name="attention")(h, h)
    h = layers.LayerNormalization(epsilon=1e-5, name="norm1")(layers.Add()([h, a]))
    f = layers.Dense(8, name="ff2")(layers.Dense(16, activation="relu", name="ff1")(h))
    h = layers.LayerNormalization(epsilon=1e-5, name="norm2")(layers.Add()([h, f]))
    return keras.Model(x, layers.Dense(3, name="head")(layers.GlobalAveragePooling1D()(h)))


class TorchEncoder(nn.Module):
    """:func:`keras_encoder` in torch (``nn.MultiheadAttention(batch_first=True)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 8)
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(8), nn.LayerNorm(8)
        self.ff1, self.ff2 = nn.Linear(8, 16), nn.Linear(16, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        h = self.norm1(h + self.attention(h, h, h, need_weights=False)[0])
        h = self.norm2(h + self.ff2(torch.relu(self.ff1(h))))
        return self.head(h.mean(1))


def copy_encoder_weights(source: TorchEncoder, target) -> None:
    """The torch weights into the Keras encoder: dense kernels transposed, attention
    projections ``(out, in)`` with head-major rows as kernels ``(in, heads, key_dim)``
    and the output projection as ``(heads, key_dim, out)``."""
    def array(p):
        return p.detach().double().numpy()

    for name in ("embed", "ff1", "ff2", "head"):
        m = getattr(source, name)
        target.get_layer(name).set_weights([array(m.weight).T, array(m.bias)])
    for name in ("norm1", "norm2"):
        m = getattr(source, name)
        target.get_layer(name).set_weights([array(m.weight), array(m.bias)])
    attn, mha = source.attention, target.get_layer("attention")
    weights, biases = attn.in_proj_weight.chunk(3), attn.in_proj_bias.chunk(3)
    for dense, weight, bias in zip((mha.query_dense, mha.key_dense, mha.value_dense),
                                   weights, biases):
        dense.kernel.assign(array(weight).T.reshape(8, 2, 4))
        dense.bias.assign(array(bias).reshape(2, 4))
    mha.output_dense.kernel.assign(array(attn.out_proj.weight).T.reshape(2, 4, 8))
    mha.output_dense.bias.assign(array(attn.out_proj.bias))


@pytest.fixture
def encoders():
    """The encoder in torch (random layer norms and attention biases) and in Keras with
    the same weights, both in float64."""
    torch.manual_seed(6)
    torch_model = TorchEncoder().double().eval()
    with torch.no_grad():
        for p in torch_model.parameters():
            if p.ndim == 1:  # biases and layer-norm offsets (zeros when fresh)
                p.copy_(0.5 * torch.randn_like(p))
        for norm in (torch_model.norm1, torch_model.norm2):
            norm.weight.uniform_(0.5, 1.5)
    with float64():
        keras_model = keras_encoder()
    copy_encoder_weights(torch_model, keras_model)
    return torch_model, keras_model


def test_keras_encoder_matches_keras_and_gradient_tape(encoders):
    _, model = encoders
    x = np.random.default_rng(6).standard_normal((4, 5, 6))
    conv = assert_matches_keras(model, [x], [[0, 1, 2]])
    assert conv.input_dim == [(6, 5)]
    (attention,) = [layer for layer in conv.model.layers
                    if layer.type_name == "ScaledDotProductAttention"]
    # The attention weights stay fixed under LRP (the AH-rule): the queries and keys
    # get no relevance from the epsilon rule, all of it goes to the values.
    assert attention.held_inputs(LRP_RULES["epsilon"]()) == {0, 1}
    lrp = ins.run_lrp(conv, x, channels_first=False, rule_name="epsilon", dtype="double")
    values = lrp.get_result("array")
    assert values.shape == (4, 5, 6, 3) and np.isfinite(values).all() and np.abs(values).max() > 0


def test_same_encoder_in_torch_and_keras_gives_the_same_results(encoders):
    """Both front-ends write attention out as the same layers: equal outputs, Gradient
    and LRP (Keras' data is (tokens, width) as torch's, held (width, tokens) inside)."""
    torch_model, keras_model = encoders
    from_torch = ins.convert(torch_model, input_dim=[5, 6], dtype="double")
    from_keras = ins.convert(keras_model, dtype="double")
    x = np.random.default_rng(7).standard_normal((4, 5, 6))
    with torch.no_grad():
        out_torch = from_torch.model(torch.as_tensor(x))
        out_keras = from_keras.model(torch.as_tensor(channels_first(x)))
    assert max_rel_error(out_keras, out_torch.numpy()) < 1e-8
    for method, args in (("run_grad", {}), ("run_lrp", {"rule_name": "epsilon"})):
        got_torch = getattr(ins, method)(from_torch, x, dtype="double", **args)
        got_keras = getattr(ins, method)(from_keras, x, channels_first=False, dtype="double",
                                         **args)
        expected = got_torch.get_result("array")
        assert np.abs(expected).max() > 0
        assert max_rel_error(got_keras.get_result("array"), expected) < 1e-8
