"""The reverse walk behind the rule-based methods (LRP, DeepLift, ConnectionWeights).

Upstream values start at the explained nodes with every target (each a weighting
of the explained nodes' entries, see :mod:`innsight.methods.targets`) in a leading
axis, ``(n_targets, batch, *dim)``, and flow back through the
layers in reverse topological order; each layer turns its upstream into one
upstream per input (its ``relevance``, ``contribution`` or ``weight_paths``; ``None``
where nothing passes), and upstreams meeting at a node are summed; layers that
nothing reaches are skipped. One walk explains every output.
:func:`explain_by_walk` is the skeleton LRP and DeepLift share: chunks of rows
(sample, copy), a forward pass, one walk per chunk, values summed per sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from innsight.converter import ConvertedModel
from innsight.layers.rules import RULE_PATHS, Pair
from innsight.methods.base import Explanation, OutputsAtData, Setup
from innsight.methods.engine import row_chunks
from innsight.methods.heads import Heads, sparse_heads, walk_starts
from innsight.methods.layer_report import LayerRecords

#: ``step(i, upstream) -> one upstream per input of layer i``.
Step = Callable[[int, Any], Sequence[Any]]
#: ``record(i, upstream, backs)``: layer ``i`` received ``upstream`` and passed on ``backs``.
Record = Callable[[int, Any, Sequence[Any]], None]


def ancestors(model: ConvertedModel, nodes: Sequence[int]) -> list[int]:
    """The layers the values of ``nodes`` depend on (``nodes`` included), in order."""
    return sorted(model.needed(nodes))


def check_rules(model: ConvertedModel, nodes: Sequence[int], method: str,
                rules: Callable[[int], Any]) -> None:
    """Refuse a model with a layer on the way back from ``nodes`` that has no rule.

    ``method`` is a key of :data:`~innsight.layers.rules.RULE_PATHS` (``"lrp"``,
    ``"deeplift"``, ``"cw"``) that the layer must declare in its ``rule_paths``;
    ``rules(i)`` is the rule object for layer ``i`` (``None`` for ConnectionWeights),
    whose setting the layer must also be able to follow.
    """
    for i in ancestors(model, nodes):
        layer = model.layers[i]
        if layer.ends_walks:
            continue
        if method in layer.rule_paths:
            reason = layer.setting_refusal(rules(i))
        else:
            reason = layer.no_rule(method)
        if reason is not None:
            raise ValueError(
                f"{RULE_PATHS[method]} cannot explain this model: {reason} (layer "
                f"{i}, '{model.layer_names[i]}'). Use a gradient-based method instead, e.g. "
                f"Gradient or IntegratedGradient."
            )


def _add(a: Any, b: Any) -> Any:
    """The sum of two upstreams, either ``None`` for nothing (e.g. the back of an
    operand a rule holds fixed)."""
    if a is None or b is None:
        return b if a is None else a
    if isinstance(a, Pair) != isinstance(b, Pair):
        a = a if isinstance(a, Pair) else Pair(a, a)
        b = b if isinstance(b, Pair) else Pair(b, b)
    return a + b


def reverse_walk(model: ConvertedModel, explained: Sequence[int], start: Sequence[Any],
                 step: Step, stop_at: int | None = None,
                 record: Record | None = None) -> list[Any]:
    """Walk back from ``start[o]`` at ``explained[o]``; the upstream reaching each model
    input (``None`` where no explained node depends on it), or with ``stop_at`` the
    upstream reaching that layer's output, ``[upstream]``, and no further.
    ``record(i, upstream, backs)`` sees what each layer received and passed on."""
    upstream: list[Any] = [None] * len(model.layers)
    for node, value in zip(explained, start):
        if value is not None:
            upstream[node] = _add(upstream[node], value)
    with torch.no_grad():
        for i in range(max(explained), -1 if stop_at is None else stop_at, -1):
            reads = model.input_layers[i]
            if upstream[i] is None or not reads or model.layers[i].ends_walks:
                continue  # an input, or a value computed from integers: nothing passes back
            value, upstream[i] = upstream[i], None
            backs = step(i, value)
            if record is not None:
                record(i, value, backs)
            for j, back in zip(reads, backs):
                upstream[j] = _add(upstream[j], back)
    return [upstream[node] for node in (model.input_nodes if stop_at is None else [stop_at])]


@dataclass(frozen=True)
class ChunkWalk:
    """One chunk of rows of a rule-based method, after its forward pass.

    ``start(o)`` what the targets' weights over output layer ``o``'s entries multiply to
    start the walk (a number, or ``(rows, n_nodes)`` values, at the picked units of a
    restricted head); ``step`` a layer's backward (a head's through its restricted
    layer); ``finish(node, upstream)`` turns the upstream reaching a node (an input
    layer, or the layer attributed to) into values ``(n_targets, rows, *dim)``; ``goal``
    is what the rows' values should sum to, ``(rows, n_targets)``; ``explained`` and
    ``preds`` the explained quantities and the predictions at the rows' data, each
    ``(rows, n_targets)``.
    """

    start: Callable[[int], Tensor | float]
    step: Step
    finish: Callable[[int, Any], Tensor]
    goal: Tensor
    explained: Tensor
    preds: Tensor


def explain_by_walk(setup: Setup, n_copies: int, chunk_rows: int,
                    walk_chunk: Callable[[Tensor, Tensor, Heads], ChunkWalk],
                    records: LayerRecords | None = None) -> Explanation:
    """Values per input layer ``(n_data, *dim, n_targets)`` (or, attributing to a layer,
    ``[(n_data, *layer_dim, n_targets)]``), averaged over each sample's ``n_copies``
    rows (e.g. DeepSHAP's references), their goal, the outputs at the data, and the
    per-layer totals in ``records`` where given.

    Rows ``(sample, copy)`` go through ``walk_chunk(sample, copy, heads)`` in chunks of
    at most ``chunk_rows`` rows, and back through one reverse walk per chunk, which
    starts at the ``heads`` (:func:`~innsight.methods.heads.sparse_heads`: the output
    layers restricted to the units the targets pick) where there are any.
    """
    model, explained, targets = setup.model, setup.explained, setup.targets
    n_data = setup.data[0].shape[0]
    stop_at = None if setup.layer is None else setup.layer.node
    ends = model.input_nodes if stop_at is None else [stop_at]
    like = setup.data[0] if setup.layer is None else setup.layer.activations
    sums = [like.new_zeros(len(targets), n_data, *model.layers[node].output_dim) for node in ends]
    goal, f_data, preds = (like.new_zeros(n_data, len(targets)) for _ in range(3))
    # The whole explained layers: values attributed to one of them, or predictions read
    # from some of them and from other layers too
    whole = stop_at in explained or (setup.prediction_nodes != explained
                                     and bool(set(setup.prediction_nodes) & set(explained)))
    for rows in row_chunks(n_data * n_copies, chunk_rows, setup.verbose):
        row = torch.arange(rows.start, rows.stop, device=goal.device)
        sample, copy = row // n_copies, row % n_copies
        heads = Heads() if whole else sparse_heads(model, explained, targets, sample)
        walk = walk_chunk(sample, copy, heads)
        start = walk_starts(model, explained, targets, heads, sample, goal, walk.start)
        record = None if records is None else records.recorder(model, walk.finish, sample)
        for k, upstream in enumerate(reverse_walk(model, explained, start, walk.step, stop_at,
                                                  record)):
            if upstream is not None:
                sums[k].index_add_(1, sample, walk.finish(ends[k], upstream))
        goal.index_add_(0, sample, walk.goal)
        first = copy == 0  # one row per sample passes on its outputs
        f_data[sample[first]] = walk.explained[first]
        preds[sample[first]] = walk.preds[first]
    if records is not None:
        records.scale(1 / n_copies)
    return Explanation([s.movedim(0, -1) / n_copies for s in sums], goal / n_copies,
                       OutputsAtData(f_data, preds), layer_records=records)
