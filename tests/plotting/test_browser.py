"""plotly figures saved as HTML, opened in a real headless Chromium (Debian's package).

The page is the file ``Figure.write_html`` wrote (plotly.js inline: no network),
with two scripts added: one at the top of ``<head>`` that records JavaScript
errors, one at the end of ``<body>`` that waits for plotly to draw and writes
what it drew into the DOM, which ``--dump-dom`` prints. Chromium is installed by
``make browser`` (part of ``make test``); without it this test fails, it is
never skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

pytest.importorskip("plotly")

from innsight.plotting import plot, plot_global  # noqa: E402

#: Chromium flags for a closed network and no screen (the background-networking
#: flags keep it from calling out at start).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]

CATCH_ERRORS = """<script>
window.__errors = [];
window.addEventListener("error", e => window.__errors.push(String(e.message)));
window.addEventListener("unhandledrejection", e => window.__errors.push(String(e.reason)));
</script>"""

REPORT = """<script>
setTimeout(function () {
  var out = {errors: window.__errors, plots: []};
  document.querySelectorAll(".js-plotly-plot").forEach(function (gd) {
    out.plots.push({data: gd.data ? gd.data.length : -1,
                    drawn: gd.querySelectorAll("g.trace, g.hm").length,
                    heatmaps: gd.querySelectorAll("g.hm image").length});
  });
  var pre = document.createElement("pre");
  pre.id = "innsight-report";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}, 500);
</script>"""


def chromium() -> str:
    """The Chromium binary; fails (never skips) when it is missing."""
    found = os.environ.get("INNSIGHT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("Chromium is needed to check plotly's HTML output and was not found: run "
                    "`make browser` as root (apt-get install chromium) or set INNSIGHT_CHROMIUM.")
    return found


def run_chromium(args: list[str], profile: Path) -> str:
    done = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}",
                           "--virtual-time-budget=5000", *args],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def open_in_chromium(figures: list, path: Path) -> tuple[dict, Path]:
    """Save the first figure with ``write_html`` (plotly.js inline), add the others as
    divs, open the page headless (each Chromium start costs seconds): the report and
    a screenshot of the whole page."""
    figures[0].write_html(path, include_plotlyjs=True)
    page = path.read_text()
    more = "".join(f.to_html(full_html=False, include_plotlyjs=False) for f in figures[1:])
    page = page.replace("<head>", "<head>" + CATCH_ERRORS, 1)
    page = page.replace("</body>", more + REPORT + "</body>", 1)
    path.write_text(page)
    profile = path.parent / "chromium-profile"
    dom = run_chromium(["--dump-dom", path.as_uri()], profile)
    found = re.search(r'<pre id="innsight-report">(.*?)</pre>', dom)
    assert found, f"the report script did not run; the page ended with {dom[-500:]!r}"
    shot = path.with_suffix(".png")
    width = max(int(f.layout.width) for f in figures) + 20
    height = sum(int(f.layout.height) for f in figures) + 20
    run_chromium([f"--window-size={width},{height}", f"--screenshot={shot}", path.as_uri()], profile)
    return json.loads(found.group(1).replace("&quot;", '"')), shot


def colour_share(pixels: np.ndarray, colour: str) -> float:
    """Share of the pixels ``(h, w, 3)`` within 40/255 of ``colour`` ("#rrggbb")."""
    target = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)]) / 255
    return float((np.abs(pixels - target).max(-1) < 40 / 255).mean())


def test_plotly_html_renders_in_chromium(two_in_two_out_result, tabular_result, many_images, tmp_path):
    local = plot(two_in_two_out_result, data_idx=[0, 1], as_plotly=True)
    overlay = plot(two_in_two_out_result, data_idx=[0, 1], as_plotly=True, show_input=True)
    boxes = plot_global(tabular_result, as_plotly=True)
    with pytest.warns(UserWarning, match="mosaic"):
        tiles = plot(many_images, data_idx=list(range(20)), output_idx=[0, 1, 2], as_plotly=True)
    report, shot = open_in_chromium([local, overlay, boxes, tiles], tmp_path / "plots.html")
    assert report["errors"] == []
    # local: 2 samples x (2 + 1) nodes x 2 input layers, half heatmaps, half bars;
    # overlay: the same with a grey input image under each heatmap;
    # boxes: one per output node; mosaic: one heatmap of 20 x 3 tiles
    assert report["plots"] == [{"data": 12, "drawn": 12, "heatmaps": 6},
                               {"data": 18, "drawn": 18, "heatmaps": 12},
                               {"data": 3, "drawn": 3, "heatmaps": 0},
                               {"data": 1, "drawn": 1, "heatmaps": 1}]
    assert [len(f.data) for f in (local, overlay, boxes, tiles)] == [12, 18, 3, 1]
    pixels = matplotlib.image.imread(shot)[..., :3]
    first, second = int(local.layout.height), int(overlay.layout.height)
    top = pixels[:first]  # the local figure, drawn first
    # the diverging colours of bars and heatmaps are on screen, not only in the DOM
    assert colour_share(top, "#b2182b") > 1e-3 and colour_share(top, "#2166ac") > 1e-3
    # the input images show through the overlay's heatmaps as greys; the plain
    # heatmaps have none (their middle is near white)
    below = pixels[first + 20:first + second - 20]
    assert grey_share(below) > 0.02 > 10 * grey_share(top)


def grey_share(pixels: np.ndarray) -> float:
    """Share of the pixels ``(h, w, 3)`` that are neutral mid greys (not white, not text)."""
    level = pixels.mean(-1)
    neutral = np.ptp(pixels, axis=-1) < 8 / 255
    return float((neutral & (level > 0.15) & (level < 0.85)).mean())
