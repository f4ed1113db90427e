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

Both are computed in NumPy (float64), like Quantus: on a few thousand entries per
sample the work is too small for torch's thread pool to pay off.

Quantus computes sparseness after dividing by the batch's largest value and adding
``1e-7`` to every entry, and complexity with ``log(p + 1e-12)``; here neither
offset is added (an all-zero explanation gets NaN), which changes values by less
than ``1e-6`` for explanations of a few thousand entries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from innsight.metrics.base import Metric, Scores
from innsight.metrics.subject import Subject


def _absolute(subject: Subject) -> np.ndarray:
    """``|values|`` ``(n_data, p, n_targets)`` as float64 NumPy."""
    return np.abs(subject.values.detach().cpu().numpy().astype(np.float64))


@dataclass(frozen=True)
class Sparseness(Metric):
    """The Gini index of the absolute values; higher is better. See the module docs."""

    name = "sparseness"

    def compute(self, subject: Subject) -> Scores:
        a = np.sort(_absolute(subject), axis=1)  # (n, p, n_targets), ascending
        p = a.shape[1]
        weights = 2 * np.arange(1, p + 1) - p - 1
        with np.errstate(invalid="ignore"):  # an all-zero explanation: NaN
            gini = np.einsum("p,npt->nt", weights, a) / (p * a.sum(1))
        return Scores(torch.from_numpy(gini))


@dataclass(frozen=True)
class Complexity(Metric):
    """The entropy of the absolute values as a distribution; lower is better."""

    name = "complexity"

    @property
    def higher_is_better(self) -> bool:
        return False

    def compute(self, subject: Subject) -> Scores:
        a = _absolute(subject)
        with np.errstate(invalid="ignore"):  # an all-zero explanation: NaN
            share = a / a.sum(1, keepdims=True)
        logs = np.log(share, out=np.zeros_like(share), where=share > 0)  # 0 log 0 = 0
        return Scores(torch.from_numpy(-(share * logs).sum(1)))


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
