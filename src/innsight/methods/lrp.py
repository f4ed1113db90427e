"""Layer-wise relevance propagation (Bach et al. 2015; Montavon et al. 2019).

The relevance of each selected output node starts as its value (the
pre-activation with ``ignore_last_act=True``) and is redistributed layer by
layer back to the input; each layer applies its own rule (the rules of
layers with weights are the registered objects of
:mod:`innsight.layers.lrp_rules`, written once on the linear-map primitives
of :class:`~innsight.layers.rules.LinearMap`). Rules are chosen per layer type
or per layer name, so composites
such as ``z_box`` at the input, ``gamma`` in the middle and ``epsilon`` on
top are one dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from innsight._validation import check_bool, describe
from innsight.converter import ConvertedModel
from innsight.layers import LAYER_TYPES
from innsight.layers.lrp_rules import LRP_PRESETS, LRP_RULES, LrpRule
from innsight.methods.base import Explanation, InterpretingMethod, Setup, runner
from innsight.methods.engine import target_values
from innsight.methods.heads import Heads
from innsight.methods.layer_report import LayerRecords
from innsight.methods.reverse_walk import ChunkWalk, check_rules, explain_by_walk

#: Keys of ``rule_name``/``rule_param`` dicts besides layer names: the layer types whose
#: LRP rule can be chosen, their finer keys (``"Softmax"``), and ``"*"`` for every layer
#: the rule fits.
RULE_TYPES = tuple(sorted({key for name, cls in LAYER_TYPES.items() if cls.takes_lrp_rule
                           for key in (name, *cls.rule_keys,
                                       *(part.key for part in cls.rule_parts))}))
_EVERY = "*"


def _check_keys(arg_name: str, value: Any, model: ConvertedModel) -> None:
    if not isinstance(value, Mapping):
        return
    known = set(RULE_TYPES) | {_EVERY} | {
        part_name for name, layer in zip(model.layer_names, model.layers) if layer.takes_lrp_rule
        for part_name in (name, *(f"{name}_{part.suffix}" for part in layer.rule_parts))
    }
    unknown = sorted(str(k) for k in value if k not in known)
    if unknown:
        raise ValueError(
            f"`{arg_name}` has keys {unknown} that are neither a layer type taking an LRP "
            f"rule {list(RULE_TYPES)}, '*' (every layer) nor the name of such a layer in the "
            f"model."
        )


def _pick(value: Mapping[str, Any], layer_name: str, layer: Any) -> tuple[Any, str] | None:
    """The entry of ``value`` for a layer: by its name, its rule key or its type (in that
    order), with the key as ``"['key']"`` for messages; ``None`` if there is none."""
    for key in (layer_name, layer.rule_key(), layer.type_name):
        if key in value:
            return value[key], f"['{key}']"
    return None


def _rule_class(rule_name: Any, layer_name: str, layer: Any) -> type[LrpRule]:
    """The rule class of a layer taking a rule: named for it, or named for every layer
    (``"*"`` or one name) where that rule fits its kind, else the layer's default."""
    named = rule_name if isinstance(rule_name, Mapping) else {_EVERY: rule_name}
    picked = _pick(named, layer_name, layer)
    if picked is not None:
        return LRP_RULES[picked[0]]
    every = LRP_RULES.get(named.get(_EVERY))
    return every if every is not None and layer.lrp_kind in every.kinds else LRP_RULES[
        layer.default_lrp_rule]


