"""Faithfulness: does the model's output move as the explanation says it should?

- :class:`Deletion` and :class:`Insertion` (pixel flipping, Bach et al. 2015;
  Petsiuk et al. 2018): features (or groups of them) are replaced by the baseline
  (deletion) or restored from it (insertion) in the order of their relevance,
  ``features_in_step`` at a time, and the explained output is recorded after each
  step. Relevance is the signed value (most positive first), summed over a group.
  The curve runs from no feature changed to all changed (``x`` the fraction of
  players changed, ``0..1``); its value is the area under it (trapezoids over
  ``x``, in units of the output). Quantus' ``PixelFlipping`` returns the same curve
  without its first point (the unchanged input) and integrates over step numbers.
- :class:`FaithfulnessCorrelation` (Bhatt et al. 2020): the Pearson correlation,
  over ``n`` random subsets of players, between the relevance in a subset and the
  output drop when that subset is set to the baseline.
- :class:`Infidelity` (Yeh et al. 2019): the mean over ``n`` Gaussian perturbations
  ``I`` of ``(sum(I * values) - (f(x) - f(x - I)))^2`` (Captum's ``infidelity``
  without normalisation).

Every perturbed input of every sample, explained output node and step is a row of
one stacked batch, built and evaluated ``batch_size`` rows at a time (a curve's
unchanged and fully changed inputs are rows of it too, once per explained output).
The random subsets and perturbations are drawn once, ``n`` of them, and shared by all
samples (as by all methods): each sample's value has the distribution it would have
with draws of its own, and does not depend on the other samples or on ``batch_size``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from innsight._validation import describe
from innsight.metrics.base import Curve, Metric, Scores, check_choice, check_positive
from innsight.metrics.baselines import baseline_features, check_baseline
from innsight.metrics.subject import Subject
from innsight.methods.agnostic import Players
from innsight.methods.base import check_positive_int

ORDERS = ("most_relevant_first", "least_relevant_first")
#: Steps of a deletion or insertion curve when ``features_in_step`` is not given.
DEFAULT_STEPS = 50


def outputs_at_data(subject: Subject, metric: str) -> Tensor:
    """The explained outputs ``(n_data, n_targets)`` at the data, computed once per result."""
    x = subject.data(metric)
    return subject.cached("outputs at data", lambda: subject.evaluate_blocks(
        len(x), 1, lambda outer, _: x[outer], "outputs"))


def pearson(a: Tensor, b: Tensor, dim: int) -> Tensor:
    """Pearson correlation of ``a`` and ``b`` along ``dim`` (NaN where one is constant)."""
    a = a - a.mean(dim, keepdim=True)
    b = b - b.mean(dim, keepdim=True)
    return (a * b).sum(dim) / ((a * a).sum(dim) * (b * b).sum(dim)).sqrt()


def turns(scores: Tensor, order: str) -> Tensor:
    """Each player's turn ``(n, n_targets, g)`` (int32, 0 first) in ``order`` of its
    relevance ``scores`` ``(n, g, n_targets)``; ties in the order they come."""
    ordered = scores.transpose(1, 2).argsort(dim=2, descending=order == ORDERS[0], stable=True)
    turn = torch.arange(ordered.shape[2], dtype=torch.int32, device=ordered.device)
    return torch.empty(ordered.shape, dtype=torch.int32, device=ordered.device).scatter_(
        2, ordered, turn.expand_as(ordered))


def rows_of(features: Tensor, sample: Tensor) -> Tensor:
    """The rows ``sample`` of ``features`` ``(n, p)`` as ``(len(sample), 1, p)``; a shared
    ``(1, p)`` as ``(1, 1, p)`` (it broadcasts)."""
    rows = features if features.shape[0] == 1 else features.index_select(0, sample)
    return rows[:, None]


def curve_outputs(subject: Subject, rank: Tensor, counts: Tensor, metric: str,
                  inputs: Callable[[slice, slice, Tensor], Tensor]) -> Tensor:
    """The curves ``(n, n_targets, len(counts))``: the explained output at each step, where
    the players whose turn ``rank`` ``(n, n_targets, g)`` is below ``counts[step]`` are
    changed. ``inputs(curves, steps, changed)`` builds the inputs ``(q * s, p)`` of a block
    of ``q`` curves (``sample * n_targets + target``) and ``s`` steps from their changed
    players ``(q, s, g)``. Every step of every curve is one row (the start and end once per
    explained output), ``batch_size`` rows at a time."""
    n, n_targets, g = rank.shape
    turn = rank.reshape(n * n_targets, g)  # one row per curve

    def make(curves: slice, steps: slice) -> Tensor:
        return inputs(curves, steps, turn[curves, None] < counts[None, steps, None])

    out = subject.evaluate_blocks(n * n_targets, len(counts), make, metric,
                                  outer_per_sample=n_targets)
    # each row's own target: (n, n_targets, m, n_targets) -> (n, n_targets, m)
    return out.view(n, n_targets, len(counts), n_targets).diagonal(dim1=1, dim2=3).transpose(1, 2)


def _is_identity(players: Players, p: int) -> bool:
    """Whether every one of the ``p`` features is its own player, in order."""
    identity = torch.arange(p, device=players.group.device)
    return players.count == p and bool((players.group == identity).all())


def player_values(subject: Subject, players: Players) -> Tensor:
    """The relevance of each player, its features' summed: ``(n, g, n_targets)``."""
    values = subject.values
    if _is_identity(players, values.shape[1]):
        return values
    return values.new_zeros(len(values), players.count, values.shape[2]).index_add_(
        1, players.group, values)


