"""Rule conformance: the rule-based backward passes of every layer case, and every
registered LRP and DeepLift rule.

The layer checks run over ``CASES`` of ``test_layer_conformance.py`` (a new layer
type joins by adding its case there) on float64 values, each against an
independent source:

(a) the transpose identity ``<lin(x, part), s> = <x, lin_t(s, part)>`` for every
    weight part of every linear map the LRP rules act on;
(b) conservation of relevance under ``simple`` with the biases removed;
(c) DeepLift contributions ``sum (x - x_ref) * multiplier`` equal to the output
    difference of every output node, for every DeepLift rule;
(d) DeepLift multipliers equal to autograd's Jacobian rows as ``x_ref -> x``.

The rule checks run over the registries: every LRP rule of ``LRP_RULES`` runs on
every layer case that takes a rule (output shapes, conservation without biases)
and equals a matrix-form re-implementation on a dense layer written here. A rule
defined in a test joins them with one class (see the made-up rule at the end).

Expected failures are declared with their reason in ``EXPECTED_FAILURES``; they
run as strict xfails, so a declaration that no longer fails is reported.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from test_layer_conformance import BATCH, CASES, LayerCase, model_dict
from torch import Tensor

import innsight as ins
from innsight.layers import LAYER_TYPES, Layer
from innsight.layers.attention import _grouped, _ungrouped
from innsight.layers.lrp_rules import LRP_RULES, Flat, LrpRule, WSquare
from innsight.layers.merge import FrozenMatMul
from innsight.layers.normalization import FrozenLayerNorm
from innsight.layers.rules import (
    ALL_PATHS,
    DEEPLIFT_RULES,
    RULE_PATHS,
    WEIGHT_PARTS,
    DeepLiftRule,
    LinearMap,
    Pair,
    RuleError,
    RuleLayer,
    sign_split,
)
from innsight.methods.lrp import LRP

TOL = {"rtol": 1e-9, "atol": 1e-11}
N_TARGETS = 2

_NO_POSITIVE_TERM = ("some outputs have no positive term x_i w_ij at positive inputs (all "
                     "their weights are negative): z+ terms pass nothing on from them")

#: (check, case id, rule name or "rule-case") -> why that check fails there (run as
#: strict xfail).
EXPECTED_FAILURES: dict[tuple[str, str], str] = {
    ("rule_conservation", "epsilon"): "eps * sign(z) in the denominator absorbs relevance",
    ("rule_conservation", "uniform"): "eps * sign(z) in the denominator absorbs relevance",
    **{("rule_conservation", f"linearise-{case}"): "the linearisation at the input passes on "
       "x J(x)^T (r / y), which sums to sum(r) only where f(x) = J(x) x (ReLU-like "
       "activations); the rest, its bias term, is absorbed"
       for case in ("gelu_exact", "gelu_tanh", "silu", "softplus_default",
                    "softplus_beta_threshold", "sigmoid", "tanh", "hardsigmoid", "hardswish",
                    "softmax_vector", "softmax_axis0_3d", "softmax_axis_last_3d",
                    "softmax_axis1_3d", "mish", "softsign", "logsigmoid", "tanhshrink", "exp",
                    "pow_cube", "pow_half", "sqrt", "rsqrt")},
    **{("rule_conservation", f"{rule}-{case}"): _NO_POSITIVE_TERM
       for rule in ("alpha_beta", "z_plus")
       for case in ("dense_no_bias", "conv1d_asym_pad_groups", "conv2d_depthwise",
                    "conv3d_stride_pad_asym", "affine_full_shape",
                    # outputs of a transposed convolution at the borders, or between the
                    # strided inputs, sum only a few terms
                    "convT1d_plain", "convT1d_stride_pad_outpad", "convT2d_stride2_kernel2",
                    "convT2d_groups_dilation", "convT3d")},
    **{("deeplift_sum", f"{case}-reveal_cancel"): "RevealCancel evaluates the function at the "
       "reference plus one part of the difference, which for overlapping parts leaves the "
       "domain x > 0 of a square root: NaN" for case in ("pow_half", "sqrt", "rsqrt")},
}

#: Layer types that are no linear map themselves but hand the LRP rules one (or one per
#: operand) built at the values ``xs``: ``(layer, xs) -> [(input index, map)]``.
FROZEN_MAPS: dict[str, Callable[[Any, list[Tensor]], list[tuple[int, LinearMap]]]] = {
    "LayerNorm": lambda layer, xs: [(0, FrozenLayerNorm(layer, xs[0]))],
    "MatMul": lambda layer, xs: [(0, FrozenMatMul(layer.type_name, layer.input_dim[0], xs[1], 0)),
                                 (1, FrozenMatMul(layer.type_name, layer.input_dim[1], xs[0], 1))],
    # The values through the attention weights held fixed (the AH-rule), the weights in
    # the grouped layout of grouped-query attention.
    "ScaledDotProductAttention": lambda layer, xs: [
        (2, _QueryHeads(FrozenMatMul(layer.type_name, layer.input_dim[2],
                                     layer._steps(*xs[:2], xs[3:])[2], 1),
                        xs[0].shape[-3] // xs[1].shape[-3] if xs[0].ndim > 3 else 1))],
}


class _QueryHeads:
    """A map ``inner`` into the grouped layout of grouped-query attention (see
    :func:`innsight.layers.attention._grouped`) seen in the query-head layout."""

    def __init__(self, inner: LinearMap, group: int) -> None:
        self.inner, self.group = inner, group

    def lin(self, x: Tensor, part: str) -> Tensor | None:
        y = self.inner.lin(x, part)
        return None if y is None else _ungrouped(y, self.group)

    def lin_t(self, s: Tensor, part: str) -> Tensor | None:
        return self.inner.lin_t(_grouped(s, self.group), part)

#: ``rule_param`` for the rules without a usable default.
RULE_PARAMS: dict[str, Any] = {"z_box": (-4.0, 4.0)}

#: Parameters of a layer entry that add a constant, and their bias-free value.
BIAS_FREE: dict[str, Callable[[Any], Any]] = {
    "bias": lambda v: None,
    "shift": lambda v: np.zeros_like(np.asarray(v, dtype=float)),
    "running_mean": lambda v: np.zeros_like(np.asarray(v, dtype=float)),
}


def _marked(check: str, keys: tuple[str, ...], value: Any, id: str) -> Any:
    reason = next((EXPECTED_FAILURES[check, key] for key in keys
                   if (check, key) in EXPECTED_FAILURES), None)
    marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
    return pytest.param(value, marks=marks, id=id)


def _cases(check: str, keep: Callable[[LayerCase], bool]) -> list[Any]:
    return [_marked(check, (c.id,), c, c.id) for c in CASES if keep(c)]


def _reads_inputs(case: LayerCase) -> bool:
    """Input layers read no tensor: the walks end there and no rule applies."""
    return LAYER_TYPES[case.type].n_inputs != 0


def _has_path(path: str) -> Callable[[LayerCase], bool]:
    return lambda case: _reads_inputs(case) and path in LAYER_TYPES[case.type].rule_paths


def _takes_rule(case: LayerCase) -> bool:
    return LAYER_TYPES[case.type].takes_lrp_rule


def _takes_map_rule(case: LayerCase) -> bool:
    """Whether the layer hands its rule a linear map (activations apply theirs directly)."""
    return _takes_rule(case) and LAYER_TYPES[case.type].lrp_kind != "activation"


def _built(case: LayerCase, bias_free: bool = False) -> Layer:
    """The case's layer as the converter builds it (shapes set), in float64; built once
    per case (layers keep no state between calls)."""
    return _built_by_id(case.id, bias_free)


_BY_ID = {case.id: case for case in CASES}


@functools.cache
def _built_by_id(case_id: str, bias_free: bool) -> Layer:
    case = _BY_ID[case_id]
    if bias_free:
        params = {k: BIAS_FREE[k](v) if k in BIAS_FREE else v for k, v in case.params.items()}
        case = dataclasses.replace(case, params={k: v for k, v in params.items()
                                                 if v is not None})
    return ins.convert(model_dict(case), dtype="double").model.layers[-1]


def _values(case: LayerCase, seed: int, positive: bool = False) -> list[Tensor]:
    return case.inputs(BATCH, seed, positive)


def _randn(*shape: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


def _per_target(t: Tensor) -> Tensor:
    """``(T, B, ...)`` summed over everything but the target axis."""
    return t.flatten(1).sum(1)


def _one_hot(out_shape: torch.Size) -> Tensor:
    """``(n_out, B, *out)``: target ``t`` is 1 at output node ``t`` of every sample."""
    n_out = out_shape[1:].numel()
    return torch.eye(n_out, dtype=torch.float64).view(n_out, 1, *out_shape[1:]).expand(
        n_out, *out_shape).clone()


# ---- declarations -------------------------------------------------------------------


_LAYER_METHODS = {"lrp": "relevance", "deeplift": "contribution", "cw": "weight_paths"}


@pytest.mark.parametrize("type_name", sorted(LAYER_TYPES))
def test_declared_rule_paths_are_the_implemented_ones(type_name: str) -> None:
    cls = LAYER_TYPES[type_name]
    assert cls.rule_paths <= ALL_PATHS == set(RULE_PATHS) == set(_LAYER_METHODS)
    if cls.n_inputs == 0:
        assert cls.rule_paths == ALL_PATHS, "the walks end at inputs: every method passes"
        return
    for path, method in _LAYER_METHODS.items():
        implemented = getattr(cls, method) is not getattr(RuleLayer, method)
        assert implemented == (path in cls.rule_paths), (type_name, path)
    if cls.rule_paths != ALL_PATHS:
        assert cls.no_rule_reason, f"{type_name} lacks a path and says not why"


def test_every_layer_type_taking_a_rule_hands_the_rules_a_linear_map() -> None:
    for type_name, cls in LAYER_TYPES.items():
        if cls.takes_lrp_rule and cls.lrp_kind != "activation":
            assert issubclass(cls, LinearMap) or type_name in FROZEN_MAPS, type_name


def test_a_missing_path_raises_a_rule_error_naming_the_method() -> None:
    class Bare(RuleLayer):
        type_name = "Bare"

    layer, x = Bare(), torch.zeros(1, 1, 2)
    for call, label in ((lambda: layer.relevance(x, [x[0]], x[0], LrpRule()), "LRP"),
                        (lambda: layer.contribution(x, [x[0]], [x[0]], x[0], x[0],
                                                    DeepLiftRule(), None), "DeepLift"),
                        (lambda: layer.weight_paths(x), "ConnectionWeights")):
        with pytest.raises(RuleError, match=f"layer type 'Bare' has no {label} rule$"):
            call()


def test_the_base_lrp_rule_has_no_formula() -> None:
    with pytest.raises(NotImplementedError, match="LrpRule has no relevance formula"):
        LrpRule().relevance(None, torch.zeros(1), torch.zeros(1), torch.zeros(1))


# ---- (a) transpose identity --------------------------------------------------------


def _linear_maps(case: LayerCase, layer: Layer, xs: list[Tensor]) -> list[tuple[int, LinearMap]]:
    if isinstance(layer, LinearMap):
        return [(0, layer)]
    return FROZEN_MAPS[case.type](layer, xs)


@pytest.mark.parametrize("case", _cases("transpose", _takes_map_rule))
@pytest.mark.parametrize("part", list(WEIGHT_PARTS))
def test_lin_t_is_the_transpose_of_lin(case: LayerCase, part: str) -> None:
    layer = _built(case)
    xs = _values(case, seed=10)
    for k, linear in _linear_maps(case, layer, xs):
        x = _randn(*xs[k].shape, seed=11)
        forward = linear.lin(x, part)
        s = _randn(N_TARGETS, *layer(*xs).shape, seed=12)
        back = linear.lin_t(s, part)
        if forward is None:
            assert back is None, "a zero map has a zero transpose"
            continue
        assert back.shape == (N_TARGETS, *x.shape)
        torch.testing.assert_close(_per_target(forward * s), _per_target(x * back), **TOL)


# ---- (b) conservation under `simple` -------------------------------------------------


def _rule_for(layer: Layer, rule: LrpRule) -> LrpRule:
    """``rule`` for a layer that takes one of its kind, else what the walk hands it: the
    layer's default rule, or the plain rule for layers that take none."""
    if not layer.takes_lrp_rule:
        return LrpRule()
    return rule if layer.lrp_kind in rule.kinds else LRP_RULES[layer.default_lrp_rule]()


