"""Which samples, output nodes and channels a plot shows, as tidy frames per panel.

A *panel* is one (output layer, input layer) pair of a result. Both renderers
(plotnine and plotly) draw the same panels, so every selection, check and
channel aggregation happens here once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from innsight._validation import describe, is_int
from innsight.outputs import OutputSelection

if TYPE_CHECKING:
    from innsight.methods.result import Result

#: Input kinds by the rank of one sample (channels first).
KINDS = {1: "tabular", 2: "signal", 3: "image"}

#: Built-in channel aggregations: (n, C, ...) -> (n, ...).
AGGREGATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sum": lambda a: a.sum(axis=1),
    "mean": lambda a: a.mean(axis=1),
    "norm": lambda a: np.sqrt((a**2).sum(axis=1)),
}

AggrChannels = str | Callable[[np.ndarray], np.ndarray] | None


@dataclass
class Panel:
    """One output layer's nodes against one input layer, as a long frame.

    ``frame`` has columns ``data`` (sample index), ``output_node`` (label),
    ``x`` (1-based position along the last axis), ``y`` (images: 1-based row,
    counted from the bottom), ``feature`` / ``feature_2`` / ``channel`` (labels)
    and ``value``. ``facets`` has one row per (data, output_node) with ``pred``,
    ``decomp_sum``, ``decomp_goal`` and the annotation ``text``. Global image
    panels hold the mean over the samples as the one sample ``-1``.
    """

    output_layer: int
    input_layer: int
    kind: str
    frame: pd.DataFrame
    facets: pd.DataFrame
    x_labels: list[str]
    y_labels: list[str] | None
    node_labels: list[str]
    data_ids: list[int]
    array: np.ndarray  # the values of ``frame`` as ``(n, [C,] *spatial, n_nodes)``
    has_data: bool = True  # False for a result computed without data (no predictions)
    inputs: np.ndarray | None = None
    channel_labels: list[str] | None = None  # signals and images: the input's channels
    group: int = 1  # facet columns per output node: the results drawn side by side
    #: Images ``(n, H, W)`` in grey levels drawn in the first facet column, beside the
    #: heatmaps (``layout="side_by_side"``, see :mod:`innsight.plotting.layout`).
    beside: np.ndarray | None = None
    #: ``plot_global(ref_data_idx=...)``: one sample's values drawn over the box plots,
    #: ``(*positions, n_nodes)`` as one sample of ``array``, and its id.
    highlight: np.ndarray | None = None
    highlight_id: int | None = None


#: Most facet columns in one row; more output nodes wrap into further rows, each row
#: holding whole nodes (all results of a node when several are drawn side by side).
MAX_COLUMNS = 6


def facet_columns(panel: Panel) -> int:
    """Facet columns of a panel: all its nodes when they fit in :data:`MAX_COLUMNS`,
    else as few rows as needed, balanced (10 nodes: 2 rows of 5)."""
    if panel.beside is not None:  # one row per sample: its input, then its heatmaps
        return len(panel.node_labels)
    nodes, group = len(panel.node_labels) // panel.group, panel.group
    per_row = max(1, MAX_COLUMNS // group)
    rows = -(-nodes // per_row)
    return -(-nodes // rows) * group


def is_wrapped(panel: Panel) -> bool:
    """Whether a panel's output nodes wrap into several rows of facets."""
    return not is_mosaic(panel) and facet_columns(panel) < len(panel.node_labels)


def facet_cell(panel: Panel, sample: int, node: int) -> tuple[int, int]:
    """Row and column (0-based) of the facet of the ``sample``-th sample shown and the
    ``node``-th node: samples down and nodes across, or, wrapped, facets filled row by
    row, ``facet_columns`` to a row."""
    if not is_wrapped(panel):
        return sample, node
    flat = sample * len(panel.node_labels) + node
    return divmod(flat, facet_columns(panel))


