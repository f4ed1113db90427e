"""What each column of a method's values explains: the ``targets``.

Four kinds, one per way of asking (see :func:`choose_targets`):

- :class:`NodeTargets`: output nodes (``output_idx`` / ``output_label``), one column each;
- :class:`PerSampleTargets`: one node per sample (``targets=``), one column;
- :class:`WeightTargets`: weighted sums of output nodes (``target_weights=``), a column per
  row of weights;
- :class:`FunctionTargets`: any function of the outputs (``target_fun=``), a column per
  column of its value.

Every kind gives its columns' values ``(rows, n_targets)`` from the explained outputs (a
tensor ``(rows, *dim)`` per output layer) and ``sample``, the data sample each row was
made from, so that a method selects every row's quantity in the pass that computes the
outputs (gradient methods differentiate these values). The linear kinds also give the
start of the reverse walk of the rule-based methods (LRP, DeepLift, ConnectionWeights):
their weights over each output layer's flattened nodes times a base (the outputs, or a
number). Targets that pick single nodes (node and per-sample targets, sparse
``target_weights``) give those entries as :class:`Picks`, never a dense ``(n_targets,
n_nodes)`` array of weights: a language model's logits have ``tokens x vocab`` nodes
(:mod:`innsight.methods.heads` starts there from the picked logits only).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from innsight._validation import describe, is_int
from innsight.outputs import DEFAULT_N_OUTPUTS, OutputSelection, Target

#: ``target_fun(outputs) -> (rows,) or (rows, k)``, ``outputs`` one tensor per output layer.
TargetFun = Callable[[list[Tensor]], Tensor]


def _flat(output: Tensor) -> Tensor:
    return output.reshape(output.shape[0], -1)


@dataclass(frozen=True)
class Picks:
    """The entries a sparse start picks at one output layer: entry ``e`` gives column
    ``column[e]`` of row ``row[e]`` its node ``node[e]`` (flattened) times ``weight[e]``;
    the ``(column, row, node)`` triples are distinct. All ``(n_entries,)``."""

    column: Tensor
    row: Tensor
    node: Tensor
    weight: Tensor

    @classmethod
    def every_row(cls, column: Tensor, node: Tensor, weight: Tensor, rows: int) -> Picks:
        """The entries ``(column[j], node[j], weight[j])`` in each of ``rows`` rows."""
        n = len(node)

        def tiled(v: Tensor) -> Tensor:  # expand and copy: a third of the ops of ``repeat``
            return v.expand(rows, n).reshape(-1)

        row = torch.arange(rows, device=node.device).unsqueeze(1)
        return cls(tiled(column), tiled(row), tiled(node), tiled(weight))

    def renumbered(self, node: Tensor) -> Picks:
        """The same entries at other node indices ``node`` (e.g. of a restricted layer)."""
        return Picks(self.column, self.row, node, self.weight)

    def dense(self, k: int, rows: int, n_nodes: int, base: Tensor | float,
              like: Tensor) -> Tensor:
        """``(k, rows, n_nodes)``: zero but at the entries, which hold their weight times
        ``base`` there (a number or ``(rows, n_nodes)``), on ``like``'s dtype and device."""
        value = self.weight.to(like.dtype)
        if isinstance(base, Tensor):
            value = value * base[self.row, self.node]
        else:
            value = value * base
        return like.new_zeros(k, rows, n_nodes).index_put_(
            (self.column, self.row, self.node), value, accumulate=True)

    def values(self, flat: Tensor, k: int) -> Tensor:
        """The columns ``(rows, k)`` of the nodes ``flat`` ``(rows, n_nodes)``
        (differentiable)."""
        value = self.weight.to(flat.dtype) * flat[self.row, self.node]
        return flat.new_zeros(flat.shape[0], k).index_put((self.row, self.column), value,
                                                          accumulate=True)


