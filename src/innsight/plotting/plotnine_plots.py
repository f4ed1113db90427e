"""Static plots of panels with plotnine: one ggplot per panel, composed into a grid.

Panels of several input layers stand side by side (``|``), output layers are
stacked (``/``); a single panel is a plain ``ggplot``. Nothing is drawn until
the caller saves or shows the returned object.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import plotnine as p9
from plotnine.composition import Beside, Stack

from innsight.plotting.colours import (
    HIGHLIGHT,
    INPUT_DARKEST,
    LINE_MIDDLE,
    MIDDLE,
    NEGATIVE,
    OVERLAY_NEGATIVE,
    OVERLAY_POSITIVE,
    POSITIVE,
    overlay_opacity,
)
from innsight.plotting.layout import INPUT_COLUMN
from innsight.plotting.selection import (
    Panel,
    axis_titles,
    facet_cell,
    facet_columns,
    highlight_frame,
    input_frame,
    is_mosaic,
    is_wrapped,
    mosaic,
    nonnegative,
)
from innsight.plotting.strip import STRIP, strip_layout
from innsight.plotting.tokens import TokenLayout, text_colours

#: At most this many tick labels per axis (tabular bars are labelled one by one).
TICKS = {"tabular": 30, "signal": 8, "image": 5}
PANEL_INCHES = 2.2
MAX_INCHES = 25.0  # plotnine refuses to save larger figures by default


def _breaks(labels: list[str], max_ticks: int) -> tuple[list[int], list[str]]:
    """At most ``max_ticks`` evenly spaced tick positions (1-based) and their labels."""
    step = max(1, math.ceil(len(labels) / max_ticks))
    positions = list(range(1, len(labels) + 1, step))
    return positions, [labels[p - 1] for p in positions]


def _x_scale(panel: Panel) -> p9.scale_x_continuous:
    positions, labels = _breaks(panel.x_labels, TICKS[panel.kind])
    expand = (0, 0) if panel.kind == "image" else None
    return p9.scale_x_continuous(breaks=positions, labels=labels, expand=expand)


def _y_image_scale(panel: Panel) -> p9.scale_y_continuous:
    y_labels = panel.y_labels or []
    n = len(y_labels)
    positions, labels = _breaks(y_labels, TICKS["image"])
    return p9.scale_y_continuous(breaks=[n + 1 - p for p in positions], labels=labels,
                                 expand=(0, 0))


def _fill_scale(name: str, limits: tuple[float, float] | None, sequential: bool) -> Any:
    """Diverging fill centred on 0, or sequential from 0 for values that are all >= 0."""
    if sequential:
        return p9.scale_fill_gradient(low=MIDDLE, high=POSITIVE, limits=limits or (0, None),
                                      name=name)
    return p9.scale_fill_gradient2(low=NEGATIVE, mid=MIDDLE, high=POSITIVE, midpoint=0,
                                   limits=limits, name=name)


def _sequential(panel: Panel, limits: tuple[float, float] | None) -> bool:
    return limits[0] >= 0 if limits is not None else nonnegative(panel)


def _size(n_rows: int, n_cols: int) -> tuple[float, float]:
    """Figure inches for a grid of facets (legend and labels included)."""
    return (min(MAX_INCHES, 2.6 + PANEL_INCHES * n_cols),
            min(MAX_INCHES, 1.2 + PANEL_INCHES * 0.9 * n_rows))


def _theme(panel: Panel, per_sample: bool) -> p9.theme:
    """Size by the facet grid; long or many x labels are turned."""
    n_rows, n_cols = _grid(panel, per_sample)
    # turn the x tick labels when those shown would not fit side by side (7 pt text:
    # about 36 characters across a panel)
    shown = _breaks(panel.x_labels, TICKS[panel.kind])[1]
    turn = sum(len(s) + 1 for s in shown) > 36
    # heatmaps keep the image's proportions
    aspect = {"aspect_ratio": len(panel.y_labels or []) / len(panel.x_labels)} if panel.kind == "image" else {}
    return p9.theme_bw() + p9.theme(**aspect,
        figure_size=_size(n_rows, n_cols),
        axis_text_x=p9.element_text(rotation=90 if turn else 0, size=7),
        axis_text_y=p9.element_text(size=7),
        strip_text=p9.element_text(size=8),
        panel_grid_minor=p9.element_blank(),
        # grid lines would show through the light parts of an input image
        **({"panel_grid_major": p9.element_blank()} if panel.kind == "image" else {}),
    )


def _sample_label(value: str) -> str:
    return "mean" if value == "-1" else f"sample {value}"


def _grid(panel: Panel, per_sample: bool) -> tuple[int, int]:
    """Rows and columns of a panel's facets (see :func:`facet_cell`)."""
    samples = len(panel.data_ids) if per_sample else 1
    last = facet_cell(panel, samples - 1, len(panel.node_labels) - 1)[0]
    return last + 1, min(len(panel.node_labels), facet_columns(panel))