def axis_titles(panel: Panel, value_name: str) -> tuple[str, str]:
    """The x and y axis titles of a panel's facets (both renderers)."""
    if is_mosaic(panel):
        return "output node", "sample"
    if panel.kind == "image":
        return "width", "height"
    if panel.kind == "signal":
        return "signal position", "input" if panel.inputs is not None else value_name
    return "feature (number: its input)" if panel.inputs is not None else "feature", value_name


def nonnegative(panel: Panel) -> bool:
    """Whether all values of a panel are >= 0 (e.g. ``plot_global``'s magnitudes): drawn
    with a sequential colour scale from 0 instead of a diverging one."""
    return bool(np.nanmin(panel.array, initial=np.inf) >= 0)


def top_features(panel: Panel, top_k: int) -> Panel:
    """A tabular panel with only its ``top_k`` features of largest mean ``|value|``
    (over the samples and nodes shown), largest first; other kinds unchanged."""
    if panel.kind != "tabular":
        return panel
    order = np.argsort(-np.abs(panel.array).mean(axis=(0, 2)), kind="stable")[:top_k]
    position = np.zeros(len(panel.x_labels), dtype=int)  # old 1-based x -> new one (0: dropped)
    position[order] = np.arange(1, len(order) + 1)
    new_x = position[panel.frame["x"].to_numpy() - 1]
    frame = panel.frame.assign(x=new_x)[new_x > 0].reset_index(drop=True)
    return replace(panel, frame=frame, x_labels=[panel.x_labels[i] for i in order],
                   array=panel.array[:, order],
                   inputs=None if panel.inputs is None else panel.inputs[:, order],
                   highlight=None if panel.highlight is None else panel.highlight[order])


def normalize_facets(panel: Panel, per_sample: bool) -> Panel:
    """A panel with each facet's values divided by their largest magnitude, so that they
    span [-1, 1]; a facet is a (sample, node) pair, whose info box text gains the
    divisor, or a node over all samples where ``per_sample`` is false (global plots)."""
    spatial = tuple(range(1 if per_sample else 0, panel.array.ndim - 1))
    scale = np.abs(panel.array).max(axis=spatial, keepdims=True)
    scale = np.where(scale > 0, scale, 1.0)
    per_facet = scale.reshape(-1, len(panel.node_labels))  # (n or 1, nodes)

    def divisors(frame: pd.DataFrame) -> np.ndarray:
        nodes = pd.Categorical(frame["output_node"], categories=panel.node_labels).codes
        if not per_sample:
            return per_facet[0, nodes]
        rows = frame["data"].map({d: i for i, d in enumerate(panel.data_ids)}).to_numpy()
        return per_facet[rows, nodes]

    facets = panel.facets
    if per_sample:
        facets = facets.assign(text=[f"{text}\nmax |value|: {s:.3g}".lstrip("\n") for text, s
                                     in zip(facets["text"], divisors(facets))])
    highlight = None if panel.highlight is None else panel.highlight / scale[0]  # global only
    return replace(panel, frame=panel.frame.assign(value=panel.frame["value"] / divisors(panel.frame)),
                   array=panel.array / scale, facets=facets, highlight=highlight)


def value_label(result: Result) -> str:
    """The kind of a method's values, e.g. ``"gradient x input"`` (the title names the method)."""
    kind = result.value_name
    times = kind in ("gradient", "importance") and result.args.get("times_input")
    return kind + " x input" if times else kind


#: Most facets (samples x output nodes) one panel draws one by one. Each facet costs
#: matplotlib about 0.08 s (100 took 7-10 s to save as PNG), and a thousand are
#: unreadable anyway: beyond this, images are drawn as one mosaic (see
#: :func:`mosaic`) and other kinds warn.
MAX_FACETS = 50


def n_facets(panel: Panel) -> int:
    """Facets of a panel: samples x output nodes."""
    return len(panel.data_ids) * len(panel.node_labels)


def is_mosaic(panel: Panel) -> bool:
    """Whether an image panel has too many facets and is drawn as one mosaic."""
    return panel.kind == "image" and n_facets(panel) > MAX_FACETS