def layer_rules(model: ConvertedModel, rule_name: Any, rule_param: Any,
                winner_takes_all: bool) -> list[LrpRule]:
    """The rule of every layer: from ``rule_name``/``rule_param`` (one value, dicts keyed
    by layer name, layer type or ``"*"``, or a preset name of
    :data:`~innsight.layers.lrp_rules.LRP_PRESETS`; a name wins over a type, a type over
    ``"*"``) for the layers that take a rule, and ``winner_takes_all`` for max pooling:
    one rule object of :data:`~innsight.layers.lrp_rules.LRP_RULES` per layer, its
    parameter checked (layers that take no rule get a plain :class:`LrpRule`)."""
    if not isinstance(rule_name, (str, Mapping)):
        raise TypeError(f"`rule_name` must be a rule name or a dict (or a preset name), got "
                        f"{describe(rule_name)}.")
    if isinstance(rule_name, str) and rule_name in LRP_PRESETS:
        rule_name, preset_param = LRP_PRESETS[rule_name]
        rule_param = preset_param if rule_param is None else rule_param
    for arg_name, value in (("rule_name", rule_name), ("rule_param", rule_param)):
        _check_keys(arg_name, value, model)
    names = rule_name.values() if isinstance(rule_name, Mapping) else [rule_name]
    for name in names:
        if not isinstance(name, str) or name not in LRP_RULES:
            raise ValueError(
                f"Unknown LRP rule {describe(name)} in `rule_name`; expected one of "
                f"{list(LRP_RULES)} or a preset {list(LRP_PRESETS)}."
            )

    single_param_used = False

    def rule_of(name: str, layer: Any) -> LrpRule:
        nonlocal single_param_used
        rule_class = _rule_class(rule_name, name, layer)
        takes_param = rule_class.takes_param
        param, where = None, ""
        if isinstance(rule_param, Mapping):
            # A value for many layers (per type or "*") serves only the rules that take
            # one; a value for this layer by name must fit its rule.
            picked = _pick(rule_param, name, layer) if takes_param else (
                (rule_param[name], f"['{name}']") if name in rule_param else None)
            if picked is None and takes_param and _EVERY in rule_param:
                picked = rule_param[_EVERY], f"['{_EVERY}']"
            param, where = picked if picked is not None else (None, "")
        elif rule_param is not None:
            single_param_used |= takes_param
            param = rule_param if takes_param else None
        return rule_class(rule_class.check_param(param, where), winner_takes_all)

    rules = []
    for name, layer in zip(model.layer_names, model.layers):
        if not layer.takes_lrp_rule:
            rules.append(LrpRule(winner_takes_all=winner_takes_all))
            continue
        rules.append(rule_of(name, layer))
        rules[-1].parts = {part.suffix: rule_of(f"{name}_{part.suffix}", part)
                           for part in layer.rule_parts}
    if rule_param is not None and not isinstance(rule_param, Mapping) and not single_param_used:
        taking = ", ".join(key for key, cls in LRP_RULES.items() if cls.takes_param)
        raise ValueError(
            f"`rule_param` {describe(rule_param)} was given, but no layer's rule takes a "
            f"parameter (rules taking one: {taking})."
        )
    return rules


def walk_values(model: ConvertedModel, explained: list[int], rules: list[LrpRule]) -> set[int]:
    """The layers whose values the walk back from ``explained`` under ``rules`` reads:
    the inputs and output of each layer it reaches (through inputs not held fixed) that
    reads forward values at all."""
    reached, read = set(explained), set()
    for i in sorted(model.needed(explained), reverse=True):
        layer, reads = model.layers[i], model.input_layers[i]
        if i not in reached or layer.ends_walks or not reads:
            continue
        held = layer.held_inputs(rules[i])
        reached.update(j for k, j in enumerate(reads) if k not in held)
        if layer.reads_values:
            read.update((i, *reads))
    return read


def stored_values(model: ConvertedModel, read: set[int], kept: set[int]) -> set[int]:
    """The values to keep from the forward pass: those in ``read`` (or ``kept``) that are
    not recomputable (``RuleLayer.recomputable``), and those that recomputing the
    others starts from."""
    stored, seen, stack = set(kept), set(), list(read)
    while stack:
        j = stack.pop()
        if j in seen:
            continue
        seen.add(j)
        if j in kept or not model.layers[j].recomputable or not model.input_layers[j]:
            stored.add(j)
        else:
            stack.extend(model.input_layers[j])
    return stored


def recompute(model: ConvertedModel, values: list[Tensor | None], nodes: list[int],
              read: set[int]) -> None:
    """Fill in the values of ``nodes`` that were not kept, from the values that were
    (recomputable layers only, see :func:`stored_values`); intermediate values outside
    ``read`` are dropped again."""
    todo, stack = set(), [j for j in nodes if values[j] is None]
    while stack:
        j = stack.pop()
        if j not in todo:
            todo.add(j)
            stack.extend(k for k in model.input_layers[j] if values[k] is None)
    for j in sorted(todo):
        values[j] = model.layers[j](*[values[k] for k in model.input_layers[j]])
    for j in todo - read:
        values[j] = None


