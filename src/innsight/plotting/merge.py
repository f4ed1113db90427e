"""Panels of several named results merged into one set, to draw them side by side.

Each result gives its panels (one per output layer and input layer, see
:mod:`innsight.plotting.selection`); the panels at the same position are merged
into one whose facet columns are the output nodes of every result, labelled
``"<node> (<name>)"`` and ordered node by node, result by result (``"Y1 (torch)"``,
``"Y1 (onnx)"``, ``"Y2 (torch)"``, ...). Both renderers then draw the merged
panels as they draw one result's.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from innsight.plotting.selection import Panel


def merge_panels(per_result: dict[str, list[Panel]]) -> list[Panel]:
    """The panels of every named result, merged per (output layer, input layer).

    Parameters
    ----------
    per_result : dict of str to list of Panel
        Each result's panels, in the same order and of the same shapes for all
        results (the same selection of samples and as many output nodes).

    Returns
    -------
    list of Panel
        One panel per position, with ``node_labels`` ``"<node> (<name>)"`` (each
        result keeps its own node labels, e.g. scikit-learn's classes beside
        torch's ``Y1``), ``array`` ``(..., n_nodes * n_results)``, node-major, and
        ``group`` the number of results (facet rows wrap between nodes, never
        inside one).

    Raises
    ------
    ValueError
        Where the results' panels differ in number, layers, kind, samples or shape,
        or carry inputs (``show_input``) that differ: a merged panel draws one input
        under every result's values.
    """
    _check_alike(per_result)
    merged = []
    for position, first in enumerate(next(iter(per_result.values()))):
        parts = {name: panels[position] for name, panels in per_result.items()}
        _check_same_inputs(parts)
        labels = [f"{panel.node_labels[i]} ({name})"
                  for i in range(len(first.node_labels)) for name, panel in parts.items()]
        frames = [_relabel(panel.frame, name, labels) for name, panel in parts.items()]
        facets = [_relabel(panel.facets, name, labels) for name, panel in parts.items()]
        # (..., n_nodes) per result -> (..., n_nodes, n_results) -> (..., n_nodes * n_results)
        array = np.stack([panel.array for panel in parts.values()], axis=-1)
        array = array.reshape(*array.shape[:-2], len(labels))
        highlight = None if first.highlight is None else np.stack(
            [panel.highlight for panel in parts.values()], axis=-1)
        if highlight is not None:  # as the array: node-major
            highlight = highlight.reshape(*highlight.shape[:-2], len(labels))
        merged.append(replace(first, frame=pd.concat(frames, ignore_index=True),
                              highlight=highlight,
                              facets=_in_facet_order(pd.concat(facets, ignore_index=True),
                                                     first.data_ids),
                              node_labels=labels, array=array, group=len(parts)))
    return merged


def _layout(panels: list[Panel]) -> list[tuple[int, int, str, list[int], tuple[int, ...]]]:
    """What must agree for panels to be merged: layers, kind, samples and shape."""
    return [(p.output_layer, p.input_layer, p.kind, p.data_ids, p.array.shape) for p in panels]


def _check_alike(per_result: dict[str, list[Panel]]) -> None:
    layouts = {name: _layout(panels) for name, panels in per_result.items()}
    first = next(iter(layouts.values()))
    if any(layout != first for layout in layouts.values()):
        listing = "; ".join(
            f"{name}: " + ", ".join(f"output layer {o} x input layer {k} ({kind}, samples "
                                    f"{ids}, shape {shape})" for o, k, kind, ids, shape in layout)
            for name, layout in layouts.items())
        raise ValueError("`result` must hold results of the same input and output shapes "
                         "with as many selected output nodes each to be drawn side by side, "
                         f"got {listing}.")


def _check_same_inputs(parts: dict[str, Panel]) -> None:
    first = next(iter(parts.values())).inputs
    if first is None:
        return
    differ = [name for name, panel in parts.items() if not np.array_equal(panel.inputs, first)]
    if differ:
        raise ValueError(f"`show_input=True` draws one input under all results, but {differ} "
                         f"explain other data than {next(iter(parts))!r}; plot them with "
                         "show_input=False or one by one.")


def _in_facet_order(facets: pd.DataFrame, data_ids: list[int]) -> pd.DataFrame:
    """Facet rows sample by sample, node by node in the merged order, as in one result's
    panel (the plotly renderer reads them by position)."""
    position = facets["data"].map({d: i for i, d in enumerate(data_ids)})
    order = np.lexsort((facets["output_node"].cat.codes.to_numpy(), position.to_numpy()))
    return facets.iloc[order].reset_index(drop=True)


def _relabel(frame: pd.DataFrame, name: str, labels: list[str]) -> pd.DataFrame:
    """``frame`` with ``output_node`` as ``"<node> (<name>)"`` from the merged labels."""
    nodes = frame["output_node"].astype(str) + f" ({name})"
    return frame.assign(output_node=pd.Categorical(nodes, categories=labels))