def _facet(panel: Panel, free_y: bool, rows: bool = True) -> Any:
    """Samples down and nodes across; many nodes wrap into rows of whole nodes."""
    scales = "free_y" if free_y else "fixed"
    if is_wrapped(panel):
        return p9.facet_wrap(["data", "output_node"] if rows else "output_node",
                             ncol=facet_columns(panel), scales=scales,
                             labeller=p9.labeller(data=_sample_label))
    return p9.facet_grid("data ~ output_node" if rows else ". ~ output_node", scales=scales,
                         labeller=p9.labeller(rows=_sample_label))


def _title(panel: Panel, several_in: bool, several_out: bool) -> str:
    parts = ([f"output layer {panel.output_layer}"] if several_out else []) + \
            ([f"input layer {panel.input_layer}"] if several_in else [])
    return ", ".join(parts)


def _heat_layers(frame: pd.DataFrame, value_name: str, limits: tuple[float, float] | None,
                 sequential: bool) -> list[Any]:
    """Raster layers of a frame with ``x``, ``y``, ``value`` and maybe ``input`` (grey
    levels): the heatmap, or the image in light greys with the values over it in the
    full colour of their sign, each as opaque as its magnitude against the largest one
    shown (see :mod:`innsight.plotting.colours`)."""
    if "input" not in frame:
        return [p9.geom_raster(p9.aes(fill="value")), _fill_scale(value_name, limits, sequential)]
    magnitude = np.abs(frame["value"].to_numpy())
    bound = limits[1] if limits is not None else float(np.nanmax(magnitude, initial=0.0)) or 1.0
    frame = frame.assign(shade=(1.0 - INPUT_DARKEST) * (1.0 - frame["input"]),
                         opacity=overlay_opacity(np.minimum(magnitude / bound, 1.0)))
    # black at opacity (1 - INPUT_DARKEST) (1 - grey) on the white panel draws the image
    # in greys from INPUT_DARKEST to white; the colour bar shows the sign's colour, the
    # opacity the magnitude
    colours = [OVERLAY_POSITIVE] * 2 if sequential else [OVERLAY_NEGATIVE] * 2 + [OVERLAY_POSITIVE] * 2
    return [p9.geom_raster(frame, p9.aes(alpha="shade"), fill="black"),
            p9.geom_raster(frame, p9.aes(fill="value", alpha="opacity")),
            p9.scale_alpha_identity(),
            p9.scale_fill_gradientn(colors=colours, values=None if sequential else [0, 0.5, 0.5, 1],
                                    limits=(0 if sequential else -bound, bound),
                                    name=f"{value_name}\n(opacity: |value|)")]


def _beside_layers(panel: Panel) -> list[Any]:
    """The input images of ``layout="side_by_side"`` in their facet column: black at
    opacity ``1 - grey`` over the white panel, so greys go from black to white."""
    if panel.beside is None:
        return []
    height = panel.beside.shape[1]
    sample, row, col = np.indices(panel.beside.shape).reshape(3, -1)
    frame = pd.DataFrame({
        "data": np.asarray(panel.data_ids)[sample], "x": col + 1, "y": height - row,
        "output_node": pd.Categorical([INPUT_COLUMN] * len(sample), categories=panel.node_labels),
        "shade": 1.0 - panel.beside.ravel()})
    # the values over the input (show_input) bring their own identity scale of alpha
    scale = [p9.scale_alpha_identity()] if panel.inputs is None else []
    return [p9.geom_raster(frame, p9.aes(alpha="shade"), fill="black"), *scale]


