"""Plots of metric scores: the curves per method, and a method x metric table.

Both take the frame :func:`~innsight.metrics.evaluate` returns and return an object
to keep editing: a plotnine ``ggplot`` or, with ``as_plotly=True``, a plotly
``Figure``. plotnine and plotly are imported on the first plot.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from innsight._validation import check_bool, describe
from innsight.plotting.colours import MIDDLE, POSITIVE

#: The x axis of each curve metric.
X_TITLES = {"randomization": "layers randomised (from the top)",
            "randomization_ssim": "layers randomised (from the top)"}
DEFAULT_X_TITLE = "fraction of features changed"


def _checked(scores: Any, key: str) -> Any:
    if not isinstance(scores, pd.DataFrame) or key not in scores.attrs:
        raise TypeError(f"`scores` must be the data frame ins.evaluate(...) returns (with "
                        f"attrs[{key!r}]), got {describe(scores)}.")
    return scores.attrs[key]


def curve_means(scores: pd.DataFrame, metrics: Any = None) -> pd.DataFrame:
    """The curves of ``scores`` averaged over samples and output nodes: one row per
    (model,) method, metric and step, with ``x``, ``label`` and ``value``; only rows
    still in ``scores`` (after filtering) count."""
    curves = _checked(scores, "curves")
    keys = [c for c in ("model", "method", "metric", "data", "output_node") if c in scores]
    kept = curves.merge(scores[keys].drop_duplicates(), on=keys)
    available = sorted(kept["metric"].unique())
    chosen = available if metrics is None else [metrics] if isinstance(metrics, str) else list(metrics)
    missing = sorted(set(chosen) - set(available))
    if missing or not chosen:
        raise ValueError(f"`metrics` must name curve metrics of `scores` {available}, "
                         f"got {describe(metrics)}.")
    kept = kept[kept["metric"].isin(chosen)]
    group = [c for c in ("model", "method") if c in kept] + ["metric", "step"]
    means = kept.groupby(group, sort=False, observed=True).agg(
        x=("x", "first"), label=("label", "first"), value=("value", "mean")).reset_index()
    if "model" in means:
        means["method"] = means["method"] + " (" + means["model"].astype(str) + ")"
    return means


def plot_curves(scores: pd.DataFrame, metrics: Any = None, as_plotly: bool = False) -> Any:
    """Mean deletion, insertion and randomisation curves, one line per method and one
    facet per metric (output on the y axis; similarity for randomisation).

    Parameters
    ----------
    scores : pandas.DataFrame
        What ``ins.evaluate`` returned (filter its rows to choose samples or nodes).
    metrics : str or list of str, optional
        Curve metrics to draw; default all in ``scores``.
    as_plotly : bool
        A plotly ``Figure`` instead of a plotnine ``ggplot``.
    """
    check_bool(as_plotly, "as_plotly")
    means = curve_means(scores, metrics)
    if as_plotly:
        return _plotly_curves(means)
    import plotnine as p9

    return (p9.ggplot(means, p9.aes("x", "value", color="method"))
            + p9.geom_line() + p9.geom_point(size=0.8)
            + p9.facet_wrap("~metric", scales="free")
            + p9.labs(x=" / ".join(sorted({X_TITLES.get(m, DEFAULT_X_TITLE)
                                           for m in means["metric"]})),
                      y="mean output (similarity)", color="method")
            + p9.theme_bw() + p9.theme(figure_size=(4 + 3 * means["metric"].nunique(), 3.2)))


def table(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean value per (model,) method and metric, with ``quality``: 0 (worst) to 1 (best)
    among the methods, by the metric's direction (``attrs["higher_is_better"]``)."""
    higher = _checked(scores, "higher_is_better")
    group = [c for c in ("model", "method") if c in scores] + ["metric"]
    means = scores.groupby(group, sort=False, observed=True)["value"].mean().reset_index()
    low = means.groupby("metric")["value"].transform("min")
    high = means.groupby("metric")["value"].transform("max")
    better_high = means["metric"].map(higher).fillna(True).astype(bool)
    distance = (means["value"] - low).where(better_high, high - means["value"])
    # all equal (or one method): every one is the best
    means["quality"] = (distance / (high - low).where(high > low)).fillna(1.0)
    if "model" in means:
        means["method"] = means["method"] + " (" + means["model"].astype(str) + ")"
    return means


def plot_table(scores: pd.DataFrame, as_plotly: bool = False) -> Any:
    """A method x metric heatmap of the mean values; the colour is the quality among the
    methods (darkest the best by the metric's direction), the text the mean value."""
    check_bool(as_plotly, "as_plotly")
    means = table(scores)
    means["text"] = [f"{v:.3g}" for v in means["value"]]
    if as_plotly:
        return _plotly_table(means)
    import plotnine as p9

    return (p9.ggplot(means, p9.aes("metric", "method", fill="quality"))
            + p9.geom_tile(color="white") + p9.geom_text(p9.aes(label="text"), size=7)
            + p9.scale_fill_gradient(low=MIDDLE, high=POSITIVE, limits=(0, 1),
                                     name="quality\n(1 = best)")
            + p9.labs(x="metric", y="method") + p9.theme_bw()
            + p9.theme(axis_text_x=p9.element_text(rotation=45, ha="right"),
                       figure_size=(2 + 0.9 * means["metric"].nunique(),
                                    2 + 0.4 * means["method"].nunique())))


def _plotly_curves(means: pd.DataFrame) -> Any:
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    metrics = list(dict.fromkeys(means["metric"]))
    figure = make_subplots(rows=1, cols=len(metrics), subplot_titles=metrics)
    for col, metric in enumerate(metrics, start=1):
        for method, part in means[means["metric"] == metric].groupby("method", sort=False):
            figure.add_trace(go.Scatter(x=part["x"], y=part["value"], name=method,
                                        legendgroup=method, showlegend=col == 1,
                                        text=part["label"], mode="lines+markers"), row=1, col=col)
        figure.update_xaxes(title_text=X_TITLES.get(metric, DEFAULT_X_TITLE), row=1, col=col)
    return figure.update_layout(template="plotly_white")


def _plotly_table(means: pd.DataFrame) -> Any:
    import plotly.graph_objects as go

    quality = means.pivot(index="method", columns="metric", values="quality")
    text = means.pivot(index="method", columns="metric", values="text").loc[quality.index,
                                                                            quality.columns]
    return go.Figure(go.Heatmap(z=quality.to_numpy(), x=list(quality.columns),
                                y=list(quality.index), text=text.to_numpy(),
                                texttemplate="%{text}", zmin=0, zmax=1,
                                colorscale=[[0, MIDDLE], [1, POSITIVE]],
                                colorbar={"title": "quality (1 = best)"})
                     ).update_layout(template="plotly_white")
