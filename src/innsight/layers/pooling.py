"""Average and max pooling over 1, 2 or 3 spatial axes, fixed and adaptive."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from innsight.layers.base import Layer, int_tuple

_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_ADAPTIVE_MAX = {1: F.adaptive_max_pool1d, 2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}
_ADAPTIVE_AVG = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}


def _n_axes(type_name: str) -> int:
    return int(type_name[-2])


class _WindowPool(Layer):
    """Shared set-up of pooling over fixed windows: ``kernel_size``, ``stride``
    (default: the kernel size), symmetric ``padding`` per axis and ``ceil_mode``."""

    required = ("kernel_size",)

    def __init__(self, type_name: str, kernel_size: Any, stride: Any, padding: Any,
                 ceil_mode: bool) -> None:
        super().__init__(type_name)
        n = _n_axes(type_name)
        self.kernel_size = int_tuple(kernel_size, n, "kernel_size")
        self.stride = self.kernel_size if stride is None else int_tuple(stride, n, "stride")
        self.padding = int_tuple(padding, n, "padding")
        self.ceil_mode = bool(ceil_mode)

    def get_params(self) -> dict[str, Any]:
        return {
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "ceil_mode": self.ceil_mode,
        }


class MaxPool(_WindowPool):
    """Max pooling ``(batch, C, *spatial) -> (batch, C, *spatial_out)``, torch semantics;
    padding counts as -inf. Parameters: those of fixed-window pooling and ``dilation``."""

    type_names = ("MaxPool1D", "MaxPool2D", "MaxPool3D")
    optional = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False}

    def __init__(self, type_name: str, kernel_size: Any, stride: Any, padding: Any,
                 dilation: Any, ceil_mode: bool) -> None:
        super().__init__(type_name, kernel_size, stride, padding, ceil_mode)
        self.dilation = int_tuple(dilation, _n_axes(type_name), "dilation")
        self._pool = _MAX[_n_axes(type_name)]

    def forward(self, x: Tensor) -> Tensor:
        return self._pool(
            x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode
        )

    def get_params(self) -> dict[str, Any]:
        return {**super().get_params(), "dilation": list(self.dilation)}


class AvgPool(_WindowPool):
    """Average pooling ``(batch, C, *spatial) -> (batch, C, *spatial_out)``, torch semantics.
    Parameters: those of fixed-window pooling and ``count_include_pad`` (whether
    padded zeros count in a window's divisor)."""

    type_names = ("AvgPool1D", "AvgPool2D", "AvgPool3D")
    optional = {"stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True}

    def __init__(self, type_name: str, kernel_size: Any, stride: Any, padding: Any,
                 ceil_mode: bool, count_include_pad: bool) -> None:
        super().__init__(type_name, kernel_size, stride, padding, ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        self._pool = _AVG[_n_axes(type_name)]

    def forward(self, x: Tensor) -> Tensor:
        return self._pool(
            x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad
        )

    def get_params(self) -> dict[str, Any]:
        return {**super().get_params(), "count_include_pad": self.count_include_pad}


class AdaptivePool(Layer):
    """Adaptive average or max pooling to a fixed ``output_size`` per spatial axis.

    ``(batch, C, *spatial) -> (batch, C, *output_size)``; global pooling is
    ``output_size = 1`` on every axis.
    """

    type_names = tuple(
        f"Adaptive{kind}Pool{n}D" for kind in ("Avg", "Max") for n in (1, 2, 3)
    )
    required = ("output_size",)

    def __init__(self, type_name: str, output_size: Any) -> None:
        super().__init__(type_name)
        n = _n_axes(type_name)
        self.output_size = int_tuple(output_size, n, "output_size")
        if min(self.output_size) < 1:
            raise ValueError(f"`output_size` must be positive, got {output_size!r}.")
        self._pool = (_ADAPTIVE_MAX if "Max" in type_name else _ADAPTIVE_AVG)[n]

    def forward(self, x: Tensor) -> Tensor:
        return self._pool(x, self.output_size)

    def get_params(self) -> dict[str, Any]:
        return {"output_size": list(self.output_size)}