def _depends_on_inputs(layer: Layer, xs: list[Tensor]) -> Tensor:
    """Where an output depends on some input: ``J v != 0`` for a random direction ``v``
    (outputs that see only padding have nowhere to send relevance)."""
    vs = tuple(_randn(*x.shape, seed=99 + k) for k, x in enumerate(xs))
    _, jv = torch.autograd.functional.jvp(lambda *a: layer(*a), tuple(xs), vs)
    return jv != 0


def _relevance(layer: Layer, r: Tensor, xs: list[Tensor], y: Tensor,
               rule: LrpRule) -> list[Tensor]:
    """The layer's relevance of each input, zeros where it passes none (``None``)."""
    back = layer.relevance(r, xs, y, rule)
    return [torch.zeros(N_TARGETS, *x.shape, dtype=x.dtype) if b is None else b
            for b, x in zip(back, xs)]


def _assert_conserves(layer: Layer, xs: list[Tensor], rule: LrpRule, seed: int) -> None:
    y = layer(*xs)
    r = _randn(N_TARGETS, *y.shape, seed=seed) * _depends_on_inputs(layer, xs)
    back = _relevance(layer, r, xs, y, rule)
    assert [b.shape for b in back] == [(N_TARGETS, *x.shape) for x in xs]
    torch.testing.assert_close(sum(_per_target(b) for b in back), _per_target(r), **TOL)