class Targets:
    """Base of the four kinds: ``len()`` columns, their ``values`` and ``weights``."""

    #: Per sample, the label of the node it explains (per-sample targets only).
    sample_labels: list[str] | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def values(self, outputs: Sequence[Tensor], sample: Tensor | None) -> Tensor:
        """The columns ``(rows, n_targets)`` at ``outputs`` (per output layer ``(rows, *dim)``);
        ``sample`` ``(rows,)`` the data sample of each row."""
        raise NotImplementedError

    def uses(self, o: int) -> bool:
        """Whether a column depends on output layer ``o``."""
        return True

    def picks(self, o: int, sample: Tensor) -> Picks | None:
        """The entries the columns pick at output layer ``o`` for rows made from the data
        samples ``sample`` ``(rows,)``; ``None`` where no column uses that layer or the
        columns are no sparse picks (dense weights, a function)."""
        return None

    def picked_nodes(self, o: int, sample: Tensor) -> Tensor | None:
        """The flattened nodes of output layer ``o`` that :meth:`picks` holds (each at
        least once), ``None`` where it holds none."""
        picks = self.picks(o, sample)
        return None if picks is None else picks.node

    def start(self, o: int, sample: Tensor, n_nodes: int, base: Tensor | float,
              like: Tensor) -> Tensor | None:
        """The start of a reverse walk at output layer ``o``, ``(n_targets, rows,
        n_nodes)``: each column's weights over the ``n_nodes`` flattened nodes times
        ``base`` (a number, or the rows' values ``(rows, n_nodes)``), on ``like``'s dtype
        and device; ``None`` where no column uses that layer, a TypeError for targets
        that are not linear. ``sample`` ``(rows,)`` holds each row's data sample."""
        picks = self.picks(o, sample)
        return None if picks is None else picks.dense(len(self), len(sample), n_nodes, base,
                                                      like)

    def mean_values(self, outputs: Sequence[Tensor], n_data: int) -> Tensor:
        """The mean over the rows of ``outputs`` (e.g. references) of the columns, for
        every sample: ``(1 or n_data, n_targets)``."""
        return self.values(outputs, None).mean(0, keepdim=True)

    def for_rows(self, sample: Tensor) -> Targets:
        """These targets for new data whose row ``i`` was made from the data sample
        ``sample[i]`` (``sample`` ``(rows,)``): the same for every kind but per-sample
        targets, which explain at each row its sample's node."""
        return self


@dataclass(frozen=True, eq=False)
class NodeTargets(Targets):
    """The selected output nodes, one column each."""

    nodes: tuple[Target, ...]

    def __len__(self) -> int:
        return len(self.nodes)

    def values(self, outputs: Sequence[Tensor], sample: Tensor | None) -> Tensor:
        # one index_select per output layer (the nodes come layer by layer): its backward
        # pass adds into one zero tensor instead of summing one per node
        blocks = [_flat(outputs[layer]).index_select(1, torch.tensor(
                      [t.index for t in nodes], device=outputs[layer].device))
                  for layer, nodes in itertools.groupby(self.nodes, lambda t: t.layer)]
        return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)

    def uses(self, o: int) -> bool:
        return any(target.layer == o for target in self.nodes)

    def picks(self, o: int, sample: Tensor) -> Picks | None:
        mine = [(t, target.index) for t, target in enumerate(self.nodes) if target.layer == o]
        if not mine:
            return None
        column, node = torch.tensor(mine, device=sample.device).T
        return Picks.every_row(column, node, torch.ones(len(mine), device=sample.device),
                               len(sample))

    def picked_nodes(self, o: int, sample: Tensor) -> Tensor | None:
        # the same nodes in every row: no picks for all rows
        mine = [target.index for target in self.nodes if target.layer == o]
        return torch.tensor(mine, device=sample.device) if mine else None


@dataclass(frozen=True, eq=False)
class PerSampleTargets(Targets):
    """Node ``nodes[i]`` of output layer ``layer`` for sample ``i``: one column."""

    layer: int
    nodes: Tensor  # (n_data,) long
    sample_labels: list[str] | None = None

    def __len__(self) -> int:
        return 1

    def values(self, outputs: Sequence[Tensor], sample: Tensor | None) -> Tensor:
        if sample is None:
            raise ValueError("These values explain one output node per sample (`targets=`); "
                             "they cannot be evaluated at rows that are no data samples.")
        return _flat(outputs[self.layer]).gather(1, self.nodes[sample, None])

    def uses(self, o: int) -> bool:
        return o == self.layer

    def picks(self, o: int, sample: Tensor) -> Picks | None:
        if o != self.layer:
            return None
        rows = torch.arange(len(sample), device=sample.device)
        return Picks(torch.zeros_like(rows), rows, self.nodes[sample],
                     torch.ones(len(sample), device=sample.device))

    def for_rows(self, sample: Tensor) -> Targets:
        labels = self.sample_labels
        return replace(self, nodes=self.nodes[sample.to(self.nodes.device)],
                       sample_labels=None if labels is None else [labels[i] for i in sample.tolist()])

    def mean_values(self, outputs: Sequence[Tensor], n_data: int) -> Tensor:
        # linear: the mean of the selected node is the selected node of the mean
        means = [o.mean(0, keepdim=True).expand(n_data, *o.shape[1:]) for o in outputs]
        return self.values(means, torch.arange(n_data, device=self.nodes.device))