def _mosaic(panel: Panel, value_name: str, limits: tuple[float, float] | None) -> p9.ggplot:
    """All heatmaps of an image panel as one raster, samples down, output nodes across,
    split by grey lines (one matplotlib image instead of hundreds of facets)."""
    tiles = mosaic(panel.array)
    n, height, width, nodes = panel.array.shape
    rows, cols = np.indices(tiles.shape)
    frame = pd.DataFrame({"x": cols.ravel() + 1, "y": tiles.shape[0] - rows.ravel(),
                          "value": tiles.ravel()})
    if panel.inputs is not None:
        frame["input"] = mosaic(np.broadcast_to(panel.inputs[..., None], panel.array.shape)).ravel()
    samples = [_sample_label(str(d)) for d in panel.data_ids]
    y_pos, y_lab = _breaks(samples, 25)
    tile = min(0.8, (MAX_INCHES - 1.5) / n, (MAX_INCHES - 2.5) / nodes)
    return (p9.ggplot(frame, p9.aes("x", "y"))
            + _heat_layers(frame, value_name, limits, _sequential(panel, limits))
            + p9.geom_vline(xintercept=[j * width + 0.5 for j in range(1, nodes)], color="#999999", size=0.3)
            + p9.geom_hline(yintercept=[i * height + 0.5 for i in range(1, n)], color="#999999", size=0.3)
            + p9.scale_x_continuous(breaks=[j * width + (width + 1) / 2 for j in range(nodes)],
                                    labels=panel.node_labels, expand=(0, 0))
            + p9.scale_y_continuous(breaks=[(n - p) * height + (height + 1) / 2 for p in y_pos],
                                    labels=y_lab, expand=(0, 0))
            + p9.coord_fixed() + _labs(panel, value_name)
            + p9.theme_bw() + p9.theme(
                figure_size=(2.5 + tile * nodes, 1.5 + tile * n),
                axis_text_x=p9.element_text(rotation=90 if nodes > 6 else 0, size=7),
                axis_text_y=p9.element_text(size=7), panel_grid=p9.element_blank()))


def _labs(panel: Panel, value_name: str) -> p9.labs:
    x, y = axis_titles(panel, value_name)
    return p9.labs(x=x, y=y)


def _local(panel: Panel, value_name: str, limits: tuple[float, float] | None,
           show_preds: bool, per_sample: bool = True) -> p9.ggplot:
    """One sample's values per facet: bars (tabular), lines (signals), heatmap (images);
    strips (``layout="strip"``) as rows of coloured cells."""
    if panel.kind == STRIP:
        return plot_tokens(strip_layout(panel, limits, show_preds), value_name, "")
    if is_mosaic(panel):
        return _mosaic(panel, value_name, limits)
    frame = panel.frame if panel.inputs is None else input_frame(panel)
    if panel.kind == "image":
        plot = (p9.ggplot(frame, p9.aes("x", "y")) + _beside_layers(panel)
                + _heat_layers(frame, value_name, limits, _sequential(panel, limits))
                + _y_image_scale(panel))
    elif panel.kind == "signal" and panel.inputs is not None:
        # the input signal of each channel, coloured by the values along it
        channels = len(panel.channel_labels or [])
        kinds = {"linetype": "channel"} if 1 < channels <= 4 else {}
        plot = (p9.ggplot(frame, p9.aes("x", "input", color="value", group="channel", **kinds))
                + p9.geom_line(size=0.8)
                + p9.scale_color_gradient2(low=NEGATIVE, mid=LINE_MIDDLE, high=POSITIVE,
                                           midpoint=0, limits=limits, name=value_name))
    elif panel.kind == "signal":
        kept = (frame["channel"] != "aggregated").any()
        line = p9.geom_line() if kept else p9.geom_line(color=NEGATIVE)
        plot = (p9.ggplot(frame, p9.aes("x", "value", color="channel", group="channel"))
                + p9.geom_hline(yintercept=0, color="grey") + line)
    else:
        frame = frame.assign(sign=pd.Categorical(np.where(frame["value"] >= 0, "positive", "negative"),
                                                 categories=["positive", "negative"]))
        plot = (p9.ggplot(frame, p9.aes("x", "value", fill="sign")) + p9.geom_col()
                + p9.scale_fill_manual(values={"positive": POSITIVE, "negative": NEGATIVE}))
        if panel.inputs is not None:  # each feature's input at the tip of its bar
            texts = frame.assign(label=[f"{v:.3g}" for v in frame["input"]])
            plot += [p9.geom_text(texts[side], p9.aes(label="label"), va=va, size=5, color="#4d4d4d")
                     for side, va in ((texts["value"] >= 0, "bottom"), (texts["value"] < 0, "top"))]
    if panel.kind == "tabular" or panel.kind == "signal" and panel.inputs is None:
        # room at the top for the annotation
        plot += p9.scale_y_continuous(limits=limits, expand=(0.05, 0, 0.3 if show_preds else 0.05, 0))
    elif panel.kind == "signal":  # the y axis is the input's; the values are colours
        plot += p9.scale_y_continuous(expand=(0.05, 0, 0.3 if show_preds else 0.05, 0))
    plot += [_x_scale(panel), _labs(panel, value_name)]
    # inputs along a signal differ by sample, whatever the values' scale
    coloured_line = panel.kind == "signal" and panel.inputs is not None
    plot += _facet(panel, free_y=panel.kind != "image" and (limits is None or coloured_line),
                   # no row strip for a mean heatmap or a result without data
                   rows=panel.data_ids != [-1] and (panel.has_data or len(panel.data_ids) > 1))
    if show_preds:
        # a leading space keeps the text clear of the panel edge, which clips the box
        texts = panel.facets[panel.facets["text"] != ""]  # none on input images beside
        texts = texts.assign(text=" " + texts["text"].str.replace("\n", "\n "))
        plot += p9.geom_label(texts, p9.aes(label="text"), x=-np.inf, y=np.inf, ha="left",
                              va="top", size=5.5, alpha=0.7, inherit_aes=False,
                              label_padding=0.1, label_size=0)
    return plot + _theme(panel, per_sample)