@pytest.mark.parametrize("case", _cases("conservation", _has_path("lrp")))
def test_simple_conserves_relevance_without_biases(case: LayerCase) -> None:
    layer = _built(case, bias_free=True)
    _assert_conserves(layer, _values(case, seed=20), _rule_for(layer, LRP_RULES["simple"]()),
                      seed=21)


# ---- (c) DeepLift contributions sum to the goal ----------------------------------------


def _contributions(mults: list[Any], dxs: list[Tensor], splits: list[Pair] | None) -> Tensor:
    """Per target, ``sum dx * multiplier`` over every input (a :class:`Pair` of
    multipliers acts on the positive and negative parts of ``dx``)."""
    total = 0.0
    for k, (m, dx) in enumerate(zip(mults, dxs)):
        if isinstance(m, Pair):
            part = splits[k] if splits is not None else sign_split(dx)
            total = total + _per_target(m.pos * part.pos + m.neg * part.neg)
        else:
            total = total + _per_target(m * dx)
    return total


def _input_splits(dxs: list[Tensor], seed: int) -> list[Pair]:
    """Each input difference as a positive and a negative part that overlap (as a
    linear layer's split does), ``pos + neg = dx``."""
    return [Pair(dx.clamp(min=0) + e, dx.clamp(max=0) - e)
            for dx, e in ((dx, _randn(*dx.shape, seed=seed + k).abs()) for k, dx in
                          enumerate(dxs))]


