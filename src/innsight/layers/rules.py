"""The rule-based backward passes every layer family answers for: LRP, DeepLift and
ConnectionWeights.

Upstream tensors carry every explained output node in a leading axis:
``(n_targets, batch, *dim)``, so one reverse walk explains all outputs. Forward
values (a layer's inputs ``xs`` and output ``y``) are ``(batch, *dim)`` and
broadcast against them.

Two mix-ins hold the shared math:

- :class:`LinearMap` for layers that compute ``y = L_W(x) + b`` (dense,
  convolution, batch norm, elementwise affine, average pooling, means; layer
  normalisation under LRP, its standard deviation held fixed, and a matrix product
  with one operand held fixed, both per sample as a :class:`FrozenMap`): each
  LRP rule is written once in terms of the linear part with modified weights
  (``W``, its positive part, its negative part, ...) and its transpose;
- :class:`Mover` for layers that only move values (flatten, reshape, permute,
  slicing, padding): every rule moves the upstream values back unchanged.

DeepLift's reveal-cancel rule splits each difference from the reference into a
positive and a negative part (a :class:`Pair`); linear maps split their output
difference by the sign of each term ``w_ij * dx_i``, every other layer by the
sign of its output difference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Union

import torch
from torch import Tensor

#: The LRP rules and the default of their ``rule_param`` (``None``: takes none).
LRP_RULES: dict[str, Any] = {
    "simple": None,
    "epsilon": 0.01,
    "alpha_beta": 1.0,
    "pass": None,
    "z_plus": None,
    "gamma": 0.25,
    "w_square": None,
    "flat": None,
    "z_box": None,
}
#: The DeepLift rules (Shrikumar et al. 2017).
DEEPLIFT_RULES = ("rescale", "reveal_cancel")


@dataclass(frozen=True)
class LrpRule:
    """One LRP rule with its parameter (checked) and the max-pooling convention."""

    name: str
    param: Any = None
    winner_takes_all: bool = True


@dataclass(frozen=True)
class DeepLiftRule:
    """``rescale`` or ``reveal_cancel``, with the max-pooling convention."""

    name: str = "rescale"
    winner_takes_all: bool = True

    @property
    def splits(self) -> bool:
        return self.name == "reveal_cancel"


@dataclass(frozen=True)
class Pair:
    """A positive and a negative part (reveal-cancel): differences ``dx = pos + neg``
    or the multipliers of those two parts."""

    pos: Tensor
    neg: Tensor

    def __add__(self, other: Pair) -> Pair:
        return Pair(self.pos + other.pos, self.neg + other.neg)

    def map(self, fn: Callable[[Tensor], Tensor]) -> Pair:
        return Pair(fn(self.pos), fn(self.neg))


#: DeepLift multipliers: one tensor (rescale) or a :class:`Pair` (reveal-cancel).
Multipliers = Union[Tensor, Pair]


def sign_split(delta: Tensor) -> Pair:
    """``delta`` as its positive and negative entries."""
    return Pair(delta.clamp(min=0), delta.clamp(max=0))


def collapse(m: Multipliers, delta: Tensor) -> Tensor:
    """Multipliers of the parts of a sign-split ``delta`` as one multiplier of ``delta``
    (the mean of both where ``delta`` is 0, where it contributes nothing anyway)."""
    if isinstance(m, Tensor):
        return m
    return torch.where(delta > 0, m.pos, torch.where(delta < 0, m.neg, (m.pos + m.neg) / 2))


def reciprocal(den: Tensor, eps: float = 0.0) -> Tensor:
    """``1 / (den + eps * sign(den))`` with ``sign(0) = 1``, and ``0`` where that is 0
    (nothing to redistribute). ``den`` holds forward values ``(batch, *dim)``: the
    reciprocal is taken once and broadcast against upstream ``(n_targets, batch, *dim)``."""
    if eps > 0:
        return torch.where(den >= 0, den + eps, den - eps).reciprocal_()
    zero = den == 0
    return den.masked_fill(zero, 1).reciprocal_().masked_fill_(zero, 0)


def divide(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` with ``0`` where ``den`` is ``0``; see :func:`reciprocal`."""
    return num * reciprocal(den)


def fold(t: Tensor) -> Tensor:
    """``(n_targets, batch, *dim)`` as ``(n_targets * batch, *dim)``."""
    return t.reshape(-1, *t.shape[2:])


def unfold(t: Tensor, n_targets: int) -> Tensor:
    """Inverse of :func:`fold`."""
    return t.reshape(n_targets, -1, *t.shape[1:])


