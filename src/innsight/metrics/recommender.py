"""``recommend``: run candidate methods on a model, score them, and rank them.

Every candidate is a method class with fixed arguments. Each is run on the data
(with ``tune=True``, once per setting drawn from its ``get_tunables()`` ranges, see
:mod:`innsight.metrics.search`), every run is scored by the same metrics with the
same ``seed`` (so every run meets the same perturbations), and the runs are ranked
by their mean per-metric rank (:mod:`innsight.metrics.ranking`). When tuning, all
runs of all candidates are ranked together, each candidate keeps its best run, and
the kept runs are ranked again among themselves.
"""

from __future__ import annotations

import secrets
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from innsight._validation import check_bool, describe, is_int, is_number
from innsight.converter import Converter
from innsight.metrics.evaluate import check_metrics, evaluate
from innsight.metrics.ranking import rank
from innsight.metrics.search import settings
from innsight.methods.base import METHODS, InterpretingMethod, check_positive_int
from innsight.methods.deeplift import DeepLift
from innsight.methods.gradient import Gradient, IntegratedGradient, SmoothGrad
from innsight.methods.lrp import LRP
from innsight.methods.result import Result

Candidate = tuple[type[InterpretingMethod], dict[str, Any]]

#: The candidates when ``methods=None``: the methods that need nothing but the model
#: and the data (no reference samples to choose), by label.
DEFAULT_METHODS: dict[str, Candidate] = {
    "Gradient": (Gradient, {}),
    "Gradient x input": (Gradient, {"times_input": True}),
    "SmoothGrad": (SmoothGrad, {}),
    "IntegratedGradient": (IntegratedGradient, {}),
    "DeepLift": (DeepLift, {}),
    "LRP": (LRP, {}),
}

#: The metrics when ``metrics=None``: faithfulness (three views of it), robustness and
#: complexity; faithfulness weighs three fifths of the mean rank.
RECOMMEND_METRICS = ("deletion", "insertion", "faithfulness_correlation", "sensitivity_max",
                     "sparseness")

#: Shared method arguments ``recommend`` passes on to every candidate.
PASSED_ON = ("channels_first", "output_idx", "output_label", "targets", "target_weights",
             "target_fun", "ignore_last_act", "dtype")


