"""Starting at a few logits of a wide head: the walk's first step on the picked units only.

A language model's logits ``(tokens, vocab)`` come from one dense layer, the LM head,
applied to every token. Targets that pick a few of them (:class:`~innsight.methods.
targets.Picks`: node targets, one node per sample, sparse ``target_weights``) need only
the head's weight rows of the picked vocabulary entries: the head restricted to those
units (:meth:`~innsight.layers.rules.RuleLayer.on_units`) computes the picked logits from
its input, and every method's first step back through it touches only them.

- Gradient methods compute the explained columns from the head's input through the
  restricted head (:func:`target_columns`): the full logits are neither computed nor
  differentiated (the gradient of a picked logit ``z[t, v]`` is ``W[v]`` at token ``t``).
- Rule-based walks (LRP, DeepLift, ConnectionWeights) compute the head's values at the
  picked units only (:meth:`Heads.node_values`) and start there (:func:`walk_starts`):
  the logits, the start and the rules' quotients (``r / z``) exist for the picked units
  only, never as ``(n_targets, tokens x vocab)`` arrays.

Both give the same numbers as the dense start: each output unit of a dense layer depends
on its own weight row only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from innsight.converter import ConvertedModel
from innsight.methods.layer_attribution import CutModel
from innsight.methods.targets import Picks, Targets


@dataclass(frozen=True)
class Head:
    """An explained layer ``node`` (reading node ``source``) as ``layer``, restricted to
    the output units the targets pick; ``picks`` are the targets' entries numbered over
    the restricted layer's flattened output ``(*lead, J)``."""

    node: int
    source: int
    layer: Any
    picks: Picks


class Heads(dict[int, Head]):
    """The restricted heads of a chunk of rows, by output layer (empty: start densely)."""

    def layer(self, model: ConvertedModel, i: int) -> Any:
        """The layer the walk goes back through at node ``i``."""
        for head in self.values():
            if head.node == i:
                return head.layer
        return model.layers[i]

    def node_values(self, model: ConvertedModel, inputs: list[Tensor],
                    keep: set[int] | None = None,
                    given: dict[int, Tensor] | None = None) -> list[Tensor | None]:
        """``model.node_values`` (every node's value, or with ``keep`` only those kept),
        the heads' at the picked units only: the full outputs are not computed where
        nothing else needs them."""
        if not self:
            return model.node_values(inputs, given=given, keep=keep)
        nodes = {head.node for head in self.values()}
        keep = set(range(len(model.layers))) if keep is None else keep
        values = model.node_values(inputs, given=given, keep=keep - nodes | {
            head.source for head in self.values()})
        for head in self.values():
            values[head.node] = head.layer(values[head.source])
        return values

    def columns(self, outputs: Sequence[Tensor | None], targets: Targets,
                sample: Tensor) -> Tensor:
        """The explained columns ``(rows, n_targets)`` from the explained outputs (per
        output layer; a head's at its picked units) at rows made from the data samples
        ``sample``."""
        if not self:
            return targets.values(outputs, sample)
        return sum(head.picks.values(outputs[o].flatten(1), len(targets))
                   for o, head in self.items())


def _graph(model: Any) -> tuple[ConvertedModel | None, int | None]:
    """The converted graph behind ``model`` and the layer it is cut at (``None``: not cut);
    no graph for a torch module (direct methods)."""
    if isinstance(model, CutModel):
        return model.model, model.node
    return (model, None) if isinstance(model, ConvertedModel) else (None, None)


def sparse_heads(model: Any, explained: Sequence[int], targets: Targets,
                 sample: Tensor) -> Heads:
    """The explained layers restricted to the units ``targets`` pick, for rows made from
    the data samples ``sample`` ``(rows,)``: every output layer the targets use must be
    one whose values are picks, whose layer restricts its units and which no other
    explained node depends on or is (else none is restricted). Where the targets pick
    every unit of every such layer, none is restricted either: the dense start gives the
    same numbers without the picks (a small model's few outputs)."""
    graph, cut = _graph(model)
    if graph is None:
        return Heads()
    plans = []  # (output layer, node, width, picked units, the layer restricted to them)
    for o, node in enumerate(explained):
        if not targets.uses(o):
            continue
        nodes = targets.picked_nodes(o, sample)
        dim = graph.layers[node].output_dim
        others = [n for k, n in enumerate(explained) if k != o]
        if (nodes is None or not dim or node == cut or len(graph.input_layers[node]) != 1
                or node in graph.needed(others)):  # another explained node reads it whole
            return Heads()
        width = dim[-1]
        units = torch.unique(nodes % width)
        # every unit picked: the layer is its own restriction
        layer = graph.layers[node] if len(units) == width else graph.layers[node].on_units(units)
        if layer is None:
            return Heads()
        plans.append((o, node, width, units, layer))
    heads = Heads()
    if all(len(units) == width for _, _, width, units, _ in plans):
        return heads
    for o, node, width, units, layer in plans:
        picks = targets.picks(o, sample)
        if len(units) < width:  # the picked nodes numbered over the restricted output
            unit = torch.searchsorted(units, picks.node % width)
            picks = picks.renumbered(picks.node // width * len(units) + unit)
        heads[o] = Head(node, graph.input_layers[node][0], layer, picks)
    return heads


def target_columns(model: Any, explained: Sequence[int], targets: Targets,
                   inputs: list[Tensor], sample: Tensor) -> Tensor:
    """The explained columns ``(rows, n_targets)`` at ``inputs`` (per input layer ``(rows,
    *dim)``, made from the data samples ``sample``), differentiable: through the
    restricted heads where the targets pick units of them, else from the outputs."""
    heads = sparse_heads(model, explained, targets, sample)
    if not heads:
        return targets.values(model.run_nodes(inputs, explained, sample), sample)
    sources = model.run_nodes(inputs, [head.source for head in heads.values()], sample)
    outputs: list[Tensor | None] = [None] * len(explained)
    for (o, head), source in zip(heads.items(), sources):
        outputs[o] = head.layer(source)
    return heads.columns(outputs, targets, sample)


def walk_starts(model: ConvertedModel, explained: Sequence[int], targets: Targets,
                heads: Heads, sample: Tensor, like: Tensor,
                base: Callable[[int], Tensor | float]) -> list[Tensor | None]:
    """Per explained node, the start of a walk ``(n_targets, rows, *dim)``: each target's
    weights over the node's entries times ``base(o)`` (a number, or the rows' values
    ``(rows, n_nodes)`` of output layer ``o``, at the picked units for a head); over the
    picked units ``(*lead, J)`` only for the ``heads``; ``None`` for output layers no
    target uses."""
    out: list[Tensor | None] = []
    for o, node in enumerate(explained):
        head = heads.get(o)
        dim = (model.layers[node] if head is None else head.layer).output_dim
        n_nodes, rows = math.prod(dim), len(sample)
        start = (targets.start(o, sample, n_nodes, base(o), like) if head is None
                 else head.picks.dense(len(targets), rows, n_nodes, base(o), like))
        out.append(None if start is None else start.contiguous().view(len(targets), rows, *dim))
    return out