def _deeplift_cases(check: str) -> list[Any]:
    cases = []
    for c in CASES:
        for name, rule in DEEPLIFT_RULES.items():
            if _has_path("deeplift")(c):
                reason = EXPECTED_FAILURES.get((check, f"{c.id}-{name}"))
                marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
                cases.append(pytest.param(c, rule, id=f"{c.id}-{name}", marks=marks))
    return cases


@pytest.mark.parametrize(("case", "rule_class"), _deeplift_cases("deeplift_sum"))
def test_deeplift_contributions_sum_to_each_output_difference(
        case: LayerCase, rule_class: type[DeepLiftRule]) -> None:
    layer, rule = _built(case), rule_class()
    xs, refs = _values(case, seed=30), _values(case, seed=31)
    y, y_ref = layer(*xs), layer(*refs)
    dxs = [x - x_ref for x, x_ref in zip(xs, refs)]
    splits = _input_splits(dxs, seed=32) if rule.splits else None
    m = _one_hot(y.shape)  # every output node is a target of its own
    mults = layer.contribution(m, xs, refs, y, y_ref, rule, splits)
    torch.testing.assert_close(_contributions(mults, dxs, splits), _per_target(m * (y - y_ref)),
                               **TOL)
    if not rule.splits:
        return
    # Multipliers of the output's parts: its own split where the layer understands it,
    # else the sign split of its output difference.
    d = layer.split_delta(splits, y, y_ref) if layer.splits_pairs else sign_split(y - y_ref)
    m = Pair(_randn(N_TARGETS, *y.shape, seed=33), _randn(N_TARGETS, *y.shape, seed=34))
    mults = layer.contribution(m, xs, refs, y, y_ref, rule, splits)
    torch.testing.assert_close(_contributions(mults, dxs, splits),
                               _per_target(m.pos * d.pos + m.neg * d.neg), **TOL)


