"""The torch operations the converter understands, keyed by module type, function or method name.

A handler receives the translator (see :mod:`innsight.converter.torch_fx`)
and one traced node. It emits layer entries with ``t.emit`` and returns the
index of the layer holding the node's value, a :class:`Split` for
``chunk``/``split`` or an :class:`Outputs` for a tuple, whose pieces later
``getitem`` nodes take. Values that do not depend on the inputs' values (parameters,
position tables, constants expanded to the batch) never reach a handler: they fold
into constants that handlers read with ``t.constant``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from innsight.converter.attention import Emit, emit_attention, emit_multi_head_attention
from innsight.converter.einsum import (
    emit_einsum_product,
    emit_linear_einsum,
    parse_equation,
    unused_letter,
)
from innsight.converter.errors import ConversionError
from innsight.converter.mutations import TO_THE_END, assign_into, target_name
from innsight.converter.normalization import emit_group_norm
from innsight.converter.recurrent import (
    emit_constant_state,
    emit_gru,
    emit_lstm,
    emit_rnn,
    stack_states,
)


@dataclass(frozen=True)
class Split:
    """The pieces of ``chunk``/``split``: piece ``i`` spans ``bounds[i]`` on sample ``axis``."""

    source: fx.Node
    axis: int
    bounds: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Outputs:
    """The tensors of a node returning a tuple (``nn.MultiheadAttention``): the layer
    holding element ``i``, or ``None`` where that element is not converted."""

    layers: tuple[int | None, ...]


Handler = Callable[[Any, fx.Node], "int | Split | Outputs"]
MODULES: dict[type, Handler] = {}
FUNCTIONS: dict[Callable[..., Any], Handler] = {}
METHODS: dict[str, Handler] = {}
#: Functions of other libraries that ``torch.fx.wrap`` keeps as graph leaves,
#: by qualified name (so those libraries need not be imported here).
FUNCTIONS_BY_NAME: dict[str, Handler] = {}


#: Handlers that follow a batch axis moved or merged by shape operations of a
#: ``torch.export`` graph (see :class:`~innsight.converter.torch_fx.BatchAxis`):
#: ``"same"`` for operations whose tensor operands and result have it in the same place
#: (elementwise and last-axes operations, which the layers then apply batch-first),
#: ``"any"`` for the shape operations that move it, ``"entries"`` for channels-first
#: operations that also run where the batch axis is first but merges entries of each
#: sample into it (see :func:`emit_per_entry`). Other handlers get batch-first tensors.
BATCH_AXIS_HANDLERS: dict[Handler, str] = {}


def _follows_batch_axis(kind: str) -> Callable[[Handler], Handler]:
    """Decorator: the handler's entry ``kind`` in :data:`BATCH_AXIS_HANDLERS`."""

    def mark(handler: Handler) -> Handler:
        BATCH_AXIS_HANDLERS[handler] = kind
        return handler

    return mark


def _register(table: dict, *keys: Any) -> Callable[[Handler], Handler]:
    def add(handler: Handler) -> Handler:
        for key in keys:
            if key is not None:
                table[key] = handler
        return handler

    return add


_NO_DEFAULT = object()


def arg(node: fx.Node, position: int | None, name: str, default: Any = _NO_DEFAULT) -> Any:
    """Argument ``name`` of a call, given by position or keyword."""
    if position is not None and len(node.args) > position:
        return node.args[position]
    if name in node.kwargs:
        return node.kwargs[name]
    if default is _NO_DEFAULT:
        raise ConversionError(f"node '{node.name}' ({node.target}) misses its argument '{name}'.")
    return default


def _nn(*names: str) -> list[type]:
    """The ``torch.nn`` classes of these names that this torch version has."""
    return [getattr(nn, name) for name in names if hasattr(nn, name)]


# ---- skipped operations: the node's value is its input's -----------------------


@_follows_batch_axis("same")
def alias_input(t: Any, node: fx.Node) -> int:
    """Handler of a skipped operation: the layer holding its first argument."""
    return t.layer(node.args[0])


_register(MODULES, *_nn(
    "Identity", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout",
    "FeatureAlphaDropout",
))(alias_input)
_register(FUNCTIONS, torch.clone)(alias_input)
_register(METHODS, "contiguous", "clone")(alias_input)


@_register(METHODS, "to", "float", "double", "type_as")
@_follows_batch_axis("same")
def _cast(t: Any, node: fx.Node) -> int:
    """A cast to a floating dtype (Hugging Face's norms compute in float32): skipped, as
    the converted model computes in one dtype of its own; other casts are refused."""
    if node.target in ("float", "double", "type_as"):
        return alias_input(t, node)
    dtype = next((a for a in (*node.args[1:], node.kwargs.get("dtype"))
                  if isinstance(a, torch.dtype)), None)
    if dtype is not None and not dtype.is_floating_point:
        raise t.unsupported(node, f"a cast of a tensor computed from the inputs to {dtype}",
                            "Only casts between floating dtypes convert. ")
    return alias_input(t, node)


def _random_in_training(position: int) -> Handler:
    """Handler for dropout-like functions: skipped when called with ``training=False``."""

    @_follows_batch_axis("same")
    def handler(t: Any, node: fx.Node) -> int:
        if arg(node, position, "training", True) is not False:
            raise t.unsupported(node, f"{node.target.__name__} with training=True",
                                "It stays random in eval mode; pass training=self.training. ")
        return alias_input(t, node)

    return handler


_register(FUNCTIONS, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
          F.feature_alpha_dropout)(_random_in_training(2))
FUNCTIONS_BY_NAME["torchvision.ops.stochastic_depth.stochastic_depth"] = _random_in_training(3)


# ---- weighted layers -----------------------------------------------------------


@_register(MODULES, nn.Linear,
           getattr(nn.modules.linear, "NonDynamicallyQuantizableLinear", None))  # attention's
@_follows_batch_axis("same")
def _linear_module(t: Any, node: fx.Node) -> int:
    m = t.module(node)
    return emit_dense(t, node, m.weight, m.bias)


def emit_dense(t: Any, node: fx.Node, weight: Tensor, bias: Tensor | None,
               source: fx.Node | None = None) -> int:
    """A Dense layer on the last axis of ``source`` (by default the node's first argument)."""
    source = node.args[0] if source is None else source
    t.axis(source, -1)  # refuses a batch axis moved last
    return t.emit(node, "Dense", [source], weight=weight, bias=bias)


@_register(FUNCTIONS, torch.addmm, torch.mm)
@_register(METHODS, "mm")
@_follows_batch_axis("same")
def _matrix_by_constant(t: Any, node: fx.Node) -> int:
    """``torch.addmm(bias, x, w)`` or ``torch.mm(x, w)`` with constant ``w`` and bias (GPT-2's
    Conv1D): a Dense layer with weight ``w^T``."""
    adding = len(node.args) == 3  # addmm(bias, x, w); mm(x, w)
    bias, x, weight = (node.args if adding else (None, *node.args))[:3]
    weight, bias = t.constant(weight), None if bias is None else t.constant(bias)
    scales = [arg(node, None, name, 1) for name in ("beta", "alpha")] if adding else [1, 1]
    if not t.is_tensor(x) or not isinstance(weight, Tensor) or scales != [1, 1] or (
            adding and not isinstance(bias, Tensor)):
        raise t.unsupported(node, "a matrix product other than a tensor by a constant matrix "
                            "(plus a constant bias)")
    return emit_dense(t, node, weight.T, bias, source=x)


@_register(FUNCTIONS, F.linear)
@_follows_batch_axis("same")
def _functional_linear(t: Any, node: fx.Node) -> int:
    weight = t.constant(arg(node, 1, "weight"))
    bias = arg(node, 2, "bias", None)
    bias = None if bias is None else t.constant(bias)
    if not isinstance(weight, Tensor) or (bias is not None and not isinstance(bias, Tensor)):
        raise t.unsupported(node, "F.linear with weights computed in forward")
    return emit_dense(t, node, weight, bias)


