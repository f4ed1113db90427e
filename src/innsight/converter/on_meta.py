"""Running torch code on the meta device: shapes and dtypes without data or compute."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map_only

aten = torch.ops.aten

#: Per-channel functions whose result has the shape and dtype of their first operand
#: ``(batch, C, ...)``, answered so without their meta kernel where every other tensor
#: operand has shape ``(C,)``: batch normalisation's kernel is a Python decomposition
#: into a dozen elementwise operations, which costs more than every convolution of a
#: ResNet (``F.batch_norm`` of ``torch.fx`` graphs, ``aten.batch_norm`` of
#: ``torch.export``'s).
SAME_SHAPE = (F.batch_norm, aten.batch_norm.default)

#: Elementwise functions whose result has the shape and dtype of their first operand
#: where that is a contiguous floating-point tensor and every other tensor operand has
#: its shape and dtype (activations, in-place ones included, and sums): answered so without
#: their meta kernels, most of which are Python decompositions (``torch._refs``) that
#: cost ten times a convolution's.
ELEMENTWISE = frozenset({
    F.relu, F.relu_, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_,
    F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.hardtanh, F.hardswish, F.hardsigmoid,
    F.mish, F.selu, F.celu, F.softplus, F.softsign, F.logsigmoid, F.tanhshrink,
    torch.sigmoid, torch.tanh, torch.exp, Tensor.sigmoid, Tensor.tanh, Tensor.exp,
    torch.add, Tensor.add, Tensor.add_, torch.mul, Tensor.mul, Tensor.mul_,  # x + y: Tensor.add
    aten.relu.default, aten.relu_.default, aten.hardtanh.default, aten.hardtanh_.default,
    aten.gelu.default, aten.silu.default, aten.silu_.default, aten.sigmoid.default,
    aten.tanh.default, aten.hardswish.default, aten.hardsigmoid.default,
    aten.add.Tensor, aten.add_.Tensor, aten.mul.Tensor,
})


class OnMeta(TorchFunctionMode):
    """Within ``with OnMeta():`` every torch call runs on the meta device: real tensor
    operands (parameters, constants) enter as meta tensors of their shape and dtype, so
    a forward pass costs no arithmetic. Calls that read values (``.item()``, ``bool``)
    raise."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in SAME_SHAPE and _per_channel(args, kwargs):
            return _empty_like(args[0])
        if func in ELEMENTWISE and _same_as_first(args, kwargs):
            return torch.empty(args[0].shape, dtype=args[0].dtype, device="meta")
        return func(*[_as_meta(a) for a in args], **{k: _as_meta(v) for k, v in kwargs.items()})


def _per_channel(args: tuple, kwargs: dict) -> bool:
    """Whether ``args[0]`` is ``(batch, C, ...)`` and every other tensor operand ``(C,)``."""
    if not args or not isinstance(args[0], Tensor) or args[0].ndim < 2:
        return False
    channels = (args[0].shape[1],)
    return all(tuple(t.shape) == channels for t in (*args[1:], *kwargs.values())
               if isinstance(t, Tensor))


def _same_as_first(args: tuple, kwargs: dict) -> bool:
    """Whether ``args[0]`` is a contiguous floating-point tensor and every other tensor
    operand has its shape and dtype (no ``out=``)."""
    if not args or not isinstance(args[0], Tensor) or not args[0].is_floating_point() or (
            not args[0].is_contiguous() or "out" in kwargs):
        return False
    first = args[0]
    return all(t.shape == first.shape and t.dtype == first.dtype
               for t in (*args[1:], *kwargs.values()) if isinstance(t, Tensor))


def _empty_like(value: Tensor) -> Tensor:
    """A meta tensor of ``value``'s shape, dtype and (where it is dense: contiguous or
    channels last) strides; ``torch.empty_like`` on meta is a Python decomposition."""
    if value.is_contiguous() or value.is_contiguous(memory_format=torch.channels_last):
        return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype,
                                   device="meta")
    return torch.empty_like(value, device="meta")


def _as_meta(value: Any) -> Any:
    """``value`` with every real tensor in it (in lists, tuples, dicts) on the meta device."""
    if isinstance(value, Tensor):
        return value if value.is_meta else value.to("meta")
    if type(value) in (list, tuple):
        return type(value)(_as_meta(v) for v in value)
    if isinstance(value, (tuple, dict)):  # named tuples and the like
        return tree_map_only(Tensor, _as_meta, value)
    return value
