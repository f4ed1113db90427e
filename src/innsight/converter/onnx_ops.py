"""onnx2torch's own module types, mapped to layers in the torch front-end's registry.

onnx2torch turns most ONNX nodes into plain ``torch.nn`` modules (``Conv`` into
``nn.Conv2d``, ``Gemm`` into ``nn.Linear``, ``Relu`` into ``nn.ReLU``, ...),
which :mod:`innsight.converter.torch_ops` already knows. The rest become
onnx2torch modules (``OnnxBinaryMathOperation``, ``OnnxReshape``,
``OnnxPadDynamic``, ...); importing this module registers a handler for each
of them in :data:`~innsight.converter.torch_ops.MODULES`, so that ONNX models
go through the same translator as torch models. Importing it needs onnx2torch.

Tensor arguments that do not depend on the model input (shapes, pads, axes,
weights) arrive here as constants: the ONNX front-end folds them first.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from onnx2torch.node_converters import (
    activations,
    batch_norm,
    binary_math_operations,
    cast,
    clip,
    concat,
    dropout,
    einsum,
    flatten,
    functions,
    gather,
    gemm,
    global_average_pool,
    identity,
    layer_norm,
    matmul,
    neg,
    pad,
    reduce,
    reshape,
    resize,
    slice as onnx_slice,
    split,
    squeeze,
    sum as onnx_sum,
    transpose,
    unsqueeze,
)
from torch import Tensor, fx

from innsight.converter.torch_ops import (
    BATCH_AXIS_HANDLERS,
    FUNCTIONS,
    MODULES,
    Split,
    alias_input,
    arg,
    emit_activation,
    emit_einsum,
    emit_interpolation,
    emit_layer_norm,
    emit_permutation,
    matrix_product,
)


def _register(*types: type) -> Any:
    def add(handler: Any) -> Any:
        for cls in types:
            MODULES[cls] = handler
        return handler

    return add


def _constant_arg(t: Any, node: fx.Node, value: Any, what: str) -> Tensor | float:
    """A constant argument (folded tensor or number), or an error naming ``what``."""
    const = t.constant(value)
    if const is None:
        raise t.unsupported(node, f"a {what} computed from the model input")
    return const


def _ints(value: Tensor | float) -> list[int]:
    return [int(v) for v in torch.as_tensor(value).flatten().tolist()]


# ---- resizing -----------------------------------------------------------------------------------


@_register(resize.OnnxResize)
def _resize(t: Any, node: fx.Node) -> int:
    """``Resize`` (opset 11+): ``F.interpolate`` by the constant ``scales`` (batch and
    channel scales 1), else to the traced output size (``sizes``)."""
    m = t.module(node)
    scales = arg(node, 2, "scales", None)
    factors = None if scales is None else _constant_arg(t, node, scales, "Resize scale")
    by_size = factors is None or torch.as_tensor(factors).numel() == 0
    modes = {"nearest": "nearest", "linear": "linear"}
    return emit_interpolation(t, node, None if by_size else torch.as_tensor(
        factors).flatten()[2:].tolist(), modes.get(m.onnx_mode, m.onnx_mode), m.align_corners,
        by_size)


# ---- skipped ------------------------------------------------------------------------------------


_register(identity.OnnxCopyIdentity, dropout.OnnxDropoutDynamic)(alias_input)


@_register(cast.OnnxCast)
def _cast(t: Any, node: fx.Node) -> int:
    if not t.module(node).torch_dtype.is_floating_point:
        raise t.unsupported(node, f"a cast of the data to {t.module(node).torch_dtype}")
    return alias_input(t, node)


# ---- weighted and arithmetic --------------------------------------------------------------------

#: ONNX Add/Sub/Mul/Div as the torch functions whose handlers convert them.
_BINARY = {
    binary_math_operations._TORCH_FUNCTION_FROM_ONNX_TYPE[name]: torch_fn
    for name, torch_fn in [("Add", torch.add), ("Sub", torch.sub), ("Mul", torch.mul),
                           ("Div", torch.div)]
}


@_register(binary_math_operations.OnnxBinaryMathOperation)
def _binary(t: Any, node: fx.Node) -> int:
    m = t.module(node)
    if m.broadcast == 1 and m.axis is not None:
        raise t.unsupported(node, "old-style broadcasting (broadcast=1 with an axis)")
    return FUNCTIONS[_BINARY[m.math_op_function]](t, node)


_register(neg.OnnxNeg)(FUNCTIONS[torch.neg])


@_register(onnx_sum.OnnxSum)
def _sum(t: Any, node: fx.Node) -> int:
    tensors = list(node.args)
    return t.layer(tensors[0]) if len(tensors) == 1 else t.emit(node, "Add", tensors)


@_register(gemm.OnnxGemm)
def _gemm(t: Any, node: fx.Node) -> int:
    """``alpha * a @ b + beta * c`` with constant ``b`` and ``c``: a dense layer."""
    m = t.module(node)
    b = _constant_arg(t, node, node.args[1], "Gemm weight")
    c = arg(node, 2, "input_c", None)
    if m.trans_a or not isinstance(b, Tensor) or b.ndim != 2:
        raise t.unsupported(node, "Gemm other than data @ constant matrix (transA=0)")
    weight = (b if m.trans_b else b.T) * m.alpha
    bias = None
    if c is not None:
        c = _constant_arg(t, node, c, "Gemm bias")
        bias = torch.as_tensor(c, dtype=weight.dtype) * m.beta
        if bias.numel() == 1:
            bias = bias.reshape(1).expand(weight.shape[0])
        if bias.numel() != weight.shape[0]:
            raise t.unsupported(node, f"a Gemm bias of shape {list(bias.shape)}")
        bias = bias.reshape(-1)
    return t.emit(node, "Dense", [node.args[0]], weight=weight, bias=bias)


@_register(matmul.OnnxMatMul)
def _matmul(t: Any, node: fx.Node) -> int:
    """``x @ W`` with a constant matrix ``W`` (in, out): a dense layer without bias;
    a product of two tensors as in the torch front-end."""
    x, w = node.args
    if t.is_tensor(x) and t.is_tensor(w):
        return matrix_product(t, node)
    weight = t.constant(w)
    if not t.is_tensor(x) or not isinstance(weight, Tensor) or weight.ndim != 2:
        raise t.unsupported(node, "MatMul other than data @ constant matrix")
    return t.emit(node, "Dense", [x], weight=weight.T)


@_register(einsum.OnnxEinsum)
def _einsum(t: Any, node: fx.Node) -> int:
    return emit_einsum(t, node, t.module(node).equation, list(node.args))


@_register(batch_norm.OnnxBatchNorm)
def _batch_norm(t: Any, node: fx.Node) -> int:
    x, *params = node.args
    weight, bias, mean, var = (_constant_arg(t, node, p, "batch norm parameter") for p in params)
    return t.emit(node, "BatchNorm", [x], running_mean=mean, running_var=var, weight=weight,
                  bias=bias, eps=t.module(node).epsilon)


@_register(layer_norm.OnnxLayerNorm)
def _layer_norm(t: Any, node: fx.Node) -> int:
    """LayerNormalization over the axes from ``axis`` on, with a scale (and bias) that
    onnx2torch found no initializer for: folded into constants here. (With initializers,
    onnx2torch builds an ``nn.LayerNorm``.)"""
    m, source = t.module(node), node.args[0]
    first = t.axis(source, m.axis)
    scale = _constant_arg(t, node, node.args[1], "LayerNormalization scale")
    bias = arg(node, 2, "bias", None)
    bias = None if bias is None else _constant_arg(t, node, bias, "LayerNormalization bias")
    return emit_layer_norm(t, node, len(t.shape(source)) - first, scale, bias, m.epsilon)


# ---- activations --------------------------------------------------------------------------------


#: onnx2torch's elementwise functions that are activations, by activation name.
_FUNCTION_ACTIVATIONS = {torch.tanh: "tanh", torch.exp: "exp"}


@_register(functions.OnnxFunction)
def _function(t: Any, node: fx.Node) -> int:
    """An elementwise function: ``Tanh`` and ``Exp`` become activations; the others
    (``Abs``, ``Log``, ``Cos``, ...) are refused, except where they spell an activation
    that :func:`fuse_activations` fused first."""
    function = t.module(node).function
    if function not in _FUNCTION_ACTIVATIONS:
        raise t.unsupported(node, f"the function {function.__name__}")
    return emit_activation(t, node, _FUNCTION_ACTIVATIONS[function])


@_register(activations.OnnxHardSigmoid)
def _hard_sigmoid(t: Any, node: fx.Node) -> int:
    """``clip(alpha * x + beta, 0, 1)``; torch's hardsigmoid where alpha = 1/6, beta = 1/2."""
    m = t.module(node)
    if math.isclose(m.alpha, 1 / 6, rel_tol=1e-6) and m.beta == 0.5:
        return emit_activation(t, node, "hardsigmoid")
    scaled = t.emit(node, "Affine", [node.args[0]], suffix="_affine", scale=float(m.alpha),
                    shift=float(m.beta))
    return t.emit(node, "Activation", [scaled], act_name="hardtanh", min_val=0.0, max_val=1.0)