def recommend(
    conv: Converter,
    data: Any,
    methods: Any = None,
    metrics: Sequence[Any] | None = None,
    tune: bool = False,
    *,
    n_trials: int = 8,
    time_budget: float | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    device: Any = None,
    verbose: bool | None = None,
    **method_args: Any,
) -> tuple[pd.DataFrame, Result]:
    """Run candidate methods, score them by metrics, and rank them: which one to trust.

    Parameters
    ----------
    conv : Converter
        The converted model (``ins.convert(model, ...)``).
    data
        The samples to explain and score, as for every method.
    methods : list or dict, optional
        The candidates: method names (``"Gradient"``, ``"LRP"``, ...) or classes
        (``ins.SmoothGrad``), or a dict of labels to a name or class or to a pair
        ``(name or class, {own arguments})``, e.g. ``{"LRP eps": ("LRP", {"rule_name":
        "epsilon"})}``. Default ``DEFAULT_METHODS``; those that refuse the model (a
        layer without a rule) are left out with a warning.
    metrics : list, optional
        Metric names or objects, as for :func:`~innsight.metrics.evaluate`; default
        ``RECOMMEND_METRICS`` (deletion, insertion, faithfulness correlation, max
        sensitivity, sparseness).
    tune : bool
        Also search each candidate's ``get_tunables()`` ranges (its fixed arguments
        are not searched): up to ``n_trials`` settings per candidate, its defaults
        first, then a grid or random draws with ``seed``.
    n_trials : int
        Settings tried per candidate when tuning.
    time_budget : float, optional
        Seconds for the search: settings are tried round-robin over the candidates
        (every candidate's defaults first) until the budget is spent; default none.
    batch_size, seed, device, verbose
        Passed on to every method and to ``evaluate``. One ``seed`` (drawn when not
        given) makes the methods, the metrics and the search reproducible.
    **method_args
        Shared arguments for every candidate: ``output_idx``, ``output_label``,
        ``targets`` (e.g. ``"predicted"``), ``target_weights``, ``target_fun``,
        ``channels_first``, ``ignore_last_act``, ``dtype``.

    Returns
    -------
    ranking : pandas.DataFrame
        One row per candidate, best first: ``method`` (label), ``params`` (its own
        arguments as run, the chosen ones when tuning), the mean value of each metric,
        ``mean_rank`` and ``rank``. ``attrs``: ``"ranks"`` (per-metric ranks),
        ``"higher_is_better"``, ``"scores"`` (the ``evaluate`` frame of the ranked
        runs, for ``ins.metrics.plot_curves`` and ``plot_table``), ``"trials"`` (every
        run when tuning, with ``trial`` and ``params``) and ``"left_out"`` (runs the
        model refused, ``"label #trial"`` to the reason: default rule-based candidates
        and drawn settings are left out with a warning, not raised).
    best : Result
        The result of the best candidate (as run with its chosen parameters).

    Examples
    --------
    >>> ranking, best = ins.recommend(conv, x, output_idx=[3], seed=0)
    >>> ranking[["rank", "method", "mean_rank"]]  # doctest: +SKIP
    """
    if not isinstance(conv, Converter):
        raise TypeError(f"`conv` must be an innsight Converter (from ins.convert(model, ...)), "
                        f"got {describe(conv)}.")
    candidates = _candidates(methods)
    metrics = check_metrics(RECOMMEND_METRICS if metrics is None else metrics)
    check_bool(tune, "tune")
    n_trials = check_positive_int(n_trials, "n_trials")
    if time_budget is not None and (not is_number(time_budget) or not time_budget > 0):
        raise ValueError(f"`time_budget` must be a positive number of seconds or None, got "
                         f"{describe(time_budget)}.")
    unknown = sorted(set(method_args) - set(PASSED_ON))
    if unknown:
        raise TypeError(f"recommend got unexpected argument(s) {unknown}; the method arguments "
                        f"it passes on are {list(PASSED_ON)} (own arguments go into `methods`).")
    if seed is not None and not is_int(seed):
        raise TypeError(f"`seed` must be an int or None, got {describe(seed)}.")
    seed = secrets.randbelow(2**31) if seed is None else int(seed)
    shared = {**method_args, "batch_size": batch_size, "seed": seed, "device": device,
              "verbose": verbose}
    rng = np.random.default_rng(seed)
    plans = {label: (cls, settings(cls, fixed, n_trials, rng) if tune else [fixed])
             for label, (cls, fixed) in candidates.items()}

    runs: dict[str, tuple[str, dict[str, Any], Result]] = {}  # "label #trial": ...
    frames: dict[str, pd.DataFrame] = {}
    left_out: dict[str, str] = {}
    start = time.perf_counter()
    for trial in range(max(len(trials) for _, trials in plans.values())):
        for label, (cls, trials) in plans.items():
            spent = time_budget is not None and time.perf_counter() - start > time_budget
            if trial >= len(trials) or f"{label} #0" in left_out or (trial and spent):
                continue
            name = f"{label} #{trial}"
            try:
                result = cls(conv, data, **trials[trial], **shared)
            except ValueError as err:
                # a rule-based default or a drawn setting the model refuses (e.g. a layer
                # without the rule) is left out; an explicit candidate's refusal is raised
                if not (trial or (methods is None and cls.needs_graph)):
                    raise
                left_out[name] = str(err)
                warnings.warn(f"recommend leaves out {name} {trials[trial]}: {err}",
                              stacklevel=2)
                continue
            runs[name] = (label, trials[trial], result)
            frames[name] = evaluate({name: result}, metrics, batch_size=batch_size, seed=seed,
                                    device=device, verbose=verbose)
    if not runs:
        raise ValueError(f"no candidate method could explain the model: {left_out}.")

    labels = list(dict.fromkeys(label for label, _, _ in runs.values()))  # as first run
    every_run = rank(_joined(list(frames.values())), list(runs))
    best_runs: dict[str, str] = {}  # each candidate's best run
    for name in every_run["method"]:
        best_runs.setdefault(runs[name][0], name)
    kept = _joined([frames[best_runs[label]] for label in labels if label in best_runs])
    for frame in (kept, kept.attrs["curves"]):
        frame["method"] = frame["method"].map(lambda name: runs[name][0])
    ranking = _with_params(rank(kept, [label for label in labels if label in best_runs]),
                           {label: runs[name][1] for label, name in best_runs.items()})
    ranking.attrs.update(scores=kept, left_out=left_out)
    if tune:
        trials = _with_params(every_run, {name: params for name, (_, params, _) in runs.items()})
        for frame in (trials, trials.attrs["ranks"]):
            frame.insert(list(frame.columns).index("method") + 1, "trial",
                         [int(name.rsplit("#", 1)[1]) for name in frame["method"]])
            frame["method"] = [runs[name][0] for name in frame["method"]]
        ranking.attrs["trials"] = trials
    return ranking, runs[best_runs[ranking["method"].iloc[0]]][2]


