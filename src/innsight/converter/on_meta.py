"""Running torch code on the meta device: shapes and dtypes without data or compute."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map_only

#: Functions whose result has the shape and dtype of their first operand, answered so
#: without their meta kernel: batch normalisation's is a Python decomposition into a
#: dozen elementwise operations, which costs more than every convolution of a ResNet
#: (``F.batch_norm`` of ``torch.fx`` graphs, ``aten.batch_norm`` of ``torch.export``'s).
SAME_SHAPE = (F.batch_norm, torch.ops.aten.batch_norm.default)


class OnMeta(TorchFunctionMode):
    """Within ``with OnMeta():`` every torch call runs on the meta device: real tensor
    operands (parameters, constants) enter as meta tensors of their shape and dtype, so
    a forward pass costs no arithmetic. Calls that read values (``.item()``, ``bool``)
    raise."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        if func in SAME_SHAPE:
            return torch.empty_like(args[0] if args else kwargs["input"], device="meta")
        args, kwargs = tree_map_only(Tensor, _as_meta, (args, kwargs or {}))
        return func(*args, **kwargs)


def _as_meta(value: Tensor) -> Tensor:
    return value if value.is_meta else value.to("meta")
