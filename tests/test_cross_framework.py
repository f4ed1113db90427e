"""One architecture with identical weights in torch, ONNX (exported from torch),
Keras and, for an MLP, scikit-learn: the converted models give the same outputs
and the same Gradient, IntegratedGradient, LRP and DeepLift results. The
architectures: an MLP, a CNN, LSTM, GRU and bi-LSTM classifiers (ONNX's time-first
recurrent nodes, Keras' ``Bidirectional``) and a U-Net (transposed convolution,
upsampling, group norm, which ONNX spells out in five nodes).

Each converted model is checked against its own framework by the conversion's
dry run; here the frameworks are checked against each other, through
``ins.compare_models``. In float64 the four conversions hold bit-identical
weights, so values agree to rounding (1e-10 relative).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import innsight as ins

TOL = 1e-10
METHODS = [
    ("Gradient", {}),
    ("Gradient", {"ignore_last_act": False, "times_input": True}),
    ("IntegratedGradient", {"n": 16}),
    ("SmoothGrad", {"n": 8}),
    ("LRP", {"rule_name": "epsilon"}),
    ("LRP", {"rule_name": "alpha_beta", "rule_param": 2}),
    ("DeepLift", {}),
]


def export_onnx(model: nn.Module, shape: list[int], path) -> str:
    pytest.importorskip("onnx")
    pytest.importorskip("onnx2torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(2, *shape),), str(path), dynamo=False,
                          opset_version=17, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return str(path)


def keras_module():
    # tests/conftest.py imports torchvision before this import of tensorflow
    return pytest.importorskip("keras")


def assert_all_agree(converters: dict[str, ins.Converter], x: torch.Tensor) -> None:
    outputs = {name: conv.model(x).detach().numpy() for name, conv in converters.items()}
    first = next(iter(outputs.values()))
    for name, out in outputs.items():
        np.testing.assert_allclose(out, first, rtol=0, atol=TOL * np.abs(first).max(), err_msg=name)
    for method, args in METHODS:
        cmp = ins.compare_models(converters, x, method, output_idx=[0, 1, 2], dtype="double", **args)
        diffs = cmp.differences()
        assert (diffs["max_rel_diff"] <= TOL).all(), f"{method} {args}:\n{diffs}"
        assert (diffs["max_pred_diff"] <= TOL).all(), f"{method} {args}:\n{diffs}"
        values = next(iter(cmp.get_result().values()))
        assert np.abs(values).max() > 0, f"{method} gave only zeros: a degenerate test"


# ---- an MLP: torch, ONNX, Keras, scikit-learn -----------------------------------------------------------


@pytest.fixture
def mlp() -> nn.Module:
    torch.manual_seed(4)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3),
                         nn.Softmax(dim=1)).eval()


def dense_weights(model: nn.Module) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight (out, in), bias) of each linear layer, as float64 numpy."""
    return [(m.weight.detach().double().numpy(), m.bias.detach().double().numpy())
            for m in model if isinstance(m, nn.Linear)]


def sklearn_mlp(model: nn.Module):
    pytest.importorskip("sklearn")
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(0)
    clf = MLPClassifier(hidden_layer_sizes=(6, 5), activation="relu", max_iter=1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(rng.normal(size=(30, 4)), np.arange(30) % 3)
    weights = dense_weights(model)
    clf.coefs_ = [w.T.copy() for w, _ in weights]
    clf.intercepts_ = [b.copy() for _, b in weights]
    return clf


def keras_mlp(model: nn.Module):
    keras = keras_module()
    layers = keras.layers
    net = keras.Sequential([keras.Input((4,)), layers.Dense(6, activation="relu"),
                            layers.Dense(5, activation="relu"), layers.Dense(3, activation="softmax")])
    net.set_weights([a for w, b in dense_weights(model) for a in (w.T, b)])
    return net


def test_mlp_in_four_frameworks_agrees(mlp, tmp_path):
    converters = {
        "torch": ins.convert(mlp, input_dim=[4], dtype="double"),
        "onnx": ins.convert(export_onnx(mlp, [4], tmp_path / "mlp.onnx"), dtype="double"),
        "sklearn": ins.convert(sklearn_mlp(mlp), dtype="double"),
        "keras": ins.convert(keras_mlp(mlp), dtype="double"),
    }
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert_all_agree(converters, x)


# ---- a CNN: torch, ONNX, Keras (channels last, weights permuted) -------------------------------------------


@pytest.fixture
def cnn() -> nn.Module:
    torch.manual_seed(5)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(6, 3), nn.Softmax(dim=1)).eval()


