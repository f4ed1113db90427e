"""The input layer: where one model input enters the graph."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from innsight.layers.base import Layer


class Input(Layer):
    """Passes one model input on unchanged, shape ``(batch, *input_dim)``.

    Its position in ``input_nodes`` tells which model input it receives.
    """

    type_names = ("Input",)
    n_inputs = 0
    returns_view = True  # the user's own tensor

    def forward(self, x: Tensor) -> Tensor:
        return x

    def rule_support(self, method: str, rule: Any) -> str | None:
        return None  # the walks end here
