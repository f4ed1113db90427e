"""Elementwise affine maps: batch normalisation and scaling by constants."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from innsight.layers.base import Layer, frozen_param
from innsight.layers.rules import LinearMap


class BatchNorm(LinearMap, Layer):
    """Batch normalisation with frozen statistics (eval semantics) over axis 0 (channels).

    ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`` for
    inputs ``(batch, C, *spatial)`` or ``(batch, C)``; each parameter has shape ``(C,)``.
    """

    type_names = ("BatchNorm",)
    shape_preserving = True
    required = ("running_mean", "running_var")
    optional = {"weight": None, "bias": None, "eps": 1e-5}

    def __init__(
        self, type_name: str, running_mean: Any, running_var: Any, weight: Any,
        bias: Any, eps: float,
    ) -> None:
        super().__init__(type_name)
        self.running_mean = frozen_param(running_mean, "running_mean")
        self.running_var = frozen_param(running_var, "running_var")
        n_channels = self.running_mean.shape
        self.weight = None if weight is None else frozen_param(weight, "weight")
        self.bias = None if bias is None else frozen_param(bias, "bias")
        for name in ("running_var", "weight", "bias"):
            value = getattr(self, name)
            if value is not None and value.shape != n_channels:
                raise ValueError(
                    f"`{name}` must have the shape of `running_mean` {tuple(n_channels)}, "
                    f"got {tuple(value.shape)}."
                )
        if (self.running_var < 0).any():
            raise ValueError("`running_var` must not be negative.")
        self.eps = float(eps)
        if not self.eps >= 0:
            raise ValueError(f"`eps` must be >= 0, got {eps!r}.")

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )

    def get_params(self) -> dict[str, Any]:
        return {
            "running_mean": self.running_mean,
            "running_var": self.running_var,
            "weight": self.weight,
            "bias": self.bias,
            "eps": self.eps,
        }

    # As a diagonal affine map y = x * scale + shift, per channel.
    @property
    def rule_weight(self) -> Tensor:
        scale = torch.rsqrt(self.running_var + self.eps)
        return scale if self.weight is None else scale * self.weight

    @property
    def rule_bias(self) -> Tensor:
        shift = -self.running_mean * self.rule_weight
        return self.per_channel(shift if self.bias is None else shift + self.bias)

    def _map(self, x: Tensor, weight: Tensor | None) -> Tensor:
        return x * self.per_channel(self.rule_weight if weight is None else weight)

    def _map_t(self, s: Tensor, weight: Tensor | None) -> Tensor:
        return self._map(s, weight)


class Affine(LinearMap, Layer):
    """``y = x * scale + shift`` with constants broadcast against one sample.

    ``scale`` and ``shift`` are numbers or arrays whose shape broadcasts to the
    sample shape (e.g. ``(C, 1, 1)`` for a per-channel scale of images). This is
    how ``x * 0.5``, ``x / 6``, ``x + 3``, ``-x`` or ``x * self.gamma`` convert.
    """

    type_names = ("Affine",)
    shape_preserving = True
    recomputable = True
    optional = {"scale": 1.0, "shift": 0.0}

    def __init__(self, type_name: str, scale: Any, shift: Any) -> None:
        super().__init__(type_name)
        self.scale = frozen_param(scale, "scale")
        self.shift = frozen_param(shift, "shift")

    def forward(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.shift, x, self.scale)

    def get_params(self) -> dict[str, Any]:
        return {"scale": self.scale, "shift": self.shift}

    @property
    def rule_weight(self) -> Tensor:
        return self.scale

    @property
    def rule_bias(self) -> Tensor:
        return self.shift

    def _map(self, x: Tensor, weight: Tensor | None) -> Tensor:
        return x * (self.scale if weight is None else weight)

    def _map_t(self, s: Tensor, weight: Tensor | None) -> Tensor:
        return self._map(s, weight).sum_to_size(s.shape[0], *self.input_dim[0])
