"""Interactive plots of panels with plotly (the ``plotly`` extra).

One figure of subplots: a row per (output layer, sample), a column per
(input layer, output node); the global plots have one row per output layer.
Every trace carries hover text with the feature, the value and (local plots)
the prediction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import plotly.graph_objects as go  # checked by innsight.plotting._renderer
from plotly.subplots import make_subplots

from innsight.plotting.colours import (HIGHLIGHT, INPUT_DARKEST, LINE_MIDDLE, MIDDLE, NEGATIVE, OVERLAY_NEGATIVE,
                                       OVERLAY_POSITIVE, POSITIVE, overlay_opacity)
from innsight.plotting.selection import Panel, axis_titles, facet_cell, is_mosaic, mosaic, nonnegative
from innsight.plotting.strip import STRIP, strip_layout
from innsight.plotting.tokens import TokenLayout, text_colours


def _rgba(colour: str, alpha: float) -> str:
    """``"#rrggbb"`` with opacity ``alpha`` as plotly's ``"rgba(r,g,b,a)"``."""
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


COLORSCALE = [[0.0, NEGATIVE], [0.5, MIDDLE], [1.0, POSITIVE]]
#: Values over an input image: the colour of their sign, transparent at zero and more
#: opaque with the magnitude (:func:`overlay_opacity`, sampled in steps of 0.1).
OVERLAY_COLORSCALE = (
    [[0.5 - f / 2, _rgba(OVERLAY_NEGATIVE, overlay_opacity(f))] for f in np.linspace(1, 0.1, 10)]
    + [[0.5, _rgba(MIDDLE, 0)]]
    + [[0.5 + f / 2, _rgba(OVERLAY_POSITIVE, overlay_opacity(f))] for f in np.linspace(0.1, 1, 10)])
#: Markers on an input signal: grey at zero so that they stay visible on white.
LINE_COLORSCALE = [[0.0, NEGATIVE], [0.5, LINE_MIDDLE], [1.0, POSITIVE]]
#: An input image under its values: light greys, as in the plotnine renderer.
GREYS = [[0.0, _rgba("#000000", 1 - INPUT_DARKEST)], [1.0, "white"]]
#: An input image alone (``layout="side_by_side"``): black to white.
GREYS_FULL = [[0.0, "black"], [1.0, "white"]]
CELL_PX = 260
#: Width per feature of bars and boxes, so that many features keep readable labels
#: (a facet is at most MAX_CELL_PX wide; ``top_k`` shows fewer).
FEATURE_PX, MAX_CELL_PX = 16, 640


def _samples(panel: Panel, per_sample: bool) -> list[int]:
    """Sample ids with a row of facets; a mosaic is one cell in the first sample's row."""
    return panel.data_ids[:1] if is_mosaic(panel) else panel.data_ids if per_sample else [0]


def _nodes(panel: Panel) -> list[str]:
    """Output nodes with a column of facets; a mosaic is one cell."""
    return ["samples x output nodes"] if is_mosaic(panel) else panel.node_labels


def _grey(z: np.ndarray, x: Any, y: Any, scale: list[list[Any]] | None = None) -> Any:
    """An input image's grey levels ``z`` in [0, 1], drawn under its values (light greys)
    or, with ``scale`` :data:`GREYS_FULL`, alone beside them."""
    return go.Heatmap(z=z, x=x, y=y, colorscale=scale or GREYS, zmin=0, zmax=1, showscale=False,
                      hoverinfo="skip")


