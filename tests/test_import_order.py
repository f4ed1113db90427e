"""TensorFlow, then innsight, then torchvision (which loads triton) in one process: on
Linux, triton after TensorFlow crashes the interpreter unless ``import innsight``
loaded it first (see :mod:`innsight._import_order`). Each case runs in a fresh
interpreter; the Keras model converted in between is checked against Keras itself.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

pytest.importorskip("keras")
if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed: nothing to crash", allow_module_level=True)

CONVERT_AND_COMPARE = """
import keras, numpy as np
net = keras.Sequential([keras.Input((5, 5, 2)), keras.layers.Conv2D(3, 3, activation="relu"),
                        keras.layers.Flatten(), keras.layers.Dense(4)])
x = np.random.default_rng(0).normal(size=(3, 5, 5, 2)).astype("float32")
conv = ins.convert(net)
"""
TORCHVISION_AFTER = """
import torch, torchvision, triton.language
with torch.no_grad():
    ours = conv.model(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
assert np.allclose(ours, net(x).numpy(), atol=1e-5), np.abs(ours - net(x).numpy()).max()
assert torchvision.ops.box_area(torch.tensor([[0.0, 0.0, 2.0, 3.0]])).item() == 6.0
print("survived")
"""


def run(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter, TensorFlow's C++ messages silenced."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=180, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_tensorflow_then_innsight_then_torchvision():
    unguarded = run("import tensorflow\nimport torchvision")
    guarded = run("import tensorflow\nimport innsight as ins\n" + CONVERT_AND_COMPARE
                  + TORCHVISION_AFTER)
    assert guarded.returncode == 0 and guarded.stdout.strip() == "survived", guarded.stderr[-2000:]
    if unguarded.returncode == 0:
        pytest.skip("triton after TensorFlow does not crash here: the guard was not needed")
    assert unguarded.returncode == -11  # SIGSEGV: what the guard prevents


def test_innsight_then_keras_then_torchvision():
    done = run("import innsight as ins\n" + CONVERT_AND_COMPARE + TORCHVISION_AFTER)
    assert done.returncode == 0 and done.stdout.strip() == "survived", done.stderr[-2000:]
