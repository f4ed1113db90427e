"""What the demo writes: figures (PNG with plotnine, HTML with plotly), the results
as CSV, and ``summary.md``."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import plotnine as p9

from innsight import plotting
from innsight.methods.result import Result
from innsight.demo.report import SHOWN_FRAMEWORK, TaskReport, Timer

#: Resolution of the PNG figures.
DPI = 110


def save_figure(draw: Callable[[bool], Any], stem: Path, out: Path) -> list[Path]:
    """Draw a figure with plotnine (``draw(False)``) and plotly (``draw(True)``) and
    save it as ``stem.png`` and ``stem.html``. The HTML files load the one
    ``out/plotly.min.js`` (offline, and some 50 kB per figure instead of 4.8 MB)."""
    png, html = stem.with_suffix(".png"), stem.with_suffix(".html")
    with warnings.catch_warnings():  # plotnine warns about the size it picked
        warnings.simplefilter("ignore", UserWarning)
        draw(False).save(png, dpi=DPI, verbose=False)
    script = out / "plotly.min.js"
    if not script.exists():
        from plotly.offline import get_plotlyjs

        script.write_text(get_plotlyjs(), encoding="utf-8")
    draw(True).write_html(html, include_plotlyjs=os.path.relpath(script, html.parent))
    return [png, html]


def _methods_figure(results: dict[str, Result], output_idx: int, is_image: bool,
                    as_plotly: bool) -> Any:
    """Every method's explanation of the first sample side by side: the library's plot of
    the named results, its facets wrapped into rows of five (plotnine)."""
    figure = plotting.plot(results, data_idx=0, output_idx=[output_idx], as_plotly=as_plotly)
    title = "Every method on the first sample"
    if as_plotly:
        return figure.update_layout(title=title)
    return (figure + p9.facet_wrap("output_node", ncol=5, scales="fixed" if is_image else "free_y")
            + p9.labs(title=title, y="height" if is_image else "value")
            + p9.theme(figure_size=(12, 6), legend_title=p9.element_blank(),
                       strip_text=p9.element_text(size=7)))


def write_figures(report: TaskReport, out: Path) -> list[Path]:
    """The task's figures: every method side by side on one sample, the three
    frameworks side by side, and for tables the global SHAP importance, for digits
    each method over the shown digits and their classes (one heatmap per digit and
    class), and IntegratedGradient drawn over the digits."""
    name, is_image = report.task.name, report.task.is_image
    results = {label: cmp.results[SHOWN_FRAMEWORK] for label, cmp in report.comparisons.items()}
    first = int(report.task.y_test[report.explained[0]])
    files = save_figure(lambda as_plotly: _methods_figure(results, first, is_image, as_plotly),
                        out / f"{name}_methods", out)
    frameworks = report.comparisons["IntegratedGradient"]
    files += save_figure(lambda as_plotly: frameworks.plot(
        data_idx=0, output_idx=[first], as_plotly=as_plotly), out / f"{name}_frameworks", out)
    if not is_image:
        return files + save_figure(lambda as_plotly: results["SHAP"].plot_global(
            as_plotly=as_plotly), out / f"{name}_global_shap", out)
    shown = list(range(len(report.explained)))
    files += save_figure(lambda as_plotly: results["IntegratedGradient"].plot(
        data_idx=shown, as_plotly=as_plotly, show_input=True), out / f"{name}_over_input", out)
    (out / name).mkdir(exist_ok=True)
    for label, result in results.items():
        files += save_figure(lambda as_plotly: result.plot(data_idx=shown, as_plotly=as_plotly),
                             out / name / label, out)
    return files


def write_csv(report: TaskReport, out: Path) -> list[Path]:
    """``<task>_results.csv``: every value of every method and framework (a long frame
    with ``method`` and ``model`` columns); ``<task>_agreement.csv``: the largest
    differences per method and pair of frameworks."""
    frames = [cmp.get_result("data.frame").assign(method=label)
              for label, cmp in report.comparisons.items()]
    results = pd.concat(frames, ignore_index=True)
    files = [out / f"{report.task.name}_results.csv", out / f"{report.task.name}_agreement.csv"]
    results[["method", *[c for c in results.columns if c != "method"]]].to_csv(files[0], index=False)
    report.agreement().to_csv(files[1], index=False)
    return files


def _table(frame: pd.DataFrame) -> str:
    """A data frame as a markdown table, numbers in short scientific notation."""
    def cell(value: Any) -> str:
        return f"{value:.2g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _task_section(report: TaskReport) -> str:
    task = report.task
    checks = pd.DataFrame({
        "framework": list(report.accuracy),
        "test accuracy": [f"{a:.3f}" for a in report.accuracy.values()],
        "max abs(converted - original)": list(report.conversion_error.values()),
    })
    worst = report.agreement().groupby("method", sort=False)[["max_abs_diff", "max_rel_diff"]].max()
    shape = "x".join(str(s) for s in task.x_test.shape[1:])
    return "\n\n".join([
        f"## {task.name}",
        f"{len(task.x_train)} training and {len(task.x_test)} test samples of shape {shape}, "
        f"{len(task.class_names)} classes; trained in {task.trained_in}, then the same weights "
        "in the other framework and exported to ONNX. Test accuracy in each framework, and the "
        "largest difference of the converted model's outputs from the framework's own forward "
        "pass (float32):",
        _table(checks),
        f"Every method explained {len(report.explained)} test samples for the output nodes "
        f"{report.output_idx} on the torch, Keras and ONNX conversions, in float64. The largest "
        "difference between two frameworks, per method (relative: to the largest value):",
        _table(worst.reset_index()),
        "Completeness: the values of a sample sum to the decomposition goal (f(x) - f(x_ref) "
        "for the logits; IntegratedGradient approximates it with 50 steps, LRP's epsilon rule "
        "loses what the biases absorb, ExpectedGradient matches the mean goal only in "
        "expectation over many references):",
        _table(report.completeness()),
    ])


def write_summary(reports: list[TaskReport], timer: Timer, files: list[Path], out: Path) -> Path:
    """``summary.md``: what was done, the conversions' accuracy, how well the frameworks
    agree, completeness, the time of each step and the files."""
    timings = pd.DataFrame({"step": list(timer.seconds),
                            "seconds": [f"{s:.2f}" for s in timer.seconds.values()]})
    listing = "\n".join(f"- `{path.relative_to(out)}`" for path in sorted(files))
    text = "\n\n".join([
        "# innsight demo",
        "Two small models trained here in seconds on data that ships with scikit-learn, each "
        "in torch, Keras and ONNX; each converted with `ins.convert` and explained with every "
        "method through `ins.compare_models`. The figures show the torch conversion's results "
        "(the others agree, see below). Values explain the logits (`ignore_last_act=True`); "
        "the info boxes give the predicted probability.",
        *[_task_section(report) for report in reports],
        "## Time of each step",
        _table(timings),
        "## Files",
        listing,
    ])
    path = out / "summary.md"
    path.write_text(text + "\n")
    return path