def mosaic(array: np.ndarray) -> np.ndarray:
    """Heatmaps ``(n, H, W, n_nodes)`` tiled into one array ``(n * H, n_nodes * W)``: sample
    ``i``'s heatmap for node ``j`` fills rows ``i*H:(i+1)*H`` and columns ``j*W:(j+1)*W``."""
    n, height, width, nodes = array.shape
    return array.transpose(0, 1, 3, 2).reshape(n * height, nodes * width)


def grey_levels(images: np.ndarray) -> np.ndarray:
    """Images ``(n, C, H, W)`` as grey levels ``(n, H, W)`` in [0, 1]: the mean over
    the channels, stretched per image from its minimum (black) to its maximum
    (white); a constant image is mid grey."""
    grey = images.mean(axis=1)
    low = grey.min(axis=(1, 2), keepdims=True)
    span = grey.max(axis=(1, 2), keepdims=True) - low
    return np.where(span > 0, (grey - low) / np.where(span > 0, span, 1.0), 0.5)


def input_frame(panel: Panel) -> pd.DataFrame:
    """A local panel's frame with the column ``input``: the input under each value
    (tabular), each pixel's grey level (images). For signals one row per (sample,
    channel, position, output node): the input signal of every channel and the
    value it is coloured by (that channel's, or the aggregated one)."""
    assert panel.inputs is not None
    if panel.kind != "signal":  # looked up by position: merged panels stack their frames
        frame = panel.frame
        rows = frame["data"].map({d: i for i, d in enumerate(panel.data_ids)}).to_numpy()
        x = frame["x"].to_numpy() - 1
        under = (panel.inputs[rows, x] if panel.kind == "tabular" else
                 panel.inputs[rows, panel.inputs.shape[1] - frame["y"].to_numpy(), x])
        return frame.assign(input=under)
    n, channels, length = panel.inputs.shape
    values = panel.array if panel.array.ndim == 4 else panel.array[:, None]
    shape = (n, channels, length, len(panel.node_labels))
    frame = _long(np.broadcast_to(values, shape), [("channel", None, panel.channel_labels),
                                                  ("feature", "x", panel.x_labels)],
                  panel.data_ids, panel.node_labels)
    return frame.assign(input=np.broadcast_to(panel.inputs[..., None], shape).ravel())


# ---- argument checks --------------------------------------------------------------------


def select_data(data_idx: Any, n_data: int, allow_all: bool = False) -> list[int]:
    """Check ``data_idx`` (an int or a non-empty list of ints, or ``"all"``)."""
    if allow_all and isinstance(data_idx, str) and data_idx == "all":
        return list(range(n_data))
    items = [data_idx] if is_int(data_idx) else data_idx
    expected = "an int or a non-empty list of ints" + (' or "all"' if allow_all else "")
    if (not isinstance(items, (Sequence, np.ndarray)) or isinstance(items, str)
            or len(items) == 0 or not all(is_int(i) for i in items)):
        raise TypeError(f"`data_idx` must be {expected}, got {describe(data_idx)}.")
    bad = [int(i) for i in items if not 0 <= i < n_data]
    if bad:
        raise ValueError(f"`data_idx` must lie in [0, {n_data - 1}] (the result has "
                         f"{n_data} samples), got {bad}.")
    return [int(i) for i in items]


def select_outputs(result: Result, output_idx: Any = None, output_label: Any = None) -> list[list[int]]:
    """Positions among the result's computed nodes, per output layer.

    ``output_idx`` (model node indices) and ``output_label`` (node labels) mean
    what they mean in ``run_*`` (see :mod:`innsight.outputs`): one value or a flat
    list selects in the first output layer, a nested list per output layer.
    Default: every computed node. Nodes that were not computed raise a ``ValueError``.
    """
    computed = OutputSelection(result.output_idx, result.output_labels, computed=True)
    return computed.positions_in(computed.choose(output_idx, output_label))