@_register(activations.OnnxPReLU)
def _prelu(t: Any, node: fx.Node) -> int:
    """PReLU with one slope for all channels: a leaky relu."""
    slope = torch.as_tensor(_constant_arg(t, node, node.args[1], "PReLU slope"))
    if slope.numel() != 1:
        raise t.unsupported(node, f"PReLU with {slope.numel()} slopes (one per channel)",
                            "Supported: a single slope (a leaky relu). ")
    return emit_activation(t, node, "leaky_relu", negative_slope=float(slope))


@_register(activations.OnnxSoftmaxV1V11)
def _softmax_v1(t: Any, node: fx.Node) -> int:
    """``Softmax`` before opset 13 over the last axis; ``LogSoftmax`` and softmax over
    several flattened axes are refused."""
    m, source = t.module(node), node.args[0]
    ndim = len(t.shape(source)) + 1
    if m.is_log or m.axis % ndim != ndim - 1:
        raise t.unsupported(node, f"{'log-' if m.is_log else ''}softmax over the flattened "
                            f"axes from {m.axis} on", "Supported: softmax over the last axis. ")
    return emit_activation(t, node, "softmax", axis=t.axis(source, -1))


@_register(clip.OnnxClip)
def _clip(t: Any, node: fx.Node) -> int:
    """``Clip`` with both bounds (a hardtanh) or with ``min=0`` alone (a relu)."""
    low, high = t.module(node).min_val, t.module(node).max_val
    if low is not None and high is not None:
        return emit_activation(t, node, "hardtanh", min_val=float(low), max_val=float(high))
    if low == 0:
        return emit_activation(t, node, "relu")
    raise t.unsupported(node, f"Clip(min={low!r}, max={high!r})",
                        "Supported: both bounds, or min=0 alone (relu). ")



