"""The rule-based backward passes every layer family answers for: LRP, DeepLift and
ConnectionWeights.

Upstream tensors carry every explained output node in a leading axis:
``(n_targets, batch, *dim)``, so one reverse walk explains all outputs. Forward
values (a layer's inputs ``xs`` and output ``y``) are ``(batch, *dim)`` and
broadcast against them.

Every layer declares once which of these passes it has (``rule_paths``, keys of
:data:`RULE_PATHS`) and why it lacks the others (``no_rule_reason``); the methods
refuse a model before any work where a layer on the way lacks theirs, or cannot
follow the chosen rule's setting (:meth:`RuleLayer.setting_refusal`).

Two mix-ins hold the shared math:

- :class:`LinearMap` for layers that compute ``y = L_W(x) + b`` (dense,
  convolution, batch norm, elementwise affine, average pooling, means; layer
  normalisation under LRP, its standard deviation held fixed, and a matrix product
  with one operand held fixed, both per sample as a :class:`FrozenMap`): it offers
  the linear part with modified weights (``lin``: ``W``, its positive part, its
  negative part, ...), its transpose (``lin_t``) and the bias parts
  (``bias_part``), on which each LRP rule of :mod:`innsight.layers.lrp_rules` is
  written once;
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
from typing import TYPE_CHECKING, Any, ClassVar, Union

import torch
from torch import Tensor

if TYPE_CHECKING:
    from innsight.layers.lrp_rules import LrpRule

#: The rule-based passes, keyed as methods ask for them (``check_rules``), with the
#: method named in messages: ``"lrp"`` is :meth:`RuleLayer.relevance`, ``"deeplift"``
#: :meth:`RuleLayer.contribution` (DeepLift and DeepSHAP), ``"cw"``
#: :meth:`RuleLayer.weight_paths`.
RULE_PATHS: dict[str, str] = {"lrp": "LRP", "deeplift": "DeepLift", "cw": "ConnectionWeights"}
#: Every rule-based pass.
ALL_PATHS: frozenset[str] = frozenset(RULE_PATHS)


class Rule:
    """A rule as the walk hands it to each layer, carrying the max-pooling convention
    ``winner_takes_all``. A family of rules is a subclass with its own ``registry``;
    each of its subclasses that sets ``name`` registers itself there."""

    registry: ClassVar[dict[str, type[Rule]]]
    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "registry" in cls.__dict__ or "name" not in cls.__dict__:
            return
        if cls.name in cls.registry:
            raise ValueError(
                f"The rule name {cls.name!r} is taken by {cls.registry[cls.name].__name__}; "
                f"choose another `name` for {cls.__name__}."
            )
        cls.registry[cls.name] = cls

    def __init__(self, winner_takes_all: bool = True) -> None:
        self.winner_takes_all = winner_takes_all

    def refusal(self, layer: RuleLayer) -> str | None:
        """Why ``layer`` cannot follow this rule (``None`` if it can)."""
        return None


#: DeepLift rule name -> rule class; filled by defining subclasses of :class:`DeepLiftRule`.
DEEPLIFT_RULES: dict[str, type[DeepLiftRule]] = {}


class DeepLiftRule(Rule):
    """A DeepLift rule (Shrikumar et al. 2017), with the max-pooling convention."""

    registry: ClassVar[dict[str, type[Rule]]] = DEEPLIFT_RULES
    #: Whether nonlinearities treat the positive and negative parts of each
    #: difference apart (then the walk hands layers those parts as :class:`Pair`).
    splits: ClassVar[bool] = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(winner_takes_all={self.winner_takes_all})"


class Rescale(DeepLiftRule):
    """``rescale``: a nonlinearity's multiplier is ``dy / dx``."""

    name = "rescale"


class RevealCancel(DeepLiftRule):
    """``reveal_cancel``: the positive and negative parts of ``dx`` get their own
    multipliers."""

    name = "reveal_cancel"
    splits = True


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
    if eps > 0:  # eps with the sign of den (+0 counts as positive), in place
        return torch.full_like(den, eps).copysign_(den).add_(den).reciprocal_()
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


