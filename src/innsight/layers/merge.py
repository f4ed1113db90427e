"""Layers that combine several tensors: sum, concatenation, elementwise product."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from innsight.layers.base import Layer, as_int, tensor_dim
from innsight.layers.rules import (
    DeepLiftRule,
    LrpRule,
    Mover,
    Multipliers,
    Pair,
    collapse,
    divide,
    sum_to,
)


class Add(Layer):
    """Sum of two or more tensors (broadcast against each other): ``a + b + ...``.

    LRP gives each summand relevance in proportion to its value (z-rule, whatever
    the rule of other layers); DeepLift and ConnectionWeights pass multipliers to
    every summand unchanged.
    """

    type_names = ("Add",)
    n_inputs = None
    can_overwrite = True
    splits_pairs = True

    def forward(self, *xs: Tensor) -> Tensor:
        out = xs[0] + xs[1]
        for x in xs[2:]:
            out = out + x
        return out

    def forward_overwriting(self, *xs: Tensor) -> Tensor:
        if torch.broadcast_shapes(*(x.shape for x in xs)) != xs[0].shape:
            return self.forward(*xs)  # the sum is larger than the first summand
        out = xs[0]
        for x in xs[1:]:
            out = out.add_(x)
        return out

    def rule_support(self, method: str, rule: Any) -> str | None:
        return None

    def relevance(self, r: Tensor, xs: list[Tensor], y: Tensor, rule: LrpRule) -> list[Tensor]:
        s = divide(r, y)
        return [sum_to(x * s, x.shape) for x in xs]

    def contribution(self, m: Multipliers, xs: list[Tensor], refs: list[Tensor], y: Tensor,
                     y_ref: Tensor, rule: DeepLiftRule,
                     splits: list[Pair] | None) -> list[Multipliers]:
        if isinstance(m, Pair):
            return [m.map(lambda t, shape=x.shape: sum_to(t, shape)) for x in xs]
        return [sum_to(m, x.shape) for x in xs]

    def split_delta(self, splits: list[Pair], y: Tensor, y_ref: Tensor) -> Pair:
        return Pair(sum(d.pos for d in splits), sum(d.neg for d in splits))

    def weight_paths(self, m: Tensor) -> list[Tensor]:
        return [sum_to(m, (1, *dim)) for dim in self.input_dim]


class Concatenate(Mover, Layer):
    """Joins two or more tensors along the sample axis ``axis`` (0 = channels).
    Rule-based passes slice the upstream values back to each part."""

    type_names = ("Concatenate",)
    n_inputs = None
    optional = {"axis": 0}

    def __init__(self, type_name: str, axis: int) -> None:
        super().__init__(type_name)
        self.axis = as_int(axis, "axis")

    def forward(self, *xs: Tensor) -> Tensor:
        return torch.cat(xs, dim=tensor_dim(self.axis))

    def get_params(self) -> dict[str, Any]:
        return {"axis": self.axis}


class Multiply(Layer):
    """Elementwise product of two tensors, ``a * b`` with broadcasting (e.g. SE gates).

    LRP splits relevance equally between the two factors. DeepLift uses the
    exact split ``d(ab) = ((a + a')/2) db + ((b + b')/2) da``. ConnectionWeights
    is not defined for it.
    """

    type_names = ("Multiply",)
    n_inputs = 2

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return a * b

    def rule_support(self, method: str, rule: Any) -> str | None:
        if method == "cw":
            return "layer type 'Multiply' (a product of two tensors) has no weights to follow"
        return None

    def relevance(self, r: Tensor, xs: list[Tensor], y: Tensor, rule: LrpRule) -> list[Tensor]:
        return [sum_to(r / 2, x.shape) for x in xs]

    def contribution(self, m: Multipliers, xs: list[Tensor], refs: list[Tensor], y: Tensor,
                     y_ref: Tensor, rule: DeepLiftRule,
                     splits: list[Pair] | None) -> list[Multipliers]:
        n = collapse(m, y - y_ref)
        (a, b), (a_ref, b_ref) = xs, refs
        return [sum_to(n * ((b + b_ref) / 2), a.shape), sum_to(n * ((a + a_ref) / 2), b.shape)]
