"""Ranking explanations by several metrics at once: per-metric ranks, averaged.

The aggregation (used by :func:`~innsight.recommend`):

1. each metric's value is averaged over samples and explained output nodes, one mean
   per method and metric;
2. per metric, the methods are ranked ``1, 2, ...`` from best to worst in the metric's
   direction (:attr:`Metric.higher_is_better <innsight.metrics.Metric.higher_is_better>`,
   the one place it is declared; ``evaluate`` passes it on in
   ``attrs["higher_is_better"]``); ties share their mean rank, where means closer
   than ``TIE_RTOL`` times the metric's largest magnitude tie (rounding noise must
   not order methods that are equal in exact arithmetic, e.g. gradient x input and
   IntegratedGradient on a linear model), and a method without a value for a metric
   (completeness for a method without a decomposition goal) shares the last place
   of that metric;
3. a method's score is its mean rank over the metrics, every metric weighing the
   same; the best method has the smallest, ties keep the order the methods came in.

Ranks, not values, are averaged, so metrics in different units (an area under an
output curve, a correlation, a Gini index) count alike and no metric's scale wins.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from innsight.metrics.plots import table

#: Means of one metric closer than this times its largest magnitude tie.
TIE_RTOL = 1e-5


def metric_ranks(means: pd.Series, higher_is_better: bool) -> pd.Series:
    """Ranks ``1..k`` of one metric's means, best first; near-equal means (a chain of
    gaps each below ``TIE_RTOL`` times the largest magnitude) and missing ones (last)
    share their mean rank."""
    values = means.to_numpy(dtype=float)
    present = ~np.isnan(values)
    keys = np.where(present, -values if higher_is_better else values, np.inf)
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    scale = np.abs(values[present]).max(initial=0.0)
    gaps = np.diff(ordered)
    new_group = ~((gaps <= TIE_RTOL * scale) | (np.isinf(ordered[1:]) & np.isinf(ordered[:-1])))
    group = np.concatenate([[0], np.cumsum(new_group)])
    positions = np.arange(1, len(values) + 1, dtype=float)
    shared = pd.Series(positions).groupby(group).transform("mean").to_numpy()
    ranks = np.empty(len(values))
    ranks[order] = shared
    return pd.Series(ranks, index=means.index)


def rank(scores: pd.DataFrame, methods: list[str] | None = None) -> pd.DataFrame:
    """Methods ranked by their mean per-metric rank; see the module docs.

    Parameters
    ----------
    scores : pandas.DataFrame
        What :func:`~innsight.metrics.evaluate` returned.
    methods : list of str, optional
        The methods to rank, in the order that breaks ties; default those in
        ``scores`` as they come. One without any value there shares the last places.

    Returns
    -------
    pandas.DataFrame
        One row per (model,) method, best first: ``method``, one column per metric
        with its mean value, ``mean_rank`` and ``rank`` (1 the best). ``attrs["ranks"]``
        holds the per-metric ranks (same rows and metric columns) and
        ``attrs["higher_is_better"]`` the directions.
    """
    long = table(scores)  # checks that scores came from evaluate
    higher = scores.attrs["higher_is_better"]
    if methods is None:
        methods = list(dict.fromkeys(long["method"]))
    means = long.pivot(index="method", columns="metric", values="value")
    metrics = [m for m in higher if m in means.columns]
    means = means.reindex(index=methods, columns=metrics)
    ranks = pd.DataFrame({m: metric_ranks(means[m], higher[m]) for m in metrics},
                         index=means.index)
    ranked = means.assign(mean_rank=ranks.mean(axis=1))
    ranked["rank"] = ranked["mean_rank"].rank(method="first").astype(int)
    order = ranked.sort_values("rank").index
    ranked = ranked.loc[order].reset_index()
    ranked.columns.name = None
    ranked.attrs["ranks"] = ranks.loc[order].reset_index()
    ranked.attrs["higher_is_better"] = {m: higher[m] for m in metrics}
    return ranked
