"""The ``innsight`` command line (also ``python -m innsight``).

- ``innsight demo [--out DIR]``: train small models, explain them, write figures
  (see :mod:`innsight.demo`).
- ``innsight convert MODEL``: print the converted graph of a ``.onnx``, ``.keras``
  or ``.pt2`` (``torch.export``) file.
- ``innsight explain MODEL --data FILE --method NAME``: run a method on the data
  of a ``.npy``, ``.npz``, ``.csv`` or ``.parquet`` file and write figures and
  values.

Bad files and arguments end with a one-line error on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import re
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

import innsight as ins
from innsight._import_order import import_keras
from innsight.methods.comparison import resolve_method

#: Figure and table formats ``explain`` writes.
FORMATS = ("png", "html", "csv", "parquet")
#: How many samples the figures show.
PLOTTED_SAMPLES = 4
#: ``--plotly-js`` -> plotly's ``include_plotlyjs``: where an HTML figure finds plotly.js
#: (4.8 MB): one ``plotly.min.js`` beside the files, a CDN (needs the internet), or inline.
PLOTLY_JS: dict[str, str | bool] = {"directory": "directory", "cdn": "cdn", "inline": True}


class UsageError(Exception):
    """A bad file or argument, reported in one line."""


# ---- models ---------------------------------------------------------------------------


def _existing(path: str, what: str) -> Path:
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"{what}: no such file: {path!r}.")
    return file


def _load_pt2(path: Path) -> ins.Converter:
    """A ``torch.export`` program: its module, converted with the input shapes it was
    exported with (the batch axis left free)."""
    quiet = logging.getLogger("torch.export")  # it logs the whole traceback of a bad file
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        program = torch.export.load(path)
    except (RuntimeError, KeyError, zipfile.BadZipFile) as error:
        raise UsageError(f"MODEL: {path} cannot be read as a torch.export program "
                         f"(torch.export.save): {error}") from error
    finally:
        quiet.setLevel(level)
    inputs = [node for node in program.graph.nodes if node.op == "placeholder"
              and node.name in program.graph_signature.user_inputs]
    input_dim = [list(node.meta["val"].shape[1:]) for node in inputs]
    module = program.module()
    # module() forbids train()/eval(); the exported graph no longer depends on the mode
    for name in ("train", "eval"):
        vars(module).pop(name, None)
    return ins.convert(module.eval(), input_dim=input_dim)


def _load_keras(path: Path) -> ins.Converter:
    import_keras()
    return ins.convert(path)


#: Model file suffix -> loader. Each loads in its safe mode (onnx.checker, Keras
#: safe_mode, torch.export's own format without pickle).
LOADERS: dict[str, Callable[[Path], ins.Converter]] = {
    ".onnx": lambda path: ins.convert(path),
    ".keras": _load_keras,
    ".pt2": _load_pt2,
}


def load_model(path: str) -> ins.Converter:
    """Convert the model file at ``path`` (``.onnx``, ``.keras`` or ``.pt2``)."""
    file = _existing(path, "MODEL")
    loader = LOADERS.get(file.suffix.lower())
    if loader is None:
        raise UsageError(f"MODEL must be a {', '.join(LOADERS)} file, got {path!r}.")
    return loader(file)


# ---- data -----------------------------------------------------------------------------


def _npz(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as arrays:
        if len(arrays.files) != 1:
            raise UsageError(f"--data: {path} must hold one array, got {arrays.files}.")
        return arrays[arrays.files[0]]


def require_pyarrow(what: str) -> None:
    """A UsageError naming ``what`` when pyarrow (pandas' parquet engine) is missing."""
    if importlib.util.find_spec("pyarrow") is None:
        raise UsageError(f"{what}: parquet files need pyarrow: pip install pyarrow.")


def _parquet(path: Path) -> np.ndarray:
    import pandas as pd

    require_pyarrow("--data")
    return pd.read_parquet(path).to_numpy()


def _csv(path: Path) -> np.ndarray:
    import pandas as pd

    frame = pd.read_csv(path)
    text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if text:
        raise UsageError(f"--data: {path} must hold numbers only, got text in columns {text}.")
    return frame.to_numpy()


#: Data file suffix -> reader returning a numpy array (no pickle).
READERS: dict[str, Callable[[Path], np.ndarray]] = {
    ".npy": lambda path: np.load(path, allow_pickle=False),
    ".npz": _npz,
    ".csv": _csv,
    ".parquet": _parquet,
}


def load_data(path: str, what: str = "--data") -> torch.Tensor:
    """The array in a ``.npy``, ``.npz``, ``.csv`` or ``.parquet`` file, as float32."""
    file = _existing(path, what)
    reader = READERS.get(file.suffix.lower())
    if reader is None:
        raise UsageError(f"{what} must be a {', '.join(READERS)} file, got {path!r}.")
    array = reader(file)
    if not np.issubdtype(array.dtype, np.number):
        raise UsageError(f"{what}: {path} must hold numbers, got dtype {array.dtype}.")
    return torch.from_numpy(np.asarray(array, dtype=np.float32))


# ---- commands -------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 0,3,7, got {text!r}") from None


def _formats(text: str) -> list[str]:
    formats = [part.strip().lower() for part in text.split(",")]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(FORMATS)}, got {text!r}")
    return formats


