"""Robustness: how much an explanation changes when the input changes a little.

:class:`Sensitivity` (Yeh et al. 2019; Quantus' ``MaxSensitivity`` and
``AvgSensitivity``): ``n`` times, every sample gets uniform noise in
``[-radius, radius]`` per entry and is explained again by the same method with the
same arguments; each draw gives ``||values(x + e) - values(x)|| / ||values(x)||``
(Frobenius norms over all input entries), and the metric is their maximum
(``"max"``) or mean (``"avg"``); lower is better. The method re-runs once on all
``n x n_data`` noisy copies (its own ``batch_size`` chunks them). Max and avg share
their draws. Methods whose references default to the data itself (ExpectedGradient,
DeepSHAP with ``data_ref=None``) then use all noisy copies as references.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from innsight.metrics.base import Metric, Scores, check_choice, check_positive
from innsight.metrics.subject import Subject
from innsight.methods.base import check_positive_int

AGGREGATES = ("max", "avg")


@dataclass(frozen=True)
class Sensitivity(Metric):
    """Max- or average-sensitivity of the explanations; see the module docs.

    Parameters
    ----------
    aggregate : {"max", "avg"}
    n : int
        Noisy copies per sample (each a re-run of the method).
    radius : float
        Half-width of the uniform noise, in units of the data (Quantus' ``lower_bound``).
    """

    name = "sensitivity"
    aggregate: str = "max"
    n: int = 10
    radius: float = 0.2

    def __post_init__(self) -> None:
        check_choice(self.aggregate, AGGREGATES, "aggregate")
        check_positive_int(self.n, "n")
        check_positive(self.radius, "radius")

    @property
    def label(self) -> str:
        return f"{self.name}_{self.aggregate}"

    @property
    def higher_is_better(self) -> bool:
        return False

    def compute(self, subject: Subject) -> Scores:
        ratios = subject.cached(("sensitivity", self.n, self.radius), lambda: self._ratios(subject))
        return Scores(ratios.amax(1) if self.aggregate == "max" else ratios.mean(1))

    def _ratios(self, subject: Subject) -> Tensor:
        """``||values(x + e_j) - values(x)|| / ||values(x)||``, ``(n_data, n, n_targets)``."""
        x = subject.data(self.label)
        # the noise is made in place: a fresh tensor of its size costs more than the addition
        noisy = torch.empty((self.n, *x.shape), device=x.device, dtype=x.dtype).uniform_(
            -self.radius, self.radius, generator=subject.generator()).add_(x)
        sample = torch.arange(len(x), device=x.device).repeat(self.n)  # noisy copy-major
        values = subject.explain(noisy.flatten(0, 1), sample, subject.generator(1))
        change = (values.view(self.n, *subject.values.shape) - subject.values).norm(dim=2)
        return (change / subject.values.norm(dim=1)).transpose(0, 1)