# ---- pooling and reduction ----------------------------------------------------------------------


@_register(global_average_pool.OnnxGlobalAveragePool,
           global_average_pool.OnnxGlobalAveragePoolWithKnownInputShape)
def _global_average_pool(t: Any, node: fx.Node) -> int:
    n = len(t.shape(node.args[0])) - 1
    return t.emit(node, f"AdaptiveAvgPool{n}D", [node.args[0]], output_size=[1] * n)


@_register(reduce.OnnxReduceStaticAxes, reduce.OnnxReduceSumStaticAxes)
def _reduce(t: Any, node: fx.Node) -> int:
    """``ReduceMean`` and ``ReduceSum`` over given axes; the other reductions are
    refused."""
    m, source = t.module(node), node.args[0]
    op = getattr(m, "operation_type", "ReduceSum")
    axes = m.axes if hasattr(m, "axes") else m._axes
    keepdims = bool(m.keepdims if hasattr(m, "keepdims") else m._keepdims)
    if op not in ("ReduceMean", "ReduceSum") or not axes:
        raise t.unsupported(node, f"{op} over {'all axes' if not axes else f'axes {axes}'}",
                            "Supported: ReduceMean and ReduceSum over given sample axes. ")
    sample_axes = [t.axis(source, a) for a in axes]
    if op == "ReduceMean":
        return t.emit(node, "Mean", [source], axes=sample_axes, keepdims=keepdims)
    mean = t.emit(node, "Mean", [source], suffix="_mean", axes=sample_axes, keepdims=keepdims)
    count = math.prod(t.shape(source)[a] for a in sample_axes)
    return t.emit(node, "Affine", [mean], scale=float(count))


