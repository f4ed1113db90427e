"""Convolutions over 1, 2 or 3 spatial axes."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from innsight.layers.base import Layer, as_int, frozen_param, int_tuple
from innsight.layers.rules import LinearMap

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
#: The transposed convolutions (gradient w.r.t. the input), for the rule-based passes.
_CONV_T = {1: torch.nn.grad.conv1d_input, 2: torch.nn.grad.conv2d_input,
           3: torch.nn.grad.conv3d_input}


def padding_pairs(value: Any, n_axes: int, name: str = "padding") -> tuple[tuple[int, int], ...]:
    """An int, ``n_axes`` ints, or ``n_axes`` pairs ``[before, after]``, as pairs."""
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple)):
        if len(value) != n_axes or not all(len(p) == 2 for p in value):
            raise ValueError(
                f"`{name}` must hold one [before, after] pair per axis ({n_axes}), got {value!r}."
            )
        pairs = tuple(int_tuple(p, 2, name) for p in value)
    else:
        pairs = tuple((p, p) for p in int_tuple(value, n_axes, name))
    if any(v < 0 for pair in pairs for v in pair):
        raise ValueError(f"`{name}` must not be negative, got {value!r}.")
    return pairs


def torch_pad_order(pairs: tuple[tuple[int, int], ...]) -> list[int]:
    """``[[b1, a1], [b2, a2]]`` (first axis first) in ``F.pad`` order ``[b2, a2, b1, a1]``."""
    return [v for pair in reversed(pairs) for v in pair]


class Conv(LinearMap, Layer):
    """Convolution ``(batch, C_in, *spatial) -> (batch, C_out, *spatial_out)``.

    Parameters: ``weight`` ``(C_out, C_in / groups, *kernel)``, optional ``bias``
    ``(C_out,)``, ``stride``, ``dilation``, ``groups`` and zero ``padding`` given
    as one ``[before, after]`` pair per spatial axis (asymmetric allowed).
    The type name (``Conv1D``/``Conv2D``/``Conv3D``) follows the kernel's rank.
    """

    type_names = ("Conv1D", "Conv2D", "Conv3D")
    required = ("weight",)
    optional = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}

    def __init__(
        self, type_name: str, weight: Any, bias: Any, stride: Any, padding: Any,
        dilation: Any, groups: int,
    ) -> None:
        super().__init__(type_name)
        n_axes = int(type_name[4])
        self.weight = frozen_param(weight, "weight")
        if self.weight.ndim != n_axes + 2:
            raise ValueError(
                f"`weight` must have shape (C_out, C_in / groups, {n_axes} kernel sizes), "
                f"got {tuple(self.weight.shape)}."
            )
        self.bias = None if bias is None else frozen_param(bias, "bias")
        if self.bias is not None and tuple(self.bias.shape) != (self.weight.shape[0],):
            raise ValueError(
                f"`bias` must have shape ({self.weight.shape[0]},), got {tuple(self.bias.shape)}."
            )
        self.stride = int_tuple(stride, n_axes, "stride")
        self.dilation = int_tuple(dilation, n_axes, "dilation")
        self.padding = padding_pairs(padding, n_axes)
        self.groups = as_int(groups, "groups")
        if self.groups < 1 or self.weight.shape[0] % self.groups:
            raise ValueError(
                f"`groups` must divide C_out = {self.weight.shape[0]}, got {groups!r}."
            )
        symmetric = all(before == after for before, after in self.padding)
        # Symmetric padding goes to the convolution kernel itself (no copy of x).
        self._conv_padding = tuple(before for before, _ in self.padding) if symmetric else 0
        self._pre_pad = None if symmetric else torch_pad_order(self.padding)
        self._conv = _CONV[n_axes]
        self._conv_t = _CONV_T[n_axes]

    def forward(self, x: Tensor) -> Tensor:
        return self._convolve(x, self.weight, self.bias)

    def _convolve(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self._pre_pad is not None:
            x = F.pad(x, self._pre_pad)
        if (x.ndim == 4 and x.dtype == torch.float32 and x.device.type == "cpu"
                and not torch.is_grad_enabled()):
            # Forwards without gradients (metrics' perturbed inputs, walks' forward passes,
            # predictions): oneDNN's 2D convolutions on the CPU run about twice as fast on
            # channels-last inputs (a small CNN's forwards of 512 images: 0.09 -> 0.043 s),
            # and the layers after them keep that layout or copy. Differentiated passes
            # keep torch's default layout, so gradients round as autograd's on the
            # original model (the other layout's rounding moves ReLU kinks: 7.6e-3 on a
            # ResNet-18's input gradient in float32).
            x = x.contiguous(memory_format=torch.channels_last)
        return self._conv(
            x, weight, bias, self.stride, self._conv_padding, self.dilation, self.groups
        )

    @property
    def rule_weight(self) -> Tensor:
        return self.weight

    @property
    def rule_bias(self) -> Tensor | None:
        if self.bias is None:
            return None
        return self.per_channel(self.bias)

    def _map(self, x: Tensor, weight: Tensor | None) -> Tensor:
        return self._convolve(x, self.weight if weight is None else weight, None)

    def _map_t(self, s: Tensor, weight: Tensor | None) -> Tensor:
        spatial = self.input_dim[0][1:]
        if self._pre_pad is not None:
            spatial = [n + before + after for n, (before, after) in zip(spatial, self.padding)]
        grad = self._conv_t(
            (s.shape[0], self.input_dim[0][0], *spatial), self.weight if weight is None else weight,
            s.contiguous(), self.stride, self._conv_padding, self.dilation, self.groups,
        )
        if self._pre_pad is None:
            return grad
        crop = tuple(slice(before, before + n) for n, (before, _) in
                     zip(self.input_dim[0][1:], self.padding))
        return grad[(slice(None), slice(None), *crop)]

    def get_params(self) -> dict[str, Any]:
        return {
            "weight": self.weight,
            "bias": self.bias,
            "stride": list(self.stride),
            "padding": [list(pair) for pair in self.padding],
            "dilation": list(self.dilation),
            "groups": self.groups,
        }


_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


class ConvTranspose(LinearMap, Layer):
    """Transposed convolution ``(batch, C_in, *spatial) -> (batch, C_out, *spatial_out)``:
    the adjoint of a convolution, the up-sampling layer of decoders and U-Nets.

    Parameters as torch's ``nn.ConvTranspose2d``: ``weight`` ``(C_in, C_out / groups,
    *kernel)``, optional ``bias`` ``(C_out,)``, ``stride``, ``padding`` (symmetric per
    spatial axis, taken off the output), ``output_padding`` (added to one side of the
    output, less than the stride or the dilation), ``dilation`` and ``groups``; each output
    size is ``(n - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1``.
    A linear map: every LRP rule, DeepLift and ConnectionWeights apply as for a convolution.
    The type name (``ConvTranspose1D``/``2D``/``3D``) follows the kernel's rank.
    """

    type_names = ("ConvTranspose1D", "ConvTranspose2D", "ConvTranspose3D")
    required = ("weight",)
    optional = {"bias": None, "stride": 1, "padding": 0, "output_padding": 0, "dilation": 1,
                "groups": 1}

    def __init__(
        self, type_name: str, weight: Any, bias: Any, stride: Any, padding: Any,
        output_padding: Any, dilation: Any, groups: int,
    ) -> None:
        super().__init__(type_name)
        n_axes = int(type_name[-2])
        self.weight = frozen_param(weight, "weight")
        if self.weight.ndim != n_axes + 2:
            raise ValueError(
                f"`weight` must have shape (C_in, C_out / groups, {n_axes} kernel sizes), "
                f"got {tuple(self.weight.shape)}."
            )
        self.groups = as_int(groups, "groups")
        if self.groups < 1 or self.weight.shape[0] % self.groups:
            raise ValueError(
                f"`groups` must divide C_in = {self.weight.shape[0]}, got {groups!r}."
            )
        c_out = self.weight.shape[1] * self.groups
        self.bias = None if bias is None else frozen_param(bias, "bias")
        if self.bias is not None and tuple(self.bias.shape) != (c_out,):
            raise ValueError(f"`bias` must have shape ({c_out},), got {tuple(self.bias.shape)}.")
        self.stride = int_tuple(stride, n_axes, "stride")
        self.padding = int_tuple(padding, n_axes, "padding")
        self.output_padding = int_tuple(output_padding, n_axes, "output_padding")
        self.dilation = int_tuple(dilation, n_axes, "dilation")
        if any(v < 0 for v in (*self.padding, *self.output_padding)) or any(
                op >= max(s, d) for op, s, d in zip(self.output_padding, self.stride,
                                                    self.dilation)):
            raise ValueError(
                f"`padding` and `output_padding` must not be negative, and `output_padding` "
                f"must be smaller than the stride or the dilation, got padding={padding!r}, "
                f"output_padding={output_padding!r}."
            )
        self._transpose = _CONV_TRANSPOSE[n_axes]

    def forward(self, x: Tensor) -> Tensor:
        return self._convolve(x, self.weight, self.bias)

    def _convolve(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return self._transpose(x, weight, bias, self.stride, self.padding, self.output_padding,
                               self.groups, self.dilation)

    @property
    def rule_weight(self) -> Tensor:
        return self.weight

    @property
    def rule_bias(self) -> Tensor | None:
        return None if self.bias is None else self.per_channel(self.bias)

    def _map(self, x: Tensor, weight: Tensor | None) -> Tensor:
        return self._convolve(x, self.weight if weight is None else weight, None)

    def get_params(self) -> dict[str, Any]:
        return {
            "weight": self.weight,
            "bias": self.bias,
            "stride": list(self.stride),
            "padding": list(self.padding),
            "output_padding": list(self.output_padding),
            "dilation": list(self.dilation),
            "groups": self.groups,
        }