@dataclass(frozen=True, eq=False)
class WeightTargets(Targets):
    """``sum_o outputs[o] @ weights[o].T``: a column per row of the weights, which are
    dense or sparse (a coalesced ``torch.sparse_coo`` tensor: the walk then starts from
    its entries only)."""

    weights_per_layer: tuple[Tensor | None, ...]  # per output layer (k, n_nodes) or None

    def __len__(self) -> int:
        return next(w for w in self.weights_per_layer if w is not None).shape[0]

    def values(self, outputs: Sequence[Tensor], sample: Tensor | None) -> Tensor:
        return sum((w @ _flat(out).T).T for out, w in zip(outputs, self.weights_per_layer)
                   if w is not None)

    def uses(self, o: int) -> bool:
        return self.weights_per_layer[o] is not None

    def picks(self, o: int, sample: Tensor) -> Picks | None:
        w = self.weights_per_layer[o]
        if w is None or not w.is_sparse:
            return None
        column, node = w.indices()
        return Picks.every_row(column, node, w.values(), len(sample))

    def start(self, o: int, sample: Tensor, n_nodes: int, base: Tensor | float,
              like: Tensor) -> Tensor | None:
        w = self.weights_per_layer[o]
        if w is None or w.is_sparse:
            return super().start(o, sample, n_nodes, base, like)
        return (w.to(like.dtype)[:, None] * base).expand(len(self), len(sample), n_nodes)


@dataclass(frozen=True, eq=False)
class FunctionTargets(Targets):
    """``fun(outputs)``, ``(rows,)`` or ``(rows, k)``: a column per column."""

    fun: TargetFun
    k: int

    def __len__(self) -> int:
        return self.k

    def values(self, outputs: Sequence[Tensor], sample: Tensor | None) -> Tensor:
        return _call_fun(self.fun, outputs)

    def start(self, o: int, sample: Tensor, n_nodes: int, base: Tensor | float,
              like: Tensor) -> Tensor | None:
        raise TypeError("`target_fun` has no weights over the output nodes.")


def _call_fun(fun: TargetFun, outputs: Sequence[Tensor]) -> Tensor:
    value = fun(list(outputs))
    rows = outputs[0].shape[0]
    if not isinstance(value, Tensor):
        raise TypeError(f"`target_fun` must return a torch tensor (rows,) or (rows, k), got "
                        f"{describe(value)}.")
    if value.ndim == 1:
        value = value[:, None]
    if value.ndim != 2 or value.shape[0] != rows:
        raise ValueError(f"`target_fun` must return a tensor of shape ({rows},) or ({rows}, k) "
                         f"for outputs of {rows} rows, got shape {tuple(value.shape)}.")
    return value


@dataclass(frozen=True, eq=False)
class ChosenTargets:
    """What a method explains: the ``targets``, the layout of the result's columns
    (``selection``: for node targets the nodes themselves; else the columns, numbered
    ``0..k-1`` and named, in one output layer), and whether the predictions are taken at
    the explained outputs (custom targets) rather than at the model's outputs."""

    targets: Targets
    selection: OutputSelection
    at_explained: bool = False


def column_selection(n_layers: int, layer: int, labels: list[str]) -> OutputSelection:
    """The columns ``0..len(labels)-1`` of a result, all in output layer ``layer``."""
    indices = [list(range(len(labels))) if o == layer else [] for o in range(n_layers)]
    return OutputSelection(indices, [labels if o == layer else [] for o in range(n_layers)],
                           computed=True)


def _names(base: str, k: int) -> list[str]:
    return [base] if k == 1 else [f"{base}_{j + 1}" for j in range(k)]


