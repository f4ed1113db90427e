"""The teaching notebooks in docs/notebooks/ (jupytext percent scripts: open them in
Jupyter with jupytext, or run them as they are) run top to bottom in a fresh
interpreter, each in an empty folder, within the time a lesson can wait. Their
numeric claims are asserted in their own cells against the trained models
themselves (torch, Keras, onnxruntime), so running them checks those too.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("sklearn")

NOTEBOOKS = sorted((Path(__file__).parents[1] / "docs" / "notebooks").glob("*.py"))
#: Seconds one notebook may take: each takes 8-25 s alone on two cores and up to 50 s
#: beside the rest of the suite on a shared machine; the limit catches one gone slow.
TIME_LIMIT = 90


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 2


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_top_to_bottom(notebook: Path, tmp_path: Path):
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(notebook)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    assert list((tmp_path / "figures").glob("*.png")), "the notebook saved no figure"
    assert seconds < TIME_LIMIT, f"{notebook.name} took {seconds:.0f} s"