# ---- shape-only ---------------------------------------------------------------------------------


_register(reshape.OnnxReshape, flatten.OnnxFlatten, squeeze.OnnxSqueezeStaticAxes,
          squeeze.OnnxSqueezeDynamicAxes, unsqueeze.OnnxUnsqueezeStaticAxes,
          unsqueeze.OnnxUnsqueezeDynamicAxes)(FUNCTIONS[torch.reshape])


@_register(transpose.OnnxTranspose)
def _transpose(t: Any, node: fx.Node) -> int:
    """A permutation; the batch axis goes where it sends it (time-first around recurrent
    nodes) and must end up first again before the output or a batch-first operation."""
    ndim = len(node.meta["tensor_meta"].shape)
    perm = t.module(node).perm
    return emit_permutation(t, node, list(range(ndim))[::-1] if perm is None else list(perm))


BATCH_AXIS_HANDLERS[_transpose] = "any"


@_register(concat.OnnxConcat)
def _concat(t: Any, node: fx.Node) -> int:
    tensors = list(node.args)
    if len(tensors) == 1:
        return t.layer(tensors[0])
    return t.emit(node, "Concatenate", tensors, axis=t.axis(node, t.module(node).axis))


@_register(split.OnnxSplit13, split.OnnxSplit)
def _split(t: Any, node: fx.Node) -> Split:
    source = node.args[0]
    axis = t.axis(source, t.module(node).axis)
    sizes = [meta.shape[axis + 1] for meta in node.meta["tensor_meta"]]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return Split(source, axis, tuple((s, s + n) for s, n in zip(starts, sizes)))


@_register(onnx_slice.OnnxSlice)
def _slice(t: Any, node: fx.Node) -> int:
    source = node.args[0]
    shape = t.shape(source)
    ndim = len(shape) + 1
    names = ["starts", "ends", "axes", "steps"]
    given = {name: arg(node, i + 1, name, None) for i, name in enumerate(names)}
    values = {name: None if v is None else _ints(_constant_arg(t, node, v, f"slice {name}"))
              for name, v in given.items()}
    starts, ends = values["starts"], values["ends"]
    axes = values["axes"] or list(range(len(starts)))
    steps = values["steps"] or [1] * len(starts)
    ranges = [[0, size, 1] for size in shape]
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis %= ndim
        if step < 1:
            raise t.unsupported(node, f"the slice step {step}", "Steps must be positive. ")
        if axis == 0:
            if start != 0 or end < 2**31 - 1:
                raise t.unsupported(node, "slicing along the batch axis")
            continue
        start, stop, step = slice(start, end, step).indices(shape[axis - 1])
        if stop <= start:
            raise t.unsupported(node, f"an empty slice {start}:{end} on axis {axis}")
        ranges[axis - 1] = [start, stop, step]
    if ranges == [[0, size, 1] for size in shape]:
        return t.layer(source)
    return t.emit(node, "Slice", [source], ranges=ranges)


