"""Resizing of the spatial axes by interpolation: nearest and (bi/tri)linear."""

from __future__ import annotations

import math
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from innsight._validation import is_number
from innsight.layers.base import Layer
from innsight.layers.rules import LinearMap

#: ``mode`` -> torch's mode for 1, 2 and 3 spatial axes.
_MODES = {
    "nearest": {1: "nearest", 2: "nearest", 3: "nearest"},
    "nearest-exact": {1: "nearest-exact", 2: "nearest-exact", 3: "nearest-exact"},
    "linear": {1: "linear", 2: "bilinear", 3: "trilinear"},
}


class Upsample(LinearMap, Layer):
    """Interpolation of ``(batch, C, *spatial)`` to a new spatial size, as torch's
    ``F.interpolate``: ``mode`` ``"nearest"``, ``"nearest-exact"`` or ``"linear"``
    (bilinear for images, trilinear for volumes), to the output ``size`` (one int per
    spatial axis) or by ``scale_factor`` (a number or one per axis), exactly one of them;
    ``align_corners`` (``True``/``False``) for ``"linear"`` only.

    Each output is a fixed convex combination of inputs: a linear map with fixed,
    non-negative weights (as average pooling), so every LRP rule redistributes in
    proportion to those weights times the inputs, DeepLift is exact and
    ConnectionWeights follows the weights.
    """

    type_names = ("Upsample",)
    optional = {"size": None, "scale_factor": None, "mode": "nearest", "align_corners": None}

    def __init__(self, type_name: str, size: Any, scale_factor: Any, mode: Any,
                 align_corners: Any) -> None:
        super().__init__(type_name)
        if (size is None) == (scale_factor is None):
            raise ValueError(f"Give exactly one of `size` and `scale_factor`, got size={size!r}, "
                             f"scale_factor={scale_factor!r}.")
        if mode not in _MODES:
            raise ValueError(f"`mode` must be one of {list(_MODES)}, got {mode!r}.")
        if (mode == "linear") != isinstance(align_corners, bool):
            raise ValueError(f"`align_corners` must be True or False for mode 'linear' and None "
                             f"otherwise, got {align_corners!r} for mode {mode!r}.")
        self.size = None if size is None else _positive(size, "size", int)
        self.scale_factor = None if scale_factor is None else _positive(scale_factor,
                                                                        "scale_factor", float)
        self.mode, self.align_corners = mode, align_corners

    def forward(self, x: Tensor) -> Tensor:
        n_axes = x.ndim - 2
        size, scale_factor = (self._per_axis(name, n_axes) for name in ("size", "scale_factor"))
        return F.interpolate(x, size=size, scale_factor=scale_factor,
                             mode=_MODES[self.mode][n_axes], align_corners=self.align_corners)

    def _per_axis(self, name: str, n_axes: int) -> tuple[Any, ...] | None:
        """``size`` or ``scale_factor`` with one entry per spatial axis (or ``None``)."""
        value = getattr(self, name)
        if value is None or len(value) == n_axes:
            return value
        if len(value) == 1:
            return value * n_axes
        raise ValueError(f"`{name}` {list(value)} does not fit {n_axes} spatial axes.")

    def _map(self, x: Tensor, weight: None) -> Tensor:
        return self(x)

    def get_params(self) -> dict[str, Any]:
        return {"size": None if self.size is None else list(self.size),
                "scale_factor": None if self.scale_factor is None else list(self.scale_factor),
                "mode": self.mode, "align_corners": self.align_corners}

    def summary(self) -> str:
        return f"{self.type_name}({self.mode})"


def _positive(value: Any, name: str, kind: type) -> tuple[Any, ...]:
    """A positive number of ``kind``, or a list of them, as a tuple."""
    values = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    good = values and all(is_number(v) and v > 0 and math.isfinite(v)
                          and (kind is float or float(v).is_integer()) for v in values)
    if not good:
        raise ValueError(f"`{name}` must be a positive {kind.__name__} or a list of them, "
                         f"got {value!r}.")
    return tuple(kind(v) for v in values)