def sum_to(t: Tensor, shape: Sequence[int]) -> Tensor:
    """Sum an upstream ``(n_targets, batch, *dim)`` down to a broadcast input's shape
    ``(batch or 1, *dim_in)``."""
    return t.sum_to_size(t.shape[0], *shape) if t.shape[1:] != tuple(shape) else t


def transpose_of(fn: Callable[..., Tensor], upstream: Tensor,
                 input_dims: Sequence[tuple[int, ...]]) -> list[Tensor]:
    """The transpose of a linear ``fn`` applied to ``upstream (n_targets, batch, *out)``:
    one ``(n_targets, batch, *in_k)`` per input, by autograd through ``fn`` at zeros."""
    n_targets = upstream.shape[0]
    rows = upstream.shape[0] * upstream.shape[1]
    with torch.inference_mode(False), torch.enable_grad():
        xs = [upstream.new_zeros(rows, *dim, requires_grad=True) for dim in input_dims]
        grads = torch.autograd.grad(fn(*xs), xs, fold(upstream).clone())
    return [unfold(g, n_targets) for g in grads]


def vjp_at(fn: Callable[[Tensor], Tensor], point: Tensor, upstream: Tensor) -> Tensor:
    """``upstream (T, B, *out)`` times the Jacobian of ``fn`` at ``point (B, *in)``."""
    n_targets = upstream.shape[0]
    with torch.inference_mode(False), torch.enable_grad():
        at = point.detach().clone().expand(n_targets, *point.shape).reshape(-1, *point.shape[1:])
        at.requires_grad_(True)
        (grad,) = torch.autograd.grad(fn(at), at, fold(upstream).clone())
    return unfold(grad, n_targets)