def aggregate_channels(array: np.ndarray, aggr_channels: AggrChannels) -> np.ndarray:
    """Aggregate axis 1 (channels) of ``(n, C, *spatial, n_nodes)``.

    ``aggr_channels`` is ``"sum"``, ``"mean"``, ``"norm"`` (L2 norm over the
    channels) or a callable called once per sample and node with the array
    ``(C, *spatial)`` that returns ``spatial`` (e.g. ``lambda a: a.max(0)``).
    """
    if isinstance(aggr_channels, str) and aggr_channels in AGGREGATIONS:
        return AGGREGATIONS[aggr_channels](array)
    if not callable(aggr_channels) or isinstance(aggr_channels, str):
        raise ValueError(f"`aggr_channels` must be one of {list(AGGREGATIONS)} or a callable "
                         f"(C, ...) -> (...), got {describe(aggr_channels)}.")
    moved = np.moveaxis(array, -1, 1)  # (n, nodes, C, *spatial)
    spatial = array.shape[2:-1]
    out = np.empty(moved.shape[:2] + spatial)
    for i, j in np.ndindex(*moved.shape[:2]):
        res = np.asarray(aggr_channels(moved[i, j]), dtype=float)
        if res.shape != spatial:
            raise ValueError(f"`aggr_channels` must return an array of shape {spatial} for "
                             f"an input of shape {moved.shape[2:]}, got shape {res.shape}.")
        out[i, j] = res
    return np.moveaxis(out, 1, -1)


# ---- frames -----------------------------------------------------------------------------


def _labels(codes: np.ndarray, labels: Sequence[str]) -> Any:
    """A categorical column of ``labels[codes]`` (object array where labels repeat)."""
    try:
        return pd.Categorical.from_codes(codes, categories=list(labels))
    except ValueError:
        return np.asarray(labels, dtype=object)[codes]


def _long(array: np.ndarray, axes: list[tuple[str, str | None, Sequence[str]]],
          data_ids: list[int], node_labels: list[str]) -> pd.DataFrame:
    """One row per entry of ``(n, *axes, n_nodes)``; ``axes`` are (label column,
    position column or None, labels)."""
    index = np.indices(array.shape).reshape(array.ndim, -1)
    columns: dict[str, Any] = {"data": np.asarray(data_ids)[index[0]],
                               "output_node": _labels(index[-1], node_labels)}
    for axis, (label_col, pos_col, labels) in enumerate(axes, start=1):
        columns[label_col] = _labels(index[axis], labels)
        if pos_col == "y":  # rows counted from the bottom so that row 1 is on top
            columns["y"] = array.shape[axis] - index[axis]
        elif pos_col is not None:
            columns[pos_col] = index[axis] + 1
    columns["value"] = array.ravel()
    return pd.DataFrame(columns)


def _axes(kind: str, names: list[list[str]], keep_channels: bool) -> list[tuple[str, str | None, Sequence[str]]]:
    """The axis spec of :func:`_long` for a kind of input."""
    if kind == "tabular":
        return [("feature", "x", names[0])]
    if kind == "signal":
        return ([("channel", None, names[0])] if keep_channels else []) + [("feature", "x", names[1])]
    return [("feature", "y", names[1]), ("feature_2", "x", names[2])]


def _facets(result: Result, o: int, data_ids: list[int], nodes: list[int]) -> pd.DataFrame:
    """Per (sample, node): prediction, sum of values, decomposition goal and their text."""
    def pick(t: Any) -> np.ndarray:
        if t is None:
            return np.full((len(data_ids), len(nodes)), np.nan)
        return t.detach().cpu().double().numpy()[np.ix_(data_ids, nodes)]
    goals = None if result.decomp_goal is None else result.decomp_goal[o]
    pred, dsum, goal = pick(result.preds[o]), pick(result.decomp_sum[o]), pick(goals)
    labels = [result.output_labels[o][j] for j in nodes]
    frame = pd.DataFrame({
        "data": np.repeat(data_ids, len(nodes)),
        "output_node": pd.Categorical(labels * len(data_ids), categories=labels),
        "pred": pred.ravel(), "decomp_sum": dsum.ravel(), "decomp_goal": goal.ravel(),
    })
    pred_name, unit = box_names(result, o)
    # Predictions are NaN for a global result computed without data (ConnectionWeights).
    frame["text"] = ["\n".join(f"{name}: {v:.3g}{suffix}" for name, v, suffix in
                               ((pred_name, p, ""), ("sum", s, unit), ("goal", g, unit))
                               if not np.isnan(v))
                     for p, s, g in zip(frame["pred"], frame["decomp_sum"], frame["decomp_goal"])]
    if result.sample_nodes is not None:  # per-sample targets: name each sample's node
        frame["text"] = [f"node: {result.sample_nodes[d]}\n{text}".rstrip("\n")
                         for d, text in zip(frame["data"], frame["text"])]
    return frame


