"""The metric interface, what a metric returns, and argument checks.

A metric is a small frozen object holding its settings (``Deletion(features_in_step=16)``,
by name in :mod:`innsight.metrics.catalogue`);
:meth:`Metric.compute` takes one :class:`~innsight.metrics.subject.Subject` (a result
as the metrics see it) and returns a :class:`Scores`: one value per sample and
explained output node, and for curve metrics the curve behind each value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor

from innsight._validation import describe, is_number

if TYPE_CHECKING:
    from innsight.metrics.subject import Subject


@dataclass(frozen=True)
class Curve:
    """The curves behind the values: ``y`` ``(n_data, n_targets, n_points)`` over the
    positions ``x`` ``(n_points,)``; ``labels`` names each point (e.g. the layer
    randomised at that step) or is ``None``."""

    x: Tensor
    y: Tensor
    labels: list[str] | None = None


@dataclass(frozen=True)
class Scores:
    """A metric's values ``(n_data, n_targets)`` and, for curve metrics, their curves."""

    values: Tensor
    curve: Curve | None = None


class Metric:
    """Base of every metric: ``name`` (the ``metric`` column), whether higher values are
    better, and :meth:`compute`."""

    #: The metric's name in the registry and the ``metric`` column.
    name: ClassVar[str] = "metric"

    @property
    def label(self) -> str:
        """The ``metric`` column: the name, with settings that change its meaning."""
        return self.name

    @property
    def higher_is_better(self) -> bool:
        """Whether a higher value means a better explanation (for ranking and colours)."""
        return True

    def compute(self, subject: Subject) -> Scores | None:
        """Scores of ``subject``'s explanations; ``None`` where the metric does not apply
        to it (e.g. completeness for a method without a decomposition goal)."""
        raise NotImplementedError


def check_positive(value: Any, arg_name: str) -> float:
    if not is_number(value) or not value > 0:
        raise ValueError(f"`{arg_name}` must be a positive number, got {describe(value)}.")
    return float(value)


def check_choice(value: Any, choices: tuple[str, ...], arg_name: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{arg_name}` must be one of {list(choices)}, got {describe(value)}.")
    return value
