"""Running torch code on the meta device: shapes and dtypes without data or compute."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map_only

#: Per-channel functions whose result has the shape and dtype of their first operand
#: ``(batch, C, ...)``, answered so without their meta kernel where every other tensor
#: operand has shape ``(C,)``: batch normalisation's kernel is a Python decomposition
#: into a dozen elementwise operations, which costs more than every convolution of a
#: ResNet (``F.batch_norm`` of ``torch.fx`` graphs, ``aten.batch_norm`` of
#: ``torch.export``'s).
SAME_SHAPE = (F.batch_norm, torch.ops.aten.batch_norm.default)


class OnMeta(TorchFunctionMode):
    """Within ``with OnMeta():`` every torch call runs on the meta device: real tensor
    operands (parameters, constants) enter as meta tensors of their shape and dtype, so
    a forward pass costs no arithmetic. Calls that read values (``.item()``, ``bool``)
    raise."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in SAME_SHAPE and _per_channel(args, kwargs):
            return torch.empty_like(args[0], device="meta")
        args, kwargs = tree_map_only(Tensor, _as_meta, (args, kwargs))
        return func(*args, **kwargs)


def _per_channel(args: tuple, kwargs: dict) -> bool:
    """Whether ``args[0]`` is ``(batch, C, ...)`` and every other tensor operand ``(C,)``."""
    if not args or not isinstance(args[0], Tensor) or args[0].ndim < 2:
        return False
    channels = (args[0].shape[1],)
    return all(tuple(t.shape) == channels for t in (*args[1:], *kwargs.values())
               if isinstance(t, Tensor))


def _as_meta(value: Tensor) -> Tensor:
    return value if value.is_meta else value.to("meta")
