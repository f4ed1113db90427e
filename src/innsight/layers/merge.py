"""Layers that combine several tensors: sum, concatenation, elementwise product."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from innsight.layers.base import Layer, as_int, tensor_dim


class Add(Layer):
    """Sum of two or more tensors (broadcast against each other): ``a + b + ...``."""

    type_names = ("Add",)
    n_inputs = None
    can_overwrite = True

    def forward(self, *xs: Tensor) -> Tensor:
        out = xs[0] + xs[1]
        for x in xs[2:]:
            out = out + x
        return out

    def forward_overwriting(self, *xs: Tensor) -> Tensor:
        if torch.broadcast_shapes(*(x.shape for x in xs)) != xs[0].shape:
            return self.forward(*xs)  # the sum is larger than the first summand
        out = xs[0]
        for x in xs[1:]:
            out = out.add_(x)
        return out


class Concatenate(Layer):
    """Joins two or more tensors along the sample axis ``axis`` (0 = channels)."""

    type_names = ("Concatenate",)
    n_inputs = None
    optional = {"axis": 0}

    def __init__(self, type_name: str, axis: int) -> None:
        super().__init__(type_name)
        self.axis = as_int(axis, "axis")

    def forward(self, *xs: Tensor) -> Tensor:
        return torch.cat(xs, dim=tensor_dim(self.axis))

    def get_params(self) -> dict[str, Any]:
        return {"axis": self.axis}


class Multiply(Layer):
    """Elementwise product of two tensors, ``a * b`` with broadcasting (e.g. SE gates)."""

    type_names = ("Multiply",)
    n_inputs = 2

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return a * b
