"""Choosing the output nodes a method explains: ``output_idx`` or ``output_label``."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from innsight._validation import describe, is_int
from innsight.converter.names import Names

#: How many nodes of the first output layer are explained by default.
DEFAULT_N_OUTPUTS = 10


def flat_labels(names: Names) -> list[str]:
    """Labels of the flattened nodes of one output layer (axis labels joined by ``_``);
    an output without axes (one value per sample) is ``Y1``."""
    if not names:
        return ["Y1"]
    return ["_".join(combo) for combo in itertools.product(*names)]


def select_outputs(
    output_idx: Any,
    output_label: Any,
    output_dims: Sequence[tuple[int, ...]],
    output_names: Sequence[Names],
) -> list[list[int]]:
    """Per output layer, the flat indices of the selected nodes (empty: none selected).

    ``output_idx`` is an int, a list of ints (first output layer) or a list
    with one entry (an int, a list of ints or ``None``) per output layer;
    ``output_label`` selects by name in the same forms. Default: the first
    :data:`DEFAULT_N_OUTPUTS` nodes of the first output layer.
    """
    n_layers = len(output_dims)
    sizes = [math.prod(d) for d in output_dims]
    if output_idx is not None and output_label is not None:
        raise ValueError("Give either `output_idx` or `output_label`, not both.")
    if output_label is not None:
        labels = [flat_labels(names) for names in output_names]
        per_layer = per_output_layer(output_label, n_layers, str, "output_label")
        selected = []
        for layer, wanted in enumerate(per_layer):
            unknown = [w for w in wanted if w not in labels[layer]]
            if unknown:
                raise ValueError(
                    f"`output_label` {unknown} not found in output layer {layer}; its labels "
                    f"are {labels[layer][:20]}{' ...' if len(labels[layer]) > 20 else ''}."
                )
            selected.append([labels[layer].index(w) for w in wanted])
    elif output_idx is None:
        selected = [list(range(min(DEFAULT_N_OUTPUTS, sizes[0])))] + [[] for _ in sizes[1:]]
    else:
        selected = [[int(i) for i in ids] for ids in per_output_layer(output_idx, n_layers, int, "output_idx")]
        for layer, indices in enumerate(selected):
            bad = [i for i in indices if not 0 <= i < sizes[layer]]
            if bad:
                raise ValueError(
                    f"`output_idx` {bad} out of range for output layer {layer} with "
                    f"{sizes[layer]} nodes (valid: 0..{sizes[layer] - 1})."
                )
    selected += [[] for _ in range(n_layers - len(selected))]
    for layer, indices in enumerate(selected):
        if len(set(indices)) != len(indices):
            arg_name = "output_idx" if output_label is None else "output_label"
            raise ValueError(f"`{arg_name}` has repeated output nodes in output layer {layer}: {indices}.")
    if not any(selected):
        raise ValueError("`output_idx`/`output_label` select no output node.")
    return selected


def per_output_layer(value: Any, n_layers: int, kind: type, arg_name: str) -> list[list[Any]]:
    """Normalise one selection (a scalar, a list, or a list per layer) to lists per layer."""

    def is_scalar(v: Any) -> bool:
        return is_int(v) if kind is int else isinstance(v, str)

    if isinstance(value, np.ndarray) and value.ndim == 1:
        value = value.tolist()
    if is_scalar(value):
        return [[value]]
    if isinstance(value, (list, tuple)) and all(is_scalar(v) for v in value) and value:
        return [list(value)]
    if isinstance(value, (list, tuple)) and value and all(
        v is None or (isinstance(v, (list, tuple)) and all(is_scalar(e) for e in v))
        or is_scalar(v) for v in value
    ):
        if len(value) > n_layers:
            raise ValueError(
                f"`{arg_name}` has {len(value)} entries per output layer but the model has "
                f"{n_layers} output layer(s)."
            )
        return [[] if v is None else [v] if is_scalar(v) else list(v) for v in value]
    raise TypeError(
        f"`{arg_name}` must be {'an int' if kind is int else 'a label'}, a list of them, or one "
        f"such list (or None) per output layer; got {describe(value)}."
    )
