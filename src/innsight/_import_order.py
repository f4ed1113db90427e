"""Load torch's triton so that TensorFlow cannot crash it, and import Keras through that.

Where it comes from: triton's ``libtriton.so`` and TensorFlow both carry their own
copy of LLVM. TensorFlow loads its libraries with ``RTLD_GLOBAL``, so a
``libtriton.so`` loaded after it binds some of its LLVM symbols to TensorFlow's
copy; its static initialisers (LLVM's ``DebugCounter`` registry in
``PassBuilder.cpp``) then write into TensorFlow's data structures and the
interpreter dies with a segmentation fault, no Python error. torchvision imports
triton, and so does ONNX conversion (onnx2torch loads torchvision).

:func:`load_triton` (called by ``import innsight``) makes any later order safe:
before TensorFlow it imports triton (0.1 s), the order that works; after TensorFlow
it first loads ``libtriton.so`` with ``RTLD_DEEPBIND``, so that the library binds
to its own LLVM, and then imports triton, which finds the library loaded.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

#: What to install when Keras is missing.
INSTALL_HINT = "Install the Keras extra: pip install innsight[keras] (Keras 3 with TensorFlow)."


def load_triton() -> None:
    """Import triton, where it is installed and not yet imported, so that it survives
    TensorFlow whichever of the two the user imports first."""
    if sys.platform != "linux" or "triton" in sys.modules:
        return
    spec = importlib.util.find_spec("triton")
    if spec is None or spec.origin is None:
        return
    try:
        if "tensorflow" in sys.modules:
            for library in (Path(spec.origin).parent / "_C").glob("libtriton*.so"):
                ctypes.CDLL(str(library), mode=os.RTLD_DEEPBIND | os.RTLD_NOW | os.RTLD_LOCAL)
        import triton  # noqa: F401
    except (ImportError, OSError):  # a broken triton: torch runs without it, so do we
        pass


def import_keras() -> ModuleType:
    """The ``keras`` module (Keras 3), imported after :func:`load_triton`, or an
    ImportError naming the extra to install. TensorFlow's C++ start-up messages are
    silenced unless ``TF_CPP_MIN_LOG_LEVEL`` is set."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    load_triton()
    try:
        import keras
    except ImportError as err:
        raise ImportError(f"Converting a Keras model needs Keras 3. {INSTALL_HINT}") from err
    if not str(getattr(keras, "__version__", "0")).startswith("3"):
        raise ImportError(
            f"Converting a Keras model needs Keras 3, found keras {keras.__version__}. "
            f"{INSTALL_HINT}"
        )
    return keras
