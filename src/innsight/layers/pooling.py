"""Average and max pooling over 1, 2 or 3 spatial axes, fixed and adaptive."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from innsight.layers.base import Layer, int_tuple
from innsight.layers.lrp_rules import LrpRule
from innsight.layers.rules import (
    DeepLiftRule,
    LinearMap,
    Multipliers,
    Pair,
    Rule,
    RuleLayer,
    collapse,
    divide,
    negligible,
    transpose_of,
)

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


class _MaxRules(RuleLayer):
    """LRP and DeepLift through a maximum over windows.

    With ``winner_takes_all``, each window sends everything to its arg-max
    (accumulating where windows overlap). For DeepLift that is the arg-max of
    ``x``, unless the window's maximum shrank below the reference's and that
    position is no maximum of ``x_ref``: then the arg-max of ``x_ref`` (as
    Captum does). The multiplier there, ``dy / dx``, lies in [0, 1]. Without
    it, a window spreads its value over its inputs in proportion to them (to
    their differences for DeepLift), as an average pooling of the same windows
    would. Subclasses give ``_with_indices(x)`` and ``_window_mean(x)``.
    """

    rule_paths = frozenset({"lrp", "deeplift"})
    no_rule_reason = "max pooling has no weights to follow"

    def _with_indices(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _window_mean(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _to_winners(self, values: Tensor, x: Tensor) -> Tensor:
        """Scatter ``values (T, B, C, *out)`` onto each window's arg-max of ``x``."""
        return self._scatter(values, self._with_indices(x)[1].flatten(2), x.shape)

    @staticmethod
    def _scatter(values: Tensor, idx: Tensor, shape: torch.Size) -> Tensor:
        """Add ``values (T, B, C, *out)`` at the flat spatial positions ``idx (B, C, n_out)``
        of a ``(T, *shape)`` zero tensor (accumulating where windows overlap)."""
        n_targets, batch, channels = values.shape[:3]
        out = values.new_zeros(n_targets, batch, channels, shape[2:].numel())
        out.scatter_add_(3, idx.expand(n_targets, -1, -1, -1), values.flatten(3))
        return out.view(n_targets, *shape)

    def _spread(self, values: Tensor) -> Tensor:
        (back,) = transpose_of(self._window_mean, values, self.input_dim)
        return back

    def relevance(self, r: Tensor, xs: list[Tensor], y: Tensor, rule: LrpRule) -> list[Tensor]:
        (x,) = xs
        if rule.winner_takes_all:
            return [self._to_winners(r, x)]
        return [x * self._spread(divide(r, self._window_mean(x)))]

    def contribution(self, m: Multipliers, xs: list[Tensor], refs: list[Tensor], y: Tensor,
                     y_ref: Tensor, rule: DeepLiftRule,
                     splits: list[Pair] | None) -> list[Multipliers]:
        (x,), (x_ref,) = xs, refs
        dy = y - y_ref
        n = collapse(m, dy)
        dx = x - x_ref
        if not rule.winner_takes_all:
            return [self._spread(divide(n * dy, self._window_mean(dx)))]
        # A window's difference goes to the arg-max of x, unless its maximum shrank and
        # that position is no maximum of x_ref: then to the arg-max of x_ref. Either way
        # 0 <= dy / dx <= 1 there, so nothing is lost.
        idx_x = self._with_indices(x)[1].flatten(2)
        ref_at_idx_x = x_ref.flatten(2).gather(2, idx_x).view_as(dy)
        use_ref = ((dy < 0) & (ref_at_idx_x < y_ref)).flatten(2)
        idx = torch.where(use_ref, self._with_indices(x_ref)[1].flatten(2), idx_x)
        at_x, at_ref = x.flatten(2).gather(2, idx), x_ref.flatten(2).gather(2, idx)
        dx_win = (at_x - at_ref).view_as(dy)
        near_zero = negligible(dx_win, at_x.view_as(dy), at_ref.view_as(dy))
        safe_dx = torch.where(near_zero, 1.0, dx_win)
        ratio = torch.where(near_zero, torch.ones_like(dy), dy / safe_dx)
        return [self._scatter(n * ratio, idx, x.shape)]


class MaxPool(_MaxRules, _WindowPool):
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

    def _with_indices(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._pool(x, self.kernel_size, self.stride, self.padding, self.dilation,
                          self.ceil_mode, return_indices=True)

    def _window_mean(self, x: Tensor) -> Tensor:
        return _AVG[len(self.kernel_size)](x, self.kernel_size, self.stride, self.padding,
                                          self.ceil_mode, True)

    def setting_refusal(self, rule: Rule | None) -> str | None:
        # Spreading in proportion goes through an average pooling of the same windows,
        # which has no dilation.
        if not rule.winner_takes_all and any(d != 1 for d in self.dilation):
            return (f"layer type '{self.type_name}' with dilation {list(self.dilation)} "
                    f"supports only winner_takes_all=True")
        return super().setting_refusal(rule)


class AvgPool(LinearMap, _WindowPool):
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

    def _map(self, x: Tensor, weight: None) -> Tensor:
        return self(x)


class _AdaptivePool(Layer):
    """Adaptive pooling to a fixed ``output_size`` per spatial axis.

    ``(batch, C, *spatial) -> (batch, C, *output_size)``; global pooling is
    ``output_size = 1`` on every axis.
    """

    required = ("output_size",)

    def __init__(self, type_name: str, output_size: Any) -> None:
        super().__init__(type_name)
        n = _n_axes(type_name)
        self.output_size = int_tuple(output_size, n, "output_size")
        if min(self.output_size) < 1:
            raise ValueError(f"`output_size` must be positive, got {output_size!r}.")
        self._avg = _ADAPTIVE_AVG[n]

    def get_params(self) -> dict[str, Any]:
        return {"output_size": list(self.output_size)}


class AdaptiveAvgPool(LinearMap, _AdaptivePool):
    """Adaptive average pooling (see :class:`_AdaptivePool`)."""

    type_names = tuple(f"AdaptiveAvgPool{n}D" for n in (1, 2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self._avg(x, self.output_size)

    def _map(self, x: Tensor, weight: None) -> Tensor:
        return self(x)


class AdaptiveMaxPool(_MaxRules, _AdaptivePool):
    """Adaptive max pooling (see :class:`_AdaptivePool`)."""

    type_names = tuple(f"AdaptiveMaxPool{n}D" for n in (1, 2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return _ADAPTIVE_MAX[len(self.output_size)](x, self.output_size)

    def _with_indices(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return _ADAPTIVE_MAX[len(self.output_size)](x, self.output_size, return_indices=True)

    def _window_mean(self, x: Tensor) -> Tensor:
        return self._avg(x, self.output_size)