#: Final activations whose output is a probability (its input: a logit).
PROBABILITIES = {"softmax", "sigmoid"}


def box_names(result: Result, o: int) -> tuple[str, str]:
    """What the info box calls output layer ``o``'s prediction, and the unit it adds to
    the sum and goal. With ``ignore_last_act`` (the default) a method explains the input
    of a final activation, while the prediction is the model's output: after a softmax
    or sigmoid ``("probability", " (logit)")``, after another activation ``act``
    ``("pred", " (before act)")``; ``("pred", "")`` where they are the same node or the
    result does not say (it was not made by a method on a converted model)."""
    setup = getattr(result, "setup", None)
    if setup is None or setup.explained[o] == setup.prediction_nodes[o]:
        return "pred", ""
    layers = getattr(setup.model, "layers", None)  # a converted model's; a raw module has none
    output = None if layers is None else layers[setup.prediction_nodes[o]]
    act = getattr(output, "act_name", "the last activation")
    return ("probability", " (logit)") if act in PROBABILITIES else ("pred", f" (before {act})")


def _kind(values: Any, k: int) -> str:
    rank = values.ndim - 2
    if rank not in KINDS:
        raise ValueError(f"Input layer {k} has samples of rank {rank}; plots support tabular "
                         "(1), signal (2) and image (3) inputs. Use get_result() instead.")
    return KINDS[rank]


def _panels(result: Result, data_ids: list[int], chosen: list[list[int]],
            transform: Callable[[np.ndarray, str], tuple[np.ndarray, bool]],
            summarise: Callable[[np.ndarray, str], np.ndarray] | None = None,
            show_input: bool = False) -> list[Panel]:
    """Panels of the chosen nodes: ``transform(array, kind)`` gives the array to show
    and whether it kept its channel axis; ``summarise`` (global image plots) reduces
    the samples axis to one; ``show_input`` keeps the samples' inputs."""
    panels = []
    for o, nodes in enumerate(chosen):
        if not nodes:
            continue
        node_labels = [result.output_labels[o][j] for j in nodes]
        facets = _facets(result, o, data_ids, nodes)
        for k, values in enumerate(result.values[o]):
            kind = _kind(values, k)
            array = values.detach().cpu().double().numpy()[data_ids][..., nodes]
            shown, kept = transform(array, kind)
            ids = data_ids
            if summarise is not None and kind == "image":
                shown, ids = summarise(shown, kind), [-1]
            names = result.input_names[k]
            frame = _long(shown, _axes(kind, names, kept), ids, node_labels)
            if not kept and kind == "signal":
                frame["channel"] = "aggregated"
            inputs = None
            if show_input:
                assert result.data is not None
                inputs = result.data[k].detach().cpu().double().numpy()[data_ids]
                inputs = grey_levels(inputs) if kind == "image" else inputs
            panels.append(Panel(o, k, kind, frame, facets, list(names[-1]),
                                list(names[1]) if kind == "image" else None, node_labels, ids, shown,
                                has_data=not facets["pred"].isna().all(), inputs=inputs,
                                channel_labels=None if kind == "tabular" else list(names[0])))
    return panels


def _keep_or_aggregate(aggr_channels: AggrChannels) -> Callable[[np.ndarray, str], tuple[np.ndarray, bool]]:
    """Aggregate channels of signals and images; ``None`` keeps the channels of signals."""
    def transform(array: np.ndarray, kind: str) -> tuple[np.ndarray, bool]:
        if kind == "tabular":
            return array, False
        if aggr_channels is None:
            if kind == "image":
                raise ValueError("`aggr_channels` must be one of "
                                 f"{list(AGGREGATIONS)} or a callable for image inputs, got None.")
            return array, True
        return aggregate_channels(array, aggr_channels), False
    return transform


