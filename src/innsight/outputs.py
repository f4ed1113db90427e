"""Which output nodes a method explains or a plot shows: ``output_idx`` or ``output_label``.

One meaning everywhere (``run_*``, the direct ``torch_*`` methods, ``plot`` and
``plot_global``): an int or a label selects one node of the **first** output
layer, a flat list selects nodes of the first output layer, and a list with
one entry (an int, a label, a list of them, or ``None``) per output layer
selects per output layer. A node selected twice is refused.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from innsight._validation import describe, is_int

#: How many nodes of the first output layer are explained by default.
DEFAULT_N_OUTPUTS = 10


@dataclass(frozen=True)
class Target:
    """One explained output node: flat index ``index`` of output layer ``layer``."""

    layer: int
    index: int


class FlatLabels(Sequence):
    """Labels of the flattened nodes of one output layer (axis labels joined by ``_``),
    made when asked for: a language model's ``(tokens, vocab)`` output has millions."""

    def __init__(self, names: Sequence[Sequence[str]]) -> None:
        self.names = [list(axis) for axis in names]
        self.sizes = [len(axis) for axis in self.names]
        self.size = math.prod(self.sizes)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.size))]
        if not -self.size <= i < self.size:
            raise IndexError(f"label index {i} out of range for {self.size} nodes")
        position = np.unravel_index(i % self.size, self.sizes)
        return "_".join(axis[p] for axis, p in zip(self.names, position))

    def __iter__(self) -> Any:
        return ("_".join(combo) for combo in itertools.product(*self.names))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)


def flat_labels(names: Sequence[Sequence[str]]) -> Sequence[str]:
    """Labels of the flattened nodes of one output layer (axis labels joined by ``_``);
    an output without axes (one value per sample) is ``Y1``."""
    if not names:
        return ["Y1"]
    return FlatLabels(names)


@dataclass(frozen=True)
class OutputSelection:
    """Output nodes, per output layer: their flat indices and their labels (empty lists
    for output layers without selected nodes). ``computed`` marks the nodes a result
    was computed for (rather than every node of a model), for error messages."""

    indices: list[Sequence[int]]  # lists, or ranges for every node of a layer
    labels: list[Sequence[str]]
    computed: bool = False

    @classmethod
    def whole_model(cls, output_names: Sequence[Sequence[Sequence[str]]]) -> OutputSelection:
        """Every node of every output layer, labelled by ``output_names``."""
        labels = [flat_labels(names) for names in output_names]
        return cls([range(len(layer)) for layer in labels], labels, computed=False)

    @property
    def targets(self) -> list[Target]:
        """The selected nodes in order, output layer by output layer."""
        return [Target(o, j) for o, indices in enumerate(self.indices) for j in indices]

    def split(self, tensor: Tensor) -> list[Tensor | None]:
        """A tensor whose last axis runs over :attr:`targets` as one block per output
        layer (``None`` for output layers without selected nodes)."""
        blocks, start = [], 0
        for indices in self.indices:
            blocks.append(tensor[..., start:start + len(indices)] if indices else None)
            start += len(indices)
        return blocks

    def choose(self, output_idx: Any = None, output_label: Any = None,
               default: int | None = None) -> OutputSelection:
        """The nodes among these that ``output_idx`` (flat node indices) or
        ``output_label`` (labels) select, in the order asked.

        Without either: the first ``default`` nodes of the first output layer, or every
        node here when ``default`` is ``None``.
        """
        if output_idx is not None and output_label is not None:
            raise ValueError(
                "Give either `output_idx` or `output_label`, not both; got "
                f"output_idx={describe(output_idx)}, output_label={describe(output_label)}."
            )
        n_layers = len(self.indices)
        if output_idx is None and output_label is None:
            if default is None:
                return self
            wanted = [self.indices[0][:default]]
            arg_name, known = "output_idx", self.indices
        elif output_label is None:
            arg_name, known = "output_idx", self.indices
            wanted = [[int(i) for i in layer] for layer in
                      per_output_layer(output_idx, n_layers, "output_idx")]
        else:
            arg_name, known = "output_label", self.labels
            wanted = per_output_layer(output_label, n_layers, "output_label",
                                      hint=f" Labels are strings: in output layer 0 "
                                      f"{self._available(0, arg_name)}; `output_idx` selects "
                                      "by position.")
        wanted += [[] for _ in range(n_layers - len(wanted))]
        positions = []
        for o, nodes in enumerate(wanted):
            missing = [n for n in nodes if n not in known[o]]
            if missing:
                raise ValueError(f"`{arg_name}` {missing} not found in output layer {o}: "
                                 f"{self._available(o, arg_name)}.")
            if len(set(nodes)) != len(nodes):
                raise ValueError(f"`{arg_name}` has repeated output nodes in output layer {o}: "
                                 f"{nodes}.")
            positions.append([known[o].index(n) for n in nodes])
        if not any(positions):
            raise ValueError(f"`{arg_name}` selects no output node, got "
                             f"{describe(output_idx if output_label is None else output_label)}.")
        return OutputSelection([[self.indices[o][p] for p in pos] for o, pos in enumerate(positions)],
                               [[self.labels[o][p] for p in pos] for o, pos in enumerate(positions)],
                               self.computed)

    def positions_in(self, chosen: OutputSelection) -> list[list[int]]:
        """Where the nodes of ``chosen`` (a :meth:`choose` of this) sit among these."""
        return [[self.indices[o].index(j) for j in layer] for o, layer in enumerate(chosen.indices)]

    def _available(self, o: int, arg_name: str) -> str:
        """What may be selected in output layer ``o``, for error messages."""
        known = self.labels[o] if arg_name == "output_label" else self.indices[o]
        shown = f"{known[:20]}{' ...' if len(known) > 20 else ''}"
        if self.computed:
            return f"only {shown} were computed; rerun the method to explain others"
        if arg_name == "output_label":
            return f"its labels are {shown}"
        return f"it has {len(known)} nodes (valid: 0..{len(known) - 1})"


def per_output_layer(value: Any, n_layers: int, arg_name: str, hint: str = "") -> list[list[Any]]:
    """One selection (a scalar, a flat list for the first output layer, or a list with an
    entry per output layer) as lists per output layer; ints for ``output_idx``, labels
    (str) for ``output_label``. ``hint`` ends the TypeError of a value of another type."""
    def is_scalar(v: Any) -> bool:
        return is_int(v) if arg_name == "output_idx" else isinstance(v, str)

    if isinstance(value, np.ndarray) and value.ndim == 1:
        value = value.tolist()
    if is_scalar(value):
        return [[value]]
    if isinstance(value, (list, tuple)) and value and all(is_scalar(v) for v in value):
        return [list(value)]
    if isinstance(value, (list, tuple)) and value and all(
        v is None or is_scalar(v)
        or (isinstance(v, (list, tuple)) and all(is_scalar(e) for e in v)) for v in value
    ):
        if len(value) > n_layers:
            raise ValueError(
                f"`{arg_name}` has {len(value)} entries per output layer but the model has "
                f"{n_layers} output layer(s)."
            )
        return [[] if v is None else [v] if is_scalar(v) else list(v) for v in value]
    kind = "an int" if arg_name == "output_idx" else "a label (a str)"
    raise TypeError(
        f"`{arg_name}` must be {kind}, a list of them (first output layer), or one such "
        f"list (or None) per output layer; got {describe(value)}.{hint}"
    )
