"""ONNX ``Trilu`` (the upper or lower triangle of the last two axes), which onnx2torch
does not read: a converter for onnx2torch that makes an :class:`OnnxTrilu` module, and
its handler.

A ``Trilu`` of a constant (a causal mask made from a matrix of ones) folds into a
constant with the ONNX front-end's other constants; a ``Trilu`` of a tensor computed
from the inputs is the product with a constant 0/1 mask (an ``Affine`` layer).
"""

from __future__ import annotations

from typing import Any

import torch
from onnx2torch.node_converters.registry import add_converter
from onnx2torch.utils.common import (
    OnnxToTorchModule,
    OperationConverterResult,
    onnx_mapping_from_node,
)
from torch import Tensor, fx, nn

from innsight.converter.torch_ops import BATCH_AXIS_HANDLERS, MODULES, arg


class OnnxTrilu(nn.Module, OnnxToTorchModule):
    """``triu(x, k)`` (``upper``) or ``tril(x, k)`` over the last two axes of ``x``."""

    def __init__(self, upper: bool) -> None:
        super().__init__()
        self.upper = upper

    def forward(self, x: Tensor, k: Tensor | None = None) -> Tensor:
        diagonal = 0 if k is None else int(k)
        return torch.triu(x, diagonal) if self.upper else torch.tril(x, diagonal)


def _convert(node: Any, graph: Any) -> OperationConverterResult:
    return OperationConverterResult(
        torch_module=OnnxTrilu(bool(node.attributes.get("upper", 1))),
        onnx_mapping=onnx_mapping_from_node(node=node))


try:
    add_converter(operation_type="Trilu", version=14)(_convert)
except ValueError:  # registered already (a second import of this module)
    pass


def _handler(t: Any, node: fx.Node) -> int:
    """``x`` times the constant mask of its last two axes."""
    source, k = node.args[0], arg(node, 1, "k", None)
    diagonal = t.constant(k) if k is not None else 0.0
    if diagonal is None:
        raise t.unsupported(node, "Trilu with a diagonal offset k computed from the input")
    shape = node.meta["tensor_meta"].shape
    if t.batch_axis(node).position >= len(shape) - 2:
        raise t.unsupported(node, "Trilu over the batch axis",
                            "The batch axis must not be one of the last two. ")
    mask = t.module(node)(torch.ones(shape[-2:], dtype=torch.float64),
                          torch.as_tensor(diagonal))
    return t.emit(node, "Affine", [source], scale=mask)


MODULES[OnnxTrilu] = _handler
BATCH_AXIS_HANDLERS[_handler] = "same"  # the mask spans the last two axes only