def explain_lrp(setup: Setup, rules: list[LrpRule], keep_layers: bool = False) -> Explanation:
    """Relevances per input layer ``(n_data, *dim, n_targets)``; their goal is the
    explained value (of a weighted target ``sum w f``, each node starting with ``w f``).
    ``keep_layers`` records every layer's totals."""
    model = setup.model
    check_rules(model, setup.explained, "lrp", lambda i: rules[i])
    kept = set(setup.explained) | set(setup.prediction_nodes)  # read after the walk
    read = walk_values(model, setup.explained, rules) | kept
    stored = stored_values(model, read, kept)

    def walk_chunk(sample: Tensor, copy: Tensor, heads: Heads) -> ChunkWalk:
        with torch.no_grad():
            values = heads.node_values(model, [x[sample] for x in setup.data], keep=stored)
        f = heads.columns([values[node] for node in setup.explained], setup.targets, sample)
        preds = f if setup.prediction_nodes == setup.explained else target_values(
            [values[node] for node in setup.prediction_nodes], setup.targets, sample)

        def step(i: int, r: Tensor) -> list[Tensor | None]:
            reads = model.input_layers[i]
            if model.layers[i].reads_values:
                recompute(model, values, [i, *reads], read)
            backs = heads.layer(model, i).relevance(r, [values[j] for j in reads], values[i],
                                                    rules[i])
            if i not in kept:
                values[i] = None  # the layers still to visit come before it: none reads it
            return backs

        return ChunkWalk(lambda o: values[setup.explained[o]].reshape(len(sample), -1), step,
                         lambda node, r: r, f, f, preds)

    records = None
    if keep_layers:
        records = LayerRecords(model, len(setup.targets), setup.data[0].shape[0],
                               lambda i: rules[i].label() if model.layers[i].takes_lrp_rule else "-")
    return explain_by_walk(setup, 1, setup.batch_size, walk_chunk, records)