def _conv_padding(padding: Any, kernel: Sequence[int], dilation: Sequence[int]) -> list[list[int]]:
    """Torch's convolution ``padding`` (``"valid"``, ``"same"``, an int or one per axis)
    as ``[before, after]`` per spatial axis."""
    if padding == "valid":
        return [[0, 0] for _ in kernel]
    if padding == "same":
        totals = [d * (k - 1) for d, k in zip(dilation, kernel)]
        return [[total // 2, total - total // 2] for total in totals]
    return [[p, p] for p in _per_axis(padding, len(kernel))]


def _per_axis(value: Any, n_axes: int) -> list[int]:
    """An int for every spatial axis, or one per axis, as a list of ``n_axes`` ints."""
    return [value] * n_axes if isinstance(value, int) else list(value)


def emit_per_entry(t: Any, node: fx.Node,
                   emit_layer: Callable[[fx.Node | int, int], int]) -> int:
    """A channels-first layer (convolution, pooling, batch norm) of the node's first
    argument: ``emit_layer(source, extra)`` emits it on ``source`` with ``extra`` more
    leading spatial axes, of kernel size 1.

    Where the batch axis merges ``m`` entries of each sample (``x.reshape(B * m, C, H, W)``,
    one sample ``(m, C, H, W)`` as its layer holds it), the layer runs on
    ``(C, m, H, W)`` with ``extra=1`` and the result is permuted back.
    """
    source = node.args[0]
    if t.batch_axis(source).merged == 1:
        return emit_layer(source, 0)
    swap = [1, 0, *range(2, len(t.shape(source)))]
    source = t.emit(node, "Permute", [source], suffix="_channels_first", perm=swap)
    return t.emit(node, "Permute", [emit_layer(source, 1)], suffix="_entries_first", perm=swap)


def emit_conv(t: Any, node: fx.Node, weight: Tensor, bias: Tensor | None, stride: Any,
              padding: Any, dilation: Any, groups: int, padding_mode: str = "zeros",
              suffix: str = "") -> int:
    """A convolution of the node's first argument; ``stride``, ``padding`` and
    ``dilation`` as torch takes them (an int or one per spatial axis)."""
    n_axes = weight.ndim - 2
    dilation = _per_axis(dilation, n_axes)
    pads = _conv_padding(padding, weight.shape[2:], dilation)

    def conv(source: fx.Node | int, extra: int) -> int:
        padding = [[0, 0]] * extra + pads
        if padding_mode != "zeros":
            source = t.emit(node, "Padding", [source], suffix="_pad", padding=padding,
                            mode=padding_mode)
            padding = [[0, 0]] * (extra + n_axes)
        return t.emit(
            node, f"Conv{n_axes + extra}D", [source], suffix=suffix,
            weight=weight[(slice(None), slice(None), *[None] * extra)], bias=bias,
            stride=[1] * extra + _per_axis(stride, n_axes), padding=padding,
            dilation=[1] * extra + dilation, groups=groups,
        )

    return emit_per_entry(t, node, conv)


@_register(MODULES, nn.Conv1d, nn.Conv2d, nn.Conv3d)
@_follows_batch_axis("entries")
def _conv_module(t: Any, node: fx.Node) -> int:
    m = t.module(node)
    return emit_conv(t, node, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups,
                     m.padding_mode)


def _parameters(t: Any, node: fx.Node, what: str, *args: tuple[int, str, bool]) -> list[Any]:
    """Constant tensor arguments ``(position, name, required)`` of a call (``None`` for
    optional ones not given); refused where one is computed in forward."""
    values = []
    for position, name, required in args:
        given = arg(node, position, name) if required else arg(node, position, name, None)
        value = None if given is None else t.constant(given)
        if given is not None and not isinstance(value, Tensor):
            raise t.unsupported(node, f"{what} with `{name}` computed in forward")
        values.append(value)
    return values


@_register(FUNCTIONS, F.conv1d, F.conv2d, F.conv3d)
@_follows_batch_axis("entries")
def _functional_conv(t: Any, node: fx.Node) -> int:
    """``F.conv2d(x, weight, bias, stride, padding, dilation, groups)`` (also the
    ``aten.conv*d`` of an exported graph, whose arguments are the same)."""
    weight, bias = _parameters(t, node, "a convolution", (1, "weight", True), (2, "bias", False))
    options = [t.static(arg(node, position, name, default)) for position, name, default in
               ((3, "stride", 1), (4, "padding", 0), (5, "dilation", 1), (6, "groups", 1))]
    return emit_conv(t, node, weight, bias, *options)


def emit_batch_norm(t: Any, node: fx.Node, running_mean: Tensor | None,
                    running_var: Tensor | None, weight: Tensor | None, bias: Tensor | None,
                    eps: float) -> int:
    """Batch norm of the node's first argument over its channels, with running statistics."""
    if running_mean is None or running_var is None:
        raise t.unsupported(
            node, "batch norm without running statistics (track_running_stats=False)",
            "It normalises each sample with the statistics of its batch mates. ",
        )
    return emit_per_entry(t, node, lambda source, extra: t.emit(
        node, "BatchNorm", [source], running_mean=running_mean, running_var=running_var,
        weight=weight, bias=bias, eps=float(eps)))


@_register(MODULES, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
@_follows_batch_axis("entries")
def _batch_norm_module(t: Any, node: fx.Node) -> int:
    m = t.module(node)
    return emit_batch_norm(t, node, m.running_mean, m.running_var, m.weight, m.bias, m.eps)


def _functional_batch_norm(positions: dict[str, int]) -> Handler:
    """Handler of a batch-norm function with its arguments at ``positions`` (``F.batch_norm``
    and ``torch.batch_norm`` order them differently); refused in training mode."""

    def handler(t: Any, node: fx.Node) -> int:
        if t.static(arg(node, positions["training"], "training", False)) is not False:
            raise t.unsupported(node, "batch norm with training=True",
                                "It normalises each sample with the statistics of its batch "
                                "mates; pass training=False (or self.training in eval mode). ")
        names = ("running_mean", "running_var", "weight", "bias")
        mean, var, weight, bias = _parameters(
            t, node, "batch norm", *((positions[name], name, False) for name in names))
        eps = t.static(arg(node, positions["eps"], "eps", 1e-5))
        return emit_batch_norm(t, node, mean, var, weight, bias, eps)

    return _follows_batch_axis("entries")(handler)


_register(FUNCTIONS, F.batch_norm)(_functional_batch_norm(
    {"running_mean": 1, "running_var": 2, "weight": 3, "bias": 4, "training": 5, "eps": 7}))
_register(FUNCTIONS, torch.batch_norm)(_functional_batch_norm(
    {"weight": 1, "bias": 2, "running_mean": 3, "running_var": 4, "training": 5, "eps": 7}))


def emit_conv_transpose(t: Any, node: fx.Node, weight: Tensor, bias: Tensor | None,
                        stride: Any, padding: Any, dilation: Any, groups: int) -> int:
    """A transposed convolution of the node's first argument; its ``output_padding`` is
    read off the traced output shape (so ``output_size=`` and ``output_padding=`` alike)."""
    n_axes = weight.ndim - 2
    stride, padding, dilation = (_per_axis(v, n_axes) for v in (stride, padding, dilation))
    sizes_in, sizes_out = t.shape(node.args[0])[1:], t.shape(node)[1:]
    output_padding = [out - ((n - 1) * s - 2 * p + d * (k - 1) + 1) for out, n, s, p, d, k
                      in zip(sizes_out, sizes_in, stride, padding, dilation, weight.shape[2:])]
    return t.emit(node, f"ConvTranspose{n_axes}D", [node.args[0]], weight=weight, bias=bias,
                  stride=stride, padding=padding, output_padding=output_padding,
                  dilation=dilation, groups=groups)


@_register(MODULES, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
def _conv_transpose_module(t: Any, node: fx.Node) -> int:
    m = t.module(node)
    if m.padding_mode != "zeros":
        raise t.unsupported(node, f"a transposed convolution with padding_mode={m.padding_mode!r}")
    return emit_conv_transpose(t, node, m.weight, m.bias, m.stride, m.padding, m.dilation,
                               m.groups)


@_register(FUNCTIONS, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)
def _functional_conv_transpose(t: Any, node: fx.Node) -> int:
    """``F.conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups,
    dilation)`` (groups before dilation, unlike ``F.conv2d``)."""
    weight, bias = _parameters(t, node, "a transposed convolution", (1, "weight", True),
                               (2, "bias", False))
    stride, padding, groups, dilation = (
        t.static(arg(node, position, name, default)) for position, name, default in
        ((3, "stride", 1), (4, "padding", 0), (6, "groups", 1), (7, "dilation", 1)))
    return emit_conv_transpose(t, node, weight, bias, stride, padding, dilation, groups)


def _window_picker(channels: int, kernel: list[int], dtype: torch.dtype) -> Tensor:
    """The weight ``(channels * K, 1, *kernel)`` (``K`` offsets in a kernel window) of a
    convolution with ``groups=channels`` whose output channel ``c * K + j`` is entry ``j``
    of channel ``c``'s window: ``F.unfold``'s order."""
    n = math.prod(kernel)
    return torch.eye(n, dtype=dtype).reshape(n, 1, *kernel).repeat(channels, 1, 1, 1)


@_register(MODULES, nn.Unfold)
@_register(FUNCTIONS, F.unfold)
def _unfold_windows(t: Any, node: fx.Node) -> int:
    """``F.unfold`` (im2col): ``(C * kh * kw, L)`` from ``(C, H, W)``, as a convolution that
    picks each window entry (a linear map: every LRP rule applies), then a reshape."""
    names = ("kernel_size", "dilation", "padding", "stride")
    if node.op == "call_module":
        kernel, dilation, padding, stride = (getattr(t.module(node), a) for a in names)
    else:
        kernel, dilation, padding, stride = (t.static(arg(node, k + 1, a, 0 if k == 2 else 1))
                                             for k, a in enumerate(names))
    source = node.args[0]
    kernel, channels = _per_axis(kernel, 2), t.shape(source)[0]
    weight = _window_picker(channels, kernel, node.meta["tensor_meta"].dtype)
    conv = emit_conv(t, node, weight, None, stride, padding, dilation, channels,
                     suffix="_windows")
    return t.emit(node, "Reshape", [conv], shape=list(t.shape(node)))


@_register(MODULES, nn.Fold)
@_register(FUNCTIONS, F.fold)
def _fold_windows(t: Any, node: fx.Node) -> int:
    """``F.fold`` (col2im), the adjoint of ``F.unfold``: the columns ``(C * kh * kw, L)`` as
    a grid of windows, summed into ``(C, H, W)`` by a transposed convolution with the
    window-picking weight."""
    names = ("output_size", "kernel_size", "dilation", "padding", "stride")
    if node.op == "call_module":
        values = [getattr(t.module(node), a) for a in names]
    else:
        values = [t.static(arg(node, k + 1, a, 0 if a == "padding" else 1))
                  for k, a in enumerate(names)]
    size, kernel, dilation, padding, stride = (_per_axis(v, 2) for v in values)
    source = node.args[0]
    n = math.prod(kernel)
    channels = t.shape(source)[0] // n
    blocks = [(o + 2 * p - d * (k - 1) - 1) // s + 1
              for o, k, d, p, s in zip(size, kernel, dilation, padding, stride)]
    grid = t.emit(node, "Reshape", [source], suffix="_grid", shape=[channels * n, *blocks])
    output_padding = [o - ((b - 1) * s - 2 * p + d * (k - 1) + 1)
                      for o, b, s, p, d, k in zip(size, blocks, stride, padding, dilation, kernel)]
    weight = _window_picker(channels, kernel, node.meta["tensor_meta"].dtype)
    return t.emit(node, "ConvTranspose2D", [grid], weight=weight, bias=None, stride=stride,
                  padding=padding, output_padding=output_padding, dilation=dilation,
                  groups=channels)


@_register(METHODS, "unfold")
def _sliding_windows(t: Any, node: fx.Node) -> int:
    """``x.unfold(dim, size, step)``: the windows along ``dim`` with their entries on a new
    last axis, as one strided slice per window entry, concatenated."""
    source = node.args[0]
    dim, size, step = (t.static(arg(node, k + 1, a)) for k, a in
                       enumerate(("dimension", "size", "step")))
    axis, shape = t.axis(source, dim), list(t.shape(source))
    n = (shape[axis] - size) // step + 1
    windows = []
    for j in range(size):
        ranges = [[0, length, 1] for length in shape]
        ranges[axis] = [j, j + (n - 1) * step + 1, step]
        sliced = t.emit(node, "Slice", [source], suffix=f"_{j}_slice", ranges=ranges)
        windows.append(t.emit(node, "Reshape", [sliced], suffix=f"_{j}",
                              shape=[*shape[:axis], n, *shape[axis + 1:], 1]))
    return windows[0] if size == 1 else t.emit(node, "Concatenate", windows, axis=len(shape))


#: Interpolation modes of torch -> the ``mode`` of an Upsample layer.
_INTERPOLATION = {"nearest": "nearest", "nearest-exact": "nearest-exact", "linear": "linear",
                  "bilinear": "linear", "trilinear": "linear"}


def emit_interpolation(t: Any, node: fx.Node, scale_factor: Any, mode: str,
                       align_corners: Any, by_size: bool) -> int:
    """``F.interpolate`` of the node's first argument: by ``scale_factor``, or (``by_size``)
    to the traced output size; ``"area"`` is adaptive average pooling."""
    size = list(t.shape(node)[1:])
    if mode == "area":
        return t.emit(node, f"AdaptiveAvgPool{len(size)}D", [node.args[0]], output_size=size)
    if mode not in _INTERPOLATION:
        raise t.unsupported(node, f"interpolation mode {mode!r}",
                            f"Modes that convert: {sorted(_INTERPOLATION)} and 'area'. ")
    linear = _INTERPOLATION[mode] == "linear"
    return t.emit(node, "Upsample", [node.args[0]], mode=_INTERPOLATION[mode],
                  size=size if by_size else None,
                  scale_factor=None if by_size else t.static(scale_factor),
                  align_corners=bool(align_corners) if linear else None)


@_register(MODULES, nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)
def _upsample_module(t: Any, node: fx.Node) -> int:
    m = t.module(node)
    by_size = m.size is not None or bool(m.recompute_scale_factor)
    return emit_interpolation(t, node, m.scale_factor, m.mode, m.align_corners, by_size)


@_register(FUNCTIONS, F.interpolate, F.upsample)
def _interpolate(t: Any, node: fx.Node) -> int:
    if arg(node, 6, "antialias", False):
        raise t.unsupported(node, "interpolation with antialias=True")
    scale_factor = arg(node, 2, "scale_factor", None)
    by_size = scale_factor is None or bool(arg(node, 5, "recompute_scale_factor", None))
    return emit_interpolation(t, node, scale_factor, arg(node, 3, "mode", "nearest"),
                              arg(node, 4, "align_corners", None), by_size)


def _aten_upsample(mode: str, align_position: int | None) -> Handler:
    """Handler of ``aten.upsample_<mode>.vec(x, output_size, [align_corners,] scale_factors)``."""

    def handler(t: Any, node: fx.Node) -> int:
        scales = node.args[-1] if len(node.args) > 2 else node.kwargs.get("scale_factors")
        align = None if align_position is None else t.static(node.args[align_position])
        return emit_interpolation(t, node, scales, mode, align, by_size=scales is None)

    return handler


def _group_norm(t: Any, node: fx.Node, groups: int, weight: Tensor | None,
                bias: Tensor | None, eps: float) -> int:
    """Group norm of the node's first argument (see :func:`emit_group_norm`)."""
    return emit_group_norm(_emitter(t, node), node.args[0], t.shape(node.args[0]), groups,
                           weight, bias, eps)


@_register(MODULES, nn.GroupNorm)
def _group_norm_module(t: Any, node: fx.Node) -> int:
    m = t.module(node)
    return _group_norm(t, node, m.num_groups, m.weight, m.bias, m.eps)


@_register(FUNCTIONS, F.group_norm, torch.group_norm)
def _functional_group_norm(t: Any, node: fx.Node) -> int:
    weight, bias = _parameters(t, node, "group norm", (2, "weight", False), (3, "bias", False))
    return _group_norm(t, node, t.static(arg(node, 1, "num_groups")), weight, bias,
                           t.static(arg(node, 4, "eps", 1e-5)))


@_register(MODULES, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
def _instance_norm_module(t: Any, node: fx.Node) -> int:
    """Each channel of each sample normalised by its own statistics (group norm with a
    group per channel), or, with running statistics, batch norm (eval semantics)."""
    m = t.module(node)
    if m.track_running_stats:
        return emit_batch_norm(t, node, m.running_mean, m.running_var, m.weight, m.bias, m.eps)
    return _group_norm(t, node, t.shape(node.args[0])[0], m.weight, m.bias, m.eps)


def _functional_instance_norm(positions: dict[str, int]) -> Handler:
    """Handler of an instance-norm function with its arguments at ``positions``
    (``F.instance_norm`` and ``aten.instance_norm`` order them differently)."""

    def handler(t: Any, node: fx.Node) -> int:
        names = ("running_mean", "running_var", "weight", "bias")
        mean, var, weight, bias = _parameters(
            t, node, "instance norm", *((positions[name], name, False) for name in names))
        eps = t.static(arg(node, positions["eps"], "eps", 1e-5))
        if t.static(arg(node, positions["use_input_stats"], "use_input_stats", True)):
            return _group_norm(t, node, t.shape(node.args[0])[0], weight, bias, eps)
        return emit_batch_norm(t, node, mean, var, weight, bias, eps)

    return _follows_batch_axis("entries")(handler)


_register(FUNCTIONS, F.instance_norm)(_functional_instance_norm(
    {"running_mean": 1, "running_var": 2, "weight": 3, "bias": 4, "use_input_stats": 5,
     "eps": 7}))
_register(FUNCTIONS, getattr(torch.ops.aten.instance_norm, "default", None))(
    _functional_instance_norm({"weight": 1, "bias": 2, "running_mean": 3, "running_var": 4,
                               "use_input_stats": 5, "eps": 7}))


def emit_layer_norm(t: Any, node: fx.Node, n_axes: int, weight: Any, bias: Any,
                    eps: float) -> int:
    """A LayerNorm over the last ``n_axes`` sample axes of the node's first argument."""
    rank = len(t.shape(node.args[0]))
    if not 0 < n_axes <= rank:
        raise t.unsupported(node, f"layer normalisation over the last {n_axes} axes of a "
                            f"sample with {rank}", "Samples must be normalised apart. ")
    t.axis(node.args[0], -n_axes)  # refuses a batch axis moved among them
    return t.emit(node, "LayerNorm", [node.args[0]], axes=list(range(rank - n_axes, rank)),
                  weight=weight, bias=bias, eps=float(eps))


def emit_rms_norm(t: Any, node: fx.Node, n_axes: int, weight: Tensor | None,
                  eps: float | None) -> int:
    """``x * rsqrt(mean(x^2) + eps) * weight`` over the last ``n_axes`` sample axes of the
    node's first argument, in primitive layers: the normaliser is held fixed under LRP
    (as the LN-rule holds sigma), DeepLift follows each operation exactly."""
    source = node.args[0]
    rank = len(t.shape(source))
    t.axis(source, -n_axes)  # refuses a batch axis moved among them
    # eps=None: torch's default, the machine epsilon of the dtype the model was traced in
    eps = torch.finfo(node.meta["tensor_meta"].dtype).eps if eps is None else float(eps)
    mean = _emit_mean_square(t, node, source, list(range(rank - n_axes, rank)), True, "")
    shifted = t.emit(node, "Affine", [mean], suffix="_eps", shift=eps)
    scale = t.emit(node, "Activation", [shifted], suffix="_rsqrt", act_name="rsqrt")
    normed = t.emit(node, "Multiply", [source, scale], suffix="" if weight is None else "_normed",
                    lrp_constant=1)
    return normed if weight is None else t.emit(node, "Affine", [normed], scale=weight)


@_register(MODULES, *_nn("RMSNorm"))
@_follows_batch_axis("same")
def _rms_norm_module(t: Any, node: fx.Node) -> int:
    m = t.module(node)
    return emit_rms_norm(t, node, len(m.normalized_shape), m.weight, m.eps)


@_register(FUNCTIONS, getattr(F, "rms_norm", None))
@_follows_batch_axis("same")
def _functional_rms_norm(t: Any, node: fx.Node) -> int:
    """``F.rms_norm(x, normalized_shape, weight, eps)`` (also ``aten.rms_norm``)."""
    (weight,) = _parameters(t, node, "rms_norm", (2, "weight", False))
    return emit_rms_norm(t, node, len(t.static(arg(node, 1, "normalized_shape"))), weight,
                         t.static(arg(node, 3, "eps", None)))


@_register(MODULES, nn.LayerNorm)
@_follows_batch_axis("same")
def _layer_norm(t: Any, node: fx.Node) -> int:
    m = t.module(node)
    return emit_layer_norm(t, node, len(m.normalized_shape), m.weight, m.bias, m.eps)


@_register(FUNCTIONS, F.layer_norm, torch.layer_norm)
@_follows_batch_axis("same")
def _functional_layer_norm(t: Any, node: fx.Node) -> int:
    shape = t.static(arg(node, 1, "normalized_shape"))
    params = [arg(node, 2, "weight", None), arg(node, 3, "bias", None)]
    weight, bias = (None if p is None else t.constant(p) for p in params)
    if any(p is not None and not isinstance(c, Tensor) for p, c in zip(params, (weight, bias))):
        raise t.unsupported(node, "layer_norm with a weight or bias computed in forward")
    return emit_layer_norm(t, node, len(shape), weight, bias, arg(node, 4, "eps", 1e-5))


# ---- attention ------------------------------------------------------------------


@_register(FUNCTIONS, torch.matmul, torch.bmm, operator.matmul, operator.imatmul)
@_register(METHODS, "matmul", "bmm")
@_follows_batch_axis("same")
def matrix_product(t: Any, node: fx.Node) -> int:
    """``a @ b`` of two tensors computed from the inputs (also ONNX's MatMul)."""
    a, b = node.args[0], arg(node, 1, "other", None) or arg(node, 1, "mat2")
    weight = t.constant(b)
    if t.is_tensor(a) and isinstance(weight, Tensor) and weight.ndim == 2:
        return emit_dense(t, node, weight.T, None)  # x @ W: a dense layer
    if not (t.is_tensor(a) and t.is_tensor(b)):
        raise t.unsupported(node, "a matrix product with a constant",
                            "Products of two tensors computed from the inputs, or of a tensor "
                            "by a constant matrix, convert. ")
    if len(t.shape(a)) < 2 or len(t.shape(b)) != len(t.shape(a)):
        raise t.unsupported(node, "a matrix product of vectors or of operands of different "
                            "rank", "Both operands need the same number (>= 2) of sample "
                            "axes: (..., n, k) @ (..., k, m). ")
    for x in (a, b):
        t.axis(x, -2)  # refuses a batch axis moved among the multiplied ones
    # Attention written out, softmax(...) @ v: the weights stay fixed under LRP (AH-rule).
    fixed = next((i for i, x in enumerate((a, b))
                  if t.layers[t.layer(x)].get("act_name") == "softmax"), None)
    return t.emit(node, "MatMul", [a, b], lrp_constant=fixed)


@_register(FUNCTIONS, torch.einsum)
@_follows_batch_axis("same")
def _einsum(t: Any, node: fx.Node) -> int:
    """``torch.einsum(equation, *operands)`` or ``(equation, [operands])`` (ATen's form)."""
    operands = list(node.args[1:])
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = list(operands[0])
    return emit_einsum(t, node, t.static(node.args[0]), operands)


def emit_einsum(t: Any, node: fx.Node, equation: str, operands: list[Any]) -> int:
    """An einsum of batch-first tensors (entries of the samples may be merged into the
    batch axis, e.g. attention heads): a permutation of one tensor, a tensor by a
    constant (a dense layer) or two tensors (a matrix product); see
    :mod:`innsight.converter.einsum`."""
    what = f"einsum {equation!r}"
    try:
        specs = parse_equation(equation, len(operands))
    except ValueError as err:
        raise t.unsupported(node, what, f"{err} ") from err
    computed = [i for i, x in enumerate(operands) if t.is_tensor(x)]
    batch = specs.output[:1]
    if not batch or any(specs.inputs[i][:1] != batch for i in computed):
        raise t.unsupported(node, what, "The batch axis must be the first letter of the "
                            "result and of every tensor computed from the inputs. ")
    if t.batch_axis(node).position != 0:
        raise t.unsupported(node, f"{what} of tensors whose batch axis is not first")
    inputs = [spec[1:] if i in computed else spec for i, spec in enumerate(specs.inputs)]
    output = specs.output[1:]
    if t.batch_axis(node).merged > 1:  # one more letter: the entries merged into the batch
        merged = unused_letter(equation)
        inputs = [merged + spec if i in computed else spec for i, spec in enumerate(inputs)]
        output = merged + output
    sizes = {c: n for i in computed for c, n in zip(inputs[i], t.shape(operands[i]))}
    emit = _emitter(t, node)
    try:
        if computed == [0] and len(operands) == 1 and sorted(inputs[0]) == sorted(output):
            return t.emit(node, "Permute", [operands[0]],
                          perm=[inputs[0].index(c) for c in output])
        if len(operands) == 2 and len(computed) == 1:
            (i,), other = computed, 1 - computed[0]
            constant = t.constant(operands[other])
            if isinstance(constant, Tensor) and batch not in inputs[other]:
                return emit_linear_einsum(emit, operands[i], inputs[i], constant,
                                          inputs[other], output, sizes)
        if len(operands) == 2 and computed == [0, 1]:
            fixed = next((i for i, x in enumerate(operands)
                          if t.layers[t.layer(x)].get("act_name") == "softmax"), None)
            return emit_einsum_product(emit, *operands, *inputs, output, sizes, fixed)
    except ValueError as err:
        raise t.unsupported(node, what, f"{err} ") from err
    raise t.unsupported(node, what, "Einsums that convert: a permutation of one tensor, a "
                        "tensor by a constant, or a product of two tensors computed from "
                        "the inputs. ")


def _emitter(t: Any, node: fx.Node) -> Emit:
    """The :data:`~innsight.converter.attention.Emit` of ``node``: parts become suffixes
    ``_part`` of its name."""

    def emit(type_name: str, reads: list[Any], part: str, **params: Any) -> int:
        return t.emit(node, type_name, reads, suffix=part and f"_{part}", **params)

    return emit


@_register(FUNCTIONS, F.scaled_dot_product_attention)
@_follows_batch_axis("same")
def _scaled_dot_product_attention(t: Any, node: fx.Node) -> int:
    """``F.scaled_dot_product_attention`` with a constant mask (a padding mask expanded to
    the batch, boolean or additive), ``is_causal`` or neither; with ``enable_gqa`` the
    attention layer reads the key and value heads as they are, each serving its group of
    query heads."""
    q, k, v = (arg(node, i, name) for i, name in enumerate(("query", "key", "value")))
    if arg(node, 4, "dropout_p", 0.0) != 0.0:
        raise t.unsupported(node, "scaled_dot_product_attention with dropout_p > 0",
                            "It drops attention weights at random. ")
    rank = len(t.shape(q))
    if rank < 2 or len(t.shape(k)) != rank or len(t.shape(v)) != rank:
        raise t.unsupported(node, "scaled_dot_product_attention on these shapes",
                            "query, key and value need the same rank >= 2 per sample. ")
    for x in (q, k, v):
        t.axis(x, -2)  # refuses a batch axis moved among the tokens or features
    given = arg(node, 3, "attn_mask", None)
    rows = _masked_rows(given)
    if given in t.helpers:  # a padding mask from the masks given per call
        return emit_attention(_emitter(t, node), q, k, v, _scale(node, t.shape(q)),
                              bias=_additive_mask(t, node, given), masked_rows=rows)
    computed = t.is_tensor(given)  # an additive bias from the inputs (relative positions)
    if computed and (t.shape(given) != (*t.shape(q)[:-1], t.shape(k)[-2])
                     or node.meta["tensor_meta"].dtype != given.meta["tensor_meta"].dtype):
        raise t.unsupported(node, "an attention mask computed from the inputs' values",
                            "Additive float masks of the scores' full shape convert. ")
    mask = None if computed else _attention_mask(t, node, t.shape(q)[-2], t.shape(k)[-2])
    return emit_attention(_emitter(t, node), q, k, v, _scale(node, t.shape(q)),
                          mask=mask, bias=given if computed else None, masked_rows=rows)


def _masked_rows(mask: Any) -> str:
    """What torch's kernel gives a query that ``attn_mask`` lets attend to no key (the
    attention layer's ``masked_rows``): no weights, a zero output, under a boolean mask;
    the softmax of its masked scores under an additive mask of finite numbers."""
    meta = mask.meta.get("tensor_meta") if isinstance(mask, fx.Node) else None
    return "zero" if meta is not None and meta.dtype == torch.bool else "softmax"


def _scale(node: fx.Node, query_shape: tuple[int, ...]) -> float:
    """The scale of the scores of an attention call (``1 / sqrt(E)`` by default)."""
    scale = arg(node, 6, "scale", None)
    return 1 / math.sqrt(query_shape[-1]) if scale is None else scale


def _additive_mask(t: Any, node: fx.Node, given: fx.Node) -> int:
    """The attention mask ``given``, computed from the masks given per call, as helper
    layers adding to the scores: a boolean mask as 0 where attending and the most
    negative float32 where not (exp of it is 0 in every precision), a float one as it is."""
    if given.meta["tensor_meta"].dtype != torch.bool:
        return t.layer(given)
    if given not in t.additive_masks:  # made once, read by every attention call
        additive = t.emit(node, "Helper", [given], suffix="_mask_additive",
                          op="aten.where.Scalar",
                          args=[{"input": 0}, 0.0, torch.finfo(torch.float32).min])
        t.additive_masks[given] = t.emit(
            node, "Helper", [additive], suffix="_mask", op="aten._to_copy.default",
            args=[{"input": 0}], kwargs={"dtype": {"dtype": "float32"}})
    return t.additive_masks[given]


def _attention_mask(t: Any, node: fx.Node, n_queries: int, n_keys: int) -> Tensor | None:
    """The additive mask of an attention call: its ``attn_mask`` (``False`` entries, or
    additive ones, as a constant) or the causal mask of ``is_causal``; ``None`` where
    every query attends to every key."""
    given, causal = arg(node, 3, "attn_mask", None), arg(node, 5, "is_causal", False)
    if causal:
        allowed = torch.ones(n_queries, n_keys, dtype=torch.bool).tril()
    elif given is None:
        return None
    else:
        allowed = _operand_constant(t, node, given)
        if not isinstance(allowed, Tensor):
            raise t.unsupported(node, "an attention mask computed from the inputs' values",
                                "Masks built from constants and shapes convert. ")
    if allowed.dtype == torch.bool:
        if bool(allowed.all()):
            return None
        blocked = torch.finfo(torch.float32).min
        return torch.zeros(allowed.shape).masked_fill(~allowed, blocked)
    return None if not bool(allowed.any()) else allowed


@_register(MODULES, nn.MultiheadAttention)
def _multihead_attention(t: Any, node: fx.Node) -> Outputs:
    """``nn.MultiheadAttention(batch_first=True)`` without masks or added key/value biases,
    as :func:`~innsight.converter.attention.emit_multi_head_attention`."""
    m = t.module(node)
    masks = [arg(node, i, name, None) for i, name in ((3, "key_padding_mask"), (5, "attn_mask"))]
    if not m.batch_first or m.bias_k is not None or m.add_zero_attn or any(
            mask is not None for mask in masks) or arg(node, 7, "is_causal", False):
        raise t.unsupported(
            node, "nn.MultiheadAttention with batch_first=False, add_bias_kv, add_zero_attn, "
            "a mask or is_causal", "Self- and cross-attention without those convert. ")
    inputs = [arg(node, i, name) for i, name in enumerate(("query", "key", "value"))]
    if m._qkv_same_embed_dim:
        weights = m.in_proj_weight.chunk(3)
    else:
        weights = (m.q_proj_weight, m.k_proj_weight, m.v_proj_weight)
    biases = (None,) * 3 if m.in_proj_bias is None else m.in_proj_bias.chunk(3)
    out = emit_multi_head_attention(
        _emitter(t, node), inputs, [t.shape(x)[0] for x in inputs], list(zip(weights, biases)),
        (m.out_proj.weight, m.out_proj.bias), m.num_heads, 1 / math.sqrt(m.head_dim))
    return Outputs((out, None))


# ---- pooling ---------------------------------------------------------------------


# ---- recurrent layers -------------------------------------------------------------------


#: Per cell (``"LSTM"``, ``"GRU"``, or an Elman RNN's activation ``"tanh"``/``"relu"``):
#: one direction unrolled, ``(emit, source, shape, (w_ih, w_hh, b_ih, b_hh), reverse, part,
#: initial states) -> (hidden states (*lead, L, H), last cell state or None)``.
_CELLS: dict[str, Callable[..., tuple[int, int | None]]] = {
    "LSTM": lambda emit, x, shape, w, reverse, part, states: emit_lstm(
        emit, x, shape, *w, reverse, part, *states),
    "GRU": lambda emit, x, shape, w, reverse, part, states: (
        emit_gru(emit, x, shape, *w, reverse, part, *states[:1]), None),
    **{act: lambda emit, x, shape, w, reverse, part, states, act=act: (
        emit_rnn(emit, x, shape, *w, act, reverse, part, *states[:1]), None)
       for act in ("tanh", "relu")},
}


def _emit_recurrent(t: Any, node: fx.Node, cell: str, source: fx.Node, hx: Any,
                    weights: Sequence[Any], has_biases: bool, num_layers: int,
                    dropout: float, train: bool, bidirectional: bool, batch_first: bool,
                    finals: Sequence[bool] = (False, False),
                    ) -> tuple[int, int | None, int | None]:
    """A recurrent layer (arguments as ``aten.lstm.input`` and its kin take them; ``cell``
    as in :data:`_CELLS`) unrolled over time, every layer and direction (see
    :mod:`innsight.converter.recurrent`): the output sequence ``(*lead, L, D * H)``, the
    last hidden states ``(*lead, num_layers * D, H)`` and an LSTM's last cell states, each
    of the two where ``finals`` asks for it (else ``None``). ``hx``: the initial state
    (``(h_0, c_0)`` of an LSTM), ``None`` or ``(num_layers * D, batch, H)`` (see
    :func:`_initial_state`). One sample of ``source`` is ``(*lead, L, E)``: ``lead``
    holds entries folded into the batch axis."""
    name = type(t.module(node)).__name__ if node.op == "call_module" else str(node.target)
    directions = 2 if bidirectional else 1
    per_cell = 4 if has_biases else 2
    if len(weights) != num_layers * directions * per_cell:
        raise t.unsupported(node, f"{name} with proj_size",
                            "Recurrent layers without projections convert. ")
    if train and dropout:
        raise t.unsupported(node, f"{name} with dropout in training",
                            "Convert the model in eval mode. ")
    batch = t.batch_axis(source)
    shape = t.shape(source)
    if batch.position != (0 if batch_first else 1) or len(shape) != 2 + (batch.merged > 1):
        raise t.unsupported(
            node, f"{name} with batch_first={batch_first} on samples of shape "
            f"{list(source.meta['tensor_meta'].shape)} (batch axis at {batch.position})",
            "The input must be (batch, time steps, features), or (time steps, batch, "
            "features) with batch_first=False through torch.export (tracer='export'). ")
    weights = [w if isinstance(w, Tensor) else t.constant(w) for w in weights]
    if any(not isinstance(w, Tensor) for w in weights):
        raise t.unsupported(node, f"{name} with weights computed from the model input")
    emit, lead = _emitter(t, node), shape[:-2]
    given = list(hx) if isinstance(hx, (list, tuple)) else [hx]
    hidden = weights[1].shape[1]
    last_h: list[int] = []
    last_c: list[int] = []
    for layer in range(num_layers):
        sequences = []
        for d in range(directions):
            k = layer * directions + d
            part = f"l{layer}" + ("_reverse" if d else "")
            w = weights[k * per_cell:(k + 1) * per_cell]
            states = [_initial_state(t, node, emit, state, source, shape, hidden, k,
                                     f"{part}_{kind}0") for state, kind in zip(given, "hc")]
            seq, c = _CELLS[cell](emit, source, shape, (*w, *[None] * (4 - per_cell)),
                                  bool(d), part, states)
            end = 0 if d else shape[-2] - 1
            sequences.append(seq)
            last_h += [emit("Slice", [seq], f"{part}_h_n", ranges=[
                *[[0, n, 1] for n in lead], [end, end + 1, 1], [0, hidden, 1]])] * finals[0]
            last_c += [c] * (finals[1] and c is not None)
        source = sequences[0] if directions == 1 else emit(
            "Concatenate", sequences, f"l{layer}_directions", axis=len(lead) + 1)
        shape = (*lead, shape[-2], hidden * directions)
    h_n = None if not last_h else last_h[0] if len(last_h) == 1 else emit(
        "Concatenate", last_h, "h_n", axis=len(lead))
    return source, h_n, stack_states(emit, last_c, lead, hidden, "c_n") if last_c else None


def _initial_state(t: Any, node: fx.Node, emit: Emit, state: Any, source: fx.Node,
                   shape: Sequence[int], hidden: int, k: int, part: str) -> int | None:
    """Entry ``k`` (layer and direction) of an initial state ``(num_layers * D, batch, H)``
    as ``(*lead, H)``: ``None`` for zeros (or no state), a constant expanded to the batch,
    or a slice of a tensor computed from the inputs."""
    if t.is_tensor(state):
        lead = shape[:-2]
        picked = t.emit(node, "Slice", [state], suffix=f"_{part}_in",
                        ranges=[*[[0, n, 1] for n in lead], [k, k + 1, 1], [0, hidden, 1]])
        return emit("Reshape", [picked], part, shape=[*lead, hidden])
    value = t.batch_constants[state][0] if state in t.batch_constants else t.constant(state)
    if state is None or isinstance(value, Tensor) and not bool(value.any()):
        return None
    if state not in t.batch_constants:
        raise t.unsupported(node, "an initial state that is neither zero, a constant "
                            "expanded to the batch nor a tensor computed from the inputs")
    if value.ndim == 3:  # entries folded into the batch: one state for all of them
        if not bool((value == value[:1]).all()):
            raise t.unsupported(node, "a constant initial state that differs between "
                                "sequences of one sample")
        value = value[0]
    return emit_constant_state(emit, source, shape, hidden, value[k], part)


@_register(MODULES, nn.RNN, nn.LSTM, nn.GRU)
def _recurrent(t: Any, node: fx.Node) -> Outputs:
    """``nn.RNN``/``nn.LSTM``/``nn.GRU`` with ``batch_first=True`` and zero initial states,
    unrolled over time, every layer and direction: the output sequence (element 0)
    converts, the final states (element 1, batch axis second) do not (``out[:, -1]`` is
    the last hidden state of a single-direction layer; through ``torch.export`` they
    convert, and so do other initial states)."""
    m = t.module(node)
    cell = m.nonlinearity if isinstance(m, nn.RNN) else type(m).__name__
    sequence, _, _ = _emit_recurrent(
        t, node, cell, node.args[0], arg(node, 1, "hx", None), m._flat_weights, m.bias,
        m.num_layers, m.dropout, m.training, m.bidirectional, m.batch_first)
    return Outputs((sequence, None))


#: The recurrent ATen operations of a ``torch.export`` graph and their cells (see
#: :data:`_CELLS`).
_ATEN_CELLS = {getattr(getattr(torch.ops.aten, packet, None), "input", None): cell
               for packet, cell in (("lstm", "LSTM"), ("gru", "GRU"), ("rnn_tanh", "tanh"),
                                    ("rnn_relu", "relu"))}


@_register(FUNCTIONS, *_ATEN_CELLS)
@_follows_batch_axis("any")  # time first (batch_first=False) and the states: batch second
def _aten_recurrent(t: Any, node: fx.Node) -> Outputs:
    """A recurrent layer (``nn.RNN``/``nn.LSTM``/``nn.GRU``) unrolled over time, every layer
    and direction, ``batch_first`` or time first, also over sequences folded into the
    batch axis, from zero, constant or computed initial states: the output sequence, the
    last hidden states and an LSTM's last cell states (where the model reads them)."""
    cell = _ATEN_CELLS[node.target]
    read = [any(user.args[1] == i and user.users for user in node.users) for i in (1, 2)]
    outputs = _emit_recurrent(t, node, cell, *node.args, finals=read)
    return Outputs(outputs if cell == "LSTM" else outputs[:2])


def _n_spatial(t: Any, node: fx.Node) -> int:
    """How many spatial axes the node's first argument has (its channels first)."""
    return len(node.args[0].meta["tensor_meta"].shape) - 2


def _emit_pool(t: Any, node: fx.Node, kind: str, kernel: Any, stride: Any, padding: Any,
               **params: Any) -> int:
    """A pooling layer ``{kind}Pool{n}D`` of the node's first argument (see
    :func:`emit_per_entry`); ``kernel``, ``stride`` and ``padding`` as torch takes them."""
    n_axes = _n_spatial(t, node)
    kernel = _per_axis(kernel, n_axes)
    stride = _per_axis(stride or kernel, n_axes)
    dilation = params.pop("dilation", None)

    def pool(source: fx.Node | int, extra: int) -> int:
        if dilation is not None:
            params["dilation"] = [1] * extra + _per_axis(dilation, n_axes)
        return t.emit(node, f"{kind}Pool{n_axes + extra}D", [source],
                      kernel_size=[1] * extra + kernel, stride=[1] * extra + stride,
                      padding=[0] * extra + _per_axis(padding, n_axes), **params)

    return emit_per_entry(t, node, pool)


def _max_pool(t: Any, node: fx.Node, kernel: Any, stride: Any, padding: Any,
              dilation: Any, ceil_mode: Any, return_indices: Any) -> int:
    if return_indices:
        raise t.unsupported(node, "max pooling with return_indices=True")
    return _emit_pool(t, node, "Max", kernel, stride, padding, dilation=dilation,
                      ceil_mode=bool(ceil_mode))


def _avg_pool(t: Any, node: fx.Node, kernel: Any, stride: Any, padding: Any,
              ceil_mode: Any, count_include_pad: Any, divisor_override: Any) -> int:
    if divisor_override is not None:
        raise t.unsupported(node, "average pooling with divisor_override")
    return _emit_pool(t, node, "Avg", kernel, stride, padding, ceil_mode=bool(ceil_mode),
                      count_include_pad=bool(count_include_pad))


@_register(MODULES, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
@_follows_batch_axis("entries")
def _max_pool_module(t: Any, node: fx.Node) -> int:
    m = t.module(node)
    return _max_pool(t, node, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode,
                     m.return_indices)


@_register(FUNCTIONS, F.max_pool1d, F.max_pool2d, F.max_pool3d)
@_follows_batch_axis("entries")
def _max_pool_function(t: Any, node: fx.Node) -> int:
    return _max_pool(
        t, node, arg(node, 1, "kernel_size"), arg(node, 2, "stride", None),
        arg(node, 3, "padding", 0), arg(node, 4, "dilation", 1),
        arg(node, 5, "ceil_mode", False), arg(node, 6, "return_indices", False),
    )


@_register(MODULES, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
@_follows_batch_axis("entries")
def _avg_pool_module(t: Any, node: fx.Node) -> int:
    m = t.module(node)
    return _avg_pool(t, node, m.kernel_size, m.stride, m.padding, m.ceil_mode,
                     m.count_include_pad, getattr(m, "divisor_override", None))


@_register(FUNCTIONS, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)
@_follows_batch_axis("entries")
def _avg_pool_function(t: Any, node: fx.Node) -> int:
    return _avg_pool(
        t, node, arg(node, 1, "kernel_size"), arg(node, 2, "stride", None),
        arg(node, 3, "padding", 0), arg(node, 4, "ceil_mode", False),
        arg(node, 5, "count_include_pad", True), arg(node, 6, "divisor_override", None),
    )


@_register(MODULES, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
           nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
@_register(FUNCTIONS, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
           F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d)
@_follows_batch_axis("entries")
def _adaptive_pool(t: Any, node: fx.Node) -> int:
    if node.op == "call_module":
        m = t.module(node)
        is_max, return_indices = "Max" in type(m).__name__, getattr(m, "return_indices", False)
    else:
        is_max = "max" in node.target.__name__
        return_indices = arg(node, 2, "return_indices", False) if is_max else False
    if return_indices:
        raise t.unsupported(node, "adaptive max pooling with return_indices=True")
    # The traced output shape resolves `None` entries of output_size.
    output_size = list(node.meta["tensor_meta"].shape[2:])
    kind = "Max" if is_max else "Avg"
    entries = [t.batch_axis(node).merged]
    return emit_per_entry(t, node, lambda source, extra: t.emit(
        node, f"Adaptive{kind}Pool{len(output_size) + extra}D", [source],
        output_size=entries * extra + output_size))


# ---- activations -------------------------------------------------------------------


def emit_activation(t: Any, node: fx.Node, act_name: str, **params: Any) -> int:
    """An Activation layer ``act_name`` (with ``params``) of the node's first argument."""
    return t.emit(node, "Activation", [node.args[0]], act_name=act_name, **params)


def _activation_module(act_name: str, *attributes: str) -> Handler:
    """Handler for an activation module whose parameters are its attributes."""

    @_follows_batch_axis("same")
    def handler(t: Any, node: fx.Node) -> int:
        m = t.module(node)
        return emit_activation(t, node, act_name, **{a: getattr(m, a) for a in attributes})

    return handler


def _activation_call(act_name: str, **params: tuple[int | None, Any]) -> Handler:
    """Handler for an activation function; ``params`` maps names to (position, default)."""

    @_follows_batch_axis("same")
    def handler(t: Any, node: fx.Node) -> int:
        values = {name: arg(node, pos, name, default) for name, (pos, default) in params.items()}
        return emit_activation(t, node, act_name, **values)

    return handler


for _module, _name, _attributes in [
    (nn.ReLU, "relu", ()), (nn.ReLU6, "relu6", ()), (nn.SiLU, "silu", ()),
    (nn.Sigmoid, "sigmoid", ()), (nn.Tanh, "tanh", ()), (nn.Hardswish, "hardswish", ()),
    (nn.Hardsigmoid, "hardsigmoid", ()), (nn.LeakyReLU, "leaky_relu", ("negative_slope",)),
    (nn.ELU, "elu", ("alpha",)), (nn.GELU, "gelu", ("approximate",)),
    (nn.Softplus, "softplus", ("beta", "threshold")),
    (nn.Hardtanh, "hardtanh", ("min_val", "max_val")),
    (nn.SELU, "selu", ()), (nn.CELU, "celu", ("alpha",)), (nn.Mish, "mish", ()),
    (nn.Softsign, "softsign", ()), (nn.LogSigmoid, "logsigmoid", ()),
    (nn.Tanhshrink, "tanhshrink", ()),
]:
    MODULES[_module] = _activation_module(_name, *_attributes)

for _functions, _name, _params in [
    ((F.relu, torch.relu, F.relu_, torch.relu_), "relu", {}),
    ((F.relu6,), "relu6", {}),
    ((F.silu,), "silu", {}),
    ((torch.sigmoid, F.sigmoid), "sigmoid", {}),
    ((torch.tanh, F.tanh), "tanh", {}),
    ((F.hardswish,), "hardswish", {}),
    ((F.hardsigmoid,), "hardsigmoid", {}),
    ((F.leaky_relu,), "leaky_relu", {"negative_slope": (1, 0.01)}),
    ((F.elu,), "elu", {"alpha": (1, 1.0)}),
    ((F.gelu,), "gelu", {"approximate": (None, "none")}),
    ((F.softplus,), "softplus", {"beta": (1, 1.0), "threshold": (2, 20.0)}),
    ((F.hardtanh,), "hardtanh", {"min_val": (1, -1.0), "max_val": (2, 1.0)}),
    ((F.selu, torch.selu), "selu", {}),
    ((F.celu, torch.celu), "celu", {"alpha": (1, 1.0)}),
    ((F.mish,), "mish", {}),
    ((F.softsign,), "softsign", {}),
    ((F.logsigmoid,), "logsigmoid", {}),
    ((F.tanhshrink,), "tanhshrink", {}),
    ((torch.exp,), "exp", {}),
    ((torch.sqrt,), "sqrt", {}),
    ((torch.rsqrt,), "rsqrt", {}),
    ((torch.abs,), "abs", {}),
]:
    _register(FUNCTIONS, *_functions)(_activation_call(_name, **_params))

for _method, _name in [("relu", "relu"), ("relu_", "relu"), ("sigmoid", "sigmoid"),
                       ("sigmoid_", "sigmoid"), ("tanh", "tanh"), ("tanh_", "tanh"),
                       ("exp", "exp"), ("exp_", "exp"), ("sqrt", "sqrt"),
                       ("rsqrt", "rsqrt"), ("abs", "abs")]:
    METHODS[_method] = _activation_call(_name)


@_register(MODULES, nn.Softmax, nn.Softmax2d)
@_register(FUNCTIONS, F.softmax, torch.softmax)
@_register(METHODS, "softmax")
@_follows_batch_axis("same")
def _softmax_op(t: Any, node: fx.Node) -> int:
    if node.op == "call_module":
        m = t.module(node)
        dim = -3 if isinstance(m, nn.Softmax2d) else m.dim
    else:
        dim = arg(node, 1, "dim", None)
    if dim is None:
        raise t.unsupported(node, "softmax without `dim`", "Give the axis explicitly. ")
    return emit_activation(t, node, "softmax", axis=t.axis(node.args[0], dim))


def emit_one_sided_clamp(t: Any, node: fx.Node, source: Any, bound: float | Tensor,
                         upper: bool, suffix: str = "") -> int:
    """``max(x, bound)`` as ``relu(x - bound) + bound``, or (``upper``) ``min(x, bound)`` as
    ``bound - relu(bound - x)``; ``bound`` a number or a constant per sample."""
    sign = -1.0 if upper else 1.0
    shifted = t.emit(node, "Affine", [source], suffix=f"{suffix}_shift", scale=sign,
                     shift=-sign * bound)
    relu = t.emit(node, "Activation", [shifted], suffix=f"{suffix}_relu", act_name="relu")
    return t.emit(node, "Affine", [relu], suffix=suffix, scale=sign, shift=bound)


@_register(FUNCTIONS, torch.clamp, torch.clip)
@_register(METHODS, "clamp", "clamp_", "clip", "clip_", "clamp_min", "clamp_max")
@_follows_batch_axis("same")
def _clamp(t: Any, node: fx.Node) -> int:
    low, high = arg(node, 1, "min", None), arg(node, 2, "max", None)
    if node.target == "clamp_max" or getattr(node.target, "__name__", "") == "clamp_max.default":
        low, high = None, low
    if low == 0 and high is None:
        return emit_activation(t, node, "relu")
    if low == 0 and high == 6:
        return emit_activation(t, node, "relu6")
    if isinstance(low, (int, float)) and isinstance(high, (int, float)):
        return emit_activation(t, node, "hardtanh", min_val=float(low), max_val=float(high))
    # otherwise one bound, or constant tensor bounds: one one-sided clamp per bound
    kept = []
    for given, upper in ((low, False), (high, True)):
        if given is None:
            continue
        value = _operand_constant(t, node, given)
        bound = None if value is None else torch.as_tensor(value)
        switched_off = bound is not None and bool((bound == (math.inf if upper else -math.inf))
                                                  .all())
        if bound is None or not (switched_off or bool(torch.isfinite(bound).all())):
            raise t.unsupported(node, f"clamp(min={low!r}, max={high!r})",
                                "Bounds must be numbers or constant tensors, finite, or "
                                "infinite throughout (no bound). ")
        if not switched_off:
            kept.append((value, upper))
    result: Any = node.args[0]
    for k, (value, upper) in enumerate(kept):
        result = emit_one_sided_clamp(t, node, result, value, upper,
                                      suffix="" if k == len(kept) - 1 else "_min")
    return result if kept else alias_input(t, node)


# ---- elementwise arithmetic ------------------------------------------------------------


def _operand_constant(t: Any, node: fx.Node, value: Any) -> Any:
    """The constant operand ``value`` of ``node`` (a number, a constant tensor, or one
    expanded to the batch) shaped to broadcast with one sample as the node's layer holds
    it; ``None`` where ``value`` is not a constant."""
    if isinstance(value, fx.Node) and value in t.batch_constants:
        per_sample, batch = t.batch_constants[value]
        if batch != t.batch_axis(node) or per_sample.ndim > len(t.shape(node)):
            raise t.unsupported(node, "a constant expanded to the batch in another layout "
                                "than the tensor it meets")
        return per_sample
    return _sample_constant(t, node, t.constant(value))


def _sample_constant(t: Any, node: fx.Node, value: Any) -> Any:
    """A constant operand of ``node`` shaped to broadcast with one sample as the node's
    layer holds it: without the batch axis (which must have size 1 there), with a
    leading axis of size 1 where the batch axis merges entries (see ``BatchAxis``)."""
    if not isinstance(value, Tensor):
        return value
    shape, batch = node.meta["tensor_meta"].shape, t.batch_axis(node)
    if value.ndim < len(shape) - batch.position:
        return value  # it broadcasts over the axes after the batch axis only
    value = value.reshape((1,) * (len(shape) - value.ndim) + tuple(value.shape))
    if value.shape[batch.position] != 1:
        raise t.unsupported(node, f"a constant operand of shape {list(value.shape)}",
                            "Its entries along the batch axis would pair with samples. ")
    value = value.squeeze(batch.position)
    return value.unsqueeze(0) if batch.merged > 1 else value


def _operands(t: Any, node: fx.Node) -> tuple[Any, Any]:
    return node.args[0], arg(node, 1, "other")


def _signed_sum(t: Any, node: fx.Node, a: Any, b: Any, sign: float) -> int:
    """``a + sign * b`` for tensors or one constant."""
    if t.is_tensor(a) and t.is_tensor(b):
        if sign < 0:
            b = t.emit(node, "Affine", [b], suffix="_neg", scale=-1.0)
        return t.emit(node, "Add", [a, b])
    const_a, const_b = _operand_constant(t, node, a), _operand_constant(t, node, b)
    if t.is_tensor(a) and const_b is not None:
        return t.emit(node, "Affine", [a], shift=sign * const_b)
    if t.is_tensor(b) and const_a is not None:
        return t.emit(node, "Affine", [b], scale=sign, shift=const_a)
    raise t.unsupported(node, "addition of these operands")


def _signed_sum_op(name: str, sign: float) -> Handler:
    """Handler of ``torch.add`` (``sign`` 1) or ``torch.sub`` (``sign`` -1), as operators,
    functions and methods."""

    @_follows_batch_axis("same")
    def handler(t: Any, node: fx.Node) -> int:
        if node.kwargs.get("alpha", 1) != 1:
            raise t.unsupported(node, f"torch.{name} with alpha != 1")
        return _signed_sum(t, node, *_operands(t, node), sign=sign)

    return handler


for _name, _functions, _sign in [
    ("add", (operator.add, operator.iadd, torch.add), 1.0),
    ("sub", (operator.sub, operator.isub, torch.sub), -1.0),
]:
    _handler = _signed_sum_op(_name, _sign)
    _register(FUNCTIONS, *_functions)(_handler)
    _register(METHODS, _name, f"{_name}_")(_handler)


@_register(FUNCTIONS, torch.pow, operator.pow, operator.ipow, torch.square)
@_register(METHODS, "pow", "square")
@_follows_batch_axis("same")
def _pow(t: Any, node: fx.Node) -> int:
    """``x ** c`` of a tensor and a constant number (the mean square of an RMS norm);
    ``torch.square(x)``."""
    base = node.args[0]
    exponent = 2.0 if len(node.args) < 2 and "exponent" not in node.kwargs else t.constant(
        arg(node, 1, "exponent"))
    if not t.is_tensor(base) or not isinstance(exponent, float):
        raise t.unsupported(node, "a power other than a tensor to a constant number")
    return emit_activation(t, node, "pow", exponent=exponent)


def _is_normaliser(layer: dict[str, Any]) -> bool:
    """Whether a layer entry scales another tensor as a normaliser (RMS norm's
    ``rsqrt(mean(x^2) + eps)``, a reciprocal norm): LRP holds it fixed, as the LN-rule
    holds sigma."""
    return layer.get("act_name") == "rsqrt" or (
        layer.get("act_name") == "pow" and layer.get("exponent", 2.0) < 0)


@_register(FUNCTIONS, operator.mul, operator.imul, torch.mul)
@_register(METHODS, "mul", "mul_")
@_follows_batch_axis("same")
def _mul(t: Any, node: fx.Node) -> int:
    a, b = _operands(t, node)
    if t.is_tensor(a) and t.is_tensor(b):
        fixed = next((i for i, x in enumerate((a, b)) if x in t.helpers  # a padding mask
                      or _is_normaliser(t.layers[t.layer(x)])), None)
        return t.emit(node, "Multiply", [a, b], lrp_constant=fixed)
    tensor, const = (a, b) if t.is_tensor(a) else (b, a)
    const = _operand_constant(t, node, const)
    if not t.is_tensor(tensor) or const is None:
        raise t.unsupported(node, "multiplication of these operands")
    return t.emit(node, "Affine", [tensor], scale=const)


@_register(FUNCTIONS, torch.addcmul)
@_register(METHODS, "addcmul")
@_follows_batch_axis("same")
def _addcmul(t: Any, node: fx.Node) -> int:
    """``torch.addcmul(x, a, b, value=v)``, ``x + v * a * b`` (timm's global response
    norm): a product of two tensors, or of a tensor and a constant, plus a tensor or a
    constant."""
    base, a, b = node.args[:3]
    value = float(t.static(arg(node, 3, "value", 1)))
    if t.is_tensor(a) and t.is_tensor(b):
        product = t.emit(node, "Multiply", [a, b], suffix="_product")
        scale = value
    else:
        tensor, factor = (a, b) if t.is_tensor(a) else (b, a)
        factor = _operand_constant(t, node, factor)
        if not t.is_tensor(tensor) or factor is None:
            raise t.unsupported(node, "addcmul of two constant factors")
        product, scale = t.layer(tensor), value * factor
    if t.is_tensor(base):
        scaled = t.emit(node, "Affine", [product], suffix="_scale", scale=scale)
        return t.emit(node, "Add", [base, scaled])
    shift = _operand_constant(t, node, base)
    if shift is None:
        raise t.unsupported(node, "addcmul with this first operand")
    return t.emit(node, "Affine", [product], scale=scale, shift=shift)


@_register(FUNCTIONS, operator.truediv, operator.itruediv, torch.div, torch.true_divide)
@_register(METHODS, "div", "div_")
@_follows_batch_axis("same")
def _div(t: Any, node: fx.Node) -> int:
    """A tensor divided by a constant, or by a tensor (a normaliser: ``x / norm``) as the
    product with its reciprocal, which LRP holds fixed."""
    a, b = _operands(t, node)
    if t.is_tensor(a) and t.is_tensor(b) and node.kwargs.get("rounding_mode") is None:
        reciprocal = t.emit(node, "Activation", [b], suffix="_reciprocal", act_name="pow",
                            exponent=-1.0)
        return t.emit(node, "Multiply", [a, reciprocal], lrp_constant=1)
    const = _operand_constant(t, node, b)
    if not t.is_tensor(a) or const is None or node.kwargs.get("rounding_mode") is not None:
        raise t.unsupported(node, "division other than of a tensor by a tensor or a constant")
    # The reciprocal in float64, so that dtype="double" loses nothing to a float32 constant.
    reciprocal = 1.0 / (const.double() if isinstance(const, Tensor) else const)
    return t.emit(node, "Affine", [a], scale=reciprocal)


@_register(FUNCTIONS, operator.neg, torch.neg)
@_register(METHODS, "neg")
@_follows_batch_axis("same")
def _neg(t: Any, node: fx.Node) -> int:
    return t.emit(node, "Affine", [node.args[0]], scale=-1.0)


# ---- merging and reducing ----------------------------------------------------------------


@_register(FUNCTIONS, torch.stack)
@_follows_batch_axis("any")
def _stack(t: Any, node: fx.Node) -> int:
    """``torch.stack(xs, dim)``: each tensor with a new axis of size 1, concatenated (a new
    axis before the batch axis moves it one further)."""
    parts, dim = list(node.args[0]), arg(node, 1, "dim", 0)
    axis = t.axis(node, dim)
    if not all(t.is_tensor(p) for p in parts):
        raise t.unsupported(node, "stacking values that are not tensors computed from the inputs")
    if any(t.batch_axis(p).merged != t.batch_axis(node).merged for p in parts):
        raise t.unsupported(node, "stacking tensors whose batch axes differ")
    grown = []
    for k, part in enumerate(parts):
        shape = list(t.shape(part))
        shape.insert(axis, 1)
        grown.append(t.emit(node, "Reshape", [part], suffix=f"_{k}", shape=shape))
    return grown[0] if len(grown) == 1 else t.emit(node, "Concatenate", grown, axis=axis)


@_register(FUNCTIONS, torch.cat, torch.concat, getattr(torch, "concatenate", None))
@_follows_batch_axis("same")
def _cat(t: Any, node: fx.Node) -> int:
    """A concatenation; empty constants (an unused key-value cache) drop out."""
    parts = [p for p in node.args[0] if not _is_empty_constant(t, p)]
    axis = t.axis(node, arg(node, 1, "dim", node.kwargs.get("axis", 0)))
    if len(parts) == 1:
        return t.layer(parts[0])
    if all(t.is_tensor(p) for p in parts):
        return t.emit(node, "Concatenate", parts, axis=axis)
    return _cat_with_constants(t, node, parts, axis)


def _is_empty_constant(t: Any, value: Any) -> bool:
    """Whether ``value`` is a constant without entries (an unused key-value cache)."""
    const = t.constant(value)
    return isinstance(const, Tensor) and const.numel() == 0


def _cat_with_constants(t: Any, node: fx.Node, parts: list[Any], axis: int) -> int:
    """A concatenation of tensors and batch constants (``cat([cls_token.expand(n, -1, -1),
    x])``): each run of constants becomes zero padding of the next tensor (of the last
    one, after it), then one ``Affine`` adds the constants where the zeros are."""
    if not all(t.is_tensor(p) or p in t.batch_constants for p in parts):
        raise t.unsupported(node, "concatenation with a value that is neither a tensor "
                            "computed from the inputs nor a constant expanded to the batch")
    tensors = [i for i, p in enumerate(parts) if t.is_tensor(p)]
    if not tensors:
        raise t.unsupported(node, "a concatenation of constants only")
    pads = {i: [0, 0] for i in tensors}
    for i, p in enumerate(parts):
        if not t.is_tensor(p):
            later = [k for k in tensors if k > i]
            owner, side = (later[0], 0) if later else (tensors[-1], 1)
            pads[owner][side] += t.shape(p)[axis]
    padded = []
    for i in tensors:
        padded.append(parts[i])
        if pads[i] != [0, 0]:
            rank = len(t.shape(parts[i]))
            padding = [pads[i]] + [[0, 0]] * (rank - axis - 1)
            padded[-1] = t.emit(node, "Padding", [parts[i]], suffix=f"_pad{i}",
                                padding=padding, mode="constant", value=0.0)
    joined = padded[0] if len(padded) == 1 else t.emit(node, "Concatenate", padded,
                                                       suffix="_cat", axis=axis)
    shift = torch.cat([_operand_constant(t, p, p).expand(t.shape(p))
                       if p in t.batch_constants else torch.zeros(t.shape(p)) for p in parts],
                      dim=axis)
    return t.emit(node, "Affine", [joined], shift=shift)


@_register(METHODS, "expand", "expand_as")
@_follows_batch_axis("same")
def _expand(t: Any, node: fx.Node) -> int:
    """A tensor computed from the inputs repeated along its axes of size 1 (key and value
    heads for grouped queries), as a concatenation of copies per axis. (A constant
    expanded to the batch, such as a class token, folds into a constant before.)"""
    source = node.args[0]
    before, after = t.shape(source), t.shape(node)
    if len(before) != len(after):
        raise t.unsupported(node, "expanding a tensor computed from the inputs to more axes")
    result: fx.Node | int = source
    for axis, (n_in, n_out) in enumerate(zip(before, after)):
        if n_in != n_out:
            result = t.emit(node, "Concatenate", [result] * n_out, suffix=f"_{axis}", axis=axis)
    return result if isinstance(result, int) else t.layer(result)


def _copies(t: Any, node: fx.Node, source: fx.Node | int, axis: int, n: int,
            suffix: str) -> fx.Node | int:
    """``n`` copies of ``source`` joined along sample axis ``axis`` (``source`` if 1)."""
    if n == 1:
        return source
    return t.emit(node, "Concatenate", [source] * n, suffix=suffix, axis=axis)


@_register(METHODS, "repeat")
@_follows_batch_axis("same")
def _repeat(t: Any, node: fx.Node) -> int:
    """``x.repeat(*sizes)``: whole copies of a tensor joined along each of its axes (new
    leading axes of size 1 first where ``sizes`` has more); the batch axis repeats once."""
    source, sizes = node.args[0], t.static(node.args[1:])
    sizes = list(sizes[0] if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)) else sizes)
    batch, ndim = t.batch_axis(node), _ndim(source)
    if sizes[batch.position] != 1:
        raise t.unsupported(node, f"repeat{tuple(sizes)}", "It repeats along the batch axis. ")
    result: fx.Node | int = source
    if len(sizes) > ndim:
        shape = [1] * (len(sizes) - ndim) + list(t.shape(source))
        result = t.emit(node, "Reshape", [result], suffix="_axes", shape=shape)
    for dim, n in enumerate(sizes):
        if dim != batch.position:
            result = _copies(t, node, result, t.axis(node, dim), n, f"_{dim}")
    return result if isinstance(result, int) else t.layer(result)


@_register(FUNCTIONS, torch.repeat_interleave)
@_register(METHODS, "repeat_interleave")
@_follows_batch_axis("any")
def _repeat_interleave(t: Any, node: fx.Node) -> int:
    """``x.repeat_interleave(n, dim)`` with a whole number ``n``: each entry ``n`` times in
    a row. Along the batch axis (gcvit's global query, one per window of its image) the
    copies of each sample merge into the batch axis (see ``BatchAxis``)."""
    source, repeats = node.args[0], t.static(arg(node, 1, "repeats"))
    dim = arg(node, 2, "dim", None)
    if not isinstance(repeats, int) or dim is None:
        raise t.unsupported(node, "repeat_interleave other than by a whole number along one "
                            "axis")
    before, after = t.batch_axis(source), t.batch_axis(node)
    shape = list(t.shape(source))
    if dim % _ndim(source) == before.position:
        if (before.position, before.merged, after.position, after.merged) != (0, 1, 0, repeats):
            raise t.unsupported(node, "repeat_interleave along a moved or merged batch axis")
        if repeats == 1:
            return t.layer(source)
        spread = t.emit(node, "Reshape", [source], suffix="_entry", shape=[1, *shape])
        return _copies(t, node, spread, 0, repeats, "")
    axis = t.axis(source, dim)
    spread = t.emit(node, "Reshape", [source], suffix="_entry",
                    shape=shape[:axis + 1] + [1] + shape[axis + 1:])
    copies = _copies(t, node, spread, axis + 1, repeats, "_copies")
    return t.emit(node, "Reshape", [copies], shape=list(t.shape(node)))


@_register(FUNCTIONS, torch.mean)
@_register(METHODS, "mean")
@_follows_batch_axis("any")
def _mean(t: Any, node: fx.Node) -> int:
    """A mean over sample axes (axes before the batch axis too, which moves it forward)."""
    dims = arg(node, 1, "dim", None)
    if dims is None:
        raise t.unsupported(node, "a mean over all axes", "It would average over the batch. ")
    dims = list(dims) if isinstance(dims, (list, tuple)) else [dims]
    source = node.args[0]
    if t.batch_axis(source).merged != t.batch_axis(node).merged:
        raise t.unsupported(node, "a mean of a tensor with entries merged into its batch axis")
    return t.emit(node, "Mean", [source], axes=[t.axis(source, d) for d in dims],
                  keepdims=bool(arg(node, 2, "keepdim", False)))


@_register(FUNCTIONS, torch.amax)
@_register(METHODS, "amax")
def _amax(t: Any, node: fx.Node) -> int:
    """The largest entry over sample axes (see :func:`_emit_max_over`)."""
    return _emit_max_over(t, node, arg(node, 1, "dim", None), arg(node, 2, "keepdim", False))


@_register(FUNCTIONS, torch.max)
@_register(METHODS, "max")
def _max_along(t: Any, node: fx.Node) -> Outputs:
    """``x.max(dim)``: its values (element 0, ``.values``) convert, its indices do not."""
    dim = arg(node, 1, "dim", None)
    if t.is_tensor(dim) or not isinstance(t.static(dim), int):
        raise t.unsupported(node, "max of all entries, or of two tensors",
                            "x.max(dim) and x.amax(dims) convert. ")
    return Outputs((_emit_max_over(t, node, dim, arg(node, 2, "keepdim", False)), None))


def _emit_max_over(t: Any, node: fx.Node, dims: Any, keepdim: Any) -> int:
    """The largest entry of the node's first argument over sample axes ``dims``: those
    axes moved last and flattened, one max pooling window over them (winner takes all
    under LRP and DeepLift), and the result's shape."""
    source, dims = node.args[0], t.static(dims)
    if dims is None or dims == []:
        raise t.unsupported(node, "a max over all axes", "It would reach across the batch. ")
    dims = list(dims) if isinstance(dims, (list, tuple)) else [dims]
    shape = list(t.shape(source))
    axes = sorted({t.axis(source, d) for d in dims})
    kept = [a for a in range(len(shape)) if a not in axes]
    result: Any = source
    if kept + axes != list(range(len(shape))):
        result = t.emit(node, "Permute", [result], suffix="_reduced_last", perm=kept + axes)
    window = math.prod(shape[a] for a in axes)
    result = t.emit(node, "Reshape", [result], suffix="_rows",
                    shape=[math.prod(shape[a] for a in kept), window])
    result = t.emit(node, "MaxPool1D", [result], suffix="_max", kernel_size=window,
                    stride=None, padding=0, dilation=1, ceil_mode=False)
    out = [1 if a in axes else n for a, n in enumerate(shape)] if t.static(keepdim) else \
        [shape[a] for a in kept]
    return t.emit(node, "Reshape", [result], shape=out or [1])


@_register(FUNCTIONS, getattr)
@_follows_batch_axis("any")
def _attribute(t: Any, node: fx.Node) -> int:
    """``result.values`` of ``x.max(dim)`` (element 0 of its :class:`Outputs`)."""
    source, name = node.args
    if name == "values" and source in t.outputs and t.outputs[source].layers[0] is not None:
        return t.outputs[source].layers[0]
    raise t.unsupported(node, f"the attribute .{name} of a tensor result")


@_register(FUNCTIONS, torch.sum)
@_register(METHODS, "sum")
@_follows_batch_axis("any")
def _sum(t: Any, node: fx.Node) -> int:
    """A sum over sample axes: their mean times their number of entries."""
    dims = arg(node, 1, "dim", None)
    if dims is None or dims == []:
        raise t.unsupported(node, "a sum over all axes", "It would add up the batch. ")
    mean = _mean(t, node)
    dims = list(dims) if isinstance(dims, (list, tuple)) else [dims]
    count = math.prod(t.shape(node.args[0])[t.axis(node.args[0], d)] for d in dims)
    return t.emit(node, "Affine", [mean], suffix="_sum", scale=float(count))


@_register(FUNCTIONS, torch.linalg.vector_norm)
@_follows_batch_axis("same")
def _vector_norm(t: Any, node: fx.Node) -> int:
    """The 2-norm over sample axes (``F.normalize``'s): the square root of the sum of
    squares."""
    source, order = node.args[0], arg(node, 1, "ord", 2)
    dims = arg(node, 2, "dim", None)
    if order != 2 or dims is None:
        raise t.unsupported(node, f"a vector norm of order {order!r} or over all axes",
                            "The 2-norm over sample axes converts. ")
    dims = list(dims) if isinstance(dims, (list, tuple)) else [dims]
    return emit_vector_norm(t, node, source, [t.axis(source, d) for d in dims],
                            bool(arg(node, 3, "keepdim", False)))


def emit_vector_norm(t: Any, node: fx.Node, source: fx.Node, axes: list[int], keepdims: bool,
                     suffix: str = "") -> int:
    """``sqrt(sum(x^2))`` over sample ``axes`` of ``source``."""
    mean = _emit_mean_square(t, node, source, axes, keepdims, suffix)
    count = math.prod(t.shape(source)[a] for a in axes)
    total = t.emit(node, "Affine", [mean], suffix=f"{suffix}_sum", scale=float(count))
    return t.emit(node, "Activation", [total], suffix=suffix, act_name="sqrt")


def _emit_mean_square(t: Any, node: fx.Node, source: Any, axes: list[int], keepdims: bool,
                      suffix: str) -> int:
    """``mean(x^2)`` over sample ``axes`` of ``source`` (RMS norms, 2-norms)."""
    squares = t.emit(node, "Activation", [source], suffix=f"{suffix}_squares", act_name="pow",
                     exponent=2.0)
    return t.emit(node, "Mean", [squares], suffix=f"{suffix}_mean", axes=axes, keepdims=keepdims)


@_register(FUNCTIONS, F.normalize)
@_follows_batch_axis("same")
def _normalize(t: Any, node: fx.Node) -> int:
    """``F.normalize(x, 2, dim, eps)``: ``x / max(norm(x), eps)``, the norm held under LRP."""
    source, order = node.args[0], arg(node, 1, "p", 2.0)
    if order != 2:
        raise t.unsupported(node, f"F.normalize with p={order!r}", "The 2-norm converts. ")
    norm = emit_vector_norm(t, node, source, [t.axis(source, arg(node, 2, "dim", 1))], True,
                            suffix="_norm")
    bounded = emit_one_sided_clamp(t, node, norm, float(arg(node, 3, "eps", 1e-12)),
                                   upper=False, suffix="_bounded")
    reciprocal = t.emit(node, "Activation", [bounded], suffix="_reciprocal", act_name="pow",
                        exponent=-1.0)
    return t.emit(node, "Multiply", [source, reciprocal], lrp_constant=1)


# ---- padding ------------------------------------------------------------------------------


def _pad(t: Any, node: fx.Node, torch_pad: Any, mode: str, value: Any) -> int:
    """Padding of the trailing axes; negative entries crop (a Slice after the padding)."""
    pad, value = list(t.static(torch_pad)), t.static(value)
    pairs = [[pad[2 * i], pad[2 * i + 1]] for i in reversed(range(len(pad) // 2))]
    result: fx.Node | int = node.args[0]
    grown = [[max(v, 0) for v in pair] for pair in pairs]
    if any(v for pair in grown for v in pair):
        result = t.emit(node, "Padding", [result], suffix="_pad", padding=grown, mode=mode,
                        value=float(value or 0.0))
    if any(v < 0 for pair in pairs for v in pair):
        shape = t.shape(node)
        lead = len(shape) - len(pairs)
        ranges = [[0, size, 1] for size in shape[:lead]] + [
            [-min(before, 0), -min(before, 0) + size, 1]
            for (before, _), size in zip(pairs, shape[lead:])]
        result = t.emit(node, "Slice", [result], ranges=ranges)
    return result if isinstance(result, int) else t.layer(result)


_PAD_MODULES = {
    "constant": _nn("ZeroPad1d", "ZeroPad2d", "ZeroPad3d", "ConstantPad1d", "ConstantPad2d",
                    "ConstantPad3d"),
    "reflect": _nn("ReflectionPad1d", "ReflectionPad2d", "ReflectionPad3d"),
    "replicate": _nn("ReplicationPad1d", "ReplicationPad2d", "ReplicationPad3d"),
    "circular": _nn("CircularPad1d", "CircularPad2d", "CircularPad3d"),
}


def _pad_module(mode: str) -> Handler:
    def handler(t: Any, node: fx.Node) -> int:
        m = t.module(node)
        return _pad(t, node, m.padding, mode, getattr(m, "value", 0.0))

    return handler


for _mode, _modules in _PAD_MODULES.items():
    _register(MODULES, *_modules)(_pad_module(_mode))


@_register(FUNCTIONS, F.pad)
@_follows_batch_axis("same")
def _functional_pad(t: Any, node: fx.Node) -> int:
    """``F.pad``, also of a tensor whose batch axis moved or took entries of the samples
    (windows), as long as the padded trailing axes come after the batch axis."""
    n_padded, batch = len(t.static(arg(node, 1, "pad"))) // 2, t.batch_axis(node.args[0])
    if n_padded > len(node.meta["tensor_meta"].shape) - 1 - batch.position:
        raise t.unsupported(node, "padding the batch axis or axes before it")
    return _pad(t, node, arg(node, 1, "pad"), arg(node, 2, "mode", "constant"),
                arg(node, 3, "value", None))


# ---- shape-only operations ---------------------------------------------------------------


@_register(MODULES, nn.Flatten, nn.Unflatten)
@_register(FUNCTIONS, torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze,
           getattr(torch, "unflatten", None))
@_register(METHODS, "view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze",
           "view_as", "reshape_as")
@_follows_batch_axis("any")
def _reshape(t: Any, node: fx.Node) -> int:
    """A reshape that keeps each sample's entries together: the axes before the batch axis
    hold as many entries before as after; entries of the samples may merge into the
    batch axis or split out again (``x.view(B * windows, ...)``; see ``BatchAxis``).

    The layer holds merged entries first; around the reshape they stand where the
    traced tensor has them, behind the axes before the batch axis."""
    source = node.args[0]
    before, after = t.batch_axis(source), t.batch_axis(node)
    leading = [math.prod(x.meta["tensor_meta"].shape[:b.position])
               for x, b in ((source, before), (node, after))]
    if leading[0] != leading[1]:
        raise t.unsupported(node, f"a reshape to {list(node.meta['tensor_meta'].shape)}",
                            "It mixes the entries of different samples. ")
    in_shape, out_shape = t.shape(source), t.shape(node)
    if out_shape == in_shape and before == after:
        return t.layer(source)
    result: fx.Node | int = source
    if before.merged > 1 and before.position:
        result = t.emit(node, "Permute", [result], suffix="_unmerge",
                        perm=_move_axis(len(in_shape), 0, before.position))
    shape = list(out_shape)
    if after.merged > 1 and after.position:
        shape.insert(after.position, shape.pop(0))
        result = t.emit(node, "Reshape", [result], suffix="_reshape", shape=shape)
        return t.emit(node, "Permute", [result],
                      perm=_move_axis(len(shape), after.position, 0))
    if shape == [math.prod(in_shape)]:
        return t.emit(node, "Flatten", [result])
    return t.emit(node, "Reshape", [result], shape=shape)


def _move_axis(ndim: int, source: int, destination: int) -> list[int]:
    """The permutation of ``ndim`` axes that moves axis ``source`` to ``destination``."""
    order = [a for a in range(ndim) if a != source]
    order.insert(destination, source)
    return order


def emit_permutation(t: Any, node: fx.Node, perm: list[int]) -> int:
    """The torch permutation ``perm`` of the node's first argument: the batch axis goes
    where it sends it (see ``BatchAxis``), the other axes are permuted in the layer."""
    source = node.args[0]
    ndim = len(node.meta["tensor_meta"].shape)
    perm = [p % ndim for p in perm]
    if sorted(perm) != list(range(ndim)):
        raise t.unsupported(node, f"the permutation {perm}")
    batch = t.batch_axis(source)
    merged = [0] if batch.merged > 1 else []
    sample_perm = merged + [t.axis(source, p) for p in perm if p != batch.position]
    if sample_perm == list(range(len(sample_perm))):
        return t.layer(source)
    return t.emit(node, "Permute", [source], perm=sample_perm)


@_register(FUNCTIONS, torch.permute)
@_register(METHODS, "permute")
@_follows_batch_axis("any")
def _permute(t: Any, node: fx.Node) -> int:
    rest = node.args[1:]
    dims = rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest
    return emit_permutation(t, node, list(dims or node.kwargs["dims"]))


@_register(FUNCTIONS, torch.movedim, torch.moveaxis)
@_register(METHODS, "movedim", "moveaxis")
@_follows_batch_axis("any")
def _movedim(t: Any, node: fx.Node) -> int:
    """``x.movedim(source, destination)`` (one axis or several) as its permutation."""
    ndim = _ndim(node.args[0])
    sources, destinations = (_per_axis(t.static(arg(node, k, name)), 1) for k, name in
                             ((1, "source"), (2, "destination")))
    sources, destinations = [s % ndim for s in sources], [d % ndim for d in destinations]
    rest = iter(a for a in range(ndim) if a not in sources)
    moved = dict(zip(destinations, sources))
    return emit_permutation(t, node, [moved[d] if d in moved else next(rest) for d in range(ndim)])


@_register(FUNCTIONS, torch.transpose, torch.swapaxes, torch.swapdims)
@_register(METHODS, "transpose", "swapaxes", "swapdims")
@_follows_batch_axis("any")
def _transpose(t: Any, node: fx.Node) -> int:
    ndim = _ndim(node.args[0])
    first, second = node.args[1] % ndim, node.args[2] % ndim
    perm = list(range(ndim))
    perm[first], perm[second] = perm[second], perm[first]
    return emit_permutation(t, node, perm)


@_register(FUNCTIONS, torch.unbind)
@_register(METHODS, "unbind")
@_follows_batch_axis("any")
def _unbind(t: Any, node: fx.Node) -> Outputs:
    """``q, k, v = x.unbind(dim)``: one Slice and Reshape per entry along ``dim``."""
    source, dim = node.args[0], t.static(arg(node, 1, "dim", 0))
    piece_shape = list(t.shape(source))
    del piece_shape[t.axis(source, dim)]
    return Outputs(tuple(
        _index_tensor(t, node, source, (*[slice(None)] * (dim % _ndim(source)), i),
                      suffix=f"_{i}", shape=piece_shape)
        for i in range(source.meta["tensor_meta"].shape[dim])))


@_register(FUNCTIONS, torch.roll)
@_register(METHODS, "roll")
@_follows_batch_axis("same")
def _roll(t: Any, node: fx.Node) -> int:
    """``torch.roll(x, shifts, dims)`` (Swin's shifted windows): per rolled axis, the
    last ``shift`` entries and the others, sliced and concatenated in swapped order."""
    shifts, dims = t.static(arg(node, 1, "shifts")), t.static(arg(node, 2, "dims", None))
    if dims is None:
        raise t.unsupported(node, "torch.roll without `dims`", "It would roll across samples. ")
    shifts, dims = (_per_axis(v, 1) for v in (shifts, dims))
    result: fx.Node | int = node.args[0]
    for k, (shift, dim) in enumerate(zip(shifts, dims)):
        axis, shape = t.axis(node.args[0], dim), t.shape(node.args[0])
        cut = shape[axis] - shift % shape[axis]
        if cut == shape[axis]:
            continue
        pieces = []
        for part, (start, stop) in (("tail", (cut, shape[axis])), ("head", (0, cut))):
            ranges = [[0, size, 1] for size in shape]
            ranges[axis] = [start, stop, 1]
            pieces.append(t.emit(node, "Slice", [result], suffix=f"_{part}{k}", ranges=ranges))
        result = t.emit(node, "Concatenate", pieces, suffix=f"_{k}", axis=axis)
    return result if isinstance(result, int) else t.layer(result)


@_register(FUNCTIONS, torch.chunk, torch.split)
@_register(METHODS, "chunk", "split")
@_follows_batch_axis("any")
def _split(t: Any, node: fx.Node) -> Split:
    source, dim = node.args[0], arg(node, 2, "dim", 0)
    axis = t.axis(source, dim)
    sizes = [meta.shape[dim] for meta in node.meta["tensor_meta"]]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return Split(source, axis, tuple((s, s + n) for s, n in zip(starts, sizes)))


@_register(FUNCTIONS, operator.getitem)
@_follows_batch_axis("any")
def _getitem(t: Any, node: fx.Node) -> int:
    source, index = node.args
    if isinstance(source, fx.Node) and source in t.splits:
        split = t.splits[source]
        ranges = [[0, size, 1] for size in t.shape(split.source)]
        ranges[split.axis] = [*split.bounds[index], 1]
        return t.emit(node, "Slice", [split.source], ranges=ranges)
    if isinstance(source, fx.Node) and source in t.outputs:
        layer = t.outputs[source].layers[index]
        if layer is None:
            converted = [i for i, kept in enumerate(t.outputs[source].layers) if kept is not None]
            raise t.unsupported(node, f"element {index} of the output of node '{source.name}'",
                                f"Of that output, elements {converted} convert. ")
        return layer
    if not t.is_tensor(source):
        raise t.unsupported(node, "indexing into a value that is not a tensor")
    entries = index if isinstance(index, tuple) else (index,)
    tensors = [dim for dim, e in enumerate(entries) if isinstance(e, fx.Node)
               and isinstance(t.constant(e), Tensor)]
    if tensors and all(e == slice(None) for dim, e in enumerate(entries) if dim != tensors[0]):
        return _gather_constant(t, node, source, tensors[0], entries[tensors[0]])
    return _index_tensor(t, node, source, t.static(index))


def _index_tensor(t: Any, node: fx.Node, source: fx.Node, index: Any, suffix: str = "",
                  shape: list[int] | None = None) -> int:
    """``x[:, a:b, i, None, ...]``: a Slice, then a Reshape (to ``shape``, by default the
    node's sample shape) where axes vanish or appear; layer names end in ``suffix``."""
    ranges, reshaped = _index_ranges(t, node, source, index)
    sample_shape = t.shape(source)
    result: fx.Node | int = source
    if ranges != [[0, size, 1] for size in sample_shape]:
        result = t.emit(node, "Slice", [source], suffix=suffix + ("_slice" if reshaped else ""),
                        ranges=ranges)
    if reshaped:
        result = t.emit(node, "Reshape", [result], suffix=suffix,
                        shape=list(t.shape(node) if shape is None else shape))
    return result if isinstance(result, int) else t.layer(result)


def _index_ranges(t: Any, node: fx.Node, source: fx.Node,
                  index: Any) -> tuple[list[list[int]], bool]:
    """The ``[start, stop, step]`` that the basic index ``index`` (slices, ints, ``None``,
    ``...``) of ``source`` takes along each sample axis as its layer holds it, and whether
    the index drops or adds axes (ints, ``None``).

    The index runs over the traced tensor's axes; it must take the whole batch axis,
    wherever that is (see ``BatchAxis``)."""
    batch, ndim = t.batch_axis(source), _ndim(source)
    entries = list(index) if isinstance(index, tuple) else [index]
    if any(not isinstance(e, (slice, int, type(None), type(Ellipsis))) or isinstance(e, bool)
           for e in entries):
        raise t.unsupported(node, "indexing with tensors, lists or booleans (advanced indexing)")
    if Ellipsis in entries:
        at = entries.index(Ellipsis)
        n_fill = ndim - sum(e is not None and e is not Ellipsis for e in entries)
        entries[at:at + 1] = [slice(None)] * n_fill
    axis_entries = [e for e in entries if e is not None]
    axis_entries += [slice(None)] * (ndim - len(axis_entries))
    if axis_entries[batch.position] != slice(None):
        raise t.unsupported(node, f"the index {index!r}", "It selects along the batch axis. ")
    sample_shape = t.shape(source)
    ranges = [[0, sample_shape[0], 1]] if batch.merged > 1 else []
    for dim, entry in enumerate(axis_entries):
        if dim == batch.position:
            continue
        size = sample_shape[len(ranges)]
        if isinstance(entry, int):
            ranges.append([entry % size, entry % size + 1, 1])
        else:
            start, stop, step = entry.indices(size)
            if step < 1:
                raise t.unsupported(node, f"the slice step {step}", "Steps must be positive. ")
            ranges.append([start, max(start, stop), step])
    if any(start >= stop for start, stop, _ in ranges):
        raise t.unsupported(node, f"the index {index!r}", "It selects no entries. ")
    return ranges, any(e is None or isinstance(e, int) for e in entries)


@_register(FUNCTIONS, assign_into)
def _assign_into(t: Any, node: fx.Node) -> int:
    """``assign_into(base, value, index)`` (an in-place update written back, see
    :mod:`~innsight.converter.mutations`): ``base`` with ``value`` in the block that the
    basic ``index`` takes, as Slices of ``base`` around the block joined with ``value``
    by a Concatenate along each axis the index narrows (innermost first)."""
    base, value, index = node.args
    entries = index if isinstance(index, tuple) else (index,)
    if any(isinstance(e, fx.Node) and "tensor_meta" in e.meta for e in entries):
        raise t.unsupported(node, "an in-place update at tensor indices (advanced indexing)")
    ranges, _ = _index_ranges(t, node, base, t.static(index))
    if any(step != 1 for _, _, step in ranges):
        raise t.unsupported(node, f"an in-place update of the strided view {index!r}")
    if not t.is_tensor(value):
        raise t.unsupported(node, "an in-place update with a value that is not a tensor "
                            "computed from the inputs")
    block = [stop - start for start, stop, _ in ranges]
    if list(t.shape(value)) != block:
        if math.prod(t.shape(value)) != math.prod(block):
            raise t.unsupported(node, f"an in-place update that broadcasts a value of shape "
                                f"{list(t.shape(value))} to the view's {block}")
        value = t.emit(node, "Reshape", [value], suffix="_value", shape=block)
    sizes = t.shape(base)
    narrowed = [axis for axis, size in enumerate(sizes) if ranges[axis][:2] != [0, size]]
    result = value
    for k in reversed(range(len(narrowed))):  # the block of base narrowed on axes before
        axis, (start, stop, _) = narrowed[k], ranges[narrowed[k]]
        outer = [ranges[a] if a in narrowed[:k] else [0, size, 1] for a, size in enumerate(sizes)]
        before = [_slice_along(t, node, base, outer, axis, 0, start)] if start > 0 else []
        after = ([_slice_along(t, node, base, outer, axis, stop, sizes[axis])]
                 if stop < sizes[axis] else [])
        result = t.emit(node, "Concatenate", [*before, result, *after], suffix=f"_{axis}",
                        axis=axis)
    return result if isinstance(result, int) else t.layer(result)


def _slice_along(t: Any, node: fx.Node, base: fx.Node, ranges: list[list[int]], axis: int,
                 start: int, stop: int) -> int:
    """A Slice of ``base`` taking ``ranges``, with ``start:stop`` along ``axis``."""
    ranges = [list(r) for r in ranges]
    ranges[axis] = [start, stop, 1]
    return t.emit(node, "Slice", [base], suffix=f"_{axis}_{start}", ranges=ranges)


@_follows_batch_axis("same")
def _copy_into(t: Any, node: fx.Node) -> int:
    """``dst.copy_(src)`` (``aten.copy_``, ``aten.copy``): the updated ``dst`` holds
    ``src`` (a broadcast of ``src`` is refused)."""
    destination, source = node.args[:2]
    if not t.is_tensor(source):
        raise t.unsupported(node, "copying a value that is not a tensor computed from the "
                            "inputs into a tensor")
    if t.shape(source) != t.shape(destination):
        raise t.unsupported(node, f"copying a tensor of shape {list(t.shape(source))} into "
                            f"one of shape {list(t.shape(destination))} (a broadcast)")
    return t.layer(source)


_register(METHODS, "copy_")(_copy_into)
_register(FUNCTIONS, getattr(torch.ops.aten.copy_, "default", None),
          getattr(torch.ops.aten.copy, "default", None))(_copy_into)


# ---- ATen operations of a torch.export graph ------------------------------------------


@_register(FUNCTIONS, torch.select)
@_follows_batch_axis("any")
def _select(t: Any, node: fx.Node) -> int:
    """``torch.select(x, dim, i)`` (``aten.select.int``): ``x[..., i]`` along ``dim``."""
    source, dim, position = node.args[0], t.static(node.args[1]), t.static(node.args[2])
    return _index_tensor(t, node, source, (*[slice(None)] * (dim % _ndim(source)), position))



@_follows_batch_axis("any")
def _slice_op(t: Any, node: fx.Node) -> int:
    """``aten.slice.Tensor(x, dim, start, end, step)``: ``x[..., start:end:step]`` along ``dim``
    (a slice over the whole batch axis, as ``x[:, 1:]`` exports, keeps the batch)."""
    source = node.args[0]
    dim, start, end, step = (t.static(arg(node, position, name, default)) for position, name, default
                             in ((1, "dim", 0), (2, "start", None), (3, "end", None), (4, "step", 1)))
    whole = start in (None, 0) and (end is None or end >= TO_THE_END) and step == 1
    entry = slice(None) if whole else slice(start, end, step)
    return _index_tensor(t, node, source, (*[slice(None)] * (dim % _ndim(source)), entry))


def _ndim(node: fx.Node) -> int:
    """The number of axes of the traced tensor of ``node``, its batch axis included."""
    return len(node.meta["tensor_meta"].shape)


@_follows_batch_axis("same")
def _index_op(t: Any, node: fx.Node) -> int:
    """``aten.index.Tensor(x, indices)``: ``x[torch.arange(len(x))]`` picks every sample once,
    in order (Hugging Face's pooling of the last token); a constant integer vector along
    one sample axis is a gather (see :func:`_gather_constant`); other tensor indices
    (advanced indexing) are refused."""
    source, indices = node.args[0], list(node.args[1])
    position = t.batch_axis(source).position
    if (len(indices) == position + 1 and all(i is None for i in indices[:-1])
            and _is_sample_index(indices[-1])):
        return t.layer(source)
    if (len(indices) == 2 and position == 0 and _is_sample_index(indices[0])
            and indices[1] in t.helpers and len(indices[1].meta["tensor_meta"].shape) == 1):
        return _pick_per_sample(t, node, source, indices[1])
    given = [(dim, i) for dim, i in enumerate(indices) if i is not None]
    if len(given) == 1 and given[0][0] != position:
        return _gather_constant(t, node, source, *given[0])
    raise t.unsupported(node, "indexing with tensors (advanced indexing)",
                        "x[torch.arange(batch size)] and a constant integer vector along one "
                        "sample axis convert. ")


def _pick_per_sample(t: Any, node: fx.Node, source: fx.Node, index: fx.Node) -> int:
    """``x[arange(batch), i]`` with one index per sample computed from the token ids
    (Hugging Face's pooling of the last real token): a product of a one-hot row, held
    fixed under LRP, with each sample's ``(tokens, ...)`` tensor."""
    shape = t.shape(source)
    one_hot = t.emit(node, "Helper", [index], suffix="_one_hot", op="aten.one_hot.default",
                     args=[{"input": 0}, shape[0]])
    row = t.emit(node, "Helper", [one_hot], suffix="_row", op="aten._to_copy.default",
                 args=[{"input": 0}], kwargs={"dtype": {"dtype": "float32"}})
    row = t.emit(node, "Helper", [row], suffix="_row_shape", op="aten.view.default",
                 args=[{"input": 0}, [{"batch": 1}, 1, shape[0]]])
    flat = t.emit(node, "Reshape", [source], suffix="_tokens", shape=[shape[0], math.prod(shape[1:])])
    picked = t.emit(node, "MatMul", [row, flat], suffix="_pick", lrp_constant=0)
    return t.emit(node, "Reshape", [picked], shape=list(t.shape(node)))


def _gather_constant(t: Any, node: fx.Node, source: fx.Node, dim: int, index: Any) -> int:
    """``x[..., index, ...]`` with a constant integer vector ``index`` along axis ``dim``: a
    dense layer on that axis whose weight rows are one-hot (an exact linear map)."""
    found = t.constant(index)
    if not (isinstance(found, Tensor) and found.ndim == 1 and not found.is_floating_point()
            and found.dtype != torch.bool):
        raise t.unsupported(node, "indexing with a tensor that is no constant integer vector",
                            "x[torch.arange(batch size)] and a constant integer vector along "
                            "one sample axis convert. ")
    axis, shape = t.axis(source, dim), t.shape(source)
    last = len(shape) - 1
    weight = F.one_hot(found.long() % shape[axis], shape[axis]).to(node.meta["tensor_meta"].dtype)
    moved = source if axis == last else t.emit(node, "Permute", [source], suffix="_to_last",
                                                 perm=_move_axis(len(shape), axis, last))
    picked = t.emit(node, "Dense", [moved], suffix="" if axis == last else "_pick",
                    weight=weight, bias=None)
    if axis == last:
        return picked
    return t.emit(node, "Permute", [picked], perm=_move_axis(len(shape), last, axis))


def _is_sample_index(value: Any) -> bool:
    """Whether ``value`` is a traced ``arange`` of the batch size: each sample's index."""
    found = value.meta.get("constant_value") if isinstance(value, fx.Node) else None
    return (isinstance(found, Tensor) and value.meta.get("depends_on") == "shapes"
            and found.ndim == 1 and torch.equal(found, torch.arange(len(found))))


def _rsub_op(t: Any, node: fx.Node) -> int:
    """``aten.rsub.Scalar(x, c)`` (``c - x``)."""
    if arg(node, 2, "alpha", 1) != 1:
        raise t.unsupported(node, "rsub with alpha != 1")
    return _signed_sum(t, node, node.args[1], node.args[0], sign=-1.0)


def _aten_aliases() -> dict[str, Any]:
    """ATen overloads (by name) of a ``torch.export`` graph whose arguments come in the
    order of a torch function (or tensor method, by name) handled above: the overload
    takes that function's handler."""
    return {
        "conv1d.default": F.conv1d, "conv2d.default": F.conv2d, "conv3d.default": F.conv3d,
        "conv1d.padding": F.conv1d, "conv2d.padding": F.conv2d, "conv3d.padding": F.conv3d,
        "linear.default": F.linear, "batch_norm.default": torch.batch_norm,
        "layer_norm.default": F.layer_norm, "matmul.default": torch.matmul,
        "bmm.default": torch.bmm, "scaled_dot_product_attention.default":
            F.scaled_dot_product_attention,
        "max_pool1d.default": F.max_pool1d, "max_pool2d.default": F.max_pool2d,
        "max_pool3d.default": F.max_pool3d, "avg_pool1d.default": F.avg_pool1d,
        "avg_pool2d.default": F.avg_pool2d, "avg_pool3d.default": F.avg_pool3d,
        "adaptive_avg_pool1d.default": F.adaptive_avg_pool1d,
        "adaptive_avg_pool2d.default": F.adaptive_avg_pool2d,
        "adaptive_avg_pool3d.default": F.adaptive_avg_pool3d,
        "relu.default": F.relu, "relu_.default": F.relu, "relu6.default": F.relu6,
        "silu.default": F.silu, "silu_.default": F.silu, "gelu.default": F.gelu,
        "sigmoid.default": torch.sigmoid, "tanh.default": torch.tanh,
        "hardswish.default": F.hardswish, "hardswish_.default": F.hardswish,
        "hardsigmoid.default": F.hardsigmoid, "hardtanh.default": F.hardtanh,
        "hardtanh_.default": F.hardtanh, "leaky_relu.default": F.leaky_relu,
        "elu.default": F.elu, "softplus.default": F.softplus, "mish.default": F.mish,
        "exp.default": torch.exp, "exp_.default": torch.exp, "softmax.int": torch.softmax,
        "selu.default": F.selu, "celu.default": F.celu, "log_sigmoid.default": F.logsigmoid,
        "clamp.default": torch.clamp, "pow.Tensor_Scalar": torch.pow,
        "sqrt.default": torch.sqrt, "rsqrt.default": torch.rsqrt, "abs.default": torch.abs,
        "add.Tensor": torch.add, "add_.Tensor": torch.add, "sub.Tensor": torch.sub,
        "mul.Tensor": torch.mul, "mul_.Tensor": torch.mul, "div.Tensor": torch.div,
        "div_.Tensor": torch.div, "sub_.Tensor": torch.sub, "mul.Scalar": torch.mul,
        "div.Scalar": torch.div, "add.Scalar": torch.add, "sub.Scalar": torch.sub,
        "neg.default": torch.neg, "cat.default": torch.cat, "concat.default": torch.cat,
        "mean.dim": torch.mean, "unflatten.int": torch.unflatten,
        "view.default": torch.reshape, "reshape.default": torch.reshape,
        "flatten.using_ints": torch.flatten, "unsqueeze.default": torch.unsqueeze,
        "squeeze.dim": torch.squeeze, "permute.default": torch.permute,
        "transpose.int": torch.transpose, "pad.default": F.pad,
        "dropout.default": F.dropout, "dropout_.default": F.dropout,
        "alpha_dropout.default": F.alpha_dropout, "feature_dropout.default": F.dropout2d,
        "feature_alpha_dropout.default": F.feature_alpha_dropout,
        "clone.default": torch.clone,
        "select.int": torch.select, "chunk.default": torch.chunk, "split.Tensor": torch.split,
        "split_with_sizes.default": torch.split,
        "conv_transpose1d.default": F.conv_transpose1d,
        "conv_transpose2d.input": F.conv_transpose2d,
        "conv_transpose3d.input": F.conv_transpose3d,
        "group_norm.default": F.group_norm, "roll.default": torch.roll,
        "unbind.int": torch.unbind, "to.dtype": "to", "to.dtype_layout": "to",
        "_to_copy.default": "to", "type_as.default": "type_as", "addmm.default": torch.addmm,
        "mm.default": torch.mm, "stack.default": torch.stack, "sum.dim_IntList": torch.sum,
        "linalg_vector_norm.default": torch.linalg.vector_norm, "expand_as.default": "expand",
        "movedim.int": torch.movedim, "movedim.intlist": torch.movedim,
        "rms_norm.default": getattr(F, "rms_norm", None), "square.default": torch.square,
        "clamp.Tensor": torch.clamp,
        "alias.default": torch.clone, "clamp_min.default": "clamp_min",
        "clamp_max.default": "clamp_max", "einsum.default": torch.einsum,
        "im2col.default": F.unfold, "col2im.default": F.fold, "unfold.default": "unfold",
        "amax.default": torch.amax, "max.dim": torch.max, "addcmul.default": torch.addcmul,
        "reshape_as.default": "reshape_as", "view_as.default": "view_as",
        "repeat.default": "repeat", "repeat_interleave.self_int": torch.repeat_interleave,
    }


for _overload_name, _function in _aten_aliases().items():
    _packet, _, _overload = _overload_name.partition(".")
    _op = getattr(getattr(torch.ops.aten, _packet, None), _overload, None)
    if _op is not None and _function is not None:  # what this torch version has
        FUNCTIONS[_op] = METHODS[_function] if isinstance(_function, str) else FUNCTIONS[_function]
_register(FUNCTIONS, getattr(torch.ops.aten.slice, "Tensor", None))(_slice_op)
_register(FUNCTIONS, getattr(torch.ops.aten.rsub, "Scalar", None))(_rsub_op)
_register(FUNCTIONS, getattr(torch.ops.aten.index, "Tensor", None))(_index_op)
for _mode, _align_position in (("nearest", None), ("nearest_exact", None), ("linear", 2),
                               ("bilinear", 2), ("trilinear", 2)):
    for _n in (1, 2, 3):
        _prefix = "_" if _mode == "nearest_exact" else ""  # ATen's own name
        _packet = getattr(torch.ops.aten, f"{_prefix}upsample_{_mode}{_n}d", None)
        _register(FUNCTIONS, getattr(_packet, "vec", None))(
            _aten_upsample(_mode.replace("_", "-"), _align_position))
_register(FUNCTIONS, getattr(torch.ops.aten.expand, "default", None))(METHODS["expand"])
_register(FUNCTIONS, getattr(torch.ops.aten.contiguous, "default", None))(alias_input)


# ---- token inputs ---------------------------------------------------------------------


def _embedding(t: Any, node: fx.Node, ids: Any, weight: Any, max_norm: Any = None) -> int:
    """An embedding lookup of integer ids ``ids`` in a constant table ``weight``."""
    table = weight if isinstance(weight, Tensor) else t.constant(weight)
    if not isinstance(table, Tensor) or table.ndim != 2:
        raise t.unsupported(node, "an embedding lookup in a table computed from the inputs",
                            "The table must be a parameter or a constant of shape (vocab, dim). ")
    if max_norm is not None:
        raise t.unsupported(node, "an embedding with max_norm",
                            "It rescales the table's rows in place on lookup. ")
    scaled, factor = _embedding_scale(t, node)
    layer = t.emit(node, "Embedding", [ids], weight=table * factor)
    if scaled is not None:  # the scaled lookup is one embedding: methods start after it
        t.layer_of_node[scaled] = layer
    return layer


def _embedding_scale(t: Any, node: fx.Node) -> tuple[fx.Node | None, float]:
    """The one use of an embedding lookup that multiplies it by a constant number
    (Gemma's ``embed_scale``), and that number; ``(None, 1.0)`` where there is none."""
    users = list(node.users)
    name = target_name(users[0].target) if users else ""
    if len(users) != 1 or name not in ("mul", "__mul__"):
        return None, 1.0
    operands = [a for a in users[0].args if a is not node]
    found = t.constant(operands[0]) if len(operands) == 1 and len(users[0].args) == 2 else None
    if isinstance(found, Tensor) and found.numel() == 1:
        found = float(found)
    return (users[0], found) if isinstance(found, float) else (None, 1.0)


@_register(MODULES, nn.Embedding)
def _embedding_module(t: Any, node: fx.Node) -> int:
    """``nn.Embedding`` (without ``max_norm``)."""
    module = t.module(node)
    return _embedding(t, node, node.args[0], module.weight, module.max_norm)


@_register(FUNCTIONS, F.embedding)
def _embedding_function(t: Any, node: fx.Node) -> int:
    """``F.embedding(input, weight, padding_idx, max_norm, ...)``."""
    return _embedding(t, node, arg(node, 0, "input"), arg(node, 1, "weight"),
                      arg(node, 3, "max_norm", None))


@_register(FUNCTIONS, getattr(torch.ops.aten.embedding, "default", None))
def _embedding_op(t: Any, node: fx.Node) -> int:
    """``aten.embedding(weight, indices, ...)`` of an exported graph."""
    return _embedding(t, node, node.args[1], node.args[0])
