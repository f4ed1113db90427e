"""Layouts of local plots: facets of values, or each input image beside its heatmaps.

``layout="facets"`` (the default) draws one facet per sample and output node.
``layout="side_by_side"`` puts each sample's input image, in greys, into a first
facet column named :data:`INPUT_COLUMN`, followed by its heatmaps, one row per
sample (as Captum's ``visualize_image_attr_multiple`` shows an image beside its
attribution). Both renderers draw that column from :attr:`Panel.beside`.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from innsight._validation import describe
from innsight.plotting.selection import MAX_FACETS, Panel, n_facets

LAYOUTS = ("facets", "side_by_side", "strip")
#: The facet column that holds the input images in the side-by-side layout.
INPUT_COLUMN = "input"


def check_layout(layout: object, panels: list[Panel]) -> str:
    """``layout`` checked against the panels it would lay out."""
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise ValueError(f"`layout` must be one of {list(LAYOUTS)}, got {describe(layout)}.")
    if layout == "side_by_side":
        images = [p for p in panels if p.kind == "image"]
        if not images:
            raise ValueError("`layout='side_by_side'` puts each input image beside its heatmaps, "
                             f"but the inputs shown are {sorted({p.kind for p in panels})}; use "
                             "layout='facets' (show_input=True draws tabular and signal inputs).")
        crowded = [p for p in images if n_facets(p) + len(p.data_ids) > MAX_FACETS]
        if crowded:
            raise ValueError(f"`layout='side_by_side'` draws at most {MAX_FACETS} facets per input "
                             f"layer, got {len(crowded[0].data_ids)} samples x "
                             f"{len(crowded[0].node_labels) + 1} columns; select fewer with "
                             "`data_idx`/`output_idx`.")
    return layout


def input_beside(panel: Panel, overlay: bool) -> Panel:
    """An image panel with the grey levels of its samples' inputs (``panel.inputs``,
    ``(n, H, W)``) as a first facet column :data:`INPUT_COLUMN` (values NaN there, no
    info box); the values stay over the input too where ``overlay``. Other kinds keep
    their inputs only where ``overlay``."""
    if panel.kind != "image":
        return replace(panel, inputs=panel.inputs if overlay else None)
    images = panel.inputs
    labels = [INPUT_COLUMN, *panel.node_labels]
    empty = np.full((*panel.array.shape[:-1], 1), np.nan)
    facets = pd.DataFrame({"data": panel.data_ids, "output_node": INPUT_COLUMN, "pred": np.nan,
                           "decomp_sum": np.nan, "decomp_goal": np.nan, "text": ""})
    facets = pd.concat([facets, panel.facets], ignore_index=True)
    facets["output_node"] = pd.Categorical(facets["output_node"].astype(str), categories=labels)
    position = facets["data"].map({d: i for i, d in enumerate(panel.data_ids)}).to_numpy()
    facets = facets.iloc[np.lexsort((facets["output_node"].cat.codes.to_numpy(), position))]
    frame = panel.frame.assign(output_node=pd.Categorical(
        panel.frame["output_node"].astype(str), categories=labels))
    return replace(panel, node_labels=labels, array=np.concatenate([empty, panel.array], axis=-1),
                   facets=facets.reset_index(drop=True), frame=frame, beside=images,
                   inputs=panel.inputs if overlay else None)