def _spreader(players: Players, p: int) -> Callable[[Tensor], Tensor]:
    """Per-player masks ``(..., g)`` as per-feature masks ``(..., p)`` (no copy when
    every feature is its own player)."""
    if _is_identity(players, p):
        return lambda mask: mask
    return lambda mask: mask[..., players.group]


@dataclass(frozen=True)
class _Perturbation(Metric):
    """Shared settings of the metrics that replace features by a baseline."""

    baseline: Any = "zeros"
    feature_groups: Any = None
    blur_sigma: float | None = None

    def __post_init__(self) -> None:
        check_baseline(self.baseline)
        if self.blur_sigma is not None:
            check_positive(self.blur_sigma, "blur_sigma")

    def _inputs(self, subject: Subject) -> tuple[Tensor, Tensor]:
        """The data ``(n_data, p)`` and the baseline, ``(n_data, p)`` or shared ``(1, p)``."""
        x = subject.data(self.label)
        return x, baseline_features(self.baseline, subject.model_setup(self.label),
                                    self.blur_sigma)


@dataclass(frozen=True)
class _Flipping(_Perturbation):
    """Deletion or insertion curves; see the module docs."""

    order: str = "most_relevant_first"
    features_in_step: int | None = None

    #: Whether features go from the baseline to the data (insertion) or back (deletion).
    inserting: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self.order, ORDERS, "order")
        if self.features_in_step is not None:
            check_positive_int(self.features_in_step, "features_in_step")

    @property
    def label(self) -> str:
        return self.name if self.order == ORDERS[0] else f"{self.name}_lerf"

    @property
    def higher_is_better(self) -> bool:
        # most relevant first: a faithful explanation makes deletion fall, insertion rise
        return self.inserting == (self.order == ORDERS[0])

    def compute(self, subject: Subject) -> Scores:
        x, base = self._inputs(subject)
        start, end = (base, x) if self.inserting else (x, base)
        players = subject.players(self.feature_groups)
        g = players.count
        rank = turns(player_values(subject, players), self.order)
        spread = _spreader(players, x.shape[1])
        step = self.features_in_step or math.ceil(g / DEFAULT_STEPS)
        # players changed, int32 like the turns (no promotion of the (rows, g) comparison)
        counts = torch.tensor([*range(0, g, step), g], device=x.device, dtype=torch.int32)
        n_targets = subject.n_targets

        def inputs(curves: slice, _: slice, changed: Tensor) -> Tensor:
            sample = torch.arange(curves.start, curves.stop, device=x.device) // n_targets
            return torch.where(spread(changed), rows_of(end, sample),
                               rows_of(start, sample)).flatten(0, 1)

        y = curve_outputs(subject, rank, counts, self.label, inputs)
        fraction = counts.to(x.dtype) / g
        return Scores(torch.trapezoid(y, fraction, dim=2), Curve(fraction, y))