def method_args(args: argparse.Namespace) -> dict[str, Any]:
    """The method's arguments from the command line: only those given."""
    given = {"n": args.n, "rule_name": args.rule, "batch_size": args.batch_size,
             "seed": args.seed, "output_idx": args.output_idx}
    method_args = {key: value for key, value in given.items() if value is not None}
    if args.data_ref is not None:
        method_args["data_ref"] = load_data(args.data_ref, "--data-ref")
    return method_args


def explain(args: argparse.Namespace) -> list[Path]:
    """Run the method and write the files; returns their paths."""
    method = resolve_method(args.method)
    if "parquet" in args.format:
        require_pyarrow("--format")
    converter = load_model(args.model)
    data = load_data(args.data)
    channels_first = args.layout == "first" or (
        args.layout == "auto" and Path(args.model).suffix.lower() != ".keras")
    result = method(converter, data, channels_first=channels_first,
                    verbose=sys.stderr.isatty(), **method_args(args))
    print(result)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{Path(args.model).stem}_{method.__name__}"
    shown = list(range(min(PLOTTED_SAMPLES, len(data))))
    writers: dict[str, Callable[[Path], None]] = {
        "png": lambda path: result.plot(data_idx=shown).save(path, verbose=False),
        "html": lambda path: result.plot(data_idx=shown, as_plotly=True).write_html(
            path, include_plotlyjs=PLOTLY_JS[args.plotly_js]),
        "csv": lambda path: result.get_result("data.frame").to_csv(path, index=False),
        "parquet": lambda path: result.get_result("data.frame").to_parquet(path),
    }
    files = []
    for fmt in args.format:
        path = stem.with_suffix(f".{fmt}")
        writers[fmt](path)
        files.append(path)
    return files


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with its three commands."""
    parser = argparse.ArgumentParser(
        prog="innsight", description="Explain neural-network predictions: convert a model "
        "file once, then run any interpretation method on it.")
    parser.add_argument("--version", action="version", version=f"innsight {ins.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="train small models on scikit-learn's iris and digits in torch, Keras "
        "and ONNX, explain them with every method, write figures, CSV and summary.md")
    demo.add_argument("--out", default="innsight-demo", help="folder to write into "
                      "(default: %(default)s)")

    convert = commands.add_parser("convert", help="print the converted graph of a model file")
    convert.add_argument("model", metavar="MODEL", help="a .onnx, .keras or .pt2 "
                         "(torch.export.save) file")

    explain = commands.add_parser(
        "explain", help="explain a model file's predictions on a data file",
        description="Run one interpretation method on a model file and a data file; print a "
        "summary and write the values (csv, parquet) and figures of the first "
        f"{PLOTTED_SAMPLES} samples (png, html).")
    explain.add_argument("model", metavar="MODEL", help="a .onnx, .keras or .pt2 file")
    explain.add_argument("--data", required=True, metavar="FILE",
                         help="the samples: .npy, .npz (one array), .csv (numbers, a header "
                         "row) or .parquet; shape (n, *input shape)")
    explain.add_argument("--method", required=True, metavar="NAME",
                         help="Gradient, SmoothGrad, IntegratedGradient, ExpectedGradient, "
                         "DeepLift, DeepSHAP, LRP, ConnectionWeights, LIME or SHAP")
    explain.add_argument("--output-idx", type=_int_list, metavar="I,J,...",
                         help="output nodes to explain (default: the first 10)")
    explain.add_argument("--out", default="innsight-explain", metavar="DIR",
                         help="folder to write into (default: %(default)s)")
    explain.add_argument("--format", type=_formats, default=["png", "html", "csv"],
                         metavar="LIST", help=f"comma-separated, of {', '.join(FORMATS)} "
                         "(default: png,html,csv)")
    explain.add_argument("--plotly-js", choices=list(PLOTLY_JS), default="directory",
                         help="where the html figures find plotly.js (4.8 MB): 'directory' "
                         "writes plotly.min.js once into DIR (offline; share the folder), "
                         "'cdn' loads it from the internet (small files to share), 'inline' "
                         "puts it into every file (self-contained, 4.8 MB each); default: "
                         "%(default)s")
    explain.add_argument("--n", type=int, help="samples, steps or draws of the method")
    explain.add_argument("--rule", help="rule_name of LRP, DeepLift or DeepSHAP")
    explain.add_argument("--data-ref", metavar="FILE", help="references for "
                         "ExpectedGradient, DeepSHAP, LIME and SHAP (as --data)")
    explain.add_argument("--batch-size", type=int, help="rows through the model at once")
    explain.add_argument("--seed", type=int, help="seed of stochastic methods")
    explain.add_argument("--layout", choices=["auto", "first", "last"], default="auto",
                         help="channels first or last in --data (auto: last for .keras "
                         "models, else first)")
    for command in (demo, convert, explain):  # errors name the command, as argparse's do
        command.set_defaults(parser=command)
    return parser


def _fail(parser: argparse.ArgumentParser, error: BaseException) -> NoReturn:
    """Exit with the error's message on one line (status 2, as argparse does)."""
    parser.error(re.sub(r"\s+", " ", str(error)).strip() or type(error).__name__)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``innsight`` command line with ``argv`` (default: ``sys.argv[1:]``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from innsight.demo import run_demo

            run_demo(args.out)
        elif args.command == "convert":
            print(load_model(args.model))
        else:
            for path in explain(args):
                print(f"wrote {path}")
    except (UsageError, ValueError, TypeError, OSError, ImportError, RuntimeError,
            ins.ConversionError) as error:
        _fail(args.parser, error)


if __name__ == "__main__":
    main()