@dataclass(frozen=True)
class RulePart:
    """A part of a fused layer that follows its own LRP rule, chosen as for a layer of
    its own (see :class:`RuleLayer`): by the name ``<layer name>_<suffix>``, its
    ``rule_key`` or ``type_name``, or a rule named for every layer that fits
    ``lrp_kind``, else ``default_lrp_rule`` (e.g. the softmax inside an attention layer)."""

    suffix: str
    type_name: str
    key: str
    lrp_kind: str
    default_lrp_rule: str
    shape_preserving: bool = True

    def rule_key(self) -> str:
        return self.key


class RuleLayer:
    """The interface of the rule-based backward passes; :class:`~innsight.layers.Layer`
    inherits it, and every layer family overrides what it supports."""

    type_name: str
    input_dim: list[tuple[int, ...]]
    #: The rule-based passes this layer has (keys of :data:`RULE_PATHS`).
    rule_paths: ClassVar[frozenset[str]] = frozenset()
    #: Why it has none of the others, completing "layer type 'X' has no ... rule (...)".
    no_rule_reason: ClassVar[str] = ""
    #: Whether the rule-based walks end at this layer (it reads integers: token ids,
    #: masks), dropping what reaches it; such a layer needs no rule.
    ends_walks: ClassVar[bool] = False
    #: Whether ``rule_name``/``rule_param`` apply to this layer (LRP).
    takes_lrp_rule: ClassVar[bool] = False
    #: Which LRP rules fit a layer taking one (``LrpRule.kinds``): ``"map"`` (a linear
    #: map: ``epsilon``, ``alpha_beta``, ...), ``"product"`` (a product of two tensors:
    #: those and ``uniform``) or ``"activation"`` (``pass``, ``linearise``).
    lrp_kind: ClassVar[str] = "map"
    #: The LRP rule of this layer where ``rule_name`` names none that fits it.
    default_lrp_rule: ClassVar[str] = "simple"
    #: The keys of ``rule_name``/``rule_param`` dicts that may choose its rule, besides
    #: layer names: its type names, and finer ones (``"Softmax"``).
    rule_keys: ClassVar[tuple[str, ...]] = ()
    #: Whether input and output have the same shape (the LRP rule ``pass`` needs it).
    shape_preserving: ClassVar[bool] = False
    #: Parts that take LRP rules of their own (``LrpRule.parts``, keyed by suffix).
    rule_parts: ClassVar[tuple[RulePart, ...]] = ()
    #: Whether the rule-based passes read the forward values (inputs and output).
    reads_values: ClassVar[bool] = True
    #: Whether a walk may recompute the value from the inputs rather than keep it from
    #: the forward pass (elementwise and moving layers: cheap, no large temporaries).
    recomputable: ClassVar[bool] = False
    #: Whether the DeepLift backward understands :class:`Pair` multipliers of its
    #: output's own split (else they are collapsed by the sign of its output difference).
    splits_pairs: ClassVar[bool] = False

    @property
    def sample_rank(self) -> int:
        """The number of axes of one sample of the (first) input, batch axis excluded."""
        return len(self.input_dim[0])

    def rule_key(self) -> str:
        """The type key that chooses this layer's LRP rule (after its name)."""
        return self.type_name

    def no_rule(self, method: str) -> str:
        """Why this layer cannot take part in ``method``, a key of :data:`RULE_PATHS`
        missing from its ``rule_paths``."""
        reason = f" ({self.no_rule_reason})" if self.no_rule_reason else ""
        return f"layer type '{self.type_name}' has no {RULE_PATHS[method]} rule{reason}"

    def held_inputs(self, rule: LrpRule) -> frozenset[int]:
        """The inputs that LRP under ``rule`` gives no relevance (``None``: operands the
        rule holds fixed); the walk does not reach further through them."""
        return frozenset()

    def setting_refusal(self, rule: Rule | None) -> str | None:
        """Why this layer cannot follow ``rule`` (a method's rule for this layer, ``None``
        for ConnectionWeights) on a path it has; ``None`` if it can. The rule decides,
        unless a layer's own setting limits it further."""
        return None if rule is None else rule.refusal(self)

    def relevance(self, r: Tensor, xs: list[Tensor], y: Tensor,
                  rule: LrpRule) -> list[Tensor | None]:
        """LRP: relevance ``(T, B, *out)`` onto each input ``(T, B, *in_k)``; ``None`` for
        an input that gets none (an operand the rule holds fixed)."""
        raise RuleError(self.no_rule("lrp"))

    def contribution(self, m: Multipliers, xs: list[Tensor], refs: list[Tensor], y: Tensor,
                     y_ref: Tensor, rule: DeepLiftRule,
                     splits: list[Pair] | None) -> list[Multipliers]:
        """DeepLift: multipliers of the output difference ``(T, B, *out)`` onto each input.
        ``splits`` holds each input's difference as a :class:`Pair` (reveal-cancel)."""
        raise RuleError(self.no_rule("deeplift"))

    def split_delta(self, splits: list[Pair], y: Tensor, y_ref: Tensor) -> Pair:
        """Reveal-cancel: this layer's output difference as a positive and a negative part."""
        return sign_split(y - y_ref)

    def weight_paths(self, m: Tensor) -> list[Tensor]:
        """ConnectionWeights: the products of weights from the output back to each input."""
        raise RuleError(self.no_rule("cw"))

    def on_units(self, units: Tensor) -> RuleLayer | None:
        """This layer computing only the units ``units`` ``(J,)`` of its output's last axis
        (output ``(batch, ..., J)``), with the same rules: walks that start at a few
        output nodes go back through it (a language model's head, ``vocab`` units per
        token). ``None`` where the layer has no such restriction."""
        return None


