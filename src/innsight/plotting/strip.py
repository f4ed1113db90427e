"""``plot(layout="strip")``: sequence inputs as heat strips, one row per sample and node.

A one-axis input ``(tokens,)`` or a two-axis input ``(features, time)`` /
``(time, features)`` is a sequence; its values are aggregated over the features
(``aggr_channels``) and drawn as coloured cells along the sequence, wrapped into
lines as text is (see :mod:`innsight.plotting.tokens`). Where the sequence
positions have names of their own (tokens given as ``input_names``), each cell
shows its name; default names (``X1``, ``L1``, ...) leave plain cells.
"""

from __future__ import annotations

import re
from dataclasses import fields, replace
from typing import Any

import numpy as np

from innsight._validation import describe, is_int
from innsight.methods.result import Result
from innsight.plotting.selection import Panel
from innsight.plotting.tokens import TokenLayout, token_layout

STRIP = "strip"


def along_sequence(result: Result, sequence_axis: int | None) -> Result:
    """``result`` with every two-axis input held as ``(features, sequence)`` (channels
    first), the layout the signal panels aggregate; ``sequence_axis`` is the sequence
    axis of one sample in the data's layout (``get_result()``), ``None`` the signal
    axis (``L`` of ``(C, L)``). Other inputs are unchanged."""
    if sequence_axis is None:
        return result
    if not is_int(sequence_axis) or isinstance(sequence_axis, bool) or sequence_axis not in (0, 1):
        raise ValueError("`sequence_axis` must be 0, 1 (the sequence axis of a two-axis sample "
                         f"in the data's layout) or None, got {describe(sequence_axis)}.")
    held = sequence_axis if result.channels_first else 1 - sequence_axis  # channels first
    if held == 1:
        return result

    def swap(v: Any, rank: int) -> Any:  # (n, A, B, ...) -> (n, B, A, ...) for two-axis samples
        return v.transpose(1, 2) if rank == 2 else v

    ranks = [len(names) for names in result.input_names]
    values = [None if layer is None else [swap(v, r) for v, r in zip(layer, ranks)]
              for layer in result.values]
    names = [names[::-1] if r == 2 else names for names, r in zip(result.input_names, ranks)]
    data = None if result.data is None else [swap(x, r) for x, r in zip(result.data, ranks)]
    kept = {f.name: getattr(result, f.name) for f in fields(Result) if f.init}
    swapped = Result(**{**kept, "values": values, "input_names": names, "data": data})
    if hasattr(result, "setup"):  # how the info box names the prediction
        swapped.setup = result.setup  # type: ignore[attr-defined]
    return swapped


def as_strip(panel: Panel) -> Panel:
    """A tabular or aggregated signal panel as a strip panel (values ``(n, L, nodes)``)."""
    if panel.kind == "image":
        raise ValueError("`layout='strip'` draws sequence inputs (one or two axes per sample), "
                         f"but input layer {panel.input_layer} holds images; use layout='facets'.")
    if panel.array.ndim != 3:
        raise ValueError("`layout='strip'` draws one value per sequence position: give "
                         "`aggr_channels` ('sum', 'mean', 'norm' or a callable), not None.")
    return replace(panel, kind=STRIP)


def named(labels: list[str]) -> bool:
    """Whether position labels are names of their own, not numbered defaults (``L1``, ``L2``, ...)."""
    match = re.fullmatch(r"([A-Za-z_]*)1", labels[0]) if labels else None
    return match is None or labels != [f"{match.group(1)}{i + 1}" for i in range(len(labels))]


def strip_layout(panel: Panel, limits: tuple[float, float] | None, show_preds: bool) -> TokenLayout:
    """The token layout of a strip panel: rows sample by sample, node by node, named
    ``"sample d · node"`` and, with ``show_preds``, the info box's text."""
    n, length, nodes = panel.array.shape
    values = np.nan_to_num(panel.array.transpose(0, 2, 1).reshape(n * nodes, length))
    texts = panel.facets["text"].to_numpy() if show_preds else [""] * (n * nodes)
    labels = [f"sample {d} · {node}" for d in panel.data_ids for node in panel.node_labels]
    labels = [f"{label}   ({text.replace(chr(10), ', ')})" if text else label
              for label, text in zip(labels, texts)]
    return token_layout(values, panel.x_labels if named(panel.x_labels) else None, labels,
                        limit=None if limits is None else limits[1])
