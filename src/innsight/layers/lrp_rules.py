"""The LRP rules, one small class each, registered in :data:`LRP_RULES` by name.

A rule knows its name, the default of its ``rule_param``, how to check a given
``rule_param`` and its formula, written once for every layer family on the
primitives of :class:`~innsight.layers.rules.LinearMap`: ``lin(x, part)`` (the
linear part of the layer with the weight ``part`` of ``"w"``, ``"pos"``,
``"neg"``, ``"square"``, ``"ones"``), its transpose ``lin_t(s, part)`` and
``bias_part(part)``. Relevance ``r`` is ``(T, B, *out)`` (one row per explained
output), forward values ``x (B, *in)`` and ``y (B, *out)``.

The walk hands each layer an instance that carries the checked parameter and
the max-pooling convention ``winner_takes_all``. A new rule is one subclass that
sets ``name``: defining it registers it, and ``run_lrp(..., rule_name=name)``
accepts it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from innsight._validation import describe, is_number
from innsight.layers.rules import Rule, divide, reciprocal

if TYPE_CHECKING:
    from innsight.layers.rules import LinearMap, RuleLayer

#: Rule name -> rule class; filled by defining subclasses of :class:`LrpRule`.
LRP_RULES: dict[str, type[LrpRule]] = {}


class LrpRule(Rule):
    """An LRP rule with its checked parameter ``param``.

    Instances of this base class itself stand for "no rule chosen": the walk hands
    them to layers whose type takes no LRP rule, which read only ``winner_takes_all``.
    """

    registry: ClassVar[dict[str, type[Rule]]] = LRP_RULES
    name: ClassVar[str] = "none"
    #: The parameter used when ``rule_param`` gives none.
    default_param: ClassVar[Any] = None
    #: Whether ``rule_param`` applies to this rule.
    takes_param: ClassVar[bool] = False
    #: The smallest allowed numeric ``rule_param``, and what the number means.
    param_min: ClassVar[float] = 0.0
    param_meaning: ClassVar[str] = ""
    #: Where ``param`` is worth searching (``get_tunables``); ``None``: not tuned.
    tunable_range: ClassVar[tuple[float, float] | None] = None
    #: Whether the rule needs a layer whose input and output have the same shape.
    shape_preserving_only: ClassVar[bool] = False
    #: The layer kinds (``RuleLayer.lrp_kind``) the formula is written for; a rule named
    #: for every layer at once (``rule_name="epsilon"``) leaves the others at their default.
    kinds: ClassVar[frozenset[str]] = frozenset({"map", "product"})
    #: Whether a product holds the operand its ``lrp_constant`` names fixed (the
    #: AH-rule; CP-LRP), rather than splitting relevance between both operands.
    holds_operand: ClassVar[bool] = True

    def __init__(self, param: Any = None, winner_takes_all: bool = True) -> None:
        super().__init__(winner_takes_all)
        self.param = param
        #: The rules of a fused layer's parts (``RuleLayer.rule_parts``), by suffix.
        self.parts: dict[str, LrpRule] = {}

    def part(self, suffix: str, default: str) -> LrpRule:
        """The rule of the part ``suffix``, or the rule named ``default`` if none was set."""
        return self.parts.get(suffix) or LRP_RULES[default]()

    def label(self) -> str:
        """The name, followed by the parts' rules, e.g. ``"uniform, weights: linearise"``."""
        return ", ".join([self.name, *(f"{k}: {r.name}" for k, r in self.parts.items())])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(param={self.param!r}, "
                f"winner_takes_all={self.winner_takes_all})")

    @classmethod
    def check_param(cls, param: Any, where: str) -> Any:
        """``param`` checked for this rule (``None``: the default); ``where`` names the
        entry of a ``rule_param`` dict in messages (e.g. ``"['Dense']"``)."""
        if param is None:
            return cls.default_param
        if not cls.takes_param:
            raise ValueError(
                f"The LRP rule {cls.name!r} takes no `rule_param`{where}, got {describe(param)}."
            )
        if not is_number(param) or not math.isfinite(param) or param < cls.param_min:
            raise ValueError(
                f"`rule_param`{where} for {cls.name!r} must be a finite number >= "
                f"{cls.param_min}{cls.param_meaning}, got {describe(param)}."
            )
        return float(param)

    def refusal(self, layer: RuleLayer) -> str | None:
        for part in getattr(layer, "rule_parts", ()):
            reason = self.part(part.suffix, part.default_lrp_rule).refusal(part)
            if reason is not None:
                return reason
        if layer.lrp_kind not in self.kinds:
            fits = sorted(name for name, rule in LRP_RULES.items()
                          if layer.lrp_kind in rule.kinds and name != "none")
            return (f"the LRP rule {self.name!r} is not for layer type '{layer.type_name}' "
                    f"(rules for it: {', '.join(fits)})")
        if self.shape_preserving_only and not layer.shape_preserving:
            return (f"the LRP rule {self.name!r} only moves relevance through shape-preserving "
                    f"layers, not layer type '{layer.type_name}'")
        return None

    def relevance(self, layer: LinearMap, r: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """Relevance ``r (T, B, *out)`` of ``layer`` at ``x (B, *in)``, ``y (B, *out)``
        onto its input, ``(T, B, *in)``."""
        raise NotImplementedError(f"{type(self).__name__} has no relevance formula")

    def quotient(self, r: Tensor, y: Tensor) -> Tensor | None:
        """For rules whose relevance is ``x * L_W^T(s)`` (input times the gradient of
        ``s . L_W(x)``), ``s`` from ``r (T, B, *out)`` and ``y (B, *out)``; ``None`` for
        the others."""
        return None


class Simple(LrpRule):
    """``simple``: ``s = r / z`` with ``z = L_W(x) + b``, then ``x * L_W^T(s)``; relevance
    absorbed by the bias is lost."""

    name = "simple"

    def _stabiliser(self) -> float:
        return 0.0

    def quotient(self, r: Tensor, y: Tensor) -> Tensor:
        return r * reciprocal(y, self._stabiliser())

    def relevance(self, layer: LinearMap, r: Tensor, x: Tensor, y: Tensor) -> Tensor:
        return x * layer.lin_t(self.quotient(r, y), "w")


class Epsilon(Simple):
    """``epsilon``: as ``simple`` with ``z + eps * sign(z)`` (``eps = rule_param``)."""

    name = "epsilon"
    default_param = 0.01
    takes_param = True
    tunable_range = (1e-4, 1.0)

    def _stabiliser(self) -> float:
        return self.param


def _zero_if_none(t: Tensor | None) -> Tensor | float:
    return 0.0 if t is None else t


def _alpha_beta(layer: LinearMap, r: Tensor, x: Tensor, alpha: float, beta: float,
                with_bias: bool) -> Tensor:
    """Positive terms ``(x_i w_ij)^+`` (with the positive bias) and negative terms (with
    the negative bias) redistribute ``alpha * r`` and ``-beta * r`` apart."""
    x_pos, x_neg = x.clamp(min=0), x.clamp(max=0)
    # Positive terms: x+ with W+, x- with W-; negative terms: x+ with W-, x- with W+.
    terms = {"pos": (("pos", x_pos), ("neg", x_neg)), "neg": (("neg", x_pos), ("pos", x_neg))}
    out = 0.0  # a tensor after the positive terms (alpha >= 1, and W+ is never zero)
    for sign, factor in (("pos", alpha), ("neg", -beta)):
        if factor == 0:
            continue
        z = layer.bias_part(sign) if with_bias else 0.0
        for part, xp in terms[sign]:
            z = z + _zero_if_none(layer.lin(xp, part))
        s = divide(r, z)
        for part, xp in terms[sign]:
            back = layer.lin_t(s, part)
            if back is not None:
                out = out + factor * xp * back
    return out


class AlphaBeta(LrpRule):
    """``alpha_beta``: positive and negative terms weighted by ``alpha = rule_param`` and
    ``beta = alpha - 1``; a bias joins the positive or the negative part by its sign."""

    name = "alpha_beta"
    default_param = 1.0
    takes_param = True
    param_min = 1.0
    param_meaning = " (alpha; beta = alpha - 1)"
    tunable_range = (1.0, 3.0)

    def relevance(self, layer: LinearMap, r: Tensor, x: Tensor, y: Tensor) -> Tensor:
        return _alpha_beta(layer, r, x, self.param, self.param - 1.0, with_bias=True)


class Pass(LrpRule):
    """``pass``: relevance goes through unchanged (shape-preserving layers only); for
    activations this is the identity rule, their default."""

    name = "pass"
    shape_preserving_only = True
    kinds = frozenset({"map", "product", "activation"})

    def relevance(self, layer: LinearMap, r: Tensor, x: Tensor, y: Tensor) -> Tensor:
        return r


class ZPlus(LrpRule):
    """``z_plus``: positive terms only, no bias (Montavon et al.'s z+)."""

    name = "z_plus"

    def relevance(self, layer: LinearMap, r: Tensor, x: Tensor, y: Tensor) -> Tensor:
        return _alpha_beta(layer, r, x, 1.0, 0.0, with_bias=False)


class Gamma(LrpRule):
    """``gamma``: weights ``w + gamma * w^+`` and bias ``b + gamma * b^+``
    (``gamma = rule_param``)."""

    name = "gamma"
    default_param = 0.25
    takes_param = True
    tunable_range = (0.01, 1.0)

    def relevance(self, layer: LinearMap, r: Tensor, x: Tensor, y: Tensor) -> Tensor:
        gamma = self.param
        z = layer.lin(x, "w") + layer.bias_part("w") + gamma * (
            layer.lin(x, "pos") + layer.bias_part("pos"))
        s = divide(r, z)
        return x * (layer.lin_t(s, "w") + gamma * layer.lin_t(s, "pos"))


class WSquare(LrpRule):
    """``w_square``: in proportion to ``w_ij^2``, whatever the input (no bias)."""

    name = "w_square"
    #: The weight modification the relevance is spread by.
    weight_part: ClassVar[str] = "square"

    def relevance(self, layer: LinearMap, r: Tensor, x: Tensor, y: Tensor) -> Tensor:
        ones = x.new_ones(1, *x.shape[1:])
        part = self.weight_part
        return layer.lin_t(divide(r, layer.lin(ones, part)), part)


class Flat(WSquare):
    """``flat``: uniformly over each output's receptive field (``w_square`` with every
    weight one)."""

    name = "flat"
    weight_part = "ones"


class ZBox(LrpRule):
    """``z_box``: for inputs bounded by ``(low, high) = rule_param`` (numbers or arrays
    broadcastable to one sample), e.g. the pixel range at the first layer."""

    name = "z_box"
    takes_param = True

    @classmethod
    def check_param(cls, param: Any, where: str) -> tuple[Tensor, Tensor]:
        if param is None:
            raise ValueError(
                f"The LRP rule 'z_box' needs `rule_param` = (low, high), the bounds of the "
                f"input{where}; got None."
            )
        if not isinstance(param, (tuple, list)) or len(param) != 2:
            raise ValueError(
                f"`rule_param`{where} for 'z_box' must be a pair (low, high) of numbers or "
                f"arrays, got {describe(param)}."
            )
        low, high = (torch.as_tensor(np.asarray(v, dtype=float)) for v in param)
        if not (torch.isfinite(low).all() and torch.isfinite(high).all() and (low <= high).all()):
            raise ValueError(
                f"`rule_param`{where} for 'z_box' must hold finite bounds low <= high."
            )
        return (low, high)

    def relevance(self, layer: LinearMap, r: Tensor, x: Tensor, y: Tensor) -> Tensor:
        low, high = (torch.as_tensor(v, dtype=x.dtype, device=x.device).expand_as(x)
                     for v in self.param)
        z = (layer.lin(x, "w") - _zero_if_none(layer.lin(low, "pos"))
             - _zero_if_none(layer.lin(high, "neg")))
        s = divide(r, z)
        return (x * layer.lin_t(s, "w") - low * layer.lin_t(s, "pos")
                - high * _zero_if_none(layer.lin_t(s, "neg")))


class Linearise(LrpRule):
    """``linearise``: an activation by its linearisation at the input,
    ``R_x = x * J(x)^T (r / y)``; for softmax ``R_x = x * (r - y * sum(r))`` (AttnLRP,
    Achtibat et al. 2024, Prop. 3.1). The rest of ``r``, the linearisation's bias term,
    is absorbed."""

    name = "linearise"
    kinds = frozenset({"activation"})

    def relevance(self, layer: Any, r: Tensor, x: Tensor, y: Tensor) -> Tensor:
        return layer.linearised(r, x, y)


class Uniform(Epsilon):
    """``uniform``: a product of two tensors gives each operand half of the relevance,
    each through the ``epsilon`` rule with the other operand fixed, whatever its
    ``lrp_constant`` (AttnLRP's uniform rule for matrix products, Achtibat et al. 2024,
    Eq. 7, where the AH-rule would hold the attention weights fixed)."""

    name = "uniform"
    kinds = frozenset({"product"})
    holds_operand = False


#: Named rule choices, data only: ``rule_name=<preset>`` stands for the preset's rule
#: names and, where ``rule_param`` is not given, its parameters, both keyed like
#: ``rule_name`` dicts (``"*"``: every layer the rule fits, the others keep their default).
LRP_PRESETS: dict[str, tuple[dict[str, str], dict[str, Any]]] = {
    # AttnLRP (Achtibat et al. 2024): epsilon for linear maps and the LN-rule (the identity
    # rule on the normalisation), the uniform rule for products, softmax linearised.
    "attnlrp": ({"*": "epsilon", "MatMul": "uniform", "Softmax": "linearise"}, {"*": 1e-9}),
}
