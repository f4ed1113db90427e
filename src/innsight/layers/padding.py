"""Padding of sample axes: constant, reflect, replicate or circular."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from innsight.layers.base import Layer
from innsight.layers.conv import padding_pairs, torch_pad_order
from innsight.layers.rules import Mover

PAD_MODES = ("constant", "reflect", "replicate", "circular")


class Padding(Mover, Layer):
    """Pads the trailing sample axes: ``padding`` holds one ``[before, after]``
    pair per padded axis, for the last ``len(padding)`` axes in order.

    ``mode`` is one of :data:`PAD_MODES`; ``value`` fills constant padding.
    Rule-based passes move values back from where they were copied; padded
    constants receive nothing.
    """

    type_names = ("Padding",)
    required = ("padding",)
    optional = {"mode": "constant", "value": 0.0}

    def __init__(self, type_name: str, padding: Any, mode: str, value: float) -> None:
        super().__init__(type_name)
        if mode not in PAD_MODES:
            raise ValueError(f"`mode` must be one of {list(PAD_MODES)}, got {mode!r}.")
        if not isinstance(padding, (list, tuple)) or not padding:
            raise ValueError(f"`padding` must be a list of [before, after] pairs, got {padding!r}.")
        if mode != "constant" and value != 0:
            raise ValueError(f"`value` fills constant padding only; mode {mode!r} takes none, got {value!r}.")
        self.padding = padding_pairs(padding, len(padding))
        self.mode = mode
        self.value = float(value)
        self._torch_pad = torch_pad_order(self.padding)

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "constant":
            return F.pad(x, self._torch_pad, value=self.value)
        return F.pad(x, self._torch_pad, mode=self.mode)

    def _linear(self, x: Tensor) -> Tensor:
        if self.mode == "constant":
            return F.pad(x, self._torch_pad)  # the move without the constant fill
        return self(x)

    def get_params(self) -> dict[str, Any]:
        return {
            "padding": [list(pair) for pair in self.padding],
            "mode": self.mode,
            "value": self.value,
        }
