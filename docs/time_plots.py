"""Time plot() of 100 samples x 10 outputs of a 28 x 28 image result (issue 7's target: 10 s).

    .venv/bin/python docs/time_plots.py

Prints the seconds to build each figure and to render it (PNG for plotnine, HTML
for plotly). More than ``MAX_FACETS`` (50) heatmaps in a panel are drawn as one
mosaic; for comparison the script also times 50 facets drawn one by one.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402
from torch import nn  # noqa: E402

import innsight as ins  # noqa: E402


def timed(label: str, make, render) -> None:
    start = time.perf_counter()
    figure = make()
    built = time.perf_counter()
    render(figure)
    done = time.perf_counter()
    print(f"{label:<44} build {built - start:5.2f} s   render {done - built:5.2f} s   "
          f"total {done - start:5.2f} s")


def main() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)).eval()
    result = ins.run_grad(ins.convert(model, input_dim=[1, 28, 28]), torch.randn(100, 1, 28, 28),
                          output_idx=list(range(10)))
    warnings.simplefilter("ignore")  # the mosaic warning
    with tempfile.TemporaryDirectory() as tmp:
        png, html = Path(tmp) / "plot.png", Path(tmp) / "plot.html"
        everything = list(range(100))
        timed("plotnine, 100 x 10 (mosaic), PNG at 100 dpi", lambda: result.plot(data_idx=everything),
              lambda f: f.save(png, dpi=100, verbose=False))
        timed("plotly, 100 x 10 (mosaic), HTML", lambda: result.plot(data_idx=everything, as_plotly=True),
              lambda f: f.write_html(html, include_plotlyjs=True))
        timed("plotnine, 100 x 10 (mosaic) over the inputs, PNG",
              lambda: result.plot(data_idx=everything, show_input=True),
              lambda f: f.save(png, dpi=100, verbose=False))
        timed("plotnine, 5 x 10 = 50 facets, PNG at 100 dpi",
              lambda: result.plot(data_idx=list(range(5))), lambda f: f.save(png, dpi=100, verbose=False))
        timed("plotly, 5 x 10 = 50 facets, HTML",
              lambda: result.plot(data_idx=list(range(5)), as_plotly=True),
              lambda f: f.write_html(html, include_plotlyjs=True))
        timed("plotnine global, 100 samples x 10, PNG", lambda: result.plot_global(),
              lambda f: f.save(png, dpi=100, verbose=False))


if __name__ == "__main__":
    main()