# ---- (d) DeepLift multipliers approach the gradient ------------------------------------


def _jacobian_rows(layer: Layer, xs: list[Tensor]) -> list[Tensor]:
    """Per input, ``(n_out, B, *in)``: the gradient of output node ``t`` of each sample."""
    xs = [x.clone().requires_grad_(True) for x in xs]
    y = layer(*xs)
    return list(torch.autograd.grad(y, xs, _one_hot(y.shape), is_grads_batched=True))


def _as_one_multiplier(m: Any, dx: Tensor) -> Tensor:
    if isinstance(m, Tensor):
        return m
    return torch.where(dx > 0, m.pos, m.neg)


@pytest.mark.parametrize(("case", "rule_class"), _deeplift_cases("deeplift_limit"))
def test_deeplift_multipliers_approach_the_gradient(
        case: LayerCase, rule_class: type[DeepLiftRule]) -> None:
    layer, rule = _built(case), rule_class()
    xs = _values(case, seed=40)
    # The multipliers are secants: they differ from the derivative by about f'' * dx.
    refs = [x + 1e-7 * _randn(*x.shape, seed=41 + k) for k, x in enumerate(xs)]
    y, y_ref = layer(*xs), layer(*refs)
    dxs = [x - x_ref for x, x_ref in zip(xs, refs)]
    splits = [sign_split(dx) for dx in dxs] if rule.splits else None
    mults = layer.contribution(_one_hot(y.shape), xs, refs, y, y_ref, rule, splits)
    for m, dx, expected in zip(mults, dxs, _jacobian_rows(layer, xs)):
        # within 1e-4 of the Jacobian's scale (a secant's error is about f'' * dx)
        torch.testing.assert_close(_as_one_multiplier(m, dx).expand_as(expected), expected,
                                   rtol=1e-4, atol=1e-4 * expected.abs().max().item())


# ---- every registered LRP rule ---------------------------------------------------------


def _rule(rule_class: type[LrpRule]) -> LrpRule:
    return rule_class(rule_class.check_param(RULE_PARAMS.get(rule_class.name), ""))


def check_rule_runs(rule_class: type[LrpRule], case: LayerCase) -> None:
    """The rule gives finite relevance of the inputs' shapes, or the layer refuses it
    by the rule's own declaration."""
    layer, rule = _built(case), _rule(rule_class)
    refusal = layer.setting_refusal(rule)
    if refusal is not None and layer.lrp_kind not in rule.kinds:
        assert f"the LRP rule {rule.name!r} is not for layer type '{layer.type_name}'" in refusal
        return
    if refusal is not None:
        assert rule.shape_preserving_only and not layer.shape_preserving
        assert f"the LRP rule {rule.name!r} only moves relevance" in refusal
        return
    xs = _values(case, seed=50)
    y = layer(*xs)
    back = _relevance(layer, _randn(N_TARGETS, *y.shape, seed=51), xs, y, rule)
    assert [b.shape for b in back] == [(N_TARGETS, *x.shape) for x in xs]
    assert all(torch.isfinite(b).all() for b in back)


def check_rule_conserves(rule_class: type[LrpRule], case: LayerCase) -> None:
    """Without biases, at positive inputs (every output has a positive term), relevance
    in equals relevance out."""
    layer, rule = _built(case, bias_free=True), _rule(rule_class)
    if layer.setting_refusal(rule) is None:
        _assert_conserves(layer, _values(case, seed=60, positive=True), rule, seed=61)


def _rule_cases(check: str, fitting_only: bool = False) -> list[Any]:
    """Every rule with every layer case taking a rule (``fitting_only``: of its kind)."""
    return [_marked(check, (name, case.id, f"{name}-{case.id}"), (rule, case), f"{name}-{case.id}")
            for name, rule in LRP_RULES.items() for case in CASES if _takes_rule(case)
            and (not fitting_only or LAYER_TYPES[case.type].lrp_kind in rule.kinds)]


