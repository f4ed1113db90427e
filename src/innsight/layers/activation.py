"""Activation functions: elementwise nonlinearities and softmax."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from innsight.layers.base import Layer, tensor_dim
from innsight.layers.lrp_rules import LrpRule
from innsight.layers.rules import (
    ALL_PATHS,
    DeepLiftRule,
    Multipliers,
    Pair,
    collapse,
    derivative,
    divide,
    negligible,
    vjp_at,
)


@dataclass(frozen=True)
class ActivationSpec:
    """How to apply one named activation and which parameters it takes."""

    fn: Callable[..., Tensor]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    #: The same function writing into its input, where torch has one.
    fn_: Callable[..., Tensor] | None = None


def _softmax(x: Tensor, axis: int) -> Tensor:
    return torch.softmax(x, dim=tensor_dim(axis))


def _identity(x: Tensor) -> Tensor:
    return x


def _hardsigmoid(x: Tensor) -> Tensor:
    # Closed form: torch's fused kernel differentiates with a float32 1/6 even in float64.
    return (x / 6 + 0.5).clamp(0, 1)


def _hardswish(x: Tensor) -> Tensor:
    return x * _hardsigmoid(x)


#: Scores at or below this count as masked ("not attending": ``-inf`` after a softmax).
MASKED = -1e30

#: Activation name in the dict format -> how to compute it. ``axis`` counts
#: sample axes (0 = channels), never the batch axis.
ACTIVATIONS: dict[str, ActivationSpec] = {
    "relu": ActivationSpec(F.relu, fn_=F.relu_),
    "relu6": ActivationSpec(F.relu6, fn_=lambda x: F.hardtanh_(x, 0.0, 6.0)),
    "leaky_relu": ActivationSpec(F.leaky_relu, {"negative_slope": 0.01}, fn_=F.leaky_relu_),
    "elu": ActivationSpec(F.elu, {"alpha": 1.0}, fn_=F.elu_),
    "gelu": ActivationSpec(F.gelu, {"approximate": "none"}),
    "silu": ActivationSpec(F.silu, fn_=lambda x: F.silu(x, inplace=True)),
    "softplus": ActivationSpec(F.softplus, {"beta": 1.0, "threshold": 20.0}),
    "sigmoid": ActivationSpec(torch.sigmoid, fn_=torch.sigmoid_),
    "tanh": ActivationSpec(torch.tanh, fn_=torch.tanh_),
    "hardtanh": ActivationSpec(F.hardtanh, {"min_val": -1.0, "max_val": 1.0}, fn_=F.hardtanh_),
    "hardsigmoid": ActivationSpec(_hardsigmoid),
    "hardswish": ActivationSpec(_hardswish),
    "selu": ActivationSpec(F.selu),
    "celu": ActivationSpec(F.celu, {"alpha": 1.0}),
    "mish": ActivationSpec(F.mish),
    "softsign": ActivationSpec(F.softsign),
    "logsigmoid": ActivationSpec(F.logsigmoid),
    "tanhshrink": ActivationSpec(F.tanhshrink),
    "exp": ActivationSpec(torch.exp, fn_=torch.exp_),
    "pow": ActivationSpec(torch.pow, {"exponent": 2.0}),
    "sqrt": ActivationSpec(torch.sqrt, fn_=torch.sqrt_),
    "rsqrt": ActivationSpec(torch.rsqrt, fn_=torch.rsqrt_),
    "abs": ActivationSpec(torch.abs, fn_=torch.abs_),
    "softmax": ActivationSpec(_softmax, {"axis": 0}),
    "identity": ActivationSpec(_identity),
}


class Activation(Layer):
    """An activation function ``act_name`` applied to ``(batch, *dim)``, same shape out.

    Parameters: ``act_name`` (a key of :data:`ACTIVATIONS`) and that
    activation's own parameters, e.g. ``negative_slope`` for ``leaky_relu`` or
    ``axis`` (a sample axis, 0 = channels) for ``softmax``.

    Rules: LRP follows the layer's rule (type key ``"Activation"``, or ``"Softmax"``
    for softmax): ``pass`` (default, the identity rule: relevance unchanged) or
    ``linearise`` (the linearisation at the input, AttnLRP's rule for softmax).
    ConnectionWeights passes values through unchanged. DeepLift
    uses ``dy / dx`` per entry (``rescale``; the derivative at the midpoint
    ``(x + x_ref) / 2`` where ``|dx|`` is tiny) or Shrikumar et al.'s
    ``reveal_cancel``, which treats the positive and negative parts of ``dx``
    apart. Softmax, not elementwise, takes its gradient at the midpoint,
    rescaled so that the contributions sum to ``dy``.
    """

    type_names = ("Activation",)
    required = ("act_name",)
    is_activation = True
    recomputable = True
    rule_paths = ALL_PATHS
    takes_lrp_rule = True
    shape_preserving = True
    lrp_kind = "activation"
    default_lrp_rule = "pass"
    rule_keys = ("Softmax",)

    @classmethod
    def from_params(cls, type_name: str, params: Mapping[str, Any], where: str) -> Layer:
        name = params.get("act_name")
        if not isinstance(name, str) or name not in ACTIVATIONS:
            raise ValueError(
                f"{where}: unknown `act_name` {name!r}; expected one of {sorted(ACTIVATIONS)}."
            )
        allowed = set(ACTIVATIONS[name].defaults) | {"act_name"}
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise ValueError(
                f"{where}: activation '{name}' has unknown entries {unknown}; "
                f"it takes {sorted(ACTIVATIONS[name].defaults) or 'no parameters'}."
            )
        args = {**ACTIVATIONS[name].defaults, **params}
        del args["act_name"]
        return cls(type_name, name, args)

    def __init__(self, type_name: str, act_name: str, args: Mapping[str, Any]) -> None:
        super().__init__(type_name)
        self.act_name = act_name
        self.args = dict(args)
        self.spec = ACTIVATIONS[act_name]
        self.can_overwrite = self.spec.fn_ is not None
        self.returns_view = act_name == "identity"

    def forward(self, x: Tensor) -> Tensor:
        return self.spec.fn(x, **self.args)

    def forward_overwriting(self, x: Tensor) -> Tensor:
        if self.spec.fn_ is None:
            return self.forward(x)
        return self.spec.fn_(x, **self.args)

    def get_params(self) -> dict[str, Any]:
        return {"act_name": self.act_name, **self.args}

    def summary(self) -> str:
        return f"{self.type_name}({self.act_name})"

    def _fn(self, x: Tensor) -> Tensor:
        return self.spec.fn(x, **self.args)

    def rule_key(self) -> str:
        return "Softmax" if self.act_name == "softmax" else self.type_name

    def relevance(self, r: Tensor, xs: list[Tensor], y: Tensor, rule: LrpRule) -> list[Tensor]:
        return [rule.relevance(self, r, xs[0], y)]

    def linearised(self, r: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """Relevance ``r (T, B, *dim)`` through the linearisation at ``x``:
        ``x * J(x)^T (r / y)``; softmax in closed form, ``x * (r - y * sum(r))`` over its
        axis. Entries with ``y = 0`` (a masked score, ``x = -inf``) get none."""
        if self.act_name == "softmax":
            dim = tensor_dim(self.args["axis"])
            return softmax_linearised(r, x, y, dim + 1 if dim >= 0 else dim)
        return (x * derivative(self._fn, x) * divide(r, y)).masked_fill_(y == 0, 0.0)

    def weight_paths(self, m: Tensor) -> list[Tensor]:
        return [m]

    def contribution(self, m: Multipliers, xs: list[Tensor], refs: list[Tensor], y: Tensor,
                     y_ref: Tensor, rule: DeepLiftRule,
                     splits: list[Pair] | None) -> list[Multipliers]:
        (x,), (x_ref,) = xs, refs
        n = collapse(m, y - y_ref)
        if self.act_name == "softmax":
            return [rescaled_gradient(self._fn, n, x, x_ref, y - y_ref)]
        if rule.splits:
            pos, neg = self._reveal_cancel(x_ref, splits[0], y, y_ref)
            return [Pair(n * pos, n * neg)]
        return [n * self._secant(x_ref, x - x_ref, y - y_ref)]

    def _secant(self, start: Tensor, dx: Tensor, dy: Tensor) -> Tensor:
        """``dy / dx``, or the derivative at ``start + dx / 2`` where ``dx`` is negligible."""
        tiny = negligible(dx, start + dx, start)
        slope = dy / torch.where(tiny, torch.ones_like(dx), dx)
        if tiny.any():
            slope = torch.where(tiny, derivative(self._fn, start + dx / 2), slope)
        return slope

    def _reveal_cancel(self, x_ref: Tensor, split: Pair, y: Tensor,
                       y_ref: Tensor) -> tuple[Tensor, Tensor]:
        """Multipliers of the positive and negative parts of ``dx``: each part's effect
        averaged over adding it first and adding it after the other part."""
        at_pos, at_neg = self._fn(x_ref + split.pos), self._fn(x_ref + split.neg)
        dy_pos = ((at_pos - y_ref) + (y - at_neg)) / 2
        dy_neg = ((at_neg - y_ref) + (y - at_pos)) / 2
        return (self._secant(x_ref, split.pos, dy_pos), self._secant(x_ref, split.neg, dy_neg))

    def extra_repr(self) -> str:
        return f"{self.act_name}" + "".join(f", {k}={v!r}" for k, v in self.args.items())


def softmax_linearised(r: Tensor, x: Tensor, y: Tensor, dim: int) -> Tensor:
    """Relevance ``r (T, B, *dim)`` through the linearisation of ``y = softmax(x)`` over
    the tensor axis ``dim`` of ``r`` at ``x (B, *dim)``: ``x * (r - y * sum(r))``; entries
    with ``y = 0`` (a masked score, ``x = -inf``) get none."""
    total = r.sum(dim=dim, keepdim=True)
    return torch.addcmul(r, y, total, value=-1).mul_(x).masked_fill_(y == 0, 0.0)


def rescaled_gradient(fn: Callable[[Tensor], Tensor], n: Tensor, x: Tensor, x_ref: Tensor,
                      dy: Tensor) -> Tensor:
    """DeepLift multipliers ``(T, B, *dim)`` of a non-elementwise ``fn`` (softmax): the
    gradient at the midpoint of ``x`` and ``x_ref``, scaled per sample and target so that
    the contributions ``dx * m`` sum to ``n * dy``. Entries masked in both (at or below
    :data:`MASKED`) get none: their mask absorbs in floating point what is added to it
    (``dx = 0``), so a multiplier there (a row of masked scores has a nonzero gradient)
    would reach the summands of the scores without a difference to pay for it."""
    dx = x - x_ref
    # x_ref + dx / 2, not (x + x_ref) / 2: masked scores near the dtype's minimum would
    # overflow to -inf in the sum, and a row of them to NaN weights
    grad = vjp_at(fn, x_ref + dx / 2, n).masked_fill_((x <= MASKED) & (x_ref <= MASKED), 0.0)
    wanted = (n * dy).flatten(2).sum(2)
    got = (grad * dx).flatten(2).sum(2)
    size = (grad * dx).abs().flatten(2).sum(2)
    usable = ~negligible(got, size, torch.zeros_like(size)) & (got != 0)
    scale = torch.where(usable, wanted / torch.where(usable, got, torch.ones_like(got)),
                        torch.ones_like(got))
    return grad * scale.view(*scale.shape, *[1] * (grad.ndim - 2))
