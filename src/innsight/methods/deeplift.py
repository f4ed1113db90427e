"""DeepLift (Shrikumar et al. 2017) and DeepSHAP (Lundberg and Lee 2017).

DeepLift explains the difference ``f(x) - f(x_ref)`` of each selected output
node: one forward pass over the data and its references side by side gives
every layer's value and reference value, and one reverse walk carries the
multipliers of every output back to the input, each layer applying the
``rescale`` or ``reveal_cancel`` rule (see the layer classes for their
conventions). The contributions ``(x - x_ref) * multiplier`` sum to the
difference exactly. DeepSHAP averages DeepLift over several references.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from innsight._validation import check_bool, describe
from innsight.layers.rules import DEEPLIFT_RULES, DeepLiftRule, Pair, sign_split
from innsight.methods.base import (
    Explanation,
    InterpretingMethod,
    Setup,
    check_positive_int,
    runner,
)
from innsight.methods.data import prepare_like
from innsight.methods.engine import target_values
from innsight.methods.gradient import reference_inputs
from innsight.methods.heads import Heads
from innsight.methods.layer_report import LayerRecords
from innsight.methods.reverse_walk import ChunkWalk, ancestors, check_rules, explain_by_walk

#: ``refs(sample, copy) -> per input layer (rows, *dim)``: the reference of each row.
RefsFn = Callable[[Tensor, Tensor], list[Tensor]]


def _rule(rule_name: Any, winner_takes_all: Any) -> DeepLiftRule:
    check_bool(winner_takes_all, "winner_takes_all")
    if not isinstance(rule_name, str) or rule_name not in DEEPLIFT_RULES:
        raise ValueError(
            f"`rule_name` must be one of {list(DEEPLIFT_RULES)}, got {describe(rule_name)}."
        )
    return DEEPLIFT_RULES[rule_name](winner_takes_all)


def explain_deeplift(setup: Setup, rule: DeepLiftRule, refs: RefsFn, n_refs: int,
                     keep_layers: bool = False) -> Explanation:
    """Contributions per input layer ``(n_data, *dim, n_targets)``, averaged over each
    sample's ``n_refs`` references, and their goal ``mean f(x) - f(ref)``;
    ``keep_layers`` records every layer's totals.

    Rows (sample, reference) go through the model in chunks: each chunk's data and
    references together make at most ``batch_size`` rows.
    """
    model, explained = setup.model, setup.explained
    check_rules(model, explained, "deeplift", lambda i: rule)
    nodes = ancestors(model, explained)

    def walk_chunk(sample: Tensor, copy: Tensor, heads: Heads) -> ChunkWalk:
        b = len(sample)
        xs, x_refs = [x[sample] for x in setup.data], refs(sample, copy)
        layer = setup.layer
        with torch.no_grad():
            if layer is not None and layer.start:  # references at the layer, inputs as given
                both = heads.node_values(model, [torch.cat([x, x]) for x in xs], given={
                    layer.node: torch.cat([layer.activations[sample], x_refs[0]])})
            else:
                both = heads.node_values(model, [torch.cat(pair) for pair in zip(xs, x_refs)])
        at_x = [None if v is None else v[:b] for v in both]
        at_ref = [None if v is None else v[b:] for v in both]
        f = heads.columns([at_x[node] for node in explained], setup.targets, sample)
        goal = f - heads.columns([at_ref[node] for node in explained], setup.targets, sample)
        preds = f if setup.prediction_nodes == explained else target_values(
            [at_x[node] for node in setup.prediction_nodes], setup.targets, sample)
        splits = _splits(model, heads, nodes, at_x, at_ref) if rule.splits else None

        def step(i: int, m: Any) -> list[Any]:
            reads = model.input_layers[i]
            return heads.layer(model, i).contribution(
                m, [at_x[j] for j in reads], [at_ref[j] for j in reads], at_x[i], at_ref[i],
                rule, None if splits is None else [splits[j] for j in reads])

        return ChunkWalk(lambda o: 1.0, step,
                         lambda node, m: _times_difference(
                             m, at_x[node] - at_ref[node], None if splits is None else splits[node]),
                         goal, f, preds)

    records = None if not keep_layers else LayerRecords(
        model, len(setup.targets), setup.data[0].shape[0], lambda i: rule.name)
    return explain_by_walk(setup, n_refs, max(1, setup.batch_size // 2), walk_chunk, records)


def _splits(model: Any, heads: Heads, nodes: list[int], at_x: list[Any],
            at_ref: list[Any]) -> dict[int, Pair]:
    """Reveal-cancel: every needed node's difference as positive and negative parts (a
    head's at its picked units)."""
    splits: dict[int, Pair] = {}
    for i in nodes:
        reads, layer = model.input_layers[i], heads.layer(model, i)
        if not at_x[i].is_floating_point():  # a mask or ids: no relevance passes it
            splits[i] = sign_split(torch.zeros(at_x[i].shape, dtype=model.dtype,
                                               device=at_x[i].device))
        elif reads and layer.splits_pairs:
            splits[i] = layer.split_delta([splits[j] for j in reads], at_x[i], at_ref[i])
        else:
            splits[i] = sign_split(at_x[i] - at_ref[i])
    return splits


