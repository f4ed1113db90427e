"""Every metric by name: what ``evaluate(metrics=[...])`` accepts as a string.

A name maps to a factory of the metric with its defaults or a preset (the least
relevant first orders, the two sensitivities); a new metric is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from innsight._validation import describe
from innsight.metrics.base import Metric
from innsight.metrics.complexity import Completeness, Complexity, Sparseness
from innsight.metrics.faithfulness import Deletion, FaithfulnessCorrelation, Infidelity, Insertion
from innsight.metrics.randomisation import RandomLogit, Randomization
from innsight.metrics.road import ROAD
from innsight.metrics.robustness import Sensitivity

LERF = "least_relevant_first"

METRICS: dict[str, Callable[[], Metric]] = {
    "deletion": Deletion,
    "deletion_lerf": partial(Deletion, order=LERF),
    "insertion": Insertion,
    "insertion_lerf": partial(Insertion, order=LERF),
    "road": ROAD,
    "road_lerf": partial(ROAD, order=LERF),
    "faithfulness_correlation": FaithfulnessCorrelation,
    "infidelity": Infidelity,
    "sensitivity_max": partial(Sensitivity, aggregate="max"),
    "sensitivity_avg": partial(Sensitivity, aggregate="avg"),
    "completeness": Completeness,
    "randomization": Randomization,
    "randomization_ssim": partial(Randomization, similarity="ssim"),
    "random_logit": RandomLogit,
    "random_logit_ssim": partial(RandomLogit, similarity="ssim"),
    "sparseness": Sparseness,
    "complexity": Complexity,
}

#: What ``evaluate`` computes by default: the metrics that evaluate the model or read
#: the values, without re-running the method (robustness and sanity checks do).
DEFAULT_METRICS = ("deletion", "insertion", "faithfulness_correlation", "completeness",
                   "sparseness", "complexity")


def resolve_metric(metric: Any) -> Metric:
    """A metric object from a registered name or an object itself."""
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str) and metric in METRICS:
        return METRICS[metric]()
    raise ValueError(f"`metrics` must hold metric names from {sorted(METRICS)} or metric objects "
                     f"(e.g. ins.metrics.Deletion(features_in_step=16)), got {describe(metric)}.")
