"""``evaluate``: metrics of one or several results as one long data frame."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from innsight._validation import describe, is_int
from innsight.metrics.base import Metric, Scores
from innsight.metrics.catalogue import DEFAULT_METRICS, resolve_metric
from innsight.metrics.subject import Subject
from innsight.methods.base import check_positive_int, is_interactive, resolve_device
from innsight.methods.comparison import Comparison
from innsight.methods.result import Result

#: The columns of the frame (``model`` only when comparisons are evaluated).
COLUMNS = ["method", "metric", "data", "output_node", "value"]
CURVE_COLUMNS = ["method", "metric", "data", "output_node", "step", "x", "label", "value"]


def evaluate(
    results: Any,
    metrics: Sequence[Any] = DEFAULT_METRICS,
    *,
    batch_size: int | None = None,
    seed: int | None = None,
    device: Any = None,
    verbose: bool | None = None,
) -> pd.DataFrame:
    """Score explanations by faithfulness, robustness, sanity and complexity metrics.

    Parameters
    ----------
    results
        A result of any method (``ins.run_grad(conv, x)``, ``ins.run_shap(model, ...)``,
        ...), a :class:`~innsight.Comparison`, a list of them, or a dict of names to
        them (the names fill the ``method`` column; a list uses each method's name).
    metrics : list of str or metric objects
        Names from ``ins.metrics.METRICS`` (``"deletion"``, ``"insertion"``,
        ``"deletion_lerf"``, ``"insertion_lerf"``, ``"road"``, ``"road_lerf"``,
        ``"faithfulness_correlation"``, ``"infidelity"``, ``"sensitivity_max"``,
        ``"sensitivity_avg"``, ``"completeness"``, ``"randomization"``,
        ``"randomization_ssim"``, ``"random_logit"``, ``"random_logit_ssim"``,
        ``"sparseness"``, ``"complexity"``) or metric objects with settings, e.g.
        ``ins.metrics.Deletion(baseline="blur", feature_groups=patches)``. Default: the
        metrics that do not re-run the method (``DEFAULT_METRICS``).
    batch_size : int, optional
        Most rows (perturbed inputs of all samples, steps and output nodes) through the
        model at once; default the batch size the method ran with.
    seed : int, optional
        Seeds every random draw. Every result gets the same draws, so methods are
        compared on the same perturbations.
    device : str or torch.device, optional
        Where to evaluate converted models (a copy is moved); default where the
        method ran.
    verbose : bool, optional
        Progress bars; default when running interactively.

    Returns
    -------
    pandas.DataFrame
        One row per result, metric, sample and explained output node, with columns
        ``method``, ``metric``, ``data`` (sample index), ``output_node`` (label),
        ``value`` (and ``model`` first for comparisons). ``frame.attrs["curves"]``
        holds the curves behind curve metrics (deletion, insertion, ROAD, randomization)
        in long form (``step``, ``x``, ``label``, ``value``), and
        ``frame.attrs["higher_is_better"]`` says per metric which way is better.

    Examples
    --------
    >>> res = {"Gradient": ins.run_grad(conv, x), "IntGrad": ins.run_intgrad(conv, x)}
    >>> scores = ins.evaluate(res, ["deletion", "insertion", "sparseness"], seed=0)
    >>> scores.pivot_table(index="method", columns="metric", values="value")  # doctest: +SKIP
    """
    subjects = _named_results(results)
    chosen = check_metrics(metrics)
    if batch_size is not None:
        batch_size = check_positive_int(batch_size, "batch_size")
    if seed is not None and not is_int(seed):
        raise TypeError(f"`seed` must be an int or None, got {describe(seed)}.")
    seed = secrets.randbelow(2**31) if seed is None else int(seed)
    torch_device = None if device is None else resolve_device(device, torch.device("cpu"))
    verbose = is_interactive() if verbose is None else bool(verbose)
    with_model = any(model is not None for model, _, _ in subjects)
    frames, curves = [], []
    for model, method, result in subjects:
        subject = Subject.of(method, result, batch_size, seed, torch_device, verbose)
        for metric in chosen:
            scores = metric.compute(subject)
            if scores is None:
                continue
            keys = {"model": model} if with_model else {}
            keys.update(method=method, metric=metric.label)
            frames.append(_score_frame(keys, subject, scores))
            if scores.curve is not None:
                curves.append(_curve_frame(keys, subject, scores))
    first = ["model"] if with_model else []
    frame = _concat(frames, first + COLUMNS)
    frame.attrs["curves"] = _concat(curves, first + CURVE_COLUMNS)
    frame.attrs["higher_is_better"] = {m.label: m.higher_is_better for m in chosen}
    return frame


def check_metrics(metrics: Any) -> list[Metric]:
    """Metric objects from names or objects; refuses an empty list and repeated labels."""
    if isinstance(metrics, (str, Metric)):
        metrics = [metrics]
    if not isinstance(metrics, Sequence) or not metrics:
        raise TypeError(f"`metrics` must be a non-empty list of metric names or objects, got "
                        f"{describe(metrics)}.")
    chosen = [resolve_metric(m) for m in metrics]
    labels = [m.label for m in chosen]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f"`metrics` names {repeated} more than once; give each metric once "
                         "(one setting per evaluate call).")
    return chosen


def _named_results(results: Any) -> list[tuple[str | None, str, Result]]:
    """``(model, method, result)`` for every result given."""
    if isinstance(results, Mapping):
        named = list(results.items())
        bad = [k for k in results if not isinstance(k, str)]
        if bad:
            raise TypeError(f"`results` as a dict must be keyed by names (str), got keys {bad!r}.")
    elif isinstance(results, (Result, Comparison)):
        named = [(results.method, results)]
    elif isinstance(results, Sequence) and not isinstance(results, str) and results:
        named = [(getattr(r, "method", None), r) for r in results]
        names = [name for name, _ in named]
        repeated = sorted({n for n in names if isinstance(n, str) and names.count(n) > 1})
        if repeated:
            raise ValueError(f"`results` holds several results of {repeated}; pass a dict of "
                             "names to results to tell them apart.")
    else:
        raise TypeError("`results` must be a result (e.g. ins.run_grad(conv, x)), a Comparison, "
                        f"or a non-empty list or dict of them, got {describe(results)}.")
    flat: list[tuple[str | None, str, Result]] = []
    for name, item in named:
        if isinstance(item, Comparison):
            flat.extend((model, name, res) for model, res in item.results.items())
        elif isinstance(item, Result):
            flat.append((None, name, item))
        else:
            raise TypeError(f"`results` must hold results or Comparisons, got {describe(item)} "
                            f"for {name!r}.")
    return flat


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float64).numpy()


def _score_frame(keys: dict[str, Any], subject: Subject, scores: Scores) -> pd.DataFrame:
    values = _numpy(scores.values)  # (n_data, n_targets)
    sample, node = np.indices(values.shape).reshape(2, -1)
    return pd.DataFrame({**keys, "data": sample,
                         "output_node": np.asarray(subject.labels, dtype=object)[node],
                         "value": values.ravel()})


def _curve_frame(keys: dict[str, Any], subject: Subject, scores: Scores) -> pd.DataFrame:
    curve = scores.curve
    y = _numpy(curve.y)  # (n_data, n_targets, n_points)
    sample, node, step = np.indices(y.shape).reshape(3, -1)
    labels = None if curve.labels is None else np.asarray(curve.labels, dtype=object)[step]
    return pd.DataFrame({**keys, "data": sample,
                         "output_node": np.asarray(subject.labels, dtype=object)[node],
                         "step": step, "x": _numpy(curve.x)[step], "label": labels,
                         "value": y.ravel()})


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    """The frames one after the other (each has ``columns`` in that order)."""
    if not frames:
        return pd.DataFrame(columns=columns)
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
