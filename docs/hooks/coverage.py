"""MkDocs hook: the coverage page, generated from the registries at build time.

What each front-end converts is read from the tables the converter dispatches
on (``innsight.converter.torch_ops``, ``keras_ops``, ``onnx_ops``,
``sklearn_front``); which rules each layer type has, from the layer registry
(``innsight.layers.LAYER_TYPES``) and the rule registries
(``innsight.layers.lrp_rules.LRP_RULES``, ``innsight.layers.rules.DEEPLIFT_RULES``).
The page cannot drift from the code: a new handler, layer type or rule appears on
the next build. The model-zoo section shows the last sweep of
``benchmarks/coverage.py timm --out docs/data/coverage_timm.json``.
``python docs/hooks/coverage.py`` prints the page.
"""

from __future__ import annotations

import inspect
import json
import operator
import re
import types
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import date
from pathlib import Path
from typing import Any

PAGE = "coverage.md"
#: The last timm sweep of ``benchmarks/coverage.py`` (its ``--out`` file).
ZOO_SWEEP = Path(__file__).resolve().parents[1] / "data" / "coverage_timm.json"

_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc):`~?(?:[\w.]*\.)?(\w+)`")


def note(obj: Any) -> str:
    """The first paragraph of ``obj``'s docstring as one table cell (RST roles dropped)."""
    doc = inspect.getdoc(obj) or ""
    text = " ".join(doc.split("\n\n")[0].split())
    return _ROLE.sub(r"`\1`", text).replace("``", "`").replace("|", "\\|")