def _mosaic_traces(panel: Panel, coloraxis: str) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """One heatmap of all samples and nodes (rows: samples, columns: nodes), over the
    tiled input images where shown, and its x and y axis settings; the hover names the
    sample, the node and the pixel."""
    n, height, width, nodes = panel.array.shape
    x = [f"{node} · {w}" for node in panel.node_labels for w in panel.x_labels]
    y = [f"sample {d} · {h}" for d in panel.data_ids for h in panel.y_labels or []]
    traces = [] if panel.inputs is None else [
        _grey(mosaic(np.broadcast_to(panel.inputs[..., None], panel.array.shape)), x, y)]
    traces.append(go.Heatmap(z=mosaic(panel.array), x=x, y=y, coloraxis=coloraxis, xgap=0, ygap=0,
                             hovertemplate="%{y}, %{x}<br>value: %{z:.4g}<extra></extra>"))
    step = max(1, -(-n // 25))
    x_axis = {"tickvals": x[width // 2::width], "ticktext": panel.node_labels, "showgrid": False}
    y_axis = {"tickvals": y[height // 2::height * step],
              "ticktext": [f"sample {d}" for d in panel.data_ids[::step]],
              "autorange": "reversed", "showgrid": False}
    return traces, x_axis, y_axis


def _separators(panel: Panel, suffix: str) -> list[dict[str, Any]]:
    """Grey lines between a mosaic's tiles (positions on its category axes)."""
    n, height, width, nodes = panel.array.shape
    line = {"type": "line", "line": {"color": "#999999", "width": 1}, "layer": "above"}
    return ([{**line, "xref": f"x{suffix}", "yref": f"y{suffix} domain", "x0": j * width - 0.5,
              "x1": j * width - 0.5, "y0": 0, "y1": 1} for j in range(1, nodes)]
            + [{**line, "yref": f"y{suffix}", "xref": f"x{suffix} domain", "y0": i * height - 0.5,
                "y1": i * height - 0.5, "x0": 0, "x1": 1} for i in range(1, n)])


def _coloured(panel: Panel) -> bool:
    """Whether a panel's values are colours on a colour axis: heatmaps and input signals."""
    return panel.kind == "image" or panel.kind == "signal" and panel.inputs is not None


def _colorscale(panel: Panel, sequential: bool) -> list[list[Any]]:
    """The colour scale of a coloured panel (see :func:`_coloured`); ``sequential``
    for values that are all >= 0."""
    if panel.kind == "signal" and panel.inputs is not None:
        return LINE_COLORSCALE
    scale = OVERLAY_COLORSCALE if panel.inputs is not None else COLORSCALE
    return [[2 * at - 1, colour] for at, colour in scale if at >= 0.5] if sequential else scale


def _cells(panels: list[Panel], per_sample: bool) -> list[tuple[Panel, int, int, int, int]]:
    """Every facet as (panel, sample position, node position, row, column), 1-based rows
    and columns: output layers stacked, input layers side by side, each panel's facets
    placed as by :func:`facet_cell` (samples down and nodes across, or wrapped)."""
    def place(p: Panel, i: int, j: int) -> tuple[int, int]:
        return (0, 0) if is_mosaic(p) else facet_cell(p, i, j)

    facets = [(p, i, j, *place(p, i, j)) for p in panels
              for i in range(len(_samples(p, per_sample))) for j in range(len(_nodes(p)))]
    heights: dict[int, int] = {}
    widths: dict[int, int] = {}
    for p, _, _, r, c in facets:
        heights[p.output_layer] = max(heights.get(p.output_layer, 0), r + 1)
        widths[p.input_layer] = max(widths.get(p.input_layer, 0), c + 1)
    top = {o: sum(heights[q] for q in sorted(heights) if q < o) for o in heights}
    left = {k: sum(widths[q] for q in sorted(widths) if q < k) for k in widths}
    return [(p, i, j, top[p.output_layer] + r + 1, left[p.input_layer] + c + 1)
            for p, i, j, r, c in facets]


def _hover(features: np.ndarray, values: np.ndarray, pred: float | None,
           inputs: np.ndarray | None = None) -> np.ndarray:
    text = np.char.add(np.char.add("feature: ", features.astype(str)),
                       np.char.add("<br>value: ", np.char.mod("%.4g", values)))
    if inputs is not None:
        text = np.char.add(text, np.char.add("<br>input: ", np.char.mod("%.4g", inputs)))
    return text if pred is None else np.char.add(text, f"<br>prediction: {pred:.4g}")


def _input_lines(panel: Panel, values: np.ndarray, inputs: np.ndarray, pred: float | None,
                 coloraxis: str) -> list[Any]:
    """One facet of a signal drawn with its input: a grey line per input channel
    ``inputs (C, L)`` with markers coloured by ``values`` (``(C, L)`` or ``(L,)``)."""
    x = np.asarray(panel.x_labels, dtype=object)
    colours = np.broadcast_to(values, inputs.shape)
    return [go.Scatter(x=x, y=inputs[c], mode="lines+markers", name=name, showlegend=False,
                       line={"color": "#bdbdbd", "width": 1},
                       marker={"color": colours[c], "coloraxis": coloraxis, "size": 5},
                       hoverinfo="text", hovertext=_hover(x, colours[c], pred, inputs[c]))
            for c, name in enumerate(panel.channel_labels or [])]


def _traces(panel: Panel, values: np.ndarray, pred: float | None, coloraxis: str,
            show_legend: set[str], box: bool, inputs: np.ndarray | None = None) -> list[Any]:
    """Traces of one facet; ``values`` is ``([C,] *spatial)`` (``(n, ...)`` for boxes)
    and ``inputs`` the sample's input as in :class:`Panel` (``plot(show_input=True)``)."""
    x = np.asarray(panel.x_labels, dtype=object)
    if panel.kind == "image":
        y = np.asarray(panel.y_labels, dtype=object)
        # a template, not a string per cell: large heatmaps stay fast to build
        template = "feature: %{y}, %{x}<br>value: %{z:.4g}" + (
            "" if pred is None else f"<br>prediction: {pred:.4g}") + "<extra></extra>"
        return ([] if inputs is None else [_grey(inputs, x, y)]) + [
            go.Heatmap(z=values, x=x, y=y, coloraxis=coloraxis, hovertemplate=template)]
    if panel.kind == "signal" and inputs is not None:
        return _input_lines(panel, values, inputs, pred, coloraxis)
    channels = (panel.frame["channel"].cat.categories if panel.kind == "signal"
                and panel.array.ndim == 4 else [None])
    series = values if channels[0] is not None else values[None] if not box else values[:, None]
    traces = []
    for c, name in enumerate(channels):
        v = series[c] if not box else series[:, c]
        legend = name is not None and name not in show_legend
        show_legend.add(name)
        common = dict(name=name or panel.kind, legendgroup=name, showlegend=legend, hoverinfo="text")
        if box and len(v) == 1:  # one sample (ConnectionWeights without data): bars
            traces.append(go.Bar(x=x, y=v[0], hovertext=_hover(x, v[0], None),
                                 **({} if name is not None else {"marker_color": "#4d4d4d"}), **common))
        elif box:
            xs = np.broadcast_to(x, v.shape)
            colour = {} if name is not None else {"marker_color": "#4d4d4d"}
            traces.append(go.Box(x=xs.ravel(), y=v.ravel(), hovertext=_hover(xs.ravel(), v.ravel(), None),
                                 boxpoints="outliers", **colour, **common))
        elif panel.kind == "tabular":
            shown = {} if inputs is None else {  # each feature's input at the tip of its bar
                "text": [f"{u:.3g}" for u in inputs], "textposition": "outside",
                "textfont": {"size": 9}, "cliponaxis": False}
            traces.append(go.Bar(x=x, y=v, marker_color=np.where(v >= 0, POSITIVE, NEGATIVE),
                                 hovertext=_hover(x, v, pred, inputs), **shown, **common))
        else:
            traces.append(go.Scatter(x=x, y=v, mode="lines", hovertext=_hover(x, v, pred), **common))
    return traces


def _highlight(panel: Panel, j: int, show_legend: set[str]) -> list[Any]:
    """``plot_global(ref_data_idx=...)``: the sample's values for node ``j`` as orange
    markers over the boxes (a line along signals, one per channel kept)."""
    assert panel.highlight is not None
    values = panel.highlight[..., j]
    name = f"sample {panel.highlight_id}"
    legend = name not in show_legend
    show_legend.add(name)
    mode = "lines+markers" if panel.kind == "signal" else "markers"
    x = np.asarray(panel.x_labels, dtype=object)
    return [go.Scatter(x=x, y=v, mode=mode, name=name, legendgroup=name, showlegend=legend and c == 0,
                       marker={"color": HIGHLIGHT, "size": 7}, line={"color": HIGHLIGHT, "width": 1.5},
                       hoverinfo="text", hovertext=_hover(x, v, None))
            for c, v in enumerate(values if values.ndim == 2 else values[None])]


def _figure(panels: list[Panel], title: str, value_name: str, per_sample: bool,
            limits: Callable[[Panel], tuple[float, float] | None], show_preds: bool) -> Any:
    value_name = value_name.replace("\n", "<br>")
    cells = _cells(panels, per_sample)
    cell_px = max([CELL_PX] + [min(MAX_CELL_PX, FEATURE_PX * len(p.x_labels))
                               for p in panels if p.kind == "tabular"])
    n_rows, n_cols = max(r for *_, r, _ in cells), max(c for *_, c in cells)
    several_in = len({p.input_layer for p in panels}) > 1
    several_out = len({p.output_layer for p in panels}) > 1
    titles = [""] * (n_rows * n_cols)
    for p, i, j, r, c in cells:
        titles[(r - 1) * n_cols + c - 1] = " · ".join(
            ([f"out {p.output_layer}"] if several_out else [])
            + ([f"in {p.input_layer}"] if several_in else []) + [_nodes(p)[j]]
            + ([f"sample {p.data_ids[i]}"] if per_sample and p.has_data and not is_mosaic(p) else []))
    # room between facets for tick labels, axis titles and the facet titles (pixels)
    grid = make_subplots(rows=n_rows, cols=n_cols, subplot_titles=titles,
                         horizontal_spacing=min(0.08, 60 / (cell_px * n_cols)),
                         vertical_spacing=min(0.2, 75 / (CELL_PX * n_rows)))
    # the layout is edited as a dict and the figure built once: plotly re-validates
    # the whole figure on every add_trace/add_annotation, quadratic in the facets
    layout = grid.layout.to_plotly_json()
    for note in layout.get("annotations", []):  # the subplot titles: smaller than the default 16
        note["font"] = {"size": 12}
    bound = limits(panels[0])
    axes = {id(p): "coloraxis" if bound else f"coloraxis{n + 1 if n else ''}"
            for n, p in enumerate(q for q in panels if _coloured(q))}
    legend: set[str] = set()
    traces = []
    for p, i, j, r, c in cells:
        n = (r - 1) * n_cols + c
        suffix = "" if n == 1 else str(n)
        if is_mosaic(p):
            mosaic_traces, x_axis, y_axis = _mosaic_traces(p, axes.get(id(p), "coloraxis"))
            traces += [trace.update(xaxis=f"x{suffix}", yaxis=f"y{suffix}") for trace in mosaic_traces]
            layout[f"xaxis{suffix}"].update(x_axis)
            layout[f"yaxis{suffix}"].update(y_axis)
            layout.setdefault("shapes", []).extend(_separators(p, suffix))
            continue
        if p.beside is not None and j == 0:  # layout="side_by_side": the input image
            traces.append(_grey(p.beside[i], p.x_labels, p.y_labels, GREYS_FULL).update(
                xaxis=f"x{suffix}", yaxis=f"y{suffix}"))
            layout[f"yaxis{suffix}"].update(autorange="reversed", nticks=6)
            layout[f"xaxis{suffix}"].update(nticks=6, tickangle=0)
            continue
        values = p.array[..., j] if not per_sample else p.array[i, ..., j]
        if not per_sample and p.kind == "image":
            values = values[0]
        pred = float(p.facets["pred"].to_numpy().reshape(len(p.data_ids), -1)[i, j]) if per_sample else None
        inputs = p.inputs[i] if per_sample and p.inputs is not None else None
        for trace in _traces(p, values, pred, axes.get(id(p), "coloraxis"), legend,
                             box=not per_sample, inputs=inputs):
            traces.append(trace.update(xaxis=f"x{suffix}", yaxis=f"y{suffix}"))
        if p.highlight is not None:
            traces += [trace.update(xaxis=f"x{suffix}", yaxis=f"y{suffix}")
                       for trace in _highlight(p, j, legend)]
        input_line = p.kind == "signal" and inputs is not None
        if input_line:  # the y axis is the input's; the values are colours
            values = inputs
        if p.kind == "image":
            layout[f"yaxis{suffix}"].update(autorange="reversed", nticks=6)
            layout[f"xaxis{suffix}"].update(nticks=6, tickangle=0)
        elif bound is not None and not input_line:
            layout[f"yaxis{suffix}"]["range"] = list(bound)
        elif show_preds and per_sample:  # headroom for the info box, as in plotnine
            low, high = min(float(np.nanmin(values)), 0.0), max(float(np.nanmax(values)), 0.0)
            span = (high - low) or 1.0
            below = 0.15 if p.kind == "tabular" and inputs is not None else 0.05  # input texts
            layout[f"yaxis{suffix}"]["range"] = [low - below * span, high + 0.35 * span]
        if show_preds:
            text = p.facets["text"].to_numpy().reshape(len(p.data_ids), -1)[i, j].replace("\n", "<br>")
            layout.setdefault("annotations", []).append({
                "text": text, "xref": f"x{suffix} domain", "yref": f"y{suffix} domain",
                "x": 0.01, "y": 0.99, "showarrow": False, "xanchor": "left", "yanchor": "top",
                "align": "left", "font": {"size": 9}, "bgcolor": "rgba(255,255,255,0.7)"})
    owners = {name: p for p in panels for name in [axes.get(id(p))] if name}
    for n, (name, p) in enumerate(owners.items()):
        # several colour bars say whose scale they show
        whose = "" if len(owners) == 1 else f"<br>out {p.output_layer}, in {p.input_layer}"
        sequential = bound[0] >= 0 if bound else nonnegative(p)
        low, high = bound if bound else (0, None) if sequential else (None, None)
        layout[name] = {"colorscale": _colorscale(p, sequential),
                        "cmid": None if bound or sequential else 0, "cmin": low, "cmax": high,
                        "colorbar": {"title": {"text": value_name + whose}, "x": 1.02 + 0.12 * n}}
    owner = {(r, c): id(p) for p, *_, r, c in cells}
    for p, i, j, r, c in cells:  # axis titles: y on each panel's first column, x at the bottom
        suffix = "" if (r - 1) * n_cols + c == 1 else str((r - 1) * n_cols + c)
        x_title, y_title = axis_titles(p, value_name)
        if (r + 1, c) not in owner:
            layout[f"xaxis{suffix}"]["title"] = {"text": x_title, "standoff": 4}
        if owner.get((r, c - 1)) != id(p):
            layout[f"yaxis{suffix}"]["title"] = {"text": y_title, "standoff": 4}
    # a mosaic keeps its tiles about square: as tall as its samples need
    tall = max([CELL_PX * len(p.data_ids) / len(p.node_labels) for p in panels if is_mosaic(p)],
               default=0.0)
    layout.update(title={"text": title}, height=120 + max(CELL_PX * n_rows, min(4000, int(tall))),
                  width=120 + cell_px * n_cols, template="plotly_white", bargap=0.15)
    return go.Figure(data=traces, layout=layout)


def plot_local(panels: list[Panel], value_name: str, method: str,
               limits: Callable[[Panel], tuple[float, float] | None], show_preds: bool) -> Any:
    """The plotly figure of :func:`innsight.plotting.plot`; strip panels (all or none,
    ``layout="strip"``) as token layouts one under another."""
    if panels[0].kind == STRIP:
        several_in = len({p.input_layer for p in panels}) > 1
        several_out = len({p.output_layer for p in panels}) > 1
        return plot_tokens([(" · ".join(([f"output layer {p.output_layer}"] if several_out else [])
                                        + ([f"input layer {p.input_layer}"] if several_in else [])),
                             strip_layout(p, limits(p), show_preds)) for p in panels],
                           value_name.replace("\n", "<br>"), method)
    return _figure(panels, method, value_name, True, limits, show_preds)


def plot_global(panels: list[Panel], value_name: str, method: str,
                limits: Callable[[Panel], tuple[float, float] | None]) -> Any:
    """The plotly figure of :func:`innsight.plotting.plot_global`."""
    return _figure(panels, method, value_name, False, limits, False)



#: Token plots: pixels per character cell and per line, and the text size.
TOKEN_CHAR_PX, TOKEN_LINE_PX, TOKEN_FONT_PX = 8, 24, 12
#: Lines of space above each row for its name.
TOKEN_GAP = 1.5


def _token_bars(layout: TokenLayout, top: float, coloraxis: str) -> tuple[Any, list[dict[str, Any]]]:
    """One trace of horizontal bars for a layout's tokens (a bar per token, its text
    inside, coloured by value), its rows one under another from line ``top``, and the
    annotations naming each row above its first line."""
    frame = layout.frame
    rows = frame["row"].cat.codes.to_numpy()
    y = top + frame["line"].to_numpy() + TOKEN_GAP * rows  # a gap between rows for their names
    bars = go.Bar(
        orientation="h", y=y, base=frame["x0"], x=frame["x1"] - frame["x0"], width=0.86,
        marker={"color": frame["value"], "coloraxis": coloraxis, "line": {"width": 0}},
        text=frame["token"] if layout.has_text else None, textposition="inside",
        insidetextanchor="middle", textangle=0,
        textfont={"family": "monospace", "size": TOKEN_FONT_PX,
                  "color": text_colours(frame["shade"].to_numpy())},
        customdata=np.stack([frame["row"].astype(str), frame["position"], frame["token"]], axis=-1),
        hovertemplate="%{customdata[0]}<br>position %{customdata[1]}: %{customdata[2]}"
                      "<br>value: %{marker.color:.4g}<extra></extra>")
    names = [{"text": f"<b>{label}</b>", "xref": "paper", "yref": "y", "x": 0,
              "y": top + r * (layout.lines_per_row + TOKEN_GAP) - 0.9, "showarrow": False,
              "xanchor": "left", "yanchor": "middle", "font": {"size": 12}}
             for r, label in enumerate(layout.row_labels)]
    return bars, names


def plot_tokens(layouts: list[tuple[str, TokenLayout]], value_name: str, title: str) -> Any:
    """Token layouts one under another, each under its heading (if any) with a colour
    bar of its own; the hover gives row, position, token and value."""
    traces, notes, axes, extents, top = [], [], {}, [], 0.0
    for n, (heading, layout) in enumerate(layouts):
        start = top
        if heading:
            notes.append({"text": heading, "xref": "paper", "yref": "y", "x": 0, "y": top - 0.3,
                          "showarrow": False, "xanchor": "left", "font": {"size": 14}})
            top += 1.2
        axis = "coloraxis" if n == 0 else f"coloraxis{n + 1}"
        bars, names = _token_bars(layout, top, axis)
        traces.append(bars)
        notes += names
        axes[axis] = {"colorscale": COLORSCALE, "cmin": -layout.limit, "cmax": layout.limit,
                      "colorbar": {"title": {"text": value_name}, "x": 1.01}}
        top += layout.n_lines + TOKEN_GAP * len(layout.row_labels)
        extents.append((start, top))
    low, high = -TOKEN_GAP, top - TOKEN_GAP + 0.5  # the y range, top down
    for axis, (start, end) in zip(axes.values(), extents):  # each colour bar beside its rows
        axis["colorbar"].update(y=1 - ((start + end) / 2 - low) / (high - low), yanchor="middle",
                                len=max(0.15, (end - start) / (high - low) - 0.02))
    span = max(layout.span for _, layout in layouts)
    return go.Figure(data=traces, layout={
        "title": {"text": title}, "template": "plotly_white", "annotations": notes, **axes,
        "xaxis": {"range": [0, span], "visible": False},
        "yaxis": {"range": [high, low], "visible": False},
        "uniformtext": {"minsize": TOKEN_FONT_PX - 2, "mode": "show"},
        "margin": {"l": 20, "r": 20, "t": 60, "b": 20},
        "width": 160 + TOKEN_CHAR_PX * span, "height": 80 + TOKEN_LINE_PX * (top + 1),
        "barmode": "overlay", "bargap": 0, "showlegend": False})
