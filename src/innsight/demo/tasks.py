"""The demo's two tasks: data that ships with scikit-learn, a small model trained on
it in seconds, and the same model in torch, Keras and ONNX.

- ``iris``: the iris table (4 standardised measurements, 3 species); an MLP trained
  in Keras, its weights copied into a torch ``nn.Sequential``.
- ``digits``: scikit-learn's 8x8 digits (scaled to [0, 1]); a small CNN trained in
  torch, its weights copied into a Keras ``Sequential`` (kernels permuted to
  channels last, the dense rows reordered for Keras' channels-last flatten).

Both torch models are exported to ONNX (``torch.onnx.export``) and as
``torch.export`` programs (``.pt2``); the Keras models are saved as ``.keras``. The
files and the test data (``.npy``, ``.csv``) go to ``out/models`` and ``out/data``,
ready for ``innsight convert`` and ``innsight explain``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from innsight._import_order import import_keras
from innsight._threads import one_thread

SEED = 0
#: The digits whose explanations the figures show: the first test sample of each.
DIGITS_SHOWN = (0, 3, 4, 7)


@dataclass
class Task:
    """One data set with its model in three frameworks.

    ``x_*`` are channels first (what torch and the converted models take); the Keras
    model takes ``np.moveaxis(x, 1, -1)`` for images. ``files`` maps a kind
    (``"keras"``, ``"onnx"``, ``"pt2"``, ``"npy"``, ``"labels"``, ``"csv"``) to the written file.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    feature_names: list[str]
    class_names: list[str]
    torch_model: nn.Module
    keras_model: Any
    trained_in: str
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def is_image(self) -> bool:
        return self.x_test.ndim == 4

    def keras_layout(self, x: np.ndarray) -> np.ndarray:
        """``x`` in the Keras model's layout (channels last for images)."""
        return np.moveaxis(x, 1, -1) if self.is_image else x


def _split(x: np.ndarray, y: np.ndarray, n_test: int) -> tuple[np.ndarray, ...]:
    order = np.random.default_rng(SEED).permutation(len(x))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


# ---- iris: trained in Keras ---------------------------------------------------------


def iris_task() -> Task:
    """The iris MLP (4 -> 16 relu -> 3 softmax), trained in Keras, copied into torch."""
    from sklearn.datasets import load_iris

    keras = import_keras()
    data = load_iris()
    x_train, y_train, x_test, y_test = _split(data.data.astype("float32"), data.target, 50)
    mean, std = x_train.mean(0), x_train.std(0)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std

    keras.utils.set_random_seed(SEED)
    net = keras.Sequential([keras.Input((4,), name="measurements"),
                            keras.layers.Dense(16, activation="relu"),
                            keras.layers.Dense(3, activation="softmax")], name="iris_mlp")
    net.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy")
    net.fit(x_train, y_train, epochs=40, batch_size=25, verbose=0)

    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3), nn.Softmax(dim=1))
    kernels = net.get_weights()
    with torch.no_grad():
        for layer, (kernel, bias) in zip(model[::2], zip(kernels[::2], kernels[1::2])):
            layer.weight.copy_(torch.from_numpy(kernel.T))
            layer.bias.copy_(torch.from_numpy(bias))
    names = [name.removesuffix(" (cm)").replace(" ", "_") for name in data.feature_names]
    return Task("iris", x_train, y_train, x_test, y_test, names, list(data.target_names),
                model.eval(), net, trained_in="Keras")


# ---- digits: trained in torch -------------------------------------------------------


