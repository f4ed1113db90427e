"""Reductions over sample axes."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from innsight.layers.base import Layer, as_ints, tensor_dim
from innsight.layers.rules import LinearMap


class Mean(LinearMap, Layer):
    """Mean over the sample axes ``axes`` (0 = channels); e.g. ``x.mean((2, 3))``
    in torch is ``axes=[1, 2]``: global average pooling of images."""

    type_names = ("Mean",)
    required = ("axes",)
    optional = {"keepdims": False}

    def __init__(self, type_name: str, axes: Any, keepdims: bool) -> None:
        super().__init__(type_name)
        self.axes = as_ints(axes if isinstance(axes, (list, tuple)) else [axes], "axes")
        if not self.axes:
            raise ValueError("`axes` must name at least one sample axis.")
        self.keepdims = bool(keepdims)
        self._dims = tuple(tensor_dim(a) for a in self.axes)

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(self._dims, keepdim=self.keepdims)

    def get_params(self) -> dict[str, Any]:
        return {"axes": list(self.axes), "keepdims": self.keepdims}

    def _map(self, x: Tensor, weight: None) -> Tensor:
        return self(x)
