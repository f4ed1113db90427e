"""``import innsight`` stays light: the plotting libraries load on the first plot."""

from __future__ import annotations

import subprocess
import sys


def test_import_loads_no_plotting_library():
    code = ("import sys, innsight; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'plotnine', 'plotly', 'matplotlib'}))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == "[]"


def test_a_plotly_figure_loads_no_plotnine():
    code = ("import sys, torch, innsight as ins; "
            "conv = ins.convert(torch.nn.Linear(3, 2).eval(), input_dim=[3]); "
            "ins.run_grad(conv, torch.randn(2, 3)).plot(as_plotly=True); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'plotnine', 'matplotlib'}))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == "[]"