def digits_cnn() -> nn.Sequential:
    """conv 3x3 (8) -> relu -> average pool 2 -> conv 3x3 (16) -> relu -> dense (10) -> softmax."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 4 * 4, 10),
        nn.Softmax(dim=1),
    )


def train_torch(model: nn.Sequential, x: np.ndarray, y: np.ndarray, epochs: int) -> nn.Module:
    """Adam on the cross entropy of the logits (the model without its softmax)."""
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y).long()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    with one_thread():
        for _ in range(epochs):
            for rows in torch.randperm(len(x)).split(64):
                loss = nn.functional.cross_entropy(model[:-1](inputs[rows]), targets[rows])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    return model.eval()


def keras_digits_cnn(model: nn.Sequential) -> Any:
    """The Keras twin of :func:`digits_cnn` holding ``model``'s weights."""
    keras = import_keras()
    layers = keras.layers
    net = keras.Sequential([
        keras.Input((8, 8, 1), name="digit"),
        layers.Conv2D(8, 3, padding="same", activation="relu"), layers.AveragePooling2D(2),
        layers.Conv2D(16, 3, padding="same", activation="relu"), layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ], name="digits_cnn")
    conv1, conv2, dense = model[0], model[3], model[6]
    # torch flattens (C, H, W), Keras (H, W, C): reorder the dense weight's columns
    dense_kernel = dense.weight.detach().reshape(10, 16, 4, 4).permute(2, 3, 1, 0).reshape(-1, 10)
    net.set_weights([t.detach().numpy() for t in (
        conv1.weight.permute(2, 3, 1, 0), conv1.bias, conv2.weight.permute(2, 3, 1, 0),
        conv2.bias, dense_kernel, dense.bias)])
    return net


def digits_task() -> Task:
    """The digits CNN, trained in torch for 12 epochs, copied into Keras."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype("float32")[:, None]
    x_train, y_train, x_test, y_test = _split(x, data.target, 400)
    torch.manual_seed(SEED)
    model = train_torch(digits_cnn(), x_train, y_train, epochs=12)
    return Task("digits", x_train, y_train, x_test, y_test,
                [f"pixel_{r}_{c}" for r in range(8) for c in range(8)],
                [str(d) for d in range(10)], model, keras_digits_cnn(model), trained_in="torch")


def shown_samples(task: Task) -> np.ndarray:
    """The test rows the figures explain: for digits, the first test sample of each of
    :data:`DIGITS_SHOWN`; for a table, the first four test rows."""
    if not task.is_image:
        return np.arange(4)
    return np.array([np.flatnonzero(task.y_test == digit)[0] for digit in DIGITS_SHOWN])


# ---- files ----------------------------------------------------------------------------


def write_files(task: Task, out: Path) -> None:
    """Save the models (``.keras``, ``.onnx``, ``.pt2``) and the test data (``.npy``, its
    labels, and for tables ``.csv`` with a header) into ``out/models`` and ``out/data``."""
    (out / "models").mkdir(parents=True, exist_ok=True)
    (out / "data").mkdir(parents=True, exist_ok=True)
    files = {"keras": out / "models" / f"{task.name}.keras",
             "onnx": out / "models" / f"{task.name}.onnx",
             "pt2": out / "models" / f"{task.name}.pt2",
             "npy": out / "data" / f"{task.name}_test.npy",
             "labels": out / "data" / f"{task.name}_test_labels.npy"}
    task.keras_model.save(files["keras"])
    example = torch.from_numpy(task.x_test[:2])
    with warnings.catch_warnings():  # the TorchScript exporter warns that it is deprecated
        warnings.simplefilter("ignore")
        torch.onnx.export(task.torch_model, (example,), str(files["onnx"]), dynamo=False,
                          opset_version=17, input_names=["x"], output_names=["probabilities"],
                          dynamic_axes={"x": {0: "batch"}, "probabilities": {0: "batch"}})
    program = torch.export.export(task.torch_model, (example,),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, files["pt2"])
    np.save(files["npy"], task.x_test)
    np.save(files["labels"], task.y_test)
    if not task.is_image:
        files["csv"] = out / "data" / f"{task.name}_test.csv"
        pd.DataFrame(task.x_test, columns=task.feature_names).to_csv(files["csv"], index=False)
    task.files = files
