"""Where a converted Keras application drifts from Keras, layer by layer.

    python benchmarks/keras_drift.py EfficientNetB0 [--size 32] [--raw] [--float64]
                                                    [--residual-gamma G]

Builds the application with random weights and logits out (as ``coverage.py keras``
does), converts it in float32 and float64, runs both and Keras' float32 model on the
same two images (uniform [0, 255] through the application's ``preprocess_input``;
``--raw`` skips that) and prints per Keras layer the norm-wise relative error
``||a - b|| / ||b||`` of its output: ours in float32 against Keras in float32, ours in
float32 against ours in float64 (our float32 noise) and Keras in float32 against ours
in float64 (Keras' float32 noise, where the conversion is right). A layer that computes
in a numerically poor way shows as a jump of the first column above the other two.

``--float64`` adds a float64 copy of the Keras model and two columns: ours in float64
against it (the conversion's structure, free of float32 rounding) and Keras in float32
against it. Where both grow from layer to layer in the ratio of the two precisions'
rounding (about 5e8), the model amplifies rounding (chaos of random weights), not a
wrong layer. ``--residual-gamma G`` multiplies the batch-norm scale at the end of every
residual branch (the ``*_project_bn`` layers that an ``*_add`` layer reads) by ``G``, as
a zero-initialised residual scale or training would: a better-conditioned model of the
same architecture.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision  # noqa: F401  (before anything that may load tensorflow)

import innsight as ins

# the tests' Keras references (applications, their inputs, the error measure)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "converter"))


def main() -> None:
    from keras_reference import (
        application,
        channels_first,
        float64,
        keras,
        norm_rel_error,
    )

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="a keras.applications model, e.g. ResNet50")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--raw", action="store_true", help="uniform [0, 255], unprocessed")
    parser.add_argument("--float64", action="store_true",
                        help="also against a float64 copy of the Keras model")
    parser.add_argument("--residual-gamma", type=float, default=None,
                        help="scale the batch norms that end residual branches by this")
    args = parser.parse_args()
    model, x = application(args.name, args.size)
    if args.raw:
        x = np.random.default_rng(0).uniform(0, 255, x.shape).astype("float32")
    if args.residual_gamma is not None:
        scale_residual_branches(model, args.residual_gamma)
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    keras_values = [channels_first(np.asarray(v)) for v in _layer_outputs(model, layers, x)]
    keras64 = [None] * len(layers)
    if args.float64:
        with float64():
            copy, _ = application(args.name, args.size)
        copy.set_weights([w.astype("float64") for w in model.get_weights()])
        layers64 = [layer for layer in copy.layers  # Keras names them anew
                    if not isinstance(layer, keras.layers.InputLayer)]
        keras64 = [channels_first(np.asarray(v))
                   for v in _layer_outputs(copy, layers64, x.astype("float64"))]
    inputs = torch.as_tensor(np.moveaxis(x, -1, 1))
    single, double = (ins.convert(model, dtype=dtype).model for dtype in ("float", "double"))
    with torch.no_grad():
        ours = single.node_values(inputs)
        exact = double.node_values(inputs.double())
    print(f"{'layer':40s} {'type':24s} ours-keras  ours-f64  keras-f64  (float32, norm-wise)"
          + ("  ours64-keras64  keras-keras64" if args.float64 else ""))
    for layer, theirs, theirs64 in zip(layers, keras_values, keras64):
        # the last layer of the conversion named after the Keras layer holds its output
        held = [i for i, name in enumerate(single.layer_names)
                if name == layer.name or name.startswith(layer.name + "/")]
        if not held:
            continue
        a, e = ours[held[-1]].numpy(), exact[held[-1]].numpy()
        row = (f"{layer.name:40s} {type(layer).__name__:24s} {norm_rel_error(a, theirs):9.1e} "
               f"{norm_rel_error(a, e):9.1e} {norm_rel_error(theirs, e):9.1e}")
        if theirs64 is not None:
            row += f"  {norm_rel_error(e, theirs64):14.1e} {norm_rel_error(theirs, theirs64):13.1e}"
        print(row)


def _layer_outputs(model: Any, layers: list[Any], x: np.ndarray) -> list[Any]:
    from keras_reference import keras

    return keras.Model(model.inputs, [layer.output for layer in layers])(x)


def scale_residual_branches(model: Any, gamma: float) -> None:
    """Multiply by ``gamma`` the scale of every batch norm that ends a residual branch:
    one whose output (through dropout) only an ``Add`` layer reads (the shortcut is also
    read by the next block)."""
    from keras_reference import keras

    for layer in model.layers:
        if not isinstance(layer, keras.layers.Add):
            continue
        for tensor in layer._inbound_nodes[0].input_tensors:
            source = tensor._keras_history.operation
            while isinstance(source, keras.layers.Dropout):
                source = source._inbound_nodes[0].input_tensors[0]._keras_history.operation
            if (isinstance(source, keras.layers.BatchNormalization) and source.scale
                    and len(source._outbound_nodes) == 1):
                source.gamma.assign(gamma * np.asarray(source.gamma))

if __name__ == "__main__":
    main()
