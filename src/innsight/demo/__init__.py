"""``innsight demo``: train two small models, explain them in three frameworks, write
figures, CSV files and a summary.

The models are trained on data that ships with scikit-learn (the iris table and the
8x8 digits), so the demo needs no download; it needs the ``keras``, ``onnx``,
``sklearn`` and ``plotly`` extras. See :mod:`innsight.demo.tasks` for the data and
models, :mod:`innsight.demo.report` for the explanations and
:mod:`innsight.demo.outputs` for the files.
"""

from __future__ import annotations

import os
from pathlib import Path

from innsight.demo.outputs import write_csv, write_figures, write_summary
from innsight.demo.report import Timer, explain
from innsight.demo.tasks import digits_task, iris_task, write_files

__all__ = ["run_demo"]


def run_demo(out: str | os.PathLike[str] = "innsight-demo", verbose: bool = True) -> Path:
    """Train, convert and explain the iris MLP and the digits CNN; write into ``out``.

    Parameters
    ----------
    out : str or path
        The folder to write into (created if missing; existing files are replaced).
    verbose : bool
        Print each step and where the files are.

    Returns
    -------
    Path
        The path of ``summary.md`` in ``out``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timer, reports, files = Timer(), [], []
    for make, what in ((iris_task, "the iris MLP in Keras"), (digits_task, "the digits CNN in torch")):
        if verbose:
            print(f"training {what} ...", flush=True)
        with timer(f"train {what}"):
            task = make()
        with timer(f"{task.name}: save the models (.keras, .onnx, .pt2) and the test data"):
            write_files(task, out)
        files += task.files.values()
        if verbose:
            print(f"explaining {task.name} with every method in torch, Keras and ONNX ...",
                  flush=True)
        report = explain(task, timer)
        with timer(f"{task.name}: figures (PNG and HTML)"):
            files += write_figures(report, out)
        with timer(f"{task.name}: CSV files"):
            files += write_csv(report, out)
        reports.append(report)
    summary = write_summary(reports, timer, files, out)
    if verbose:
        print(f"wrote {len(files) + 1} files into {out.resolve()}/; start with {summary}")
    return summary