def _global(panel: Panel, value_name: str, limits: tuple[float, float] | None,
            show_preds: bool) -> p9.ggplot:
    """Box plots per feature (tabular, signals) or the mean heatmap (images)."""
    if panel.kind == "image":
        return _local(panel, f"mean {value_name}", limits, show_preds=False, per_sample=False)
    kept = panel.kind == "signal" and (panel.frame["channel"] != "aggregated").any()
    colour = {"color": "channel"} if kept else {}
    keep = set(_breaks(panel.x_labels, TICKS[panel.kind])[0])
    plot = (p9.ggplot(panel.frame, p9.aes("factor(x)", "value", **colour))
            # one sample (ConnectionWeights without data): its values, a box would be a line
            + (p9.geom_boxplot(outlier_size=0.6) if len(panel.data_ids) > 1
               else p9.geom_col(p9.aes(group=1 if not kept else "channel"), fill="#4d4d4d",
                                position="dodge"))
            + p9.scale_x_discrete(labels=lambda xs: [
                panel.x_labels[int(float(x)) - 1] if int(float(x)) in keep else "" for x in xs])
            + _labs(panel, value_name) + _facet(panel, free_y=True, rows=False))
    return plot + _highlight_layers(panel) + _theme(panel, per_sample=False)


def _highlight_layers(panel: Panel) -> list[Any]:
    """``plot_global(ref_data_idx=...)``: the sample's values as orange points over the
    boxes, joined along signals, named in the caption."""
    if panel.highlight is None:
        return []
    frame = highlight_frame(panel)
    group = {"group": "channel"} if "channel" in frame else {"group": 1}
    line = [p9.geom_line(frame, p9.aes("factor(x)", "value", **group), color=HIGHLIGHT,
                         inherit_aes=False, size=0.6)] if panel.kind == "signal" else []
    return [*line, p9.geom_point(frame, p9.aes("factor(x)", "value"), color=HIGHLIGHT,
                                 inherit_aes=False, size=1.8),
            p9.labs(caption=f"orange: sample {panel.highlight_id}")]


def _compose(panels: list[Panel], draw: Callable[[Panel], p9.ggplot], title: str) -> Any:
    """One ggplot, or a composition: input layers beside, output layers stacked."""
    several_in = len({p.input_layer for p in panels}) > 1
    several_out = len({p.output_layer for p in panels}) > 1
    rows: dict[int, list[p9.ggplot]] = {}
    for panel in panels:
        sub = _title(panel, several_in, several_out)
        rows.setdefault(panel.output_layer, []).append(
            draw(panel) + p9.ggtitle(f"{title}: {sub}" if sub else title))
    if len(panels) == 1:
        return rows[panels[0].output_layer][0]
    composed_rows, width, height = [], 0.0, 0.0
    for plots in rows.values():
        sizes = [plot.theme.getp("figure_size") for plot in plots]
        width, height = max(width, sum(w for w, _ in sizes)), height + max(h for _, h in sizes)
        composed_rows.append(plots[0] if len(plots) == 1 else Beside(plots))
    figure = composed_rows[0] if len(composed_rows) == 1 else Stack(composed_rows)
    # the composition takes its size from its last plot's theme
    return figure + p9.theme(figure_size=(min(MAX_INCHES, width), min(MAX_INCHES, height)))