def choose_targets(names: Sequence[Sequence[Sequence[str]]], *, output_idx: Any,
                   output_label: Any, targets: Any, target_fun: Any, target_weights: Any,
                   n_data: int, outputs_at_data: Callable[[], list[Tensor]],
                   outputs_at_first: Callable[[], list[Tensor]],
                   like: Tensor) -> ChosenTargets:
    """Check the four ways of asking (at most one of ``targets``, ``target_fun`` and
    ``target_weights``, none of them together with ``output_idx``/``output_label``) and
    build the targets.

    ``names`` are the explained output layers' axis labels; ``outputs_at_data()`` the
    explained outputs at the data (``targets="predicted"``), ``outputs_at_first()`` at
    the first sample (the number of columns of ``target_fun``); ``like`` gives the dtype
    and device of weights.
    """
    given = {name: value for name, value in (("targets", targets), ("target_fun", target_fun),
                                              ("target_weights", target_weights))
             if value is not None}
    if len(given) > 1:
        raise ValueError(f"Give at most one of `targets`, `target_fun` and `target_weights`; "
                         f"got {sorted(given)}.")
    node_args = {name: value for name, value in (("output_idx", output_idx),
                                                  ("output_label", output_label))
                 if value is not None}
    whole = OutputSelection.whole_model(names)
    if not given:
        selection = whole.choose(output_idx, output_label, default=DEFAULT_N_OUTPUTS)
        return ChosenTargets(NodeTargets(tuple(selection.targets)), selection)
    (name, value), = given.items()
    if node_args:
        raise ValueError(f"`{name}` chooses what is explained; it cannot be combined with "
                         f"{' or '.join(f'`{n}`' for n in node_args)} (got both).")
    n_layers = len(names)
    if name == "targets":
        labels = whole.labels[0]
        nodes = _per_sample_nodes(value, labels, n_data, outputs_at_data, like.device)
        column = "predicted" if isinstance(value, str) else "targets"
        chosen = PerSampleTargets(0, nodes, [labels[i] for i in nodes.tolist()])
        return ChosenTargets(chosen, column_selection(n_layers, 0, [column]))
    if name == "target_fun":
        if not callable(value):
            raise TypeError(f"`target_fun` must be a callable outputs -> (rows,) or (rows, k) "
                            f"tensor, got {describe(value)}.")
        with torch.no_grad():
            k = _call_fun(value, outputs_at_first()).shape[1]
        return ChosenTargets(FunctionTargets(value, k),
                             column_selection(n_layers, 0, _names("target_fun", k)), True)
    per_layer = _weights(value, [len(labels) for labels in whole.labels], like)
    k = next(w for w in per_layer if w is not None).shape[0]
    first = next(o for o, w in enumerate(per_layer) if w is not None)
    return ChosenTargets(WeightTargets(tuple(per_layer)),
                         column_selection(n_layers, first, _names("target_weights", k)), True)


def _per_sample_nodes(value: Any, labels: list[str], n_data: int,
                      outputs_at_data: Callable[[], list[Tensor]],
                      device: torch.device) -> Tensor:
    """``targets``: ``"predicted"`` (the arg-max of the first explained output layer at
    each sample), or one node index or label per sample."""
    if isinstance(value, str):
        if value != "predicted":
            raise ValueError(f"`targets` must be 'predicted' or one output node (index or "
                             f"label) per sample, got {value!r}.")
        return _flat(outputs_at_data()[0]).argmax(dim=1).to(device)
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value, dtype=object)
    if array.ndim != 1 or len(array) != n_data:
        raise ValueError(f"`targets` must hold one output node per sample ({n_data}), got "
                         f"{describe(value)}.")
    if all(isinstance(v, str) for v in array):
        unknown = sorted({v for v in array if v not in labels})
        if unknown:
            raise ValueError(f"`targets` has labels {unknown[:10]} that are no output node of "
                             f"the first output layer: its labels are {labels[:20]}"
                             f"{' ...' if len(labels) > 20 else ''}.")
        position = {label: i for i, label in enumerate(labels)}
        nodes = [position[v] for v in array]
    elif all(is_int(v) for v in array):
        nodes = [int(v) for v in array]
        bad = sorted({v for v in nodes if not 0 <= v < len(labels)})
        if bad:
            raise ValueError(f"`targets` has node indices {bad[:10]} out of range: the first "
                             f"output layer has {len(labels)} nodes (valid: 0..{len(labels) - 1}).")
    else:
        raise TypeError("`targets` must be 'predicted' or an array of ints (node indices) or "
                        f"of labels (str), one per sample; got {describe(value)}.")
    return torch.tensor(nodes, dtype=torch.long, device=device)


