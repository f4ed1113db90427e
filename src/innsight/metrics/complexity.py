"""Metrics of the values alone (no model evaluation): sparseness, complexity, completeness.

Each is computed per sample and explained output node over all input entries
(every input layer, channels included).

- :class:`Sparseness`: the Gini index of ``|values|`` (Chalasani et al. 2020), 0 for
  equal values, towards 1 when one entry holds everything; higher is better.
- :class:`Complexity`: the entropy of ``|values| / sum |values|`` (Bhatt et al.
  2020), ``0 .. log(p)``; lower is better.
- :class:`Completeness`: the conservation gap ``|sum(values) - goal| / |goal|`` for
  methods with a decomposition goal (IntegratedGradient, DeepLift, DeepSHAP, SHAP,
  ...); the absolute gap where the goal is 0; lower is better.

Quantus computes sparseness after dividing by the batch's largest value and adding
``1e-7`` to every entry, and complexity with ``log(p + 1e-12)``; here neither
offset is added (an all-zero explanation gets NaN), which changes values by less
than ``1e-6`` for explanations of a few thousand entries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from innsight.metrics.base import Metric, Scores
from innsight.metrics.subject import Subject


@dataclass(frozen=True)
class Sparseness(Metric):
    """The Gini index of the absolute values; higher is better. See the module docs."""

    name = "sparseness"

    def compute(self, subject: Subject) -> Scores:
        a = subject.values.abs().sort(dim=1).values  # (n, p, n_targets), ascending
        p = a.shape[1]
        weights = 2 * torch.arange(1, p + 1, dtype=a.dtype, device=a.device) - p - 1
        gini = (weights[:, None] * a).sum(1) / (p * a.sum(1))
        return Scores(gini)


@dataclass(frozen=True)
class Complexity(Metric):
    """The entropy of the absolute values as a distribution; lower is better."""

    name = "complexity"

    @property
    def higher_is_better(self) -> bool:
        return False

    def compute(self, subject: Subject) -> Scores:
        a = subject.values.abs()
        share = a / a.sum(1, keepdim=True)
        return Scores(-torch.special.xlogy(share, share).sum(1))


@dataclass(frozen=True)
class Completeness(Metric):
    """The relative conservation gap ``|sum - goal| / |goal|``; lower is better. Results
    of methods without a goal get no rows."""

    name = "completeness"

    @property
    def higher_is_better(self) -> bool:
        return False

    def compute(self, subject: Subject) -> Scores | None:
        if subject.goal is None:
            return None
        gap = (subject.sums - subject.goal).abs()
        scale = subject.goal.abs()
        return Scores(torch.where(scale > 0, gap / scale, gap))
