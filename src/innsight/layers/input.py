"""The input layer: where one model input enters the graph."""

from __future__ import annotations

from torch import Tensor

from innsight.layers.base import Layer
from innsight.layers.rules import ALL_PATHS


class Input(Layer):
    """Passes one model input on unchanged, shape ``(batch, *input_dim)``.

    Its position in ``input_nodes`` tells which model input it receives.
    """

    type_names = ("Input",)
    n_inputs = 0
    returns_view = True  # the user's own tensor
    rule_paths = ALL_PATHS  # the walks end here

    def forward(self, x: Tensor) -> Tensor:
        return x