def _weights(value: Any, sizes: list[int], like: Tensor) -> list[Tensor | None]:
    """``target_weights``: weights for the first output layer, or a list with an entry
    (weights or ``None``) per output layer; each ``(n_nodes,)``, ``(k, n_nodes)``, or shaped
    like the output layer, ``(*dim)`` / ``(k, *dim)``, nodes flattened channels first; or
    a sparse torch tensor ``(n_nodes,)`` / ``(k, n_nodes)``."""
    per_layer = isinstance(value, (list, tuple)) and any(
        v is None or isinstance(v, (Tensor, np.ndarray)) for v in value)
    entries = list(value) if per_layer else [value]
    if len(entries) > len(sizes):
        raise ValueError(f"`target_weights` has {len(entries)} entries, one per output layer, "
                         f"but the model has {len(sizes)} output layer(s).")
    entries += [None] * (len(sizes) - len(entries))
    out: list[Tensor | None] = []
    for o, (entry, n_nodes) in enumerate(zip(entries, sizes)):
        where = f"`target_weights[{o}]`" if per_layer else "`target_weights`"
        if entry is None:
            out.append(None)
            continue
        if isinstance(entry, Tensor) and entry.layout != torch.strided:
            out.append(_sparse_weights(entry, n_nodes, where, like))
            continue
        try:
            w = torch.as_tensor(entry.detach().cpu().numpy() if isinstance(entry, Tensor)
                                else np.asarray(entry, dtype=float))
        except (TypeError, ValueError) as err:
            raise TypeError(f"{where} must be an array of numbers, got {describe(entry)}.") from err
        if w.dtype == torch.bool or w.is_complex() or w.ndim == 0:
            raise TypeError(f"{where} must be a real array (n_nodes,) or (k, n_nodes), got "
                            f"{describe(entry)}.")
        if w.numel() == n_nodes:
            w = w.reshape(1, n_nodes)
        elif w.ndim >= 2 and math.prod(w.shape[1:]) == n_nodes:
            w = w.reshape(w.shape[0], n_nodes)
        else:
            raise ValueError(f"{where} must have shape ({n_nodes},) or (k, {n_nodes}) (or an "
                             f"output's shape, with or without a leading k) for output layer "
                             f"{o} with {n_nodes} nodes, got shape {tuple(w.shape)}.")
        w = w.to(dtype=like.dtype, device=like.device)
        if not torch.isfinite(w).all():
            raise ValueError(f"{where} contains NaN or infinite values.")
        out.append(w)
    ks = {w.shape[0] for w in out if w is not None}
    if not ks:
        raise ValueError("`target_weights` gives no weights for any output layer.")
    if len(ks) > 1:
        raise ValueError(f"`target_weights` of all output layers must have the same number of "
                         f"rows k (columns of the result), got {[None if w is None else w.shape[0] for w in out]}.")
    return out


def _sparse_weights(entry: Tensor, n_nodes: int, where: str, like: Tensor) -> Tensor:
    """A sparse ``target_weights`` entry (COO, CSR, ...) as a coalesced COO tensor
    ``(k, n_nodes)`` on ``like``'s dtype and device."""
    w = entry.detach().to_sparse_coo().coalesce()
    if w.is_complex():
        raise TypeError(f"{where} must hold real numbers, got {describe(entry)}.")
    if w.ndim == 1 and w.shape[0] == n_nodes:
        w = w.unsqueeze(0).coalesce()
    if w.ndim != 2 or w.shape[1] != n_nodes or w.shape[0] == 0:
        raise ValueError(f"{where} is sparse and must have shape ({n_nodes},) or (k, {n_nodes}) "
                         f"for an output layer with {n_nodes} nodes, got shape "
                         f"{tuple(w.shape)}.")
    w = w.to(dtype=like.dtype, device=like.device)
    if not torch.isfinite(w.values()).all():
        raise ValueError(f"{where} contains NaN or infinite values.")
    return w
