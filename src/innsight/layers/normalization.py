"""Normalisation by statistics of each sample: layer normalisation."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from innsight.layers.base import Layer, as_ints, frozen_param
from innsight.layers.lrp_rules import LrpRule
from innsight.layers.rules import (
    DeepLiftRule,
    FrozenMap,
    Multipliers,
    Pair,
    collapse,
    divide,
    negligible,
)


class LayerNorm(Layer):
    """Layer normalisation over the sample axes ``axes`` (0 = channels) of each sample.

    ``y = (x - mean(x)) / sigma * weight + bias`` with ``sigma = sqrt(var(x) + eps)``;
    the mean and the (biased) variance are taken over the entries of ``axes``, one
    group per position of the other axes, as ``torch.nn.functional.layer_norm`` does
    for trailing axes. ``axes`` are distinct and increasing; ``weight`` and ``bias``
    (optional) have the sizes of those axes, e.g. ``(C,)`` for ``axes=[0]`` of an image
    ``(C, H, W)`` (Keras' ``LayerNormalization()`` on channels-last data, or
    torchvision's ``LayerNorm2d``) or ``(W,)`` for ``axes=[2]`` (``nn.LayerNorm(W)``).

    Rules: LRP uses the LN-rule of Ali et al. 2022 ("XAI for Transformers: Better
    Explanations through Conservative Propagation"): ``sigma`` is held at its value
    for the sample, which makes the layer the linear map
    ``y_i = sum_j weight_i / sigma * (delta_ij - 1/n) x_j + bias_i`` over each group of
    ``n`` entries; the selected LRP rule then redistributes through that map like
    through a dense layer (``simple`` is the LN-rule itself; without bias it conserves
    relevance). DeepLift follows the layer's primitive operations, each with its exact
    rule: centring ``c = x - mean(x)`` (linear), the variance ``v = mean(c^2)`` (``c^2 -
    c'^2 = (c + c')(c - c')``), ``s = (v + eps)^(-1/2)`` (its secant, the derivative at
    the midpoint where ``|v - v'|`` is negligible) and the product ``c * s`` (the exact
    split ``s_held dc + c_other ds`` with ``s`` held at the side, ``x`` or ``x_ref``, with
    the larger standard deviation: ``(s, c')`` where ``s <= s'``, else ``(s', c)``; the
    symmetric split ``((s + s')/2) dc + ((c + c')/2) ds`` would give contributions that
    grow without bound, and cancel, where the reference has no variance, such as a zero
    reference without a bias before the norm); so its contributions sum exactly to
    ``y - y_ref``, stay of the size of the normalised values, and approach the gradient
    as ``x_ref -> x``. ConnectionWeights has no rule: the map's weights depend on the data.
    """

    type_names = ("LayerNorm",)
    required = ("axes",)
    optional = {"weight": None, "bias": None, "eps": 1e-5}
    takes_lrp_rule = True
    shape_preserving = True
    rule_paths = frozenset({"lrp", "deeplift"})
    no_rule_reason = "its weights depend on each sample's standard deviation"

    def __init__(self, type_name: str, axes: Any, weight: Any, bias: Any, eps: float) -> None:
        super().__init__(type_name)
        self.axes = as_ints(axes, "axes")
        if not self.axes or any(a < 0 for a in self.axes) or list(self.axes) != sorted(
                set(self.axes)):
            raise ValueError(
                f"`axes` must name distinct sample axes (0 = channels) in increasing order, "
                f"got {axes!r}."
            )
        self.weight = None if weight is None else frozen_param(weight, "weight")
        self.bias = None if bias is None else frozen_param(bias, "bias")
        self.eps = float(eps)
        if not self.eps >= 0:
            raise ValueError(f"`eps` must be >= 0, got {eps!r}.")
        self._dims = tuple(a + 1 for a in self.axes)

    def forward(self, x: Tensor) -> Tensor:
        last = tuple(range(x.ndim - len(self._dims), x.ndim))
        sizes = self._normalized_sizes(x.shape[1:])
        moved = x.movedim(self._dims, last)  # a view; the identity for trailing axes
        return F.layer_norm(moved, sizes, self.weight, self.bias, self.eps).movedim(
            last, self._dims)

    def _normalized_sizes(self, sample: tuple[int, ...]) -> tuple[int, ...]:
        """The sizes of ``axes`` in a sample of shape ``sample``; checks the parameters."""
        if self.axes[-1] >= len(sample):
            raise ValueError(
                f"`axes` {list(self.axes)} do not fit the input's sample shape {list(sample)}."
            )
        sizes = tuple(sample[a] for a in self.axes)
        for name in ("weight", "bias"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != sizes:
                raise ValueError(
                    f"`{name}` must have the sizes {sizes} of the normalised axes "
                    f"{list(self.axes)}, got {tuple(value.shape)}."
                )
        return sizes

    def get_params(self) -> dict[str, Any]:
        return {"axes": list(self.axes), "weight": self.weight, "bias": self.bias,
                "eps": self.eps}

    def broadcast(self, v: Tensor) -> Tensor:
        """A parameter of the sizes of ``axes`` shaped to broadcast against a sample."""
        shape = [1] * self.sample_rank
        for a, size in zip(self.axes, v.shape):
            shape[a] = size
        return v.view(shape)

    def relevance(self, r: Tensor, xs: list[Tensor], y: Tensor, rule: LrpRule) -> list[Tensor]:
        return FrozenLayerNorm(self, xs[0]).relevance(r, xs, y, rule)

    def contribution(self, m: Multipliers, xs: list[Tensor], refs: list[Tensor], y: Tensor,
                     y_ref: Tensor, rule: DeepLiftRule,
                     splits: list[Pair] | None) -> list[Multipliers]:
        # Upstream values are (T, B, *dim): the normalised axes one further right.
        axes = tuple(d + 1 for d in self._dims)
        m_z = collapse(m, y - y_ref)
        if self.weight is not None:
            m_z = m_z * self.broadcast(self.weight)
        (x,), (x_ref,) = xs, refs
        n = math.prod(x.shape[d] for d in self._dims)
        c = x - x.mean(self._dims, keepdim=True)
        c_ref = x_ref - x_ref.mean(self._dims, keepdim=True)
        v = (c * c).mean(self._dims, keepdim=True)
        v_ref = (c_ref * c_ref).mean(self._dims, keepdim=True)
        s, s_ref = (v + self.eps).rsqrt(), (v_ref + self.eps).rsqrt()
        dv = v - v_ref
        # ds / dv: the secant, or the derivative at the midpoint where dv is rounding noise
        slope = torch.where(negligible(dv, v, v_ref), -0.5 * ((v + v_ref) / 2 + self.eps) ** -1.5,
                            divide(s - s_ref, dv))
        # c s - c' s' = (c - c') s_held + c_other (s - s'), s held at the side with the
        # larger standard deviation (the smaller s); the symmetric split would weight dc
        # by (s + s') / 2, unbounded where a reference such as zeros has no variance
        x_first = s <= s_ref
        s_held, c_other = torch.where(x_first, s, s_ref), torch.where(x_first, c_ref, c)
        m_s = (m_z * c_other).sum(axes, keepdim=True)
        m_c = m_z * s_held + m_s * slope * (c + c_ref) / n
        return [m_c - m_c.mean(axes, keepdim=True)]  # centring is its own transpose


class FrozenLayerNorm(FrozenMap):
    """A :class:`LayerNorm` with ``sigma`` held at its values for ``x (B, *dim)``: the
    linear map ``y_i = a_i (x_i - mean(x)) + bias_i`` with ``a = weight / sigma``
    (broadcastable to ``(B, *dim)``), different for each sample (the LN-rule of LRP).

    Its matrix over a group of ``n`` entries is ``a_i (delta_ij - 1/n)``: the
    diagonal ``a (1 - 1/n)`` and, off it, ``-a / n`` in row ``i``. The rule weight
    stacks both along a new first axis, so that every weight modification of the LRP rules
    (positive part, square, ones) acts on the matrix entry by entry.
    """

    def __init__(self, layer: LayerNorm, x: Tensor) -> None:
        self.type_name = layer.type_name
        self.input_dim = layer.input_dim
        # Counted from the end, so that values may carry leading (T, B) or (rows,) axes.
        self._dims = tuple(a - layer.sample_rank for a in layer.axes)
        n = math.prod(x.shape[d] for d in self._dims)
        sigma = torch.sqrt(x.var(self._dims, unbiased=False, keepdim=True) + layer.eps)
        a = sigma.reciprocal() if layer.weight is None else layer.broadcast(layer.weight) / sigma
        self._weight = torch.stack([a * (1 - 1 / n), -a / n])
        self._bias = None if layer.bias is None else layer.broadcast(layer.bias)

    @property
    def rule_weight(self) -> Tensor:
        return self._weight

    @property
    def rule_bias(self) -> Tensor | None:
        return self._bias

    def _map(self, x: Tensor, weight: Tensor) -> Tensor:
        diagonal, off = weight
        return off * x.sum(self._dims, keepdim=True) + (diagonal - off) * x

    def _map_t(self, s: Tensor, weight: Tensor) -> Tensor:
        diagonal, off = weight
        return (off * s).sum(self._dims, keepdim=True) + (diagonal - off) * s
