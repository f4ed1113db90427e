"""Progress bars: only for long work a person watches, notebook-aware, and nothing from
``import innsight`` (tqdm's notebook module warns where ipywidgets is missing)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import innsight as ins
from innsight.methods import engine


def test_import_loads_no_notebook_progress_bar():
    code = ("import sys, warnings; warnings.simplefilter('error'); import innsight; "
            "print(sorted(m for m in sys.modules if m in "
            "{'tqdm.auto', 'tqdm.autonotebook', 'tqdm.notebook', 'ipywidgets'}))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == "[]"


def test_short_work_draws_no_bar_even_when_verbose(capsys):
    conv = ins.convert(torch.nn.Sequential(torch.nn.Linear(4, 3)).eval(), input_dim=[4])
    ins.run_smoothgrad(conv, torch.randn(2, 4), n=4, verbose=True)   # one chunk
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("total", [0, 1, engine.MIN_CHUNKS_FOR_BAR - 1])
def test_few_steps_are_returned_as_they_are(total):
    steps = range(total)
    assert engine.progress(steps, total, verbose=True, desc="x") is steps


def test_many_steps_get_a_text_bar_outside_a_notebook():
    from tqdm.std import tqdm

    bar = engine.progress(range(8), 8, verbose=True, desc="x")
    assert type(bar) is tqdm and bar.total == 8 and list(bar) == list(range(8))
    assert engine.progress(range(8), 8, verbose=False, desc="x") == range(8)


def test_in_a_notebook_the_bar_is_the_widget(monkeypatch):
    pytest.importorskip("ipywidgets")
    from tqdm.notebook import tqdm_notebook

    monkeypatch.setattr(engine, "in_notebook", lambda: True)
    bar = engine.progress(range(8), 8, verbose=True, desc="x")
    assert isinstance(bar, tqdm_notebook)
    assert list(bar) == list(range(8))


def test_in_notebook_is_false_in_a_plain_interpreter():
    assert not engine.in_notebook()
