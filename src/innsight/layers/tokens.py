"""Layers that read integer inputs (token ids, attention masks): the embedding lookup and
the helper operations computed from such inputs.

Neither passes anything back: no gradient reaches integer values, and the rule-based
walks end at them (``ends_walks``). Methods explain a model with token inputs with
respect to the output of the :class:`Embedding` that reads them (the first tensor that
can be differentiated); a :class:`Helper` (a mask, position ids, the index of the last
real token) runs in the forward pass and carries no relevance.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from innsight.layers.base import Layer, frozen_param

#: Why the walks end at a layer reading integers.
_INTEGER_INPUTS = "it reads integer ids: nothing passes back to them"


class Embedding(Layer):
    """A table lookup: token ids ``(*S)`` (integers in ``[0, vocab)``) to rows of ``weight``
    ``(vocab, D)``, output ``(*S, D)`` (torch ``nn.Embedding``, Keras ``Embedding``)."""

    type_names = ("Embedding",)
    required = ("weight",)
    ends_walks = True
    no_rule_reason = _INTEGER_INPUTS

    def __init__(self, type_name: str, weight: Any) -> None:
        super().__init__(type_name)
        self.weight = frozen_param(weight, "weight")
        if self.weight.ndim != 2:
            raise ValueError(f"`weight` must be (vocab, dim), got shape {list(self.weight.shape)}.")

    @property
    def vocab_size(self) -> int:
        return self.weight.shape[0]

    def forward(self, ids: Tensor) -> Tensor:
        return F.embedding(ids.long(), self.weight)

    def get_params(self) -> dict[str, Any]:
        return {"weight": self.weight.detach()}

    def summary(self) -> str:
        return f"Embedding({self.weight.shape[0]}, {self.weight.shape[1]})"


class Helper(Layer):
    """One ATen operation ``op`` (e.g. ``"aten.ne.Scalar"``) on values computed from
    integer inputs: ``op(*args, **kwargs)`` where ``{"input": k}`` stands for the ``k``-th
    tensor it reads, ``{"batch": f}`` for ``f`` times the batch size, ``{"tensor": values,
    "dtype": name}`` for a constant tensor, ``{"dtype": name}`` for a dtype (floating
    dtypes become the model's) and ``{"device": None}`` for the device of what it reads; ``item`` takes one tensor of
    an operation returning several.
    The first tensor it reads also gives the batch size (operations such as
    ``arange(batch)`` read a model input for it)."""

    type_names = ("Helper",)
    n_inputs = None
    min_inputs = 1
    required = ("op",)
    optional = {"args": (), "kwargs": {}, "item": None}
    ends_walks = True
    no_rule_reason = "it computes from integer inputs (masks, positions): it carries no relevance"

    def __init__(self, type_name: str, op: Any, args: Any, kwargs: Any, item: Any) -> None:
        super().__init__(type_name)
        if item is not None and (not isinstance(item, int) or isinstance(item, bool)):
            raise ValueError(f"`item` must be an int or None, got {item!r}.")
        self.item = item
        self.op_name, self.op = op, aten_op(op)
        if not isinstance(args, (list, tuple)) or not isinstance(kwargs, Mapping):
            raise ValueError(f"`args` must be a list and `kwargs` a dict, got {args!r}, {kwargs!r}.")
        self.args, self.kwargs = list(args), dict(kwargs)
        self.constants: list[Tensor] = []
        self._decoded = (_decode(self.args, self.constants),
                         {k: _decode(v, self.constants) for k, v in self.kwargs.items()})
        for k, value in enumerate(self.constants):
            self.register_buffer(f"constant_{k}", value)
        self.register_buffer("_dtype_marker", torch.zeros(()), persistent=False)

    def forward(self, *xs: Tensor) -> Tensor:
        constants = [getattr(self, f"constant_{k}") for k in range(len(self.constants))]
        args, kwargs = _resolve(self._decoded, xs, constants, self._dtype_marker.dtype)
        result = self.op(*args, **kwargs)
        return result if self.item is None else result[self.item]

    def get_params(self) -> dict[str, Any]:
        params = {"op": self.op_name, "args": self.args, "kwargs": self.kwargs}
        return params if self.item is None else {**params, "item": self.item}

    def summary(self) -> str:
        return f"Helper({self.op_name})"


def aten_op(name: Any) -> Any:
    """The ATen operation ``name`` (``"aten.<op>.<overload>"``); random ones are refused."""
    parts = name.split(".") if isinstance(name, str) else []
    op = None
    if len(parts) == 3 and parts[0] == "aten":
        packet = getattr(torch.ops.aten, parts[1], None)
        op = getattr(packet, parts[2], None) if packet is not None else None
    if not isinstance(op, torch._ops.OpOverload):
        raise ValueError(f"`op` must name an ATen operation 'aten.<op>.<overload>', got {name!r}.")
    if torch.Tag.nondeterministic_seeded in op.tags:
        raise ValueError(f"`op` {name!r} draws random numbers; helper operations must be exact.")
    return op


class _Ref:
    """A placeholder in decoded arguments: the ``kind`` ("input", "batch", "constant",
    "dtype", "device") and its value."""

    def __init__(self, kind: str, value: Any) -> None:
        self.kind, self.value = kind, value


def _decode(value: Any, constants: list[Tensor]) -> Any:
    """Plain arguments with their placeholder dicts as :class:`_Ref`; constant tensors are
    collected into ``constants``."""
    if isinstance(value, Mapping):
        if "tensor" in value:
            dtype = getattr(torch, str(value.get("dtype", "float32")), None)
            if not isinstance(dtype, torch.dtype):
                raise ValueError(f"`args` holds a tensor of unknown dtype {value.get('dtype')!r}.")
            constants.append(torch.as_tensor(value["tensor"], dtype=dtype))
            return _Ref("constant", len(constants) - 1)
        if len(value) == 1 and next(iter(value)) in ("input", "batch", "dtype", "device"):
            kind, found = next(iter(value.items()))
            if kind == "dtype" and not isinstance(getattr(torch, str(found), None), torch.dtype):
                raise ValueError(f"`args` names an unknown dtype {found!r}.")
            return _Ref(kind, found)
        return {k: _decode(v, constants) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_decode(v, constants) for v in value]
    return value


def _resolve(value: Any, xs: tuple[Tensor, ...], constants: list[Tensor],
             float_dtype: torch.dtype) -> Any:
    """Decoded arguments with the placeholders filled in for the tensors ``xs``."""
    if isinstance(value, _Ref):
        if value.kind == "input":
            return xs[value.value]
        if value.kind == "batch":
            return value.value * xs[0].shape[0]
        if value.kind == "constant":
            found = constants[value.value]
            return found.to(float_dtype) if found.is_floating_point() else found
        if value.kind == "device":
            return xs[0].device
        dtype = getattr(torch, value.value)
        return float_dtype if dtype.is_floating_point else dtype
    if isinstance(value, dict):
        return {k: _resolve(v, xs, constants, float_dtype) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_resolve(v, xs, constants, float_dtype) for v in value]
    return value


#: Keyword arguments of traced calls that only restate defaults (dropped when encoding).
DROPPED_KWARGS = ("layout", "pin_memory", "memory_format", "non_blocking")


def encode_argument(value: Any) -> Any:
    """A traced argument (graph operands already replaced by placeholder dicts) in the
    plain form :class:`Helper` reads: dtypes, devices and tensors as placeholder dicts."""
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"device": None}
    if isinstance(value, Tensor):
        return {"tensor": value.detach().cpu().tolist(),
                "dtype": str(value.dtype).removeprefix("torch.")}
    if isinstance(value, (list, tuple)):
        return [encode_argument(v) for v in value]
    if isinstance(value, Mapping):
        return {k: encode_argument(v) for k, v in value.items() if k not in DROPPED_KWARGS}
    return value
