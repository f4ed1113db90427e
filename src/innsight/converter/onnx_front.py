"""ONNX front-end: an ONNX model read by onnx2torch into a ``torch.fx`` graph, then
described by the torch front-end.

Steps: load (``onnx.load``, from a path or a ``ModelProto``) and check the model
with ``onnx.checker``; read ``input_dim`` from the graph inputs (the batch axis
may be symbolic); turn constants into initializers (onnx2torch reads weights
only from initializers); let onnx2torch build a ``torch.fx.GraphModule``;
inline its ``nn.Sequential`` wrappers, fold every value that does not depend
on the model input (shape arithmetic, constant pads and axes) into a constant,
and fuse the spelled-out SiLU and GELU into their modules; then translate that
graph with :func:`~innsight.converter.torch_fx.describe_torch`,
whose registry knows onnx2torch's own modules (:mod:`innsight.converter.onnx_ops`).

The conversion's dry run compares with onnxruntime (the ``onnx`` extra) running
the model as given. Input and output layers are named after the graph's
inputs and outputs. Errors about a node name its ONNX op type and node name.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, fx, nn

from innsight._validation import as_dim_list
from innsight.converter.errors import ConversionError
from innsight.converter.torch_fx import (
    TRACE_BATCH,
    BatchAxis,
    describe_torch,
    random_inputs,
)

EXTRA_HINT = "pip install innsight[onnx]"

#: The way out named in errors about ONNX models.
ONNX_HINT = (
    "To explain this model anyway, read it into torch with onnx2torch.convert(model) "
    "and use the direct torch methods (ins.torch_grad, ins.torch_intgrad, ...)."
)


def accepts_onnx(model: Any) -> bool:
    """An ``onnx.ModelProto``, or a path (str or ``os.PathLike``) ending in ``.onnx``."""
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model).lower().endswith(".onnx")
    cls = type(model)
    return cls.__name__ == "ModelProto" and cls.__module__.split(".")[0] == "onnx"


def describe_onnx(
    model: Any, input_dim: Any
) -> tuple[dict[str, Any], Callable[[list[Tensor]], list[Tensor]]]:
    """The model dict of an ONNX model and a function running it with onnxruntime."""
    onnx, onnx2torch = _import()
    with warnings.catch_warnings():
        # onnx2torch's modules warn about torch deprecations the user cannot act on
        warnings.filterwarnings("ignore", category=UserWarning, module=r"onnx2torch\.")
        return _describe(onnx, onnx2torch, model, input_dim)


def _describe(
    onnx: Any, onnx2torch: Any, model: Any, input_dim: Any
) -> tuple[dict[str, Any], Callable[[list[Tensor]], list[Tensor]]]:
    proto = _load(onnx, model)
    inputs = _graph_inputs(proto)
    dims, batch_sizes = _input_dims(onnx, proto, inputs, input_dim)
    working = _working_copy(onnx, proto)
    # registers onnx2torch's modules, and converters for the ops onnx2torch lacks
    from innsight.converter import onnx_ops, onnx_recurrent, onnx_trilu  # noqa: F401

    graph_module = _onnx_to_fx(onnx, onnx2torch, working)

    # The original for the dry run: onnxruntime, or else onnx2torch's module as it came
    # (the passes below bake the tracing batch size into shape arguments).
    run_original = _onnxruntime_runner(proto, inputs, batch_sizes) or _torch_runner(
        copy.deepcopy(graph_module))
    _inline_sequentials(graph_module)
    try:
        _fold_constants(graph_module, dims)
    except ConversionError as err:
        if all(b is None for b in batch_sizes):
            raise
        raise ConversionError(
            f"{err} The ONNX model has the fixed batch size 1 in its inputs and does not "
            "work with others; export it with a symbolic batch axis (torch.onnx.export(..., "
            "dynamic_axes={'x': {0: 'batch'}}))."
        ) from err
    onnx_ops.fuse_activations(graph_module)
    onnx_ops.fuse_group_norms(graph_module)
    onnx_names = _name_nodes_after_onnx(graph_module, working)
    _refuse_unknown_modules(graph_module)
    description, _ = describe_torch(graph_module, [list(d) for d in dims],
                                    graph_module=graph_module)
    _name_layers(description, onnx_names, [i.name for i in inputs],
                 [o.name for o in proto.graph.output])
    return description, run_original


# ---- loading ------------------------------------------------------------------------------------


def _import() -> tuple[Any, Any]:
    try:
        import onnx
        import onnx2torch
    except ImportError as err:
        raise ImportError(
            f"Converting ONNX models needs onnx and onnx2torch: {EXTRA_HINT} ({err})."
        ) from err
    return onnx, onnx2torch


def _load(onnx: Any, model: Any) -> Any:
    """The checked ``ModelProto``: loaded from a path (with ``onnx.load``, which reads
    external data only from the model's folder) or the given one."""
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(
                f"`model` names the ONNX file {str(path)!r}, which does not exist.")
        try:
            model = onnx.load(os.fspath(path))
        except Exception as err:  # protobuf and onnx raise several kinds
            raise ConversionError(
                f"`model` {str(path)!r} cannot be read as an ONNX model: {err}") from err
    try:
        onnx.checker.check_model(model)
    except Exception as err:  # onnx.checker.ValidationError and protobuf errors
        raise ConversionError(f"`model` is not a valid ONNX model (onnx.checker): {err}") from err
    return model


def _graph_inputs(proto: Any) -> list[Any]:
    """The graph inputs that are fed by the user (not initializers)."""
    initializers = {init.name for init in proto.graph.initializer}
    return [value for value in proto.graph.input if value.name not in initializers]


def _input_dims(
    onnx: Any, proto: Any, inputs: list[Any], input_dim: Any
) -> tuple[list[tuple[int, ...]], list[int | None]]:
    """Sample shapes (without batch axis) and fixed batch sizes (``None`` if symbolic)
    of the graph inputs; ``input_dim`` fills symbolic axes and is checked against the rest."""
    given = None if input_dim is None else as_dim_list(input_dim, "input_dim")
    if given is not None and len(given) != len(inputs):
        raise ValueError(
            f"`input_dim` gives {len(given)} shape(s), but the ONNX model has {len(inputs)} "
            f"input(s) {[i.name for i in inputs]}."
        )
    dims, batch_sizes = [], []
    for k, value in enumerate(inputs):
        tensor_type = value.type.tensor_type
        if not value.type.HasField("tensor_type") or tensor_type.elem_type not in _FLOAT_TYPES:
            raise ConversionError(
                f"ONNX input '{value.name}' is not a float tensor "
                f"({onnx.helper.printable_type(value.type)}); only float inputs can be explained."
            )
        axes = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
        if len(axes) < 2:
            raise ConversionError(
                f"ONNX input '{value.name}' has shape {_shape_text(axes)}; expected a batch "
                "axis followed by at least one sample axis."
            )
        batch, sample = axes[0], axes[1:]
        if given is not None:
            fits = len(given[k]) == len(sample) and all(
                s is None or s == g for s, g in zip(sample, given[k]))
            if not fits:
                raise ValueError(
                    f"`input_dim` {list(given[k])} does not fit ONNX input '{value.name}' "
                    f"of shape {_shape_text(axes)} (batch axis first)."
                )
            sample = list(given[k])
        if any(s is None for s in sample):
            raise ValueError(
                f"ONNX input '{value.name}' has the shape {_shape_text(axes)} with symbolic "
                "sample axes; give `input_dim` (the shape without the batch axis)."
            )
        if batch is not None and batch != 1:
            raise ConversionError(
                f"ONNX input '{value.name}' has the fixed batch size {batch}; export the "
                "model with a symbolic batch axis (torch.onnx.export(..., "
                "dynamic_axes={'x': {0: 'batch'}}))."
            )
        dims.append(tuple(sample))
        batch_sizes.append(batch)
    return dims, batch_sizes


def _shape_text(axes: list[int | None]) -> str:
    return "[" + ", ".join("?" if a is None else str(a) for a in axes) + "]"


#: Attributes of ONNX ``Constant`` nodes that hold numbers, and their numpy types.
_CONSTANT_ATTRIBUTES = {"value": None, "value_float": np.float32, "value_floats": np.float32,
                        "value_int": np.int64, "value_ints": np.int64}
#: ONNX element types of float tensors (FLOAT, FLOAT16, DOUBLE, BFLOAT16).
_FLOAT_TYPES = (1, 10, 11, 16)


def _working_copy(onnx: Any, proto: Any) -> Any:
    """A copy for onnx2torch: constants as initializers, no trailing empty inputs
    (onnx2torch takes them for missing values), and a symbolic batch axis."""
    working = onnx.ModelProto()
    working.CopyFrom(proto)
    graph = working.graph
    initializers = {init.name: init for init in graph.initializer}
    kept = []
    for node in graph.node:
        while node.input and not node.input[-1]:  # trailing optional inputs left empty
            node.input.pop()
        tensor = None
        if node.op_type == "Constant" and not node.domain and len(node.attribute) == 1:
            attribute = node.attribute[0]
            if attribute.name in _CONSTANT_ATTRIBUTES:
                value = onnx.helper.get_attribute_value(attribute)
                tensor = (onnx.numpy_helper.to_array(value) if attribute.name == "value"
                          else np.asarray(value, dtype=_CONSTANT_ATTRIBUTES[attribute.name]))
        elif node.op_type == "Identity" and not node.domain and node.input[0] in initializers:
            tensor = onnx.numpy_helper.to_array(initializers[node.input[0]])
        if tensor is None:
            kept.append(node)
            continue
        initializer = onnx.numpy_helper.from_array(np.asarray(tensor), name=node.output[0])
        graph.initializer.append(initializer)
        initializers[node.output[0]] = initializer
    del graph.node[:]
    graph.node.extend(kept)
    # The batch axis becomes symbolic; shape inference redoes the intermediate shapes.
    for value in [*graph.input, *graph.output]:
        dim = value.type.tensor_type.shape.dim
        if len(dim) and dim[0].HasField("dim_value"):
            dim[0].dim_param = "batch"
    del graph.value_info[:]
    return working


def _onnx_to_fx(onnx: Any, onnx2torch: Any, proto: Any) -> fx.GraphModule:
    """onnx2torch's graph; if it fails, the node it failed on is named."""
    try:
        graph_module = onnx2torch.convert(proto)
    except Exception as err:  # onnx2torch raises NotImplementedError, KeyError, ...
        raise _onnx2torch_error(onnx, proto, err) from err
    return graph_module.eval()


def _onnx2torch_error(onnx: Any, proto: Any, err: Exception) -> ConversionError:
    """The first node onnx2torch cannot read, by op type and name, with its reason."""
    from onnx2torch.node_converters import get_converter
    from onnx2torch.onnx_graph import OnnxGraph

    inferred = onnx.shape_inference.infer_shapes(proto)
    graph = OnnxGraph(inferred.graph)
    opsets = {opset.domain: opset.version for opset in inferred.opset_import}
    for node in graph.nodes.values():
        try:
            converter = get_converter(domain=node.domain, operation_type=node.operation_type,
                                      version=opsets.get(node.domain, opsets.get("ai.onnx", 1)))
            converter(node, graph)
        except Exception as node_err:  # the reason, whatever onnx2torch raised
            reason = node_err.args[0] if node_err.args else type(node_err).__name__
            return ConversionError(
                f"ONNX node '{node.proto.name or node.unique_name}' (op type "
                f"{node.operation_type}) is not supported: onnx2torch cannot read it "
                f"({type(node_err).__name__}: {reason}). {ONNX_HINT}"
            )
    return ConversionError(f"onnx2torch cannot read the ONNX model: {err}. {ONNX_HINT}")


# ---- passes over onnx2torch's graph -------------------------------------------------------------


def _inline_sequentials(graph_module: fx.GraphModule) -> None:
    """Replace calls of ``nn.Sequential`` (padding + conv, padding + pooling) by calls of
    their parts, so that each part maps to a layer."""
    graph = graph_module.graph
    for node in list(graph.nodes):
        if node.op != "call_module":
            continue
        module = graph_module.get_submodule(node.target)
        if not isinstance(module, nn.Sequential):
            continue
        value = node.args[0]
        with graph.inserting_before(node):
            for name, _ in module.named_children():
                value = graph.call_module(f"{node.target}.{name}", (value,))
        node.replace_all_uses_with(value)
        graph.erase_node(node)
    graph_module.recompile()


class _Values(fx.Interpreter):
    """Runs the graph once and records each node's value and whether it depends on
    the values of the model inputs (a ``Shape`` node reads their shapes only)."""

    def __init__(self, graph_module: fx.GraphModule) -> None:
        super().__init__(graph_module)
        from onnx2torch.node_converters.shape import OnnxShape

        self.shape_only = (OnnxShape,)
        self.values: dict[fx.Node, Any] = {}
        self.from_input: dict[fx.Node, bool] = {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        self.values[n] = result
        reads_shape = n.op == "call_module" and isinstance(
            self.module.get_submodule(n.target), self.shape_only)
        self.from_input[n] = n.op == "placeholder" or (not reads_shape and any(
            self.from_input.get(a, False) for a in n.all_input_nodes))
        return result


def _fold_constants(graph_module: fx.GraphModule, dims: list[tuple[int, ...]]) -> None:
    """Replace each computed tensor that does not depend on the inputs, or that is no
    float tensor (shapes, axes, indices), by a constant attribute of the graph.

    The values come from one run at the tracing batch size; only the sample axes
    of shape arguments are used later, so the batch size baked into them is harmless.
    A second run on one more sample finds where each tensor has its batch axis
    (``meta["batch_axis"]``: the time-first tensors around recurrent nodes have it second);
    the shapes of the first run stay in ``meta["traced_shape"]`` for the fusions.
    """
    recorder, other = (_record(graph_module, dims, batch)
                       for batch in (TRACE_BATCH, TRACE_BATCH + 1))
    for node, value in recorder.values.items():
        if recorder.from_input[node] and isinstance(value, Tensor):
            node.meta["traced_shape"] = tuple(value.shape)
            batch_axis = _batch_axis(value.shape, other.values[node].shape)
            if batch_axis is not None:
                node.meta["batch_axis"] = batch_axis
    graph = graph_module.graph
    count = 0
    for node in list(graph.nodes):
        value = recorder.values.get(node)
        computed = node.op in ("call_module", "call_function", "call_method")
        if not computed or not isinstance(value, Tensor):
            continue
        if recorder.from_input[node] and value.is_floating_point():
            continue
        name = f"innsight_constant_{count}"
        count += 1
        graph_module.register_buffer(name, value.detach().clone())
        with graph.inserting_before(node):
            constant = graph.get_attr(name)
        node.replace_all_uses_with(constant)
    graph.eliminate_dead_code()
    graph_module.recompile()


def _record(graph_module: fx.GraphModule, dims: list[tuple[int, ...]], batch: int) -> _Values:
    """The values of one run on ``batch`` random samples."""
    recorder = _Values(graph_module)
    try:
        with torch.no_grad():
            recorder.run(*random_inputs(graph_module, dims, batch))
    except Exception as err:  # onnx2torch's modules raise what torch raises
        raise ConversionError(
            f"onnx2torch's torch module of the ONNX model fails on a batch of {batch} "
            f"random samples of shape(s) {[list(d) for d in dims]}: {err}"
        ) from err
    return recorder


def _batch_axis(shape: torch.Size, other: torch.Size) -> BatchAxis | None:
    """Where the batch axis is in a tensor of ``shape`` at ``TRACE_BATCH`` samples and of
    ``other`` at one more: the one axis whose size grows by the same whole factor (the
    entries of each sample merged into it); ``None`` where it is not one axis."""
    grown = [k for k, (a, b) in enumerate(zip(shape, other)) if a != b]
    if len(shape) != len(other) or len(grown) != 1:
        return None
    size, factor = shape[grown[0]], other[grown[0]] - shape[grown[0]]
    return BatchAxis(grown[0], factor) if size == TRACE_BATCH * factor else None


def _name_nodes_after_onnx(graph_module: fx.GraphModule, proto: Any) -> dict[str, str]:
    """Let errors about a node name its ONNX op type and node name; returns the ONNX
    node name of each module onnx2torch made (by its module path)."""
    from onnx2torch.onnx_graph import OnnxGraph

    onnx_nodes = OnnxGraph(proto.graph).nodes
    counts: dict[str, int] = {}
    for onnx_node in onnx_nodes.values():
        counts[onnx_node.proto.name] = counts.get(onnx_node.proto.name, 0) + 1
    names = {
        target: onnx_node.proto.name if onnx_node.proto.name and counts[onnx_node.proto.name] == 1
        else target
        for target, onnx_node in onnx_nodes.items()
    }
    for node in graph_module.graph.nodes:
        if node.op != "call_module":
            continue
        onnx_node = onnx_nodes.get(node.target.split(".")[0])
        if onnx_node is not None:
            node.meta["nn_module_stack"] = {
                "onnx": (names[onnx_node.unique_name], f"ONNX op type {onnx_node.operation_type}")}
    return names


def _refuse_unknown_modules(graph_module: fx.GraphModule) -> None:
    from innsight.converter.torch_ops import MODULES

    for node in graph_module.graph.nodes:
        module = graph_module.get_submodule(node.target) if node.op == "call_module" else None
        if module is not None and type(module) not in MODULES:
            name, op_type = node.meta.get("nn_module_stack", {}).get("onnx", (node.target, "?"))
            raise ConversionError(
                f"ONNX node '{name}' ({op_type.replace('ONNX ', '')}) is not supported: "
                f"onnx2torch reads it as {type(module).__name__}, which has no layer "
                f"in innsight. {ONNX_HINT}"
            )


def _name_layers(description: dict[str, Any], onnx_names: dict[str, str],
                 input_names: list[str], output_names: list[str]) -> None:
    """Layers take the names of the ONNX nodes they come from (a layer named after
    module path ``p`` plus a suffix gets the ONNX name of ``p`` plus that suffix);
    input and output layers take the names of the graph's inputs and outputs."""
    layers = description["layers"]
    targets = sorted(onnx_names, key=len, reverse=True)  # longest module path first
    for layer in layers:
        target = next((t for t in targets if layer["name"].startswith(t)), None)
        if target is not None:
            layer["name"] = onnx_names[target] + layer["name"][len(target):]
    for node, name in zip(description["input_nodes"], input_names):
        layers[node]["name"] = name
    inputs = set(description["input_nodes"])
    for node, name in zip(description["output_nodes"], output_names):
        if node not in inputs:
            layers[node]["name"] = name


def _torch_runner(graph_module: fx.GraphModule) -> Callable[[list[Tensor]], list[Tensor]]:
    def run(xs: list[Tensor]) -> list[Tensor]:
        with torch.no_grad():
            out = graph_module(*xs)
        return list(out) if isinstance(out, (tuple, list)) else [out]

    return run


# ---- the original, run by onnxruntime -----------------------------------------------------------


def _onnxruntime_runner(
    proto: Any, inputs: list[Any], batch_sizes: list[int | None]
) -> Callable[[list[Tensor]], list[Tensor]] | None:
    """Runs the model as given with onnxruntime (``None`` where it is not installed).

    A model with a fixed batch size of 1 is run one sample at a time.
    """
    try:
        import onnxruntime
    except ImportError:
        return None
    from onnx.helper import tensor_dtype_to_np_dtype

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = torch.get_num_threads()  # as many threads as torch uses
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(proto.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    names = [value.name for value in inputs]
    dtypes = [tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type) for value in inputs]
    one_by_one = any(b is not None for b in batch_sizes)

    def run(xs: list[Tensor]) -> list[Tensor]:
        arrays = [x.detach().cpu().numpy().astype(dtype) for x, dtype in zip(xs, dtypes)]
        rows = [slice(i, i + 1) for i in range(len(arrays[0]))] if one_by_one else [slice(None)]
        parts = [session.run(None, {n: a[r] for n, a in zip(names, arrays)}) for r in rows]
        return [torch.from_numpy(np.concatenate([part[k] for part in parts]))
                for k in range(len(parts[0]))]

    return run