@_register(gather.OnnxGather)
def _gather(t: Any, node: fx.Node) -> int:
    """``x[:, ..., i]`` (one index: the axis goes) or ``x[:, ..., a:b:s]`` (indices evenly
    spaced: the axis stays) with constant indices along a sample axis."""
    source = node.args[0]
    shape = t.shape(source)
    axis = t.axis(source, t.module(node)._axis)
    index = torch.as_tensor(_constant_arg(t, node, node.args[1], "Gather index"))
    if index.is_floating_point() or index.ndim > 1:
        raise t.unsupported(node, f"Gather with indices of shape {list(index.shape)}",
                            "Supported: one index or a 1-D list of evenly spaced ones. ")
    positions = [int(i) % shape[axis] for i in index.flatten().tolist()]
    step = positions[1] - positions[0] if len(positions) > 1 else 1
    evenly = list(range(positions[0], positions[0] + step * len(positions), step))
    if step < 1 or positions != evenly:
        raise t.unsupported(node, f"Gather of the positions {positions}",
                            "Supported: evenly spaced increasing positions. ")
    ranges = [[0, size, 1] for size in shape]
    ranges[axis] = [positions[0], positions[-1] + 1, step]
    sliced = t.emit(node, "Slice", [source], suffix="_slice" if index.ndim == 0 else "",
                    ranges=ranges)
    if index.ndim == 0:  # the axis goes
        return t.emit(node, "Reshape", [sliced], shape=list(t.shape(node)))
    return sliced


# ---- padding ------------------------------------------------------------------------------------


def _padding(t: Any, node: fx.Node, pairs: list[list[int]], mode: str, value: float) -> int:
    """Pad with one ``[before, after]`` pair per axis of the batched tensor, first axis first."""
    if pairs and pairs[0] != [0, 0]:
        raise t.unsupported(node, "padding along the batch axis")
    pairs = pairs[1:]
    while pairs and pairs[0] == [0, 0]:
        pairs = pairs[1:]
    if any(v < 0 for pair in pairs for v in pair):
        raise t.unsupported(node, f"negative padding {pairs} (cropping)")
    if not pairs:
        return t.layer(node.args[0])
    return t.emit(node, "Padding", [node.args[0]], padding=pairs, mode=mode,
                  value=float(value) if mode == "constant" else 0.0)


