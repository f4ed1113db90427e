"""Layers that combine several tensors: sum, concatenation, elementwise and matrix products."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from innsight.layers.base import Layer, as_int, tensor_dim
from innsight.layers.lrp_rules import LrpRule
from innsight.layers.rules import (
    ALL_PATHS,
    DeepLiftRule,
    FrozenMap,
    Mover,
    Multipliers,
    Pair,
    collapse,
    divide,
    sum_to,
)


#: Why products of two tensors have no ConnectionWeights rule.
_PRODUCT = "a product of two tensors has no weights to follow"


class Add(Layer):
    """Sum of two or more tensors (broadcast against each other): ``a + b + ...``.

    LRP gives each summand relevance in proportion to its value (z-rule, whatever
    the rule of other layers); DeepLift and ConnectionWeights pass multipliers to
    every summand unchanged.
    """

    type_names = ("Add",)
    n_inputs = None
    can_overwrite = True
    recomputable = True
    splits_pairs = True
    rule_paths = ALL_PATHS

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

    def _move_back(self, upstream: Tensor) -> list[Tensor]:
        sizes = [dim[self.axis] for dim in self.input_dim]
        return list(upstream.split(sizes, dim=self.axis + 2 if self.axis >= 0 else self.axis))

    def get_params(self) -> dict[str, Any]:
        return {"axis": self.axis}


class _Product(Layer):
    """A product of two tensors; ``lrp_constant`` (``0``, ``1`` or ``None``) names the
    operand that LRP holds fixed (see the subclasses)."""

    n_inputs = 2
    optional = {"lrp_constant": None}
    rule_paths = frozenset({"lrp", "deeplift"})
    no_rule_reason = _PRODUCT

    def __init__(self, type_name: str, lrp_constant: Any) -> None:
        super().__init__(type_name)
        if lrp_constant not in (None, 0, 1) or isinstance(lrp_constant, bool):
            raise ValueError(f"`lrp_constant` must be 0, 1 or None, got {lrp_constant!r}.")
        self.lrp_constant = lrp_constant

    def get_params(self) -> dict[str, Any]:
        return {"lrp_constant": self.lrp_constant}

    def held_inputs(self, rule: LrpRule) -> frozenset[int]:
        held = self.lrp_constant is not None and rule.holds_operand
        return frozenset({self.lrp_constant}) if held else frozenset()

    def summary(self) -> str:
        return self.type_name if self.lrp_constant is None else (
            f"{self.type_name}(LRP: input {self.lrp_constant} fixed)")


class Multiply(_Product):
    """Elementwise product of two tensors, ``a * b`` with broadcasting (e.g. SE gates).

    ``lrp_constant`` (``0``, ``1`` or ``None``) names the factor that LRP holds fixed, a
    gate or a normaliser (``x * rsqrt(mean(x^2))``): the other factor, the signal, gets
    all the relevance and the gate none (the signal-take-all rule of Arras et al. 2017
    for the gates of recurrent cells, the LN-rule for normalisers). Without it LRP
    splits relevance equally between the two factors. DeepLift splits exactly: without
    ``lrp_constant`` symmetrically, ``d(ab) = ((a + a')/2) db + ((b + b')/2) da``; with
    it, the fixed factor ``g`` is held where its magnitude is the smaller,
    ``d(sg) = g_held ds + s_other dg`` with ``(g, s')`` where ``|g| <= |g'|``, else
    ``(g', s)``, so that a normaliser that is huge at the reference (``1 / norm(0)``)
    does not scale contributions that then cancel. ConnectionWeights is not defined
    for it.
    """

    type_names = ("Multiply",)
    recomputable = True

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return a * b

    def relevance(self, r: Tensor, xs: list[Tensor], y: Tensor, rule: LrpRule) -> list[Tensor]:
        if self.lrp_constant is None:
            return [sum_to(r / 2, x.shape) for x in xs]
        return [None if side == self.lrp_constant else sum_to(r, x.shape)
                for side, x in enumerate(xs)]

    def contribution(self, m: Multipliers, xs: list[Tensor], refs: list[Tensor], y: Tensor,
                     y_ref: Tensor, rule: DeepLiftRule,
                     splits: list[Pair] | None) -> list[Multipliers]:
        n = collapse(m, y - y_ref)
        (a, b), (a_ref, b_ref) = xs, refs
        if self.lrp_constant is None:
            return [sum_to(n * ((b + b_ref) / 2), a.shape),
                    sum_to(n * ((a + a_ref) / 2), b.shape)]
        (s, s_ref), (g, g_ref) = ((a, a_ref), (b, b_ref))[::1 if self.lrp_constant else -1]
        at_x = g.abs() <= g_ref.abs()
        g_held, s_other = torch.where(at_x, g, g_ref), torch.where(at_x, s_ref, s)
        signal, gate = sum_to(n * g_held, s.shape), sum_to(n * s_other, g.shape)
        return [signal, gate] if self.lrp_constant else [gate, signal]


class MatMul(_Product):
    """Batched matrix product of two tensors, ``a @ b`` over their last two sample axes:
    ``(batch, ..., n, k)`` and ``(batch, ..., k, m)`` give ``(batch, ..., n, m)``; both
    have the same number of sample axes, and the leading ones broadcast.

    ``lrp_constant`` (``0``, ``1`` or ``None``) names the operand that LRP holds fixed.
    With it, the product is a linear map of the other operand (its matrix, the fixed
    operand, differs per sample) and the selected LRP rule redistributes all relevance
    through that map; the fixed operand gets none. This is the AH-rule of Ali et al.
    2022 ("XAI for Transformers: Better Explanations through Conservative Propagation")
    when the fixed operand is the attention weights (the softmax output); the torch
    front-end sets it for attention modules and for any product with a softmax. The
    rule ``uniform`` ignores it (AttnLRP's uniform rule). Without it, each operand gets half of the relevance through the map with the other
    operand fixed (``a * b`` of :class:`Multiply` as a 1x1 case). DeepLift uses the
    exact split ``d(ab) = da ((b + b')/2) + ((a + a')/2) db``
    whatever ``lrp_constant``. ConnectionWeights is not defined for it.
    """

    type_names = ("MatMul",)
    takes_lrp_rule = True
    lrp_kind = "product"

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        if a.ndim < 3 or b.ndim != a.ndim or a.shape[-1] != b.shape[-2]:
            raise ValueError(
                f"MatMul needs two sample shapes (..., n, k) and (..., k, m) of the same "
                f"rank, got {list(a.shape[1:])} and {list(b.shape[1:])}."
            )
        return torch.matmul(a, b)

    def relevance(self, r: Tensor, xs: list[Tensor], y: Tensor, rule: LrpRule) -> list[Tensor]:
        constant = self.lrp_constant if rule.holds_operand else None
        out = []
        for side, x in enumerate(xs):
            if side == constant:
                out.append(None)
                continue
            share = r if constant is not None else r / 2
            fixed = FrozenMatMul(self.type_name, self.input_dim[side], xs[1 - side], side)
            out.append(fixed.relevance(share, [x], y, rule)[0])
        return out

    def contribution(self, m: Multipliers, xs: list[Tensor], refs: list[Tensor], y: Tensor,
                     y_ref: Tensor, rule: DeepLiftRule,
                     splits: list[Pair] | None) -> list[Multipliers]:
        n = collapse(m, y - y_ref)
        (a, b), (a_ref, b_ref) = xs, refs
        return [sum_to(n @ ((b + b_ref) / 2).mT, a.shape),
                sum_to(((a + a_ref) / 2).mT @ n, b.shape)]


class FrozenMatMul(FrozenMap):
    """A matrix product (layer type ``type_name``) with one operand held at its values
    ``fixed (B, ..., ., .)``, the other of sample shape ``operand_dim``:
    the linear map ``x -> x @ fixed`` (``side=0``, ``x`` varies) or ``x -> fixed @ x``
    (``side=1``), different for each sample. The fixed operand is the rule weight, so
    that the LRP rules' weight modifications act on it entry by entry."""

    def __init__(self, type_name: str, operand_dim: tuple[int, ...], fixed: Tensor,
                 side: int) -> None:
        self.type_name = type_name
        self.input_dim = [operand_dim]
        self._fixed = fixed
        self._side = side

    @property
    def rule_weight(self) -> Tensor:
        return self._fixed

    def _map(self, x: Tensor, weight: Tensor) -> Tensor:
        return x @ weight if self._side == 0 else weight @ x

    def _map_t(self, s: Tensor, weight: Tensor) -> Tensor:
        back = s @ weight.mT if self._side == 0 else weight.mT @ s
        # Sums over the leading sample axes along which x was broadcast.
        return back.sum_to_size(*s.shape[:s.ndim - self.sample_rank], *self.input_dim[0])