def keras_cnn(model: nn.Module):
    keras = keras_module()
    layers = keras.layers
    net = keras.Sequential([
        keras.Input((8, 8, 2)), layers.Conv2D(4, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2), layers.Conv2D(6, 3, activation="relu"),
        layers.GlobalAveragePooling2D(), layers.Dense(3, activation="softmax"),
    ])
    weights = []
    for m in model:
        if isinstance(m, nn.Conv2d):  # (C_out, C_in, kh, kw) -> (kh, kw, C_in, C_out)
            weights += [m.weight.detach().permute(2, 3, 1, 0).numpy(), m.bias.detach().numpy()]
        elif isinstance(m, nn.Linear):
            weights += [m.weight.detach().T.numpy(), m.bias.detach().numpy()]
    net.set_weights(weights)
    return net


def test_cnn_in_three_frameworks_agrees(cnn, tmp_path):
    converters = {
        "torch": ins.convert(cnn, input_dim=[2, 8, 8], dtype="double"),
        "onnx": ins.convert(export_onnx(cnn, [2, 8, 8], tmp_path / "cnn.onnx"), dtype="double"),
        "keras": ins.convert(keras_cnn(cnn), dtype="double"),
    }
    assert converters["keras"].input_dim == [(2, 8, 8)]
    x = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert_all_agree(converters, x)
    # Keras users give channels-last data and get channels-last results back
    res = ins.run_grad(converters["keras"], x.permute(0, 2, 3, 1).numpy(), channels_first=False,
                       dtype="double")
    expected = ins.run_grad(converters["torch"], x, dtype="double").get_result()
    np.testing.assert_allclose(res.get_result(), np.moveaxis(expected, 1, 3), rtol=0,
                               atol=TOL * np.abs(expected).max())


# ---- recurrent classifiers: torch and Keras --------------------------------------------------------------