def plot_local(panels: list[Panel], value_name: str, method: str,
               limits: Callable[[Panel], tuple[float, float] | None], show_preds: bool) -> Any:
    """The plotnine figure of :func:`innsight.plotting.plot`."""
    return _compose(panels, lambda p: _local(p, value_name, limits(p), show_preds), method)


def plot_global(panels: list[Panel], value_name: str, method: str,
                limits: Callable[[Panel], tuple[float, float] | None]) -> Any:
    """The plotnine figure of :func:`innsight.plotting.plot_global`."""
    return _compose(panels, lambda p: _global(p, value_name, limits(p), False), method)


#: Token plots: the largest text size (pt) and line height (in text sizes).
TOKEN_TEXT_PT, TOKEN_LINE = 8.0, 2.2
#: Inches besides the lines: the colour bar and margins across, title and strips down.
TOKEN_MARGIN_IN, TOKEN_TOP_IN, TOKEN_STRIP_IN = 1.9, 0.8, 0.3
#: The least height (inches) that holds the colour bar and its title.
TOKEN_MIN_HEIGHT_IN = 2.4


def _literal(text: str) -> str:
    """Text that matplotlib draws as it is: a ``$`` would start its math mode."""
    return text.replace("$", r"\$")


def _token_size(layout: TokenLayout) -> tuple[float, tuple[float, float]]:
    """Text size (pt) and figure inches: monospace characters fill their cells (a
    character is 0.6 text sizes wide); the text shrinks to keep within MAX_INCHES."""
    rows = len(layout.row_labels)
    across = (MAX_INCHES - TOKEN_MARGIN_IN) * 72 / (0.6 * layout.span)
    down = (MAX_INCHES - TOKEN_TOP_IN - TOKEN_STRIP_IN * rows) * 72 / (TOKEN_LINE * layout.n_lines)
    size = max(1.0, min(TOKEN_TEXT_PT, across, down))
    return size, (TOKEN_MARGIN_IN + 0.6 * size * layout.span / 72,
                  max(TOKEN_MIN_HEIGHT_IN, TOKEN_TOP_IN + TOKEN_STRIP_IN * rows
                      + TOKEN_LINE * size * layout.n_lines / 72))


def plot_tokens(layout: TokenLayout, value_name: str, title: str) -> p9.ggplot:
    """The tokens of a layout as coloured tiles with their text, one facet per row,
    lines top down (see :mod:`innsight.plotting.tokens`)."""
    size, figure_size = _token_size(layout)
    frame = layout.frame
    inset = 0.04 if layout.has_text else 0.0  # heat strips without text: no gaps
    y = -(frame["line"] % layout.lines_per_row)  # each facet's lines, top down
    frame = frame.assign(y=y, bottom=y - 0.45, top=y + 0.45, left=frame["x0"] + inset,
                         right=frame["x1"] - inset, middle=(frame["x0"] + frame["x1"]) / 2,
                         ink=text_colours(frame["shade"].to_numpy()),
                         label=[_literal(t) for t in frame["token"]])
    plot = (p9.ggplot(frame)
            + p9.geom_rect(p9.aes(xmin="left", xmax="right", ymin="bottom", ymax="top",
                                  fill="value"))
            + p9.scale_fill_gradient2(low=NEGATIVE, mid=MIDDLE, high=POSITIVE, midpoint=0,
                                      limits=(-layout.limit, layout.limit), name=value_name)
            + p9.scale_x_continuous(limits=(0, layout.span), expand=(0, 0.2))
            + p9.scale_y_continuous(expand=(0, 0.1))
            + p9.facet_wrap("row", ncol=1, scales="free_y", labeller=p9.as_labeller(_literal))
            + p9.labs(title=title, x="", y="")
            + p9.theme_bw() + p9.theme(
                figure_size=figure_size, axis_text=p9.element_blank(),
                axis_ticks=p9.element_blank(), panel_grid=p9.element_blank(),
                strip_text_x=p9.element_text(size=8, ha="left"),
                strip_background=p9.element_rect(fill="#eeeeee")))
    if layout.has_text:
        plot += [p9.geom_text(p9.aes("middle", "y", label="label", color="ink"), size=size,
                              family="monospace"), p9.scale_color_identity()]
    return plot
