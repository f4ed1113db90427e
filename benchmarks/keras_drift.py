"""Where a converted Keras application drifts from Keras, layer by layer.

    python benchmarks/keras_drift.py EfficientNetB0 [--size 32] [--raw]

Builds the application with random weights and logits out (as ``coverage.py keras``
does), converts it in float32 and float64, runs both and Keras' float32 model on the
same two images (uniform [0, 255] through the application's ``preprocess_input``;
``--raw`` skips that) and prints per Keras layer the norm-wise relative error
``||a - b|| / ||b||`` of its output: ours in float32 against Keras in float32, ours in
float32 against ours in float64 (our float32 noise) and Keras in float32 against ours
in float64 (Keras' float32 noise, where the conversion is right). A layer that computes
in a numerically poor way shows as a jump of the first column above the other two.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torchvision  # noqa: F401  (before anything that may load tensorflow)

import innsight as ins

# the tests' Keras references (applications, their inputs, the error measure)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "converter"))


def main() -> None:
    from keras_reference import application, keras, norm_rel_error

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="a keras.applications model, e.g. ResNet50")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--raw", action="store_true", help="uniform [0, 255], unprocessed")
    args = parser.parse_args()
    model, x = application(args.name, args.size)
    if args.raw:
        x = np.random.default_rng(0).uniform(0, 255, x.shape).astype("float32")
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    keras_values = keras.Model(model.inputs, [layer.output for layer in layers])(x)
    inputs = torch.as_tensor(np.moveaxis(x, -1, 1))
    single, double = (ins.convert(model, dtype=dtype).model for dtype in ("float", "double"))
    with torch.no_grad():
        ours = single.node_values(inputs)
        exact = double.node_values(inputs.double())
    print(f"{'layer':40s} {'type':24s} ours-keras  ours-f64  keras-f64  (float32, norm-wise)")
    for layer, value in zip(layers, keras_values):
        # the last layer of the conversion named after the Keras layer holds its output
        held = [i for i, name in enumerate(single.layer_names)
                if name == layer.name or name.startswith(layer.name + "/")]
        if not held:
            continue
        theirs = np.asarray(value)
        theirs = np.moveaxis(theirs, -1, 1) if theirs.ndim > 2 else theirs
        a, e = ours[held[-1]].numpy(), exact[held[-1]].numpy()
        print(f"{layer.name:40s} {type(layer).__name__:24s} {norm_rel_error(a, theirs):9.1e} "
              f"{norm_rel_error(a, e):9.1e} {norm_rel_error(theirs, e):9.1e}")


if __name__ == "__main__":
    main()