def _times_difference(m: Any, dx: Tensor, parts: Pair | None = None) -> Tensor:
    """Contributions ``(T, rows, *dim)`` of a node from its multipliers and its difference
    ``dx``; multipliers of positive and negative parts (reveal-cancel) take the node's
    ``parts`` (default: the signs of ``dx``, as at the inputs)."""
    if isinstance(m, Pair):
        parts = parts or sign_split(dx)
        return m.pos * parts.pos + m.neg * parts.neg
    return m * dx


class DeepLift(InterpretingMethod):
    """DeepLift: contributions of each input to ``f(x) - f(x_ref)`` (Shrikumar et al. 2017).

    Parameters
    ----------
    x_ref
        The reference input: zeros by default, one sample, or one per data sample.
    rule_name : {"rescale", "reveal_cancel"}
        How nonlinearities turn differences into multipliers; ``reveal_cancel``
        treats the positive and negative parts of each difference apart.
    winner_takes_all : bool
        Max pooling credits each window's arg-max (True) or spreads the
        window's difference in proportion to the input differences (False).
    keep_layers : bool
        Record, for every layer, the contributions ``multiplier * (value -
        reference value)`` coming in at its output and going out to its inputs
        (``res.layer_report()``); nothing is kept otherwise.

    Notes
    -----
    The contributions of a sample sum to ``f(x) - f(x_ref)`` (the decomposition
    goal); with ``attribute_to`` they are those of the layer's activations
    (``multiplier * (a(x) - a(x_ref))``), which sum to the goal where no skip
    connection bypasses the layer. Multipliers of a nonlinearity fall back to its derivative at the
    midpoint where ``|x - x_ref|`` is tiny. Further parameters: see
    :class:`InterpretingMethod`.
    """

    method_name = "DeepLift"
    value_name = "contribution"
    needs_graph = True
    layer_attribution = "walk"
    tunables = {"rule_name": list(DEEPLIFT_RULES), "winner_takes_all": [True, False]}

    def __init__(self, converter: Any, data: Any, *, x_ref: Any = None,
                 rule_name: str = "rescale", winner_takes_all: bool = True,
                 keep_layers: bool = False, **shared: Any) -> None:
        super().__init__(converter, data, x_ref=x_ref, rule_name=rule_name,
                         winner_takes_all=winner_takes_all, keep_layers=keep_layers, **shared)

    def _explain(self, setup: Setup, x_ref: Any, rule_name: Any,
                 winner_takes_all: Any, keep_layers: Any = False) -> Explanation:
        rule = _rule(rule_name, winner_takes_all)
        check_bool(keep_layers, "keep_layers")
        refs = reference_inputs(setup, x_ref)
        return explain_deeplift(
            setup, rule, lambda sample, copy: [r[sample % r.shape[0]] for r in refs], 1,
            keep_layers)


class DeepSHAP(InterpretingMethod):
    """DeepSHAP: DeepLift averaged over reference samples (Lundberg and Lee 2017).

    Parameters
    ----------
    data_ref
        Reference samples (the background), in the layout of ``data``; default:
        the data itself.
    limit_ref : int
        At most this many references are used, drawn without replacement (with
        ``seed``) when ``data_ref`` holds more.
    rule_name, winner_takes_all, keep_layers
        As for :class:`DeepLift` (the report averages over the references).

    Notes
    -----
    The contributions of a sample sum to ``f(x) - mean f(ref)`` over the
    references used. Further parameters: see :class:`InterpretingMethod`.
    """

    method_name = "DeepSHAP"
    value_name = "contribution"
    needs_graph = True
    layer_attribution = "walk"
    tunables = {"rule_name": list(DEEPLIFT_RULES), "winner_takes_all": [True, False],
                 "limit_ref": (int, 10, 200)}

    def __init__(self, converter: Any, data: Any, *, data_ref: Any = None, limit_ref: int = 100,
                 rule_name: str = "rescale", winner_takes_all: bool = True,
                 keep_layers: bool = False, **shared: Any) -> None:
        super().__init__(converter, data, data_ref=data_ref, limit_ref=limit_ref,
                         rule_name=rule_name, winner_takes_all=winner_takes_all,
                         keep_layers=keep_layers, **shared)

    def _explain(self, setup: Setup, data_ref: Any, limit_ref: Any, rule_name: Any,
                 winner_takes_all: Any, keep_layers: Any = False) -> Explanation:
        rule = _rule(rule_name, winner_takes_all)
        check_bool(keep_layers, "keep_layers")
        limit_ref = check_positive_int(limit_ref, "limit_ref")
        start = setup.layer is not None and setup.layer.start
        if data_ref is None:
            refs = [setup.layer.activations] if start else setup.data  # type: ignore[union-attr]
        elif start:
            refs = setup.prepare_refs(data_ref, "data_ref")
        else:
            refs = prepare_like(data_ref, setup.data, setup.channels_first, "data_ref")
        if refs[0].shape[0] > limit_ref:
            pick = torch.randperm(refs[0].shape[0], generator=setup.generator,
                                  device=setup.generator.device)[:limit_ref].to(refs[0].device)
            refs = [r[pick] for r in refs]
        return explain_deeplift(setup, rule, lambda sample, copy: [r[copy] for r in refs],
                                refs[0].shape[0], keep_layers)


run_deeplift = runner(DeepLift, "run_deeplift")
run_deepshap = runner(DeepSHAP, "run_deepshap")