@_register(pad.OnnxPadStatic)
def _pad_static(t: Any, node: fx.Node) -> int:
    m = t.module(node)
    torch_pads = list(m.pads)  # F.pad order: last axis first
    pairs = [[torch_pads[2 * i], torch_pads[2 * i + 1]]
             for i in reversed(range(len(torch_pads) // 2))]
    ndim = len(t.shape(node.args[0])) + 1
    pairs = [[0, 0]] * (ndim - len(pairs)) + pairs
    return _padding(t, node, pairs, m.mode, m.constant_value)


@_register(pad.OnnxPadDynamic)
def _pad_dynamic(t: Any, node: fx.Node) -> int:
    pads = _ints(_constant_arg(t, node, node.args[1], "padding"))
    value = arg(node, 2, "constant_value", None)
    fill = 0.0 if value is None else _constant_arg(t, node, value, "pad value")
    value = float(torch.as_tensor(fill))
    n = len(pads) // 2  # ONNX order: all begins, then all ends, first axis first
    return _padding(t, node, [[pads[i], pads[n + i]] for i in range(n)], t.module(node).mode, value)


# ---- activations that ONNX (before opset 20) spells out -----------------------------------------


def fuse_activations(graph_module: fx.GraphModule) -> None:
    """Replace the ONNX spellings of SiLU (``x * Sigmoid(x)``), exact GELU
    (``x * (Erf(x / sqrt 2) + 1) * 0.5``), LogSigmoid (``Log(Sigmoid(x))``) and Softsign
    (``x / (Abs(x) + 1)``) by their torch modules, so that they become the activation
    layers a torch model's become (rule-based methods treat an activation differently
    from a product or quotient of two tensors).

    Runs after constant folding (constants are attributes of the graph).
    """
    graph = graph_module.graph
    for node in list(graph.nodes):
        for module_type, match in ((torch.nn.SiLU, _silu_input), (torch.nn.GELU, _gelu_input),
                                   (torch.nn.LogSigmoid, _logsigmoid_input),
                                   (torch.nn.Softsign, _softsign_input)):
            x = match(graph_module, node)
            if x is None:
                continue
            target = f"{node.target}_{module_type.__name__.lower()}"
            graph_module.add_submodule(target, module_type().eval())
            with graph.inserting_before(node):
                fused = graph.call_module(target, (x,))
            fused.meta.update(node.meta)
            node.replace_all_uses_with(fused)
            break
    graph.eliminate_dead_code()
    graph_module.recompile()


def fuse_group_norms(graph_module: fx.GraphModule) -> None:
    """Replace the ONNX spelling of group norm (``torch.onnx.export`` up to opset 20:
    ``Reshape`` to ``(B, G, -1)``, ``InstanceNormalization`` with unit scale and zero
    bias, ``Reshape`` back, ``Mul`` by the per-channel scale, ``Add`` of the shift) by an
    ``nn.GroupNorm``, so that it becomes the layers of a torch model's group norm (LRP
    rules act per layer: five layers would give other epsilon and alpha-beta relevances
    than one).

    Runs after constant folding (uses ``meta["traced_shape"]``).
    """
    graph = graph_module.graph
    for node in list(graph.nodes):
        parts = _group_norm_parts(graph_module, node)
        if parts is None:
            continue
        x, norm, weight, bias = parts
        target = f"{node.target}_groupnorm"
        module = torch.nn.GroupNorm(norm.num_features, weight.numel(), eps=norm.eps)
        with torch.no_grad():
            module.weight.copy_(weight.flatten())
            module.bias.copy_(bias.flatten())
        graph_module.add_submodule(target, module.eval())
        with graph.inserting_before(node):
            fused = graph.call_module(target, (x,))
        fused.meta.update(node.meta)
        node.replace_all_uses_with(fused)
    graph.eliminate_dead_code()
    graph_module.recompile()


def _group_norm_parts(gm: fx.GraphModule, node: fx.Node) -> tuple[Any, Any, Tensor, Tensor] | None:
    """``(x, instance norm, scale, shift)`` of ``Add(Mul(Reshape(InstanceNorm(Reshape(x))),
    scale), shift)`` (operands in either order) where it is a group norm of ``x``."""
    terms = _match_binary(gm, node, "Add")
    for scaled, shift in ((terms, terms[::-1]) if terms else ()):
        product = _match_binary(gm, scaled, "Mul")
        for back, scale in ((product, product[::-1]) if product else ()):
            norm = back.args[0] if _is_module(gm, back, reshape.OnnxReshape) else None
            grouped = norm.args[0] if _is_module(gm, norm, torch.nn.InstanceNorm1d) else None
            if not _is_module(gm, grouped, reshape.OnnxReshape):
                continue
            x, module = grouped.args[0], gm.get_submodule(norm.target)
            shape = x.meta.get("traced_shape")
            values = [_constant_value(gm, v) for v in (scale, shift)]
            if (shape is None or len(shape) < 3 or back.meta.get("traced_shape") != shape
                    or any(v is None or v.numel() != shape[1] for v in values)
                    or any(len(n.users) != 1 for n in (grouped, norm, back, scaled))):
                continue
            groups = module.num_features
            per_channel = all(v.reshape((1,) * (len(shape) - v.ndim) + tuple(v.shape)).shape
                              == (1, shape[1], *[1] * (len(shape) - 2)) for v in values)
            unit = module.weight is None or (bool((module.weight == 1).all())
                                             and bool((module.bias == 0).all()))
            if per_channel and unit and grouped.meta.get("traced_shape") == (
                    shape[0], groups, math.prod(shape[1:]) // groups):
                return x, module, values[0], values[1]
    return None


def _constant_value(gm: fx.GraphModule, node: Any) -> Tensor | None:
    """The value of a constant attribute of the graph, else ``None``."""
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        return None
    value: Any = gm
    for part in node.target.split("."):
        value = getattr(value, part)
    return value if isinstance(value, Tensor) else None


_ONNX_MATH = binary_math_operations._TORCH_FUNCTION_FROM_ONNX_TYPE


def _match_binary(gm: fx.GraphModule, node: Any, op_type: str) -> tuple[Any, Any] | None:
    """The two operands if ``node`` is the ONNX binary operation ``op_type``."""
    if not isinstance(node, fx.Node) or node.op != "call_module" or len(node.args) != 2:
        return None
    module = gm.get_submodule(node.target)
    if not isinstance(module, binary_math_operations.OnnxBinaryMathOperation):
        return None
    if module.math_op_function is not _ONNX_MATH[op_type] or module.broadcast == 1:
        return None
    return node.args[0], node.args[1]


def _is_module(gm: fx.GraphModule, node: Any, cls: type) -> bool:
    return (isinstance(node, fx.Node) and node.op == "call_module"
            and isinstance(gm.get_submodule(node.target), cls))


def _scalar(gm: fx.GraphModule, node: Any) -> float | None:
    """The value of a one-element constant attribute, else ``None``."""
    value = _constant_value(gm, node)
    return float(value) if value is not None and value.numel() == 1 else None


def _silu_input(gm: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    """``x`` of ``Mul(x, Sigmoid(x))`` (either order)."""
    operands = _match_binary(gm, node, "Mul")
    if operands is None:
        return None
    for x, gate in (operands, operands[::-1]):
        if _is_module(gm, gate, torch.nn.Sigmoid) and gate.args[0] is x:
            return x
    return None


def _logsigmoid_input(gm: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    """``x`` of ``Log(Sigmoid(x))``."""
    if not _is_module(gm, node, functions.OnnxFunction) or (
            gm.get_submodule(node.target).function is not torch.log):
        return None
    gate = node.args[0]
    return gate.args[0] if _is_module(gm, gate, torch.nn.Sigmoid) else None


def _softsign_input(gm: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    """``x`` of ``Div(x, Add(Abs(x), 1))`` (operands of the sum in either order)."""
    quotient = _match_binary(gm, node, "Div")
    if quotient is None or (terms := _match_binary(gm, quotient[1], "Add")) is None:
        return None
    x = quotient[0]
    for absolute, one in (terms, terms[::-1]):
        if (_scalar(gm, one) == 1.0 and _is_module(gm, absolute, functions.OnnxFunction)
                and gm.get_submodule(absolute.target).function is torch.abs
                and absolute.args[0] is x):
            return x
    return None


def _gelu_input(gm: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    """``x`` of ``Mul(Mul(x, Add(Erf(Div(x, sqrt 2)), 1)), 0.5)`` (operands in either order)."""
    outer = _match_binary(gm, node, "Mul")
    if outer is None:
        return None
    for inner, half in (outer, outer[::-1]):
        if _scalar(gm, half) != 0.5 or (product := _match_binary(gm, inner, "Mul")) is None:
            continue
        for x, shifted in (product, product[::-1]):
            terms = _match_binary(gm, shifted, "Add")
            if terms is None:
                continue
            for erf, one in (terms, terms[::-1]):
                if _scalar(gm, one) != 1.0 or not _is_module(gm, erf, activations.OnnxErf):
                    continue
                scaled = _match_binary(gm, erf.args[0], "Div")
                if scaled is not None and scaled[0] is x and math.isclose(
                        _scalar(gm, scaled[1]) or 0.0, math.sqrt(2), rel_tol=1e-6):
                    return x
    return None
