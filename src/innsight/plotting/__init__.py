"""Plots of results with plotnine (static) and plotly (interactive).

Both functions return an object to keep editing and never open a window: a
plotnine ``ggplot`` (one input and one output layer), a plotnine composition
(several layers: input layers side by side, output layers stacked; save it
with ``.save(path)``), or a plotly ``Figure`` with ``as_plotly=True`` (needs
``pip install innsight[plotly]``).

Tabular inputs are drawn as bars per feature (filled by sign), signals
``(C, L)`` as lines along the signal, images ``(C, H, W)`` as heatmaps with a
diverging fill centred on 0. Channels are aggregated by ``aggr_channels``:
``"sum"``, ``"mean"``, ``"norm"`` (L2 norm over the channels), ``None``
(signals only: one line per channel) or a callable called once per sample
and output node with the array ``(C, *spatial)`` that returns ``spatial``.

Facets: samples down, output nodes across; more than ``MAX_COLUMNS`` (6) facet
columns wrap into rows that each hold whole nodes (10 classes: 2 rows of 5), and
the figure is sized by that grid. Values that are all >= 0 get a sequential
colour scale from 0, others a diverging one centred on 0.

Many facets: matplotlib draws each facet for about 0.08 s, so 100 samples x 10
output nodes would take 80 s as a PNG and be unreadable. A panel with more than
``MAX_FACETS`` (50) image heatmaps is therefore drawn as one mosaic, samples
down and output nodes across, without the info boxes (about 5-8 s as a PNG on
two cores; the plotly mosaic is one heatmap trace), and ``plot()`` warns and
suggests ``data_idx``/``output_idx``; bars and lines keep their facets and warn.

Several results side by side: both functions also take a dict of names to
results (what :class:`innsight.Comparison` draws); their panels are merged into
one facet column per output node and result (see :mod:`innsight.plotting.merge`).

The renderers (and with them plotnine, matplotlib and plotly) are imported on the
first plot, so that ``import innsight`` stays light.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from innsight._validation import check_bools, describe, is_int
from innsight.methods.result import Result
from innsight.plotting.layout import check_layout, input_beside
from innsight.plotting.merge import merge_panels
from innsight.plotting.strip import STRIP, along_sequence, as_strip
from innsight.plotting.tokens import TokenHTML, TokenLayout, check_labels, check_values, layout_html, token_layout
from innsight.plotting.selection import (
    MAX_FACETS,
    AggrChannels,
    Panel,
    global_panels,
    is_mosaic,
    local_panels,
    n_facets,
    nonnegative,
    normalize_facets,
    top_features,
    value_label,
)

__all__ = ["plot", "plot_global", "plot_tokens", "tokens_html"]

#: What the plot functions draw: one result, or several named ones side by side.
Results = Result | Mapping[str, Result]


def _limits(panels: list[Panel], same_scale: bool) -> Callable[[Panel], tuple[float, float] | None]:
    """Value limits shared by all panels when ``same_scale``, else none: symmetric about
    0, or from 0 when no value is negative."""
    if not same_scale:
        return lambda panel: None
    bound = max(float(np.nanmax(np.abs(p.frame["value"].to_numpy()))) for p in panels) or 1.0
    low = 0.0 if all(nonnegative(p) for p in panels) else -bound
    return lambda panel: (low, bound)


def _shape(panels: list[Panel], label: str, title: str, top_k: int | None, normalize: bool,
           per_sample: bool) -> tuple[list[Panel], str, str]:
    """The panels with ``top_k`` and ``normalize`` applied, and the value label and
    title that say so."""
    if top_k is not None:
        if not is_int(top_k) or isinstance(top_k, bool) or top_k < 1:
            raise ValueError(f"`top_k` must be a positive int or None, got {describe(top_k)}.")
        if not any(p.kind == "tabular" for p in panels):
            raise ValueError(f"`top_k` keeps the largest tabular features, but the panels shown "
                             f"are {sorted({p.kind for p in panels})}; leave top_k=None.")
        panels = [top_features(p, int(top_k)) for p in panels]
    if normalize:
        panels = [normalize_facets(p, per_sample) for p in panels]
        label = f"{label}\n(÷ max |value| per facet)"
        title = f"{title} (each facet scaled to its largest |value|)"
    return panels, label, title


def _renderer(as_plotly: bool) -> ModuleType:
    """The plotnine renderer, or the plotly one; imported on first use so that
    ``import innsight`` loads neither. An ImportError names the extra when plotly
    is missing."""
    if not as_plotly:
        from innsight.plotting import plotnine_plots
        return plotnine_plots
    try:
        import plotly  # noqa: F401
    except ImportError as error:
        raise ImportError("Interactive plots (as_plotly=True) need plotly: "
                          "pip install innsight[plotly]") from error
    from innsight.plotting import plotly_plots
    return plotly_plots


def _named(result: Any) -> dict[str, Result]:
    """A mapping of names to results, checked."""
    if not isinstance(result, Mapping):
        raise TypeError("`result` must be a Result (what a method returns) or a dict of "
                        f"names to Results, got {describe(result)}.")
    if not result:
        raise ValueError("`result` must hold at least one named Result, got an empty "
                         f"{type(result).__name__}.")
    wrong = {name: describe(res) for name, res in result.items()
             if not isinstance(name, str) or not isinstance(res, Result)}
    if wrong:
        raise TypeError(f"`result` must map names (str) to Results, got {wrong}.")
    return dict(result)


def _panels(result: Results, make_panels: Callable[[Result], list[Panel]]) -> tuple[list[Panel], str, str]:
    """The panels to draw, the value label and the title. Several named results are
    merged (see :mod:`innsight.plotting.merge`) and named in the title."""
    if isinstance(result, Result):
        return make_panels(result), value_label(result), result.method
    named = _named(result)
    panels = merge_panels({name: make_panels(res) for name, res in named.items()})
    methods = dict.fromkeys(res.method for res in named.values())
    labels = dict.fromkeys(value_label(res) for res in named.values())
    title = ", ".join(named) if list(methods) == list(named) else \
        f"{', '.join(methods)}: {', '.join(named)}"  # results named by their methods: once
    return panels, " / ".join(labels), title


def _warn_many_facets(panels: list[Panel]) -> None:
    """Say when a panel has more than MAX_FACETS facets: images become one mosaic,
    other kinds are slow to draw."""
    for p in panels:
        if n_facets(p) <= MAX_FACETS or p.kind == STRIP:  # strips are rows of one image
            continue
        what = (f"{len(p.data_ids)} samples x {len(p.node_labels)} output nodes "
                f"(output layer {p.output_layer}, input layer {p.input_layer})")
        if is_mosaic(p):
            message = (f"plot() of {what}: the {n_facets(p)} heatmaps are drawn as one mosaic "
                       "(rows: samples, columns: output nodes) without prediction boxes; select "
                       f"at most {MAX_FACETS} with `data_idx`/`output_idx` for one facet each.")
        else:
            message = (f"plot() of {what} draws {n_facets(p)} facets, which is slow (about "
                       f"{0.08 * n_facets(p):.0f} s as a PNG) and hard to read; select at most "
                       f"{MAX_FACETS} with `data_idx`/`output_idx`.")
        warnings.warn(message, UserWarning, stacklevel=4)


def plot(result: Results, data_idx: Any = 0, output_idx: Any = None, output_label: Any = None,
         aggr_channels: AggrChannels = "sum", as_plotly: bool = False, same_scale: bool = False,
         show_preds: bool = True, show_input: bool = False, normalize: bool = False,
         top_k: int | None = None, layout: str = "facets", sequence_axis: int | None = None) -> Any:
    """Plot the explanation of samples, one facet per sample and selected output node.

    Parameters
    ----------
    result : Result or dict of str to Result
        What a method returned; or several results by name (e.g. one method on
        several models, see :func:`innsight.compare_models`), drawn side by side:
        one facet column per output node and result, ``"Y1 (torch)"``,
        ``"Y1 (onnx)"``, ... They must have the same shapes and as many
        selected output nodes each.
    data_idx : int or list of int
        Samples to show (rows of facets).
    output_idx, output_label : optional
        Nodes among those the result was computed for (model node indices or
        labels; see :func:`innsight.plotting.selection.select_outputs`). Default:
        all computed nodes.
    aggr_channels : {"sum", "mean", "norm"}, callable or None
        Channel aggregation of signals and images (see the module docs).
    as_plotly : bool
        Return a plotly ``Figure`` instead of a plotnine object. To share it as a
        file, choose where it finds plotly.js (4.8 MB) with
        ``fig.write_html(path, include_plotlyjs=...)``: ``True`` (plotly's default)
        puts it into the file (self-contained and offline, 4.8 MB each);
        ``"cdn"`` loads it from the internet (a few kB per figure, to send
        around); ``"directory"`` writes one ``plotly.min.js`` beside the file
        (offline; share the folder). ``innsight explain --plotly-js`` offers the same.
    same_scale : bool
        One symmetric value scale for all facets and input layers; otherwise
        bars and lines get a free y scale per facet row and each input
        layer's heatmap its own fill scale.
    show_preds : bool
        Annotate each facet with the prediction, the sum of the values and
        the decomposition goal (where the method has one: what the values of
        a sample should sum to, e.g. the explained output for LRP, ``f(x) -
        f(x_ref)`` for DeepLift and IntegratedGradient). With
        ``ignore_last_act=True`` (the default of every method) the sum and
        goal are in the units of the final activation's input and say so:
        after a softmax or sigmoid the box reads ``probability`` (the model's
        output) and ``sum``/``goal`` ``(logit)``.
    show_input : bool
        Draw the values over the explained input: images as a grey picture
        (channel mean, stretched per image) under the heatmap, each value as
        opaque as its magnitude; signals as the input line of every channel,
        coloured by the values (the y axis is then the input); tabular data
        as each feature's input at the tip of its bar. Needs a result
        computed with data.
    normalize : bool
        Divide each facet's values by their largest magnitude (the info box
        gives it), so that every facet spans [-1, 1] and facets whose values
        differ by orders of magnitude (several methods side by side) all stay
        readable; the title and the value label say so.
    top_k : int, optional
        Tabular inputs: show only the ``top_k`` features of largest mean
        ``|value|`` over the facets shown, largest first (give the number of
        features to sort them all).
    layout : {"facets", "side_by_side", "strip"}
        ``"facets"``: one facet per sample and output node. ``"side_by_side"``
        (image inputs): one row per sample, its input image in greys in a first
        column ``"input"``, then its heatmaps, as Captum's
        ``visualize_image_attr_multiple`` shows an image beside its attribution
        (with ``show_input=True`` the heatmaps are drawn over the input too).
        Other inputs of the model keep their facets. ``"strip"`` (sequence
        inputs: tokens ``(tokens,)``, time steps ``(features, time)`` or ``(time,
        features)``): a heat strip over the sequence per sample and output node,
        the features aggregated by ``aggr_channels``, wrapped into lines as text
        (see :func:`plot_tokens`); positions named by ``input_names`` (tokens) show
        their names, and the row name gives the info box.
    sequence_axis : {0, 1}, optional
        ``layout="strip"``: the sequence axis of a two-axis sample in the data's
        layout (as ``get_result()`` gives it). Default: the signal axis (the last
        of ``(C, L)``, the first of channels-last data ``(L, C)``); torch models
        that take ``(tokens, features)`` (recurrent layers with ``batch_first``,
        Hugging Face text models) need ``sequence_axis=0``.

    Returns
    -------
    plotnine.ggplot, plotnine composition or plotly.graph_objects.Figure
    """
    check_bools(same_scale=same_scale, show_preds=show_preds, as_plotly=as_plotly,
                show_input=show_input, normalize=normalize)
    beside = isinstance(layout, str) and layout == "side_by_side"
    strip = isinstance(layout, str) and layout == STRIP
    if not strip and sequence_axis is not None:
        raise ValueError("`sequence_axis` chooses the sequence axis of layout='strip', got "
                         f"layout={layout!r}; leave sequence_axis=None.")
    if strip and (show_input or top_k is not None):
        raise ValueError("`layout='strip'` draws the values along the sequence in its order; "
                         "leave show_input=False and top_k=None.")
    panels, label, title = _panels(result, lambda res: local_panels(
        along_sequence(res, sequence_axis) if strip else res, data_idx, output_idx, output_label,
        aggr_channels, show_input or beside))
    panels, label, title = _shape(panels, label, title, top_k, normalize, per_sample=True)
    chosen = check_layout(layout, panels)
    if chosen == "side_by_side":
        panels = [input_beside(p, overlay=show_input) for p in panels]
    elif chosen == STRIP:
        panels = [as_strip(p) for p in panels]
    _warn_many_facets(panels)
    return _renderer(as_plotly).plot_local(panels, label, title,
                                           _limits(panels, same_scale or normalize), show_preds)


def plot_global(result: Results, output_idx: Any = None, output_label: Any = None,
                data_idx: Any = "all", aggr_channels: AggrChannels = "sum",
                preprocess_fun: Callable[[Any], Any] | None = abs, as_plotly: bool = False,
                normalize: bool = False, top_k: int | None = None,
                ref_data_idx: int | None = None) -> Any:
    """Plot the explanations summarised over samples, one facet per output node.

    Tabular and signal inputs give box plots per feature (position) over the
    samples; images the mean heatmap. ``preprocess_fun`` (default ``abs``) is
    applied elementwise to the numpy values before the channels are aggregated
    (so ``"sum"`` with ``abs`` sums magnitudes); ``None`` skips it.
    ``data_idx`` is ``"all"``, an int or a list of ints. Values that are all
    ``>= 0`` (magnitudes) are drawn with a sequential colour scale from 0.
    ``normalize`` scales each output node's facet (over all samples) to its
    largest magnitude; ``top_k`` keeps the tabular features of largest mean
    preprocessed value. ``ref_data_idx`` (an int, as innsight R's
    ``boxplot(ref_data_idx=)``) highlights that sample among the box plots of
    tabular and signal inputs: its values, preprocessed and aggregated alike, as
    orange points (joined by a line along signals); the caption (plotly: legend)
    names it. Other arguments as in :func:`plot` (several named results are drawn
    side by side).
    """
    check_bools(as_plotly=as_plotly, normalize=normalize)
    panels, label, title = _panels(result, lambda res: global_panels(
        res, output_idx, output_label, data_idx, aggr_channels, preprocess_fun, ref_data_idx))
    if preprocess_fun is not None:  # say what was plotted: |gradient|, sqrt(gradient), ...
        name = getattr(preprocess_fun, "__name__", "preprocessed")
        label = f"|{label}|" if preprocess_fun is abs else f"{name}({label})"
    panels, label, title = _shape(panels, label, title, top_k, normalize, per_sample=False)
    return _renderer(as_plotly).plot_global(panels, label, title, _limits(panels, normalize))


def _tokens(relevance: Any, tokens: Any, target_names: Any, line_chars: int | None,
            normalize: bool) -> TokenLayout:
    """The checked arguments of :func:`plot_tokens` and :func:`tokens_html` as a layout."""
    check_bools(normalize=normalize)
    values = check_values(relevance)
    n_rows, n_tokens = values.shape
    tokens = check_labels(tokens, n_tokens, "tokens", "token (the last axis of `relevance`)")
    names = check_labels(target_names, n_rows, "target_names",
                         "target (the first axis of `relevance`)") or [f"target {i}" for i in range(n_rows)]
    if len(set(names)) < len(names):
        raise ValueError(f"`target_names` must be distinct, got {names}.")
    if normalize:
        scale = np.abs(values).max(axis=1, keepdims=True)
        values = values / np.where(scale > 0, scale, 1.0)
    return token_layout(values, tokens, names, line_chars, limit=1.0 if normalize else None)


def plot_tokens(relevance: Any, tokens: Sequence[str] | None = None,
                target_names: Sequence[str] | None = None, as_plotly: bool = False,
                line_chars: int | None = None, normalize: bool = False,
                value_name: str = "relevance", title: str = "") -> Any:
    """Relevance over a sequence of tokens as coloured text, one row per explained target.

    Parameters
    ----------
    relevance : array-like (n_targets, n_tokens) or (n_tokens,)
        One value per token and target (numpy, torch or nested lists), e.g. what
        LRP gives per token of a language model for each explained next token.
    tokens : list of str, optional
        The token strings (``tokenizer.convert_ids_to_tokens(ids)``), drawn in
        their tiles; without them each token is one cell of a heat strip.
    target_names : list of str, optional
        Distinct row names, e.g. the explained next tokens. Default ``"target 0"``, ...
    as_plotly : bool
        Return a plotly ``Figure`` (``fig.write_html(path)``; hover gives each
        token's position and value) instead of a plotnine ``ggplot``
        (``.save("tokens.png")``).
    line_chars : int, optional
        Characters per line: each row wraps into lines as text does, a token taking
        as many character cells as its text. Default 80, longer where the rows
        would need more than 60 lines (at most 400).
    normalize : bool
        Divide each row by its largest |value| (colour limits ``[-1, 1]``); else one
        scale for all rows, symmetric about 0 (``[-m, m]``, ``m`` the largest |value|).
    value_name : str
        The colour bar's title.
    title : str
        The figure's title.

    Returns
    -------
    plotnine.ggplot or plotly.graph_objects.Figure

    Notes
    -----
    Colours diverge from white at 0 to red (positive) and blue (negative). Line
    breaks and tabs inside tokens are drawn as visible signs. The static figure
    keeps within 25 inches by shrinking its text; for thousands of tokens the
    interactive figure (zoom, hover) or :func:`tokens_html` reads better.

    Examples
    --------
    >>> fig = plot_tokens([[0.5, -0.2, 1.0]], ["The", " cat", " sat"], ["next: ' on'"])
    >>> fig.save("tokens.png")  # doctest: +SKIP
    """
    check_bools(as_plotly=as_plotly)
    layout = _tokens(relevance, tokens, target_names, line_chars, normalize)
    if as_plotly:
        return _renderer(True).plot_tokens([("", layout)], value_name, title)
    return _renderer(False).plot_tokens(layout, value_name, title)


def tokens_html(relevance: Any, tokens: Sequence[str] | None = None,
                target_names: Sequence[str] | None = None, normalize: bool = False,
                value_name: str = "relevance") -> TokenHTML:
    """:func:`plot_tokens` as plain HTML (no JavaScript): a ``str`` that a notebook
    shows rendered; the browser wraps the tokens, and each shows its position and
    value as a tooltip. Arguments as in :func:`plot_tokens`.

    Examples
    --------
    >>> page = tokens_html([0.5, -0.2], ["Hello", " world"])
    >>> "Hello" in page
    True
    """
    return layout_html(_tokens(relevance, tokens, target_names, None, normalize), value_name)
