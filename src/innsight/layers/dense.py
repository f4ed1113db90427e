"""Fully connected layers."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from innsight.layers.base import Layer, frozen_param
from innsight.layers.rules import LinearMap


class Dense(LinearMap, Layer):
    """``y = x W^T + b`` over the last axis: ``(batch, ..., in) -> (batch, ..., out)``.

    Parameters: ``weight`` of shape ``(out, in)`` and an optional ``bias`` ``(out,)``.
    """

    type_names = ("Dense",)
    required = ("weight",)
    optional = {"bias": None}

    def __init__(self, type_name: str, weight: Any, bias: Any) -> None:
        super().__init__(type_name)
        self.weight = frozen_param(weight, "weight")
        if self.weight.ndim != 2:
            raise ValueError(f"`weight` must have shape (out, in), got {tuple(self.weight.shape)}.")
        self.bias = None if bias is None else frozen_param(bias, "bias")
        if self.bias is not None and tuple(self.bias.shape) != (self.weight.shape[0],):
            raise ValueError(
                f"`bias` must have shape ({self.weight.shape[0]},) to match `weight`, "
                f"got {tuple(self.bias.shape)}."
            )

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def get_params(self) -> dict[str, Any]:
        return {"weight": self.weight, "bias": self.bias}

    @property
    def rule_weight(self) -> Tensor:
        return self.weight

    @property
    def rule_bias(self) -> Tensor | None:
        return self.bias

    def on_units(self, units: Tensor) -> Dense:
        # The picked rows of weights checked at construction: new tensors (the indexing
        # copies), neither copied nor checked again.
        layer = Dense.__new__(Dense)
        Layer.__init__(layer, self.type_name)
        layer.weight = nn.Parameter(self.weight[units], requires_grad=False)
        layer.bias = (None if self.bias is None
                      else nn.Parameter(self.bias[units], requires_grad=False))
        layer.input_dim = self.input_dim
        layer.output_dim = (*self.output_dim[:-1], len(units))
        return layer

    def _map(self, x: Tensor, weight: Tensor | None) -> Tensor:
        return F.linear(x, self.weight if weight is None else weight)

    def _map_t(self, s: Tensor, weight: Tensor | None) -> Tensor:
        return s @ (self.weight if weight is None else weight)