@dataclass(frozen=True)
class Deletion(_Flipping):
    """Deletion (pixel flipping): the output as features are set to the baseline in the
    order of their relevance; the area under the curve (lower is better for
    ``order="most_relevant_first"``). See :mod:`innsight.metrics.faithfulness`.

    Parameters
    ----------
    baseline : str, number or array
        What removed features become (see :mod:`innsight.metrics.baselines`).
    feature_groups : optional
        Integer group ids broadcastable to one sample (as for SHAP): a group is
        removed at once, ordered by its summed relevance.
    blur_sigma : float, optional
        Standard deviation of ``baseline="blur"`` in entries.
    order : {"most_relevant_first", "least_relevant_first"}
    features_in_step : int, optional
        Features (or groups) changed per step; default so that there are about 50 steps.
    """

    name = "deletion"


@dataclass(frozen=True)
class Insertion(_Flipping):
    """Insertion: the output as features are restored from the baseline in the order of
    their relevance; the area under the curve (higher is better for
    ``order="most_relevant_first"``). Parameters as for :class:`Deletion`."""

    name = "insertion"
    inserting = True


@dataclass(frozen=True)
class FaithfulnessCorrelation(_Perturbation):
    """Pearson correlation between the relevance of random subsets and the output drop
    when they are set to the baseline (Bhatt et al. 2020); higher is better.

    Parameters
    ----------
    n : int
        Random subsets per sample.
    subset_size : int, optional
        Players per subset; default a tenth of them (at least one).
    baseline, feature_groups, blur_sigma
        As for :class:`Deletion`.
    """

    name = "faithfulness_correlation"
    n: int = 100
    subset_size: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int(self.n, "n")
        if self.subset_size is not None:
            check_positive_int(self.subset_size, "subset_size")

    def compute(self, subject: Subject) -> Scores:
        x, base = self._inputs(subject)
        players = subject.players(self.feature_groups)
        g = players.count
        size = self.subset_size or max(1, g // 10)
        if size > g:
            raise ValueError(f"`subset_size` must be at most the number of players ({g}), got "
                             f"{describe(self.subset_size)}.")
        generator = subject.generator()
        keys = torch.rand(self.n, g, generator=generator, device=generator.device)
        picked = keys.topk(size, dim=1, sorted=False).indices.to(x.device)
        chosen = torch.zeros(self.n, g, dtype=torch.bool, device=x.device).scatter_(
            1, picked, True)
        # the relevance in each subset, (n_data, n, n_targets)
        removed = chosen.to(x.dtype) @ player_values(subject, players)
        changed = _spreader(players, x.shape[1])(chosen)  # (n, p)

        def make(samples: slice, draws: slice) -> Tensor:
            sample = torch.arange(samples.start, samples.stop, device=x.device)
            return torch.where(changed[None, draws], rows_of(base, sample),
                               x[samples, None]).flatten(0, 1)

        out = subject.evaluate_blocks(len(x), self.n, make, self.label)
        drop = outputs_at_data(subject, self.label).repeat_interleave(self.n, 0) - out
        return Scores(pearson(removed, drop.view(removed.shape), dim=1))


@dataclass(frozen=True)
class Infidelity(Metric):
    """Infidelity (Yeh et al. 2019): the mean of ``(sum(I * values) - (f(x) - f(x - I)))^2``
    over ``n`` perturbations ``I ~ N(0, noise^2)`` per entry; lower is better.

    Parameters
    ----------
    n : int
        Perturbations per sample.
    noise : float
        Standard deviation of the perturbations, in units of the data.
    """

    name = "infidelity"
    n: int = 50
    noise: float = 0.1

    def __post_init__(self) -> None:
        check_positive_int(self.n, "n")
        check_positive(self.noise, "noise")

    @property
    def higher_is_better(self) -> bool:
        return False

    def compute(self, subject: Subject) -> Scores:
        x = subject.data(self.label)
        generator = subject.generator()
        noise = torch.randn(self.n, x.shape[1], generator=generator, device=generator.device,
                            dtype=x.dtype).mul_(self.noise)  # (n, p)
        predicted = noise @ subject.values  # (n_data, n, n_targets)

        out = subject.evaluate_blocks(len(x), self.n, lambda samples, draws: (
            x[samples, None] - noise[None, draws]).flatten(0, 1), self.label)
        drop = outputs_at_data(subject, self.label).repeat_interleave(self.n, 0) - out
        return Scores((predicted - drop.view(predicted.shape)).square().mean(1))