@pytest.mark.parametrize("rule_and_case", _rule_cases("rule_runs"))
def test_every_rule_runs_on_every_layer_taking_a_rule(rule_and_case: Any) -> None:
    check_rule_runs(*rule_and_case)


@pytest.mark.parametrize("rule_and_case", _rule_cases("rule_conservation", fitting_only=True))
def test_every_rule_conserves_relevance_without_biases(rule_and_case: Any) -> None:
    check_rule_conserves(*rule_and_case)


# Matrix form on a dense layer: z_ij = x_i w_ji is input i's term of output j;
# relevance R_i = sum_j share_ij r_j. Shapes: x (B, in), w (out, in), b (out,).


def _share(num: Tensor, den: Tensor) -> Tensor:
    """``num (B, in, out) / den (B, out)``, 0 where ``den`` is 0."""
    safe = torch.where(den == 0, torch.ones_like(den), den)
    return torch.where((den == 0)[:, None, :], torch.zeros_like(num), num / safe[:, None, :])


def _z_share(z: Tensor, bias: Tensor | float, eps: float = 0.0) -> Tensor:
    den = z.sum(1) + bias
    if eps:
        den = den + eps * (2 * (den >= 0).to(den.dtype) - 1)  # sign(0) = 1
    return _share(z, den)


def _terms(x: Tensor, w: Tensor) -> Tensor:
    return torch.einsum("bi,ji->bij", x, w)


def _dense_alpha_beta(x: Tensor, w: Tensor, b: Tensor | None, alpha: float) -> Tensor:
    z = _terms(x, w)
    bias = torch.zeros(w.shape[0], dtype=w.dtype) if b is None else b
    return (alpha * _z_share(z.clamp(min=0), bias.clamp(min=0))
            - (alpha - 1) * _z_share(z.clamp(max=0), bias.clamp(max=0)))


def _dense_input_free(weights: Tensor, batch: int) -> Tensor:
    share = weights.T / weights.sum(1)
    return share.expand(batch, *share.shape)


def _dense_z_box(x: Tensor, w: Tensor, low: float, high: float) -> Tensor:
    z = _terms(x, w) - low * w.clamp(min=0).T - high * w.clamp(max=0).T
    return _z_share(z, 0.0)


#: ``(x, w, b, param) -> share (B, in, out)``; ``None``: a dense layer refuses the rule.
DENSE_REFERENCE: dict[str, Callable[..., Tensor] | None] = {
    "simple": lambda x, w, b, p: _z_share(_terms(x, w), b),
    "epsilon": lambda x, w, b, p: _z_share(_terms(x, w), b, eps=p),
    "alpha_beta": lambda x, w, b, p: _dense_alpha_beta(x, w, b, p),
    "z_plus": lambda x, w, b, p: _dense_alpha_beta(x, w, None, 1.0),
    "gamma": lambda x, w, b, p: _z_share(_terms(x, w + p * w.clamp(min=0)),
                                         b + p * b.clamp(min=0)),
    "w_square": lambda x, w, b, p: _dense_input_free(w * w, x.shape[0]),
    "flat": lambda x, w, b, p: _dense_input_free(torch.ones_like(w), x.shape[0]),
    "z_box": lambda x, w, b, p: _dense_z_box(x, w, *p),
    "pass": None,  # a dense layer is not shape-preserving
    "linearise": None,  # for activations
    "uniform": None,  # for products of two tensors
}


def check_rule_on_a_dense_layer(rule_class: type[LrpRule],
                                reference: Callable[..., Tensor] | None,
                                param: Any = None) -> None:
    w, b = 0.5 * _randn(4, 5, seed=70), 0.5 * _randn(4, seed=71)
    layer = LAYER_TYPES["Dense"].from_params("Dense", {"weight": w, "bias": b}, "dense").double()
    layer.input_dim, layer.output_dim = [(5,)], (4,)
    rule = rule_class(rule_class.check_param(param, ""))
    if reference is None:
        assert layer.setting_refusal(rule) is not None
        return
    x = _randn(BATCH, 5, seed=72)
    r = _randn(N_TARGETS, BATCH, 4, seed=73)
    (actual,) = layer.relevance(r, [x], layer(x), rule)
    expected = torch.einsum("bij,tbj->tbi", reference(x, w, b, rule.param), r)
    torch.testing.assert_close(actual, expected, **TOL)