class Mover(RuleLayer):
    """Layers that only move, copy or drop values: every rule moves the upstream back
    (summing where a value was copied, as reflect padding does). ``_linear(x)`` is the
    move itself, without any constant added."""

    rule_paths = ALL_PATHS
    #: Moving values back needs no forward values.
    reads_values = False
    recomputable = True

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

    LRP hands the layer to the rule object (:mod:`innsight.layers.lrp_rules`), whose
    formula reads :meth:`lin`, :meth:`lin_t` and :meth:`bias_part`. DeepLift and
    ConnectionWeights go back through the transposed map; reveal-cancel splits the
    output difference by the sign of each term ``w_ij * dx_i``.
    """

    rule_paths = ALL_PATHS
    takes_lrp_rule = True
    splits_pairs = True

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

    # -- LRP ---------------------------------------------------------------------
    def relevance(self, r: Tensor, xs: list[Tensor], y: Tensor, rule: LrpRule) -> list[Tensor]:
        (x,) = xs
        return [rule.relevance(self, r, x, y)]

    # -- DeepLift ----------------------------------------------------------------
    def contribution(self, m: Multipliers, xs: list[Tensor], refs: list[Tensor], y: Tensor,
                     y_ref: Tensor, rule: DeepLiftRule,
                     splits: list[Pair] | None) -> list[Multipliers]:
        if isinstance(m, Tensor):
            return [self.lin_t(m, "w")]
        # Positive terms of the output difference come from x+ through W+ and x- through
        # W-; negative terms from x+ through W- and x- through W+.
        pos = _sum_maps(self.lin_t(m.pos, "pos"), self.lin_t(m.neg, "neg"))
        neg = _sum_maps(self.lin_t(m.pos, "neg"), self.lin_t(m.neg, "pos"))
        return [Pair(pos, neg)]

    def split_delta(self, splits: list[Pair], y: Tensor, y_ref: Tensor) -> Pair:
        (d,) = splits
        pos = _sum_maps(self.lin(d.pos, "pos"), self.lin(d.neg, "neg"))
        neg = _sum_maps(self.lin(d.pos, "neg"), self.lin(d.neg, "pos"))
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


def _sum_maps(a: Tensor | None, b: Tensor | None) -> Tensor:
    """The sum of two maps' results, either of them ``None`` for a zero map."""
    if a is None:
        return b
    return a if b is None else a + b