class RecurrentClassifier(nn.Module):
    """A recurrent layer over (5 steps, 3 features) without biases; its last output (one
    direction) or its whole flattened sequence (both directions) through a dense layer."""

    def __init__(self, cell: type[nn.Module], bidirectional: bool = False) -> None:
        super().__init__()
        self.rnn = cell(3, 4, batch_first=True, bias=False, bidirectional=bidirectional)
        self.fc = nn.Linear(5 * 8 if bidirectional else 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        out = out.flatten(1) if self.rnn.bidirectional else out[:, -1]
        return torch.softmax(self.fc(out), dim=1)


def keras_recurrent(model: RecurrentClassifier):
    """The same classifier in Keras (``Bidirectional`` with the backward weights of torch's
    reverse direction): kernels transposed, GRU gate blocks (r, z, n) in Keras' order
    (z, r, h)."""
    keras = keras_module()
    layers = keras.layers
    cell = {nn.LSTM: layers.LSTM, nn.GRU: layers.GRU}[type(model.rnn)]
    rnn = cell(4, use_bias=False, return_sequences=model.rnn.bidirectional)
    stack = ([layers.Bidirectional(rnn), layers.Flatten()] if model.rnn.bidirectional
             else [rnn])
    net = keras.Sequential([keras.Input((5, 3)), *stack, layers.Dense(3, activation="softmax")])
    for keras_rnn, suffix in ([(stack[0].forward_layer, ""), (stack[0].backward_layer,
                                                              "_reverse")]
                              if model.rnn.bidirectional else [(rnn, "")]):
        w_ih, w_hh = (getattr(model.rnn, name + suffix).detach().numpy()
                      for name in ("weight_ih_l0", "weight_hh_l0"))
        if isinstance(model.rnn, nn.GRU):
            w_ih, w_hh = (np.concatenate([w[4:8], w[:4], w[8:]]) for w in (w_ih, w_hh))
        keras_rnn.set_weights([w_ih.T, w_hh.T])
    net.layers[-1].set_weights([model.fc.weight.detach().numpy().T, model.fc.bias.detach().numpy()])
    return net


@pytest.mark.parametrize(("cell", "bidirectional"), [(nn.LSTM, False), (nn.GRU, False),
                                                     (nn.LSTM, True)],
                         ids=["lstm", "gru", "bi-lstm"])
def test_recurrent_classifier_in_three_frameworks_agrees(cell, bidirectional, tmp_path):
    """torch, ONNX (exported from torch: time-first RNN nodes) and Keras (``LSTM``, ``GRU``,
    ``Bidirectional``) give the same outputs and explanations."""
    torch.manual_seed(6)
    model = RecurrentClassifier(cell, bidirectional).eval()
    converters = {"torch": ins.convert(model, input_dim=[5, 3], dtype="double"),
                  "onnx": ins.convert(export_onnx(model, [5, 3], tmp_path / "rnn.onnx"),
                                      dtype="double"),
                  "keras": ins.convert(keras_recurrent(model), dtype="double")}
    x = torch.randn(3, 5, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    # torch and ONNX hold (time steps, features); Keras holds them channels first
    assert_all_agree({k: converters[k] for k in ("torch", "onnx")}, x)
    outputs = [converters["torch"].model(x), converters["keras"].model(x.permute(0, 2, 1))]
    np.testing.assert_allclose(outputs[1].detach().numpy(), outputs[0].detach().numpy(),
                               rtol=0, atol=TOL)
    # SmoothGrad draws its noise in each model's inside layout: (steps, features) for
    # torch, (features, steps) for Keras, so the draws differ; the others are deterministic
    for method, args in [(m, a) for m, a in METHODS if m != "SmoothGrad"]:
        torch_res = getattr(ins, method)(converters["torch"], x, dtype="double", seed=0,
                                         **args).get_result()
        keras_res = getattr(ins, method)(converters["keras"], x.numpy(), channels_first=False,
                                         dtype="double", seed=0, **args).get_result()
        np.testing.assert_allclose(keras_res, torch_res, rtol=0,
                                   atol=TOL * np.abs(torch_res).max(), err_msg=f"{method} {args}")


# ---- a U-Net: torch, ONNX, Keras (transposed convolution, upsampling, group norm) ------------------------


class UNet(nn.Module):
    """Two levels: a strided encoder, a transposed convolution and a nearest upsampling
    back to the input size, a skip connection, group norm; a (3, 8, 8) map of logits."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(2, 4, 3, padding=1)
        self.norm = nn.GroupNorm(2, 4)
        self.down = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(6, 4, 2, stride=2)
        self.bottom = nn.Conv2d(6, 2, 1)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.head = nn.Conv2d(10, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = torch.relu(self.norm(self.enc(x)))
        low = torch.relu(self.down(skip))
        joined = torch.cat([skip, self.up(low), self.upsample(self.bottom(low))], dim=1)
        return self.head(joined)


def keras_unet(model: UNet):
    """The same U-Net in Keras (channels last): kernels (kh, kw, in, out), transposed
    kernels (kh, kw, out, in), group norm with torch's epsilon; torch's padding 1 of the
    strided convolution is Keras' padding (1, 0) here (its last padded row is unused)."""
    keras = keras_module()
    layers = keras.layers
    x = keras.Input((8, 8, 2))
    skip = layers.ReLU()(layers.GroupNormalization(2, epsilon=model.norm.eps, name="norm")(
        layers.Conv2D(4, 3, padding="same", name="enc")(x)))
    low = layers.Conv2D(6, 3, strides=2, activation="relu", name="down")(
        layers.ZeroPadding2D(((1, 0), (1, 0)))(skip))
    up = layers.Conv2DTranspose(4, 2, strides=2, name="up")(low)
    upsampled = layers.UpSampling2D(2, interpolation="nearest")(
        layers.Conv2D(2, 1, name="bottom")(low))
    out = layers.Conv2D(3, 1, name="head")(layers.Concatenate()([skip, up, upsampled]))
    net = keras.Model(x, out)
    for name in ("enc", "norm", "down", "up", "bottom", "head"):
        m = getattr(model, name)
        weight = m.weight.detach()
        net.get_layer(name).set_weights([
            weight.permute(2, 3, 1, 0).numpy() if weight.ndim == 4 else weight.numpy(),
            m.bias.detach().numpy()])
    return net


def test_unet_in_three_frameworks_agrees(tmp_path):
    torch.manual_seed(7)
    model = UNet().eval()
    for p in model.norm.parameters():  # not the initial ones and zeros
        nn.init.normal_(p)
    converters = {
        "torch": ins.convert(model, input_dim=[2, 8, 8], dtype="double"),
        "onnx": ins.convert(export_onnx(model, [2, 8, 8], tmp_path / "unet.onnx"),
                            dtype="double"),
        "keras": ins.convert(keras_unet(model), dtype="double"),
    }
    x = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert_all_agree(converters, x)
