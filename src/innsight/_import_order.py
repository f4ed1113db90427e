"""Import Keras (TensorFlow) so that torch's triton, if installed, is loaded first.

On Linux, importing triton (which torchvision and onnx2torch load) after
TensorFlow crashes the interpreter (a segmentation fault, no Python error); the
other order works. Code that loads Keras calls :func:`import_keras` instead of
``import keras``.
"""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType


def import_keras() -> ModuleType:
    """The ``keras`` module, imported after triton where triton is installed; TensorFlow's
    C++ start-up messages are silenced unless ``TF_CPP_MIN_LOG_LEVEL`` is set."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if importlib.util.find_spec("triton") is not None:
        import triton  # noqa: F401
    import keras

    return keras