def local_panels(result: Result, data_idx: Any, output_idx: Any, output_label: Any,
                 aggr_channels: AggrChannels, show_input: bool = False) -> list[Panel]:
    """Panels of :func:`innsight.plotting.plot`; ``show_input`` needs a result with data."""
    if show_input and result.data is None:
        raise ValueError(f"`show_input=True` needs the explained data, but this {result.method} "
                         "result was computed without data; plot it with show_input=False.")
    data_ids = select_data(data_idx, result.preds[_first(result)].shape[0])
    chosen = select_outputs(result, output_idx, output_label)
    return _panels(result, data_ids, chosen, _keep_or_aggregate(aggr_channels),
                   show_input=show_input)


def global_panels(result: Result, output_idx: Any, output_label: Any, data_idx: Any,
                  aggr_channels: AggrChannels, preprocess_fun: Callable[[Any], Any] | None,
                  ref_data_idx: Any = None) -> list[Panel]:
    """Panels of :func:`innsight.plotting.plot_global`: ``preprocess_fun`` is applied to
    the values first (elementwise on a numpy array), then the channels are aggregated;
    images are averaged over the samples. ``ref_data_idx`` (an int) adds that sample's
    values, transformed alike, as each tabular or signal panel's ``highlight``."""
    if preprocess_fun is not None and not callable(preprocess_fun):
        raise TypeError(f"`preprocess_fun` must be a callable or None, got {describe(preprocess_fun)}.")
    data_ids = select_data(data_idx, result.preds[_first(result)].shape[0], allow_all=True)
    chosen = select_outputs(result, output_idx, output_label)
    aggregate = _keep_or_aggregate(aggr_channels)

    def transform(array: np.ndarray, kind: str) -> tuple[np.ndarray, bool]:
        pre = array if preprocess_fun is None else np.asarray(preprocess_fun(array), dtype=float)
        if pre.shape != array.shape:
            raise ValueError(f"`preprocess_fun` must keep the shape {array.shape} of the "
                             f"values, returned shape {pre.shape}.")
        return aggregate(pre, kind)

    panels = _panels(result, data_ids, chosen, transform,
                     summarise=lambda a, kind: a.mean(axis=0, keepdims=True))
    if ref_data_idx is None:
        return panels
    n_data = result.preds[_first(result)].shape[0]
    if not is_int(ref_data_idx) or isinstance(ref_data_idx, bool) or not 0 <= ref_data_idx < n_data:
        raise ValueError(f"`ref_data_idx` must be an int in [0, {n_data - 1}] (the sample to "
                         f"highlight) or None, got {describe(ref_data_idx)}.")
    if any(p.kind == "image" for p in panels):
        raise ValueError("`ref_data_idx` highlights a sample among box plots (tabular and signal "
                         "inputs); image inputs are drawn as mean heatmaps: plot one sample's "
                         f"heatmaps with plot(data_idx={int(ref_data_idx)}).")
    return [replace(p, highlight=transform(result.values[p.output_layer][p.input_layer].detach()
                                           .cpu().double().numpy()[[int(ref_data_idx)]]
                                           [..., chosen[p.output_layer]], p.kind)[0][0],
                    highlight_id=int(ref_data_idx)) for p in panels]


def highlight_frame(panel: Panel) -> pd.DataFrame:
    """The highlighted sample's values of a box-plot panel as a long frame: ``x``,
    ``output_node``, ``value`` and, for signals with their channels, ``channel``."""
    assert panel.highlight is not None
    channels = panel.highlight.ndim == 3  # (C, L, nodes): signal channels kept
    axes = ([("channel", None, panel.channel_labels or [])] if channels else []) + \
        [("feature", "x", panel.x_labels)]
    return _long(panel.highlight[None], axes, [panel.highlight_id], panel.node_labels)


def _first(result: Result) -> int:
    return next(o for o, layer in enumerate(result.values) if layer is not None)