def table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """A Markdown table."""
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def codes(names: Iterable[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)


# ---- layer types and rules ------------------------------------------------------------


def layer_section() -> str:
    from innsight.layers import ACTIVATIONS, LAYER_TYPES
    from innsight.layers.lrp_rules import LRP_RULES
    from innsight.layers.rules import DEEPLIFT_RULES

    rows = []
    for type_name, cls in sorted(LAYER_TYPES.items()):
        paths = cls.rule_paths
        lrp = "—"
        if "lrp" in paths:
            lrp = "any rule" if cls.takes_lrp_rule else "fixed"
            if cls.takes_lrp_rule and not cls.shape_preserving:
                lrp = "any but `pass`"

        def has(path: str) -> str:
            return "yes" if path in paths else f"no: {cls.no_rule_reason}".replace("|", "\\|")

        rows.append([f"`{type_name}`", lrp, has("deeplift"), has("cw"), note(cls)])
    lrp_rows = [[f"`{name}`", "—" if not rule.takes_param else (
        "required" if rule.default_param is None else f"`{rule.default_param}`"), note(rule)]
        for name, rule in LRP_RULES.items() if name != "none"]
    deeplift_rows = [[f"`{name}`", note(rule)] for name, rule in DEEPLIFT_RULES.items()]
    return "\n\n".join([
        "## Layer types and their rules",
        "Every front-end emits these layer types (the `type` of a layer in the "
        "[dict format](dict-format.md)). *LRP* says whether `rule_name`/`rule_param` "
        "choose the layer's rule (\"any rule\": every LRP rule below; `pass` needs a layer "
        "whose input and output have the same shape) or whether the layer has one "
        "\"fixed\" way to pass relevance (activations pass it unchanged, max pooling follows "
        "`winner_takes_all`, ...). A method refuses a model that holds a layer without its "
        "rule, naming the layer, before any work.",
        table(["type", "LRP", "DeepLift, DeepSHAP", "ConnectionWeights", "what it computes"],
              rows),
        "The `Activation` type takes `act_name`, one of: " + codes(ACTIVATIONS) + ".",
        "### LRP rules (`rule_name`)",
        table(["rule", "default `rule_param`", "formula"], lrp_rows),
        "### DeepLift rules (`rule_name`)",
        table(["rule", "what it does"], deeplift_rows),
    ])


# ---- PyTorch --------------------------------------------------------------------------


def _torch_name(key: Any) -> tuple[str, str]:
    """``(column, label)`` of one key of the torch registries."""
    import torch

    if isinstance(key, str):
        return "methods", f"Tensor.{key}"
    if isinstance(key, type):
        module = key.__module__
        prefix = "nn." if module.startswith("torch.nn") else f"{module}."
        return "modules", prefix + key.__name__
    if isinstance(key, torch._ops.OpOverload):
        return "aten", str(key).removeprefix("aten.")
    module = getattr(key, "__module__", None) or ""
    name = getattr(key, "__name__", str(key))
    if key in vars(operator).values():
        return "functions", f"operator.{name}"
    if module.startswith("torch.nn.functional"):
        return "functions", f"F.{name}"
    return "functions", f"torch.{name}" if module.startswith("torch") else f"{module}.{name}"


def torch_section() -> str:
    from innsight.converter import torch_ops

    groups: dict[Callable, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    registries = [torch_ops.MODULES, torch_ops.FUNCTIONS, torch_ops.METHODS]
    for registry in registries:
        for key, handler in registry.items():
            if isinstance(key, type) and not key.__module__.startswith("torch"):
                continue  # onnx2torch's modules: see the ONNX section
            column, label = _torch_name(key)
            groups[handler][column].append(label)
    for name, handler in torch_ops.FUNCTIONS_BY_NAME.items():
        groups[handler]["functions"].append(name)
    module_rows, function_rows = [], []
    for handler, found in groups.items():
        if found["modules"]:
            module_rows.append([codes(sorted(found["modules"])), note(handler)])
        calls = [codes(sorted(set(found[column]))) or "—"
                 for column in ("functions", "methods", "aten")]
        if calls != ["—"] * 3:
            function_rows.append(calls + [note(handler)])
    function_rows.sort(key=lambda row: [cell == "—" for cell in row[:3]] + row[:3])
    return "\n\n".join([
        "## PyTorch",
        "`convert(model, input_dim=...)` traces the module with `torch.fx` (or, with "
        "`tracer=\"export\"` or where `torch.fx` fails, `torch.export`) and maps every "
        "traced call through the tables below: module types, then functions, tensor "
        "methods and the ATen operations of an exported graph (one row per handler). "
        "Operations on values that do not depend on the input's values (parameters, "
        "position tables, masks built from shapes) fold into constants first. An in-place "
        "update that is read afterwards (`x.relu_()`, `x += y`, `x[:, 1:] = y`, `copy_` "
        "into a slice) becomes the new tensor it makes (the updated block joined with the "
        "rest by `assign_into`); one through a view that cannot be written back (a "
        "reshape, a permutation) is refused. A forward that updates its own parameters or "
        "buffers in place converts as one call from the state they had (conversion runs "
        "on copies of them and leaves the model as it was); a buffer update that torch.fx "
        "runs instead of recording (`self.steps += 1`) is refused by the buffer's name "
        "under `tracer='fx'`. A call that no row names is refused with an "
        "error that names it and where it sits in the model.",
        "### Modules",
        table(["module", "note"], sorted(module_rows)),
        "### Functions, tensor methods and ATen operations",
        table(["function", "tensor method", "ATen (`torch.export`)", "note"], function_rows),
    ])


# ---- Keras ----------------------------------------------------------------------------


def keras_section() -> str:
    from innsight.converter import keras_ops

    groups: dict[Callable, list[str]] = defaultdict(list)
    for name, handler in keras_ops._REGISTRY.items():
        module, cls = name.split(":")
        groups[handler].append(cls if module == "keras.layers" else f"{module}.{cls}")
    rows = sorted([codes(names), note(handler)] for handler, names in groups.items())
    converted = [name for name, build in keras_ops.ACTIVATION_BUILDERS.items()]
    return "\n\n".join([
        "## Keras",
        "Keras 3 `Sequential` and functional models (several inputs and outputs; data "
        "channels last, as Keras has it: methods take `channels_first=False`). Layers are "
        "looked up by class in this table (classes missing from the installed Keras are "
        "skipped); an unknown layer is refused by name.",
        table(["Keras layer or operation", "note"], rows),
        "Activation functions (as `activation=` of a layer or as an `Activation` layer): "
        + codes(converted) + ". Refused, since no layer type expresses them: "
        + codes(keras_ops.REFUSED_ACTIVATIONS) + ".",
    ])


# ---- ONNX -----------------------------------------------------------------------------


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _built_modules(converter: Callable) -> set[type]:
    """The ``nn.Module`` classes an onnx2torch converter function can build: those its
    code names (directly, or through a dict of classes), else those of its own file."""
    import sys

    from torch import nn

    def modules_in(values: Iterable[Any]) -> set[type]:
        return {v for v in values if isinstance(v, type) and issubclass(v, nn.Module)}

    found: set[type] = set()
    for name in _code_names(converter.__code__):
        for value in (converter.__globals__.get(name), getattr(nn, name, None)):
            found |= modules_in(value.values() if isinstance(value, dict) else [value])
    if not found:
        own = vars(sys.modules[converter.__module__]).values()
        found = {cls for cls in modules_in(own) if cls.__module__ == converter.__module__}
    return found


def onnx_section() -> str:
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY

    from innsight.converter import onnx_ops
    from innsight.converter.torch_ops import MODULES

    built: dict[str, set[type]] = defaultdict(set)
    for description, converter in _CONVERTER_REGISTRY.items():
        if not description.domain:
            built[description.operation_type] |= _built_modules(converter)
    by_modules: dict[tuple[type, ...], list[str]] = defaultdict(list)
    refused = []
    for op_type in sorted(built):
        handled = tuple(sorted((cls for cls in built[op_type] if cls in MODULES),
                               key=lambda cls: cls.__name__))
        if handled:
            by_modules[handled].append(op_type)
        else:
            refused.append(op_type)
    rows = sorted([codes(op_types), codes(cls.__name__ for cls in handled),
                   " ".join(dict.fromkeys(n for n in map(note, map(MODULES.get, handled)) if n))]
                  for handled, op_types in by_modules.items())
    fused = note(onnx_ops.fuse_activations)
    return "\n\n".join([
        "## ONNX",
        "An ONNX model (a `ModelProto` or a `.onnx` path) is read by onnx2torch into a "
        "`torch.fx` graph, which the PyTorch front-end converts: ONNX operators that "
        "onnx2torch turns into `torch.nn` modules follow the PyTorch table, and onnx2torch's "
        "own modules have handlers here. The table pairs each ONNX operator with the "
        "modules onnx2torch may build for it that innsight converts; a handler can still "
        "refuse some attribute settings (its note says which, and the error names the "
        "node). Operators whose inputs are all constants (`Shape`, `Constant`, `Range`, "
        "...) are folded before conversion, whatever the table says. Before that, the "
        "front-end runs `fuse_activations`: " + fused[0].lower() + fused[1:],
        table(["ONNX operators", "onnx2torch module converted", "note"], rows),
        "Operators with no converted module (refused where they act on the input's "
        "values): " + codes(refused) + ".",
    ])


# ---- scikit-learn and dict ------------------------------------------------------------


def sklearn_section() -> str:
    from innsight.converter import sklearn_front

    rows = [[f"`{name}`", f"`{act}`"] for name, act in sklearn_front.ACTIVATIONS.items()]
    return "\n\n".join([
        "## scikit-learn",
        "Estimators: " + codes(sklearn_front.ESTIMATORS) + " (fitted), as dense layers with "
        "their activation, and the output activation scikit-learn applies.",
        table(["`activation=`", "layer activation"], rows),
    ])


def dict_section() -> str:
    from innsight.layers import LAYER_TYPES

    rows = [[f"`{name}`", codes(cls.required) or "—",
             ", ".join(f"`{key}={value!r}`" for key, value in cls.optional.items()) or "—"]
            for name, cls in sorted(LAYER_TYPES.items())]
    return "\n\n".join([
        "## Model as dict",
        "Every layer type above, with its parameters (see [the dict format](dict-format.md)).",
        table(["type", "required", "optional (default)"], rows),
    ])


def zoo_section(path: Path = ZOO_SWEEP) -> str:
    """The timm sweep: one model per family, its status, deviation and method checks."""
    if not path.exists():
        return ""
    sweep = json.loads(path.read_text())
    rows = sweep["rows"]
    counts = {status: sum(row["status"] == status for row in rows)
              for status in sorted({row["status"] for row in rows})}
    summary = ", ".join(f"{n} {status}" for status, n in counts.items())
    return "\n\n".join([
        "## timm models",
        (f"One model per timm family ({len(rows)}), random weights (every parameter but a "
         "bias that timm initialises to all zeros, such as a classifier head or the last "
         "norm scale of a residual branch, drawn at random: a zero head or branch would "
         f"hide a wrong conversion), {sweep['size']} x "
        f"{sweep['size']} pixels (or the model's own size), `tracer=\"{sweep['tracer']}\"`, "
        f"torch {sweep['torch']}: {summary}. *Detail* gives, for a converted model, the "
        "largest deviation of its output from the original's relative to the output scale "
        "(*between*, in rows of later sweeps: the same for the difference of two inputs' "
        "outputs, which a model whose output hardly depends on its input would hide; in "
        "brackets how far apart the two outputs lie, relative to their scale), "
        "of its Gradient from autograd on the original, and of DeepLift's sum from "
        "`f(x) - f(0)` relative to the larger of `|f(x)|` and `|f(0)|`, and whether LRP "
        "epsilon runs; for a refused one, the reason. *Zeros* counts those "
        "parameters (— for a row from an older sweep that kept them at zero). "
        "`python benchmarks/coverage.py timm --out docs/data/coverage_timm.json` "
         "refreshes it."),
        table(["model", "status", "zeros", "detail"],
              [[f"`{row['model']}`", row["status"], str(row.get("randomised", "—")),
                row["detail"].replace("|", "\\|")] for row in rows]),
    ])


def coverage_page() -> str:
    """The whole coverage page as Markdown."""
    import innsight  # noqa: F401  (registers every layer type and handler)

    return "\n\n".join([
        "# Coverage per framework",
        f"Generated from the converter's and the layers' registries when the site was "
        f"built ({date.today().isoformat()}, innsight {innsight.__version__}); "
        "`docs/hooks/coverage.py` writes it.",
        layer_section(), torch_section(), keras_section(), onnx_section(), sklearn_section(),
        dict_section(), zoo_section(),
    ]) + "\n"


def on_files(files, config, **kwargs):
    """Add the generated coverage page to the site."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=coverage_page()))
    return files


if __name__ == "__main__":
    print(coverage_page())