def _candidates(methods: Any) -> dict[str, tuple[type[InterpretingMethod], dict[str, Any]]]:
    """The candidates by label, each a method class and its fixed own arguments."""
    if methods is None:
        return dict(DEFAULT_METHODS)
    if isinstance(methods, Mapping):
        items = list(methods.items())
        bad = [k for k, _ in items if not isinstance(k, str)]
        if bad:
            raise TypeError(f"`methods` as a dict must be keyed by labels (str), got keys {bad!r}.")
    elif isinstance(methods, Sequence) and not isinstance(methods, str):
        items = [(_method_class(m).method_name, m) for m in methods]
        labels = [label for label, _ in items]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"`methods` names {repeated} more than once; pass a dict of labels "
                             "to (method, arguments) pairs to try several settings.")
    else:
        raise TypeError(f"`methods` must be a list of method names or classes, or a dict of "
                        f"labels to them, got {describe(methods)}.")
    if not items:
        raise ValueError("`methods` must hold at least one method, got none.")
    chosen = {}
    for label, spec in items:
        method, args = spec if isinstance(spec, tuple) and len(spec) == 2 else (spec, {})
        if not isinstance(args, Mapping) or not all(isinstance(k, str) for k in args):
            raise TypeError(f"`methods[{label!r}]` must pair a method with a dict of its own "
                            f"arguments, got {describe(args)}.")
        chosen[label] = (_method_class(method), dict(args))
    return chosen


def _method_class(method: Any) -> type[InterpretingMethod]:
    if isinstance(method, str) and method in METHODS:
        return METHODS[method]
    if isinstance(method, type) and issubclass(method, InterpretingMethod) \
            and "method_name" in vars(method):
        return method
    raise ValueError(f"`methods` must hold method names from {sorted(METHODS)} or method "
                     f"classes (e.g. ins.SmoothGrad), got {describe(method)}.")


def _joined(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Several ``evaluate`` frames as one, their curves and directions joined."""
    bare = [frame.copy(deep=False) for frame in frames]
    for frame in bare:
        frame.attrs = {}  # pandas compares the attrs of what it joins
    joined = pd.concat(bare, ignore_index=True)
    joined.attrs = {"curves": pd.concat([f.attrs["curves"] for f in frames], ignore_index=True),
                    "higher_is_better": frames[0].attrs["higher_is_better"]}
    return joined


def _with_params(ranked: pd.DataFrame, params: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """``ranked`` with ``params`` (the own arguments of each ``method``) after ``method``,
    and ``rank`` first; the per-metric ranks keep their rows."""
    ranked = ranked.copy()
    ranked.insert(1, "params", [params[name] for name in ranked["method"]])
    ranked.insert(0, "rank", ranked.pop("rank"))
    return ranked