def test_every_rule_has_a_dense_reference() -> None:
    assert set(DENSE_REFERENCE) == set(LRP_RULES)


@pytest.mark.parametrize("name", list(LRP_RULES))
def test_every_rule_equals_its_matrix_form_on_a_dense_layer(name: str) -> None:
    check_rule_on_a_dense_layer(LRP_RULES[name], DENSE_REFERENCE[name], RULE_PARAMS.get(name))


@pytest.mark.parametrize("name", list(LRP_RULES))
def test_the_lrp_docstring_names_every_rule(name: str) -> None:
    assert f'``"{name}"``' in LRP.__doc__


# ---- a rule defined in a test joins by one class ---------------------------------------


@pytest.fixture
def made_up_rule() -> Iterator[type[LrpRule]]:
    class Blend(LrpRule):
        """``flat`` weighted by ``rule_param``, ``w_square`` by one minus it."""

        name = "made_up_blend"
        default_param = 0.5
        takes_param = True
        tunable_range = (0.0, 1.0)

        def relevance(self, layer: LinearMap, r: Tensor, x: Tensor, y: Tensor) -> Tensor:
            return (Flat().relevance(layer, self.param * r, x, y)
                    + WSquare().relevance(layer, (1 - self.param) * r, x, y))

    yield Blend
    del LRP_RULES[Blend.name]


def _blend_reference(x: Tensor, w: Tensor, b: Tensor | None, p: float) -> Tensor:
    return (p * _dense_input_free(torch.ones_like(w), x.shape[0])
            + (1 - p) * _dense_input_free(w * w, x.shape[0]))


def test_a_made_up_rule_is_one_registry_entry(made_up_rule: type[LrpRule]) -> None:
    assert LRP_RULES[made_up_rule.name] is made_up_rule
    for case in CASES:
        if _takes_rule(case):
            check_rule_runs(made_up_rule, case)
            check_rule_conserves(made_up_rule, case)
    check_rule_on_a_dense_layer(made_up_rule, _blend_reference, 0.25)

    w = 0.5 * _randn(4, 5, seed=80)
    conv = ins.convert({"input_dim": [[5]], "input_nodes": [0], "output_nodes": [1], "layers": [
        {"type": "Input", "input_layers": []},
        {"type": "Dense", "input_layers": [0], "weight": w}]}, dtype="double")
    x = _randn(BATCH, 5, seed=81)
    result = ins.run_lrp(conv, x, rule_name=made_up_rule.name, rule_param=0.25, dtype="double")
    f = x @ w.T  # the explained outputs
    expected = torch.einsum("bij,bj->bij", _blend_reference(x, w, None, 0.25), f)
    torch.testing.assert_close(result.get_result("torch_tensor"), expected, **TOL)
    # Its parameter check and the texts listing rules come from the registry.
    with pytest.raises(ValueError, match=r"`rule_param` for 'made_up_blend' must be a finite "
                                         r"number >= 0.0, got -1"):
        ins.run_lrp(conv, x, rule_name=made_up_rule.name, rule_param=-1)
    with pytest.raises(ValueError, match=r"no layer's rule takes a parameter \(rules taking "
                                         r"one: epsilon, alpha_beta, gamma, z_box, uniform, made_up_blend"):
        ins.run_lrp(conv, x, rule_name="simple", rule_param=0.5)
    with pytest.raises(ValueError, match=r"Unknown LRP rule 'blend' .*'uniform', 'made_up_blend'"):
        ins.run_lrp(conv, x, rule_name="blend")
    tunables = ins.LRP.get_tunables()  # and its search range
    assert made_up_rule.name in tunables["rule_name"]
    assert tunables["rule_param"][made_up_rule.name] == (float, 0.0, 1.0)


def test_a_rule_name_is_registered_once() -> None:
    before = dict(LRP_RULES)
    with pytest.raises(ValueError, match="The rule name 'simple' is taken by Simple; choose "
                                         "another `name` for Copy"):
        type("Copy", (LrpRule,), {"name": "simple"})
    assert LRP_RULES == before
