"""Default and user-given labels for the axes of input and output layers.

Names of one layer are a list of label lists, one per axis: an image input
``(3, 32, 32)`` gets ``[["C1", "C2", "C3"], ["H1", ...], ["W1", ...]]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from innsight._validation import describe

Names = list[list[str]]

#: Axis letters of a sample by its rank (channels first).
_AXIS_LETTERS = {1: ("X",), 2: ("C", "L"), 3: ("C", "H", "W"), 4: ("C", "D", "H", "W")}


def default_names(dim: tuple[int, ...], output: bool = False) -> Names:
    """Labels ``X1..Xp`` (tabular), ``C/L`` (signals), ``C/H/W`` (images), outputs ``Y1..``."""
    letters = list(_AXIS_LETTERS.get(len(dim), [f"A{i + 1}_" for i in range(len(dim))]))
    if output and letters:
        letters[0] = "Y"
    return [[f"{letter}{i + 1}" for i in range(size)] for letter, size in zip(letters, dim)]


def check_names(
    names: Any, dims: Sequence[tuple[int, ...]], arg_name: str
) -> list[Names]:
    """Bring user labels to one list of label lists per layer and check their lengths.

    Accepted forms: a list of labels (one layer with one axis), a list of label
    lists (one layer: one list per axis; several one-axis layers: one list per
    layer), or a list over layers of lists of label lists.
    """
    if isinstance(names, str):
        raise TypeError(f"`{arg_name}` must be a list of labels (one list per axis), got the string {names!r}.")
    nested = _to_lists(names, arg_name)
    depth = _depth(nested, arg_name)
    if depth > 3:
        raise ValueError(
            f"`{arg_name}` is nested {depth} lists deep; expected at most 3 "
            "(layers, axes, labels)."
        )
    if depth == 1:
        nested = [[nested]]
    elif depth == 2:
        nested = [nested] if len(dims) == 1 else [[axis] for axis in nested]
    if len(nested) != len(dims):
        raise ValueError(
            f"`{arg_name}` gives labels for {len(nested)} layer(s) but the model has "
            f"{len(dims)}: shapes {[list(d) for d in dims]}."
        )
    for layer, (layer_names, dim) in enumerate(zip(nested, dims)):
        sizes = [len(axis) for axis in layer_names]
        if sizes != list(dim):
            raise ValueError(
                f"`{arg_name}` for layer {layer} has label counts {sizes} per axis, "
                f"but that layer's shape is {list(dim)}."
            )
    return nested


def _to_lists(value: Any, arg_name: str) -> Any:
    """Nested lists of str from lists, tuples, numpy arrays or pandas Index objects."""
    if isinstance(value, str):
        return value
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple)):
        value = value.tolist()  # numpy arrays, pandas Index objects
    if isinstance(value, (list, tuple)) and value:
        return [_to_lists(v, arg_name) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise TypeError(
        f"`{arg_name}` must hold labels (str) in lists, got {describe(value)}."
    )


def _depth(value: Any, arg_name: str) -> int:
    if isinstance(value, str):
        return 0
    depths = {_depth(v, arg_name) for v in value}
    if len(depths) != 1:
        raise ValueError(
            f"`{arg_name}` must be nested evenly: each list holds either labels or "
            "lists, not both."
        )
    return depths.pop() + 1
