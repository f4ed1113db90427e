"""Every ``python`` block of README.md runs as printed: in order, in one namespace, in a
fresh interpreter (so the README's own import order is what runs), in an empty folder
for the model files it writes. Afterwards the models it builds are checked against
each other through their own frameworks, and its comments' shapes against the results.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("keras")
pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")
pytest.importorskip("plotly")

README = Path(__file__).parents[1] / "README.md"

#: Runs after the README's blocks, in their namespace: what they claim, checked
#: against the original torch model (not through the converter).
CHECKS = """
import numpy as np, torch
with torch.no_grad():
    logits = model(x).numpy()
    assert np.allclose(conv.model(x).numpy(), logits, atol=1e-5)
    assert np.allclose(keras_model(x_keras, training=False).numpy(), logits, atol=1e-5)
    assert np.allclose(conv_onnx.model(x).numpy(), logits, atol=1e-5)
assert conv_keras.input_dim == [(3, 32, 32)]
assert res.get_result("array").shape == (4, 32, 32, 3, 2)
assert np.abs(cmp.differences().filter(like="abs").to_numpy()).max() < 1e-4
assert conv_clf.input_names == [[list(frame.columns)]]
assert conv_clf.output_names == [[list(clf.classes_)]]
"""


def python_blocks(text: str) -> list[str]:
    """The bodies of the fenced ``python`` blocks of a markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_python_blocks_are_found():
    blocks = python_blocks("text\n```python\na = 1\n```\n```sh\nls\n```\n```python\nb = a\n```\n")
    assert blocks == ["a = 1\n", "b = a\n"]


def test_readme_runs_as_printed(tmp_path):
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 8
    script = tmp_path / "readme.py"
    script.write_text("\n".join(blocks) + CHECKS)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