class LRP(InterpretingMethod):
    """Layer-wise relevance propagation of each selected output's value to the input.

    Parameters
    ----------
    rule_name : str or dict
        A name in :data:`~innsight.layers.lrp_rules.LRP_RULES`, where each rule
        is one class with its formula (:mod:`innsight.layers.lrp_rules`):
        ``"simple"`` (default), ``"epsilon"``, ``"alpha_beta"``, ``"pass"``,
        ``"z_plus"``, ``"gamma"``, ``"w_square"``, ``"flat"`` or ``"z_box"`` for
        layers with weights and products; ``"uniform"`` for products of two tensors;
        ``"pass"`` (default) or ``"linearise"`` for activations. One name applies to
        every layer it fits; the others keep their default. Or a dict keyed by layer
        type (``"Dense"``, ``"Conv2D"``, ``"BatchNorm"``, ``"MatMul"``,
        ``"Activation"``, ``"Softmax"``, ...), by a layer's name in the converted
        model (``conv.model.layer_names``) or ``"*"`` (every layer the rule fits);
        a name wins over a type, a type over ``"*"``. Or a preset of
        :data:`~innsight.layers.lrp_rules.LRP_PRESETS`: ``"attnlrp"`` (see Notes).
    rule_param : number, tuple or dict
        ``epsilon`` (default 0.01; also of ``uniform``), ``alpha`` of
        ``alpha_beta`` (default 1, ``beta = alpha - 1``), ``gamma`` (default 0.25)
        or ``(low, high)`` for ``z_box``; one value for every layer whose rule takes
        one, or a dict keyed like ``rule_name``.
    winner_takes_all : bool
        Max pooling sends relevance to each window's maximum (True) or spreads it
        in proportion to the inputs (False).
    keep_layers : bool
        Record, for every layer, the relevance coming in and going out
        (``res.layer_report()``, ``res.plot_layer_report()``); nothing is kept
        otherwise.

    Notes
    -----
    Conventions: each summand of an ``add`` gets relevance in proportion to its
    value; ``concatenate`` and shape-only layers move relevance back unchanged;
    an elementwise product splits it equally between its factors; activations
    pass it on unchanged; means and average pooling follow the rule of their
    layer type like any layer with (positive, fixed) weights; layer normalisation
    follows the LN-rule (Ali et al. 2022): each sample's standard deviation ``sigma``
    is held fixed, and the layer's rule (type ``"LayerNorm"``) acts on the linear map
    ``y = weight * (x - mean(x)) / sigma + bias`` this leaves. The decomposition
    goal stored on the result is the explained output value: relevance absorbed
    by biases or stabilisers is what ``decomp_sum`` misses of it. With
    ``attribute_to``, the walk stops at that layer: the values are the relevance
    it passes through the layer's output.

    Transformers: by default a matrix product with a softmax operand holds the
    attention weights fixed (the AH-rule of Ali et al. 2022, CP-LRP), so the softmax
    gets no relevance, and normalisers are held fixed (the LN-rule). Attention
    converts to one ``ScaledDotProductAttention`` layer: its rule is that of its
    products (key ``"MatMul"``), its softmax follows ``"Softmax"`` or the name
    ``<layer>_weights`` (a part of the layer with its own rule). The preset
    ``rule_name="attnlrp"`` is AttnLRP (Achtibat et al. 2024), the rules of
    ``lxt.efficient`` (tested equal): ``epsilon`` (``1e-9``) for layers with weights and
    for layer norms (held standard deviation: the identity rule on the
    normalisation), ``uniform`` for matrix products (half of the relevance to each
    operand, attention weights included) and ``linearise`` for softmax, whose
    linearisation at the input absorbs relevance (see ``keep_layers``); other
    activations pass relevance on unchanged (the identity rule) and elementwise
    products (gates) split it equally.

    Against Zennit (tested): ``epsilon``, ``alpha_beta`` (the bias joins the
    positive or negative part by its sign), ``flat`` and ``z_box`` agree with
    Zennit's rules of the same name; ``z_plus`` and ``w_square`` agree with
    Zennit's ``ZPlus`` and ``WSquare`` with ``zero_params=["bias"]`` (Zennit keeps
    the positive bias, or the squared bias, by default). ``gamma`` is
    Montavon et al.'s ``w + gamma * w^+`` for every output; Zennit's ``Gamma``
    also treats negative outputs apart. Zennit multiplies relevance by each
    activation's gradient, which zeroes inactive units; here activations pass it
    on unchanged. Both give the same result where relevance is proportional to
    the input (every rule but ``w_square``, ``flat`` and ``z_box``, which are
    meant for the first layer).
    Further parameters: see :class:`InterpretingMethod`.
    """

    method_name = "LRP"
    value_name = "relevance"
    needs_graph = True
    layer_attribution = "walk"

    @classmethod
    def get_tunables(cls) -> dict[str, Any]:
        """``rule_name``: the registered rules that apply to every layer with weights, with
        their default parameter; ``rule_param``: per rule, its search range ``(float, low, high)``
        (pass it together with that rule); ``winner_takes_all``: both."""
        usable = [name for name, rule in LRP_RULES.items()
                  if "map" in rule.kinds and not rule.shape_preserving_only
                  and not (rule.takes_param and rule.default_param is None)]
        ranges = {name: (float, *LRP_RULES[name].tunable_range) for name in usable
                  if LRP_RULES[name].tunable_range is not None}
        return {"rule_name": usable, "rule_param": ranges, "winner_takes_all": [True, False]}

    def __init__(self, converter: Any, data: Any, *, rule_name: Any = "simple",
                 rule_param: Any = None, winner_takes_all: bool = True,
                 keep_layers: bool = False, **shared: Any) -> None:
        super().__init__(converter, data, rule_name=rule_name, rule_param=rule_param,
                         winner_takes_all=winner_takes_all, keep_layers=keep_layers, **shared)

    def _explain(self, setup: Setup, rule_name: Any, rule_param: Any,
                 winner_takes_all: Any, keep_layers: Any = False) -> Explanation:
        check_bool(winner_takes_all, "winner_takes_all")
        check_bool(keep_layers, "keep_layers")
        rules = layer_rules(setup.model, rule_name, rule_param, winner_takes_all)
        return explain_lrp(setup, rules, keep_layers)


run_lrp = runner(LRP, "run_lrp")