def derivative(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """The elementwise derivative of ``fn`` at ``x``."""
    with torch.inference_mode(False), torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(fn(xg).sum(), xg)
    return grad


def negligible(diff: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Where ``diff = a - b`` is lost in rounding (below ``sqrt(eps) * (|a| + |b|)``),
    so that a quotient ``dy / diff`` would be noise; zero differences included."""
    return diff.abs() <= math.sqrt(torch.finfo(diff.dtype).eps) * (a.abs() + b.abs())


class RuleError(ValueError):
    """A layer has no rule for a method (or for a rule's setting)."""


class RuleLayer:
    """The interface of the rule-based backward passes; :class:`~innsight.layers.Layer`
    inherits it, and every layer family overrides what it supports."""

    type_name: str
    input_dim: list[tuple[int, ...]]
    #: Whether ``rule_name``/``rule_param`` apply to this layer (LRP).
    takes_lrp_rule: ClassVar[bool] = False
    #: Whether the DeepLift backward understands :class:`Pair` multipliers of its
    #: output's own split (else they are collapsed by the sign of its output difference).
    splits_pairs: ClassVar[bool] = False

    def rule_support(self, method: str, rule: Any) -> str | None:
        """Why this layer cannot take part in ``method`` (``"lrp"``, ``"deeplift"``,
        ``"cw"``) with ``rule``; ``None`` if it can."""
        return f"layer type '{self.type_name}' has no {method_label(method)} rule"

    def relevance(self, r: Tensor, xs: list[Tensor], y: Tensor, rule: LrpRule) -> list[Tensor]:
        """LRP: relevance ``(T, B, *out)`` onto each input ``(T, B, *in_k)``."""
        raise RuleError(self.rule_support("lrp", rule) or "no LRP rule")

    def contribution(self, m: Multipliers, xs: list[Tensor], refs: list[Tensor], y: Tensor,
                     y_ref: Tensor, rule: DeepLiftRule,
                     splits: list[Pair] | None) -> list[Multipliers]:
        """DeepLift: multipliers of the output difference ``(T, B, *out)`` onto each input.
        ``splits`` holds each input's difference as a :class:`Pair` (reveal-cancel)."""
        raise RuleError(self.rule_support("deeplift", rule) or "no DeepLift rule")

    def split_delta(self, splits: list[Pair], y: Tensor, y_ref: Tensor) -> Pair:
        """Reveal-cancel: this layer's output difference as a positive and a negative part."""
        return sign_split(y - y_ref)

    def weight_paths(self, m: Tensor) -> list[Tensor]:
        """ConnectionWeights: the products of weights from the output back to each input."""
        raise RuleError(self.rule_support("cw", None) or "no ConnectionWeights rule")


def method_label(method: str) -> str:
    return {"lrp": "LRP", "deeplift": "DeepLift", "cw": "ConnectionWeights"}[method]


class Mover(RuleLayer):
    """Layers that only move, copy or drop values: every rule moves the upstream back
    (summing where a value was copied, as reflect padding does). ``_linear(x)`` is the
    move itself, without any constant added."""

    def rule_support(self, method: str, rule: Any) -> str | None:
        return None

    def _linear(self, *xs: Tensor) -> Tensor:
        return self(*xs)

    def _move_back(self, upstream: Tensor) -> list[Tensor]:
        return transpose_of(self._linear, upstream, self.input_dim)

    def relevance(self, r: Tensor, xs: list[Tensor], y: Tensor, rule: LrpRule) -> list[Tensor]:
        return self._move_back(r)

    def contribution(self, m: Multipliers, xs: list[Tensor], refs: list[Tensor], y: Tensor,
                     y_ref: Tensor, rule: DeepLiftRule,
                     splits: list[Pair] | None) -> list[Multipliers]:
        return self._move_back(collapse(m, y - y_ref))

    def weight_paths(self, m: Tensor) -> list[Tensor]:
        return self._move_back(m)


#: Weight modifications of the LRP rules: the weight, its positive or negative part,
#: its square, or ones. A weightless map (pooling, means) has positive weights only.
WEIGHT_PARTS: dict[str, Callable[[Tensor], Tensor]] = {
    "w": lambda w: w,
    "pos": lambda w: w.clamp(min=0),
    "neg": lambda w: w.clamp(max=0),
    "square": lambda w: w * w,
    "ones": torch.ones_like,
}


class LinearMap(RuleLayer):
    """Layers computing ``y = L_W(x) + b``; subclasses give the linear part with any
    weight (``_map``), its transpose (``_map_t``), the weight the rules modify
    (``rule_weight``, ``None`` for the fixed positive weights of pooling and means)
    and the bias broadcastable to ``(batch, *out)`` (``rule_bias``).

    LRP rules (``s = R / z`` per output, then back through the transposed map):

    - ``simple``: ``z = L_W(x) + b``; relevance absorbed by the bias is lost.
    - ``epsilon``: as ``simple`` with ``z + eps * sign(z)``.
    - ``alpha_beta``: positive terms ``(x_i w_ij)^+`` with the positive bias and
      negative terms with the negative bias are redistributed apart, weighted by
      ``alpha`` and ``beta = alpha - 1``.
    - ``z_plus``: positive terms only, no bias (Montavon et al.'s z+).
    - ``gamma``: weights ``w + gamma * w^+`` and bias ``b + gamma * b^+``.
    - ``w_square``: in proportion to ``w_ij^2`` (input-independent, no bias).
    - ``flat``: uniformly over each output's receptive field.
    - ``z_box``: for inputs bounded by ``(low, high)`` = ``rule_param``.
    - ``pass``: unchanged (shape-preserving layers only).
    """

    takes_lrp_rule = True
    splits_pairs = True
    #: Whether input and output have the same shape (the ``pass`` rule needs it).
    shape_preserving: ClassVar[bool] = False

    @property
    def rule_weight(self) -> Tensor | None:
        return None

    @property
    def rule_bias(self) -> Tensor | None:
        return None

    def _map(self, x: Tensor, weight: Tensor | None) -> Tensor:
        raise NotImplementedError

    def _map_t(self, s: Tensor, weight: Tensor | None) -> Tensor:
        """The transpose of ``_map`` on ``s (rows, *out)``, ``(rows, *in)`` back."""
        (grad,) = transpose_of(lambda x: self._map(x, weight), s.unsqueeze(0), self.input_dim)
        return grad[0]

    def _part(self, part: str) -> Tensor | None | bool:
        """The weight for ``part``; ``None`` for a weightless map's own weights and
        ``False`` where that part is zero (the negative part of positive weights)."""
        w = self.rule_weight
        if w is None:
            return False if part == "neg" else None
        return WEIGHT_PARTS[part](w)

    def lin(self, x: Tensor, part: str) -> Tensor | None:
        """``L_{part(W)}(x)`` for ``x (rows, *in)``; ``None`` for a zero map."""
        weight = self._part(part)
        return None if weight is False else self._map(x, weight)

    def lin_t(self, s: Tensor, part: str) -> Tensor | None:
        """The transpose of :meth:`lin` on ``s (T, B, *out)``; ``None`` for a zero map."""
        weight = self._part(part)
        if weight is False:
            return None
        return unfold(self._map_t(fold(s), weight), s.shape[0])

    def bias_part(self, part: str) -> Tensor | float:
        b = self.rule_bias
        if b is None:
            return 0.0
        return {"w": b, "pos": b.clamp(min=0), "neg": b.clamp(max=0)}[part]

    def rule_support(self, method: str, rule: Any) -> str | None:
        if method == "lrp" and rule.name == "pass" and not self.shape_preserving:
            return (f"the LRP rule 'pass' only moves relevance through shape-preserving "
                    f"layers, not layer type '{self.type_name}'")
        return None

    # -- LRP ---------------------------------------------------------------------
    def relevance(self, r: Tensor, xs: list[Tensor], y: Tensor, rule: LrpRule) -> list[Tensor]:
        (x,) = xs
        name, param = rule.name, rule.param
        if name == "pass":
            return [r]
        if name in ("simple", "epsilon"):
            s = r * reciprocal(y, param if name == "epsilon" else 0.0)
            return [x * self.lin_t(s, "w")]
        if name == "gamma":
            z = self.lin(x, "w") + self.bias_part("w") + param * (
                self.lin(x, "pos") + self.bias_part("pos"))
            s = divide(r, z)
            return [x * (self.lin_t(s, "w") + param * self.lin_t(s, "pos"))]
        if name in ("alpha_beta", "z_plus"):
            if name == "alpha_beta":
                return [self._alpha_beta(r, x, param, param - 1.0, with_bias=True)]
            return [self._alpha_beta(r, x, 1.0, 0.0, with_bias=False)]
        if name in ("w_square", "flat"):
            part = "square" if name == "w_square" else "ones"
            ones = x.new_ones(1, *x.shape[1:])
            return [self.lin_t(divide(r, self.lin(ones, part)), part)]
        if name == "z_box":
            low, high = (torch.as_tensor(v, dtype=x.dtype, device=x.device).expand_as(x)
                         for v in param)
            z = (self.lin(x, "w") - _zero_if_none(self.lin(low, "pos"))
                 - _zero_if_none(self.lin(high, "neg")))
            s = divide(r, z)
            return [x * self.lin_t(s, "w") - low * self.lin_t(s, "pos")
                    - high * _zero_if_none(self.lin_t(s, "neg"))]
        raise RuleError(f"unknown LRP rule {name!r}")

    def _alpha_beta(self, r: Tensor, x: Tensor, alpha: float, beta: float,
                    with_bias: bool) -> Tensor:
        x_pos, x_neg = x.clamp(min=0), x.clamp(max=0)
        # Positive terms: x+ with W+, x- with W-; negative terms: x+ with W-, x- with W+.
        terms = {"pos": (("pos", x_pos), ("neg", x_neg)), "neg": (("neg", x_pos), ("pos", x_neg))}
        out = 0.0  # a tensor after the positive terms (alpha >= 1, and W+ is never zero)
        for sign, factor in (("pos", alpha), ("neg", -beta)):
            if factor == 0:
                continue
            z = self.bias_part(sign) if with_bias else 0.0
            for part, xp in terms[sign]:
                z = z + _zero_if_none(self.lin(xp, part))
            s = divide(r, z)
            for part, xp in terms[sign]:
                back = self.lin_t(s, part)
                if back is not None:
                    out = out + factor * xp * back
        return out

    # -- DeepLift ----------------------------------------------------------------
    def contribution(self, m: Multipliers, xs: list[Tensor], refs: list[Tensor], y: Tensor,
                     y_ref: Tensor, rule: DeepLiftRule,
                     splits: list[Pair] | None) -> list[Multipliers]:
        if isinstance(m, Tensor):
            return [self.lin_t(m, "w")]
        # Positive terms of the output difference come from x+ through W+ and x- through
        # W-; negative terms from x+ through W- and x- through W+.
        pos = _add(self.lin_t(m.pos, "pos"), self.lin_t(m.neg, "neg"))
        neg = _add(self.lin_t(m.pos, "neg"), self.lin_t(m.neg, "pos"))
        return [Pair(pos, neg)]

    def split_delta(self, splits: list[Pair], y: Tensor, y_ref: Tensor) -> Pair:
        (d,) = splits
        pos = _add(self.lin(d.pos, "pos"), self.lin(d.neg, "neg"))
        neg = _add(self.lin(d.pos, "neg"), self.lin(d.neg, "pos"))
        return Pair(pos, neg)

    # -- ConnectionWeights ---------------------------------------------------------
    def weight_paths(self, m: Tensor) -> list[Tensor]:
        return [self.lin_t(m, "w")]


class FrozenMap(LinearMap):
    """A layer with a factor held at its values for one batch ``(B, ...)`` (layer norm's
    standard deviation, an operand of a matrix product): a linear map whose weights
    differ per sample, so that upstream values keep their ``(T, B)`` axes to broadcast
    against them."""

    def lin_t(self, s: Tensor, part: str) -> Tensor:
        return self._map_t(s, self._part(part))


def _zero_if_none(t: Tensor | None) -> Tensor | float:
    return 0.0 if t is None else t


def _add(a: Tensor | None, b: Tensor | None) -> Tensor:
    if a is None:
        return b
    return a if b is None else a + b
