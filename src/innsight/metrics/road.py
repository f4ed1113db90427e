"""ROAD, remove and debias (Rong et al. 2022): deletion with imputed pixels.

Like :class:`~innsight.metrics.Deletion`, pixels are removed in the order of their
relevance (summed over channels), ``features_in_step`` pixels per step, and the
explained output is recorded after each step. A removed pixel does not take a fixed
baseline, which would tell the model by its value which pixels were removed (the
class information leaking through the mask that the paper measures); it is imputed
from its neighbours by noisy linear imputation (:mod:`innsight.metrics.imputation`).
The curve runs from no pixel removed to the last step before all are (``x`` the
fraction removed); the value is the area under it, lower is better for
``order="most_relevant_first"``, higher for ``"least_relevant_first"``.

Quantus' ``ROAD`` records instead whether the predicted class stays the same, at
1, 3, ..., 99 percent removed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from innsight._validation import describe, is_number
from innsight.metrics.base import Curve, Metric, Scores, check_choice
from innsight.metrics.faithfulness import DEFAULT_STEPS, ORDERS, curve_outputs, turns
from innsight.metrics.imputation import noisy_imputation
from innsight.metrics.subject import Subject
from innsight.methods.base import check_positive_int


@dataclass(frozen=True)
class ROAD(Metric):
    """Deletion curve with noisy linear imputation of the removed pixels; see the module docs.

    Parameters
    ----------
    order : {"most_relevant_first", "least_relevant_first"}
    features_in_step : int, optional
        Pixels removed per step; default so that there are about 50 steps.
    noise : float
        Standard deviation of the noise added to imputed pixels, in units of the data
        (the paper's and Quantus' 0.01; 0 for none).
    """

    name = "road"
    order: str = "most_relevant_first"
    features_in_step: int | None = None
    noise: float = 0.01

    def __post_init__(self) -> None:
        check_choice(self.order, ORDERS, "order")
        if self.features_in_step is not None:
            check_positive_int(self.features_in_step, "features_in_step")
        if not is_number(self.noise) or not self.noise >= 0:
            raise ValueError(f"`noise` must be a number >= 0, got {describe(self.noise)}.")

    @property
    def label(self) -> str:
        return self.name if self.order == ORDERS[0] else f"{self.name}_lerf"

    @property
    def higher_is_better(self) -> bool:
        return self.order != ORDERS[0]

    def compute(self, subject: Subject) -> Scores:
        x = subject.data(self.label)
        data = subject.model_setup(self.label).data
        if len(data) != 1 or data[0].ndim != 4:
            raise ValueError(
                f"metric {self.label!r} imputes pixels of images (one input layer of shape "
                f"(C, H, W)); {subject.name!r} explains inputs of shape "
                f"{[tuple(d.shape[1:]) for d in data]}.")
        c, h, w = data[0].shape[1:]
        n, n_targets = subject.n_data, subject.n_targets
        pixels = subject.values.view(n, c, h * w, n_targets).sum(1)  # (n, h * w, n_targets)
        rank = turns(pixels, self.order)
        step = self.features_in_step or math.ceil(h * w / DEFAULT_STEPS)
        # pixels removed, never all; int32 like the turns
        counts = torch.arange(0, h * w, step, device=x.device, dtype=torch.int32)
        images = x.view(n, c, h, w)
        turn = rank.view(n * n_targets, h * w)
        generator = subject.generator()

        def inputs(curves: slice, steps: slice, _: Tensor) -> Tensor:
            curve = torch.arange(curves.start, curves.stop, device=x.device)
            count = counts[steps]
            owner = torch.arange(len(curve), device=x.device).repeat_interleave(len(count))
            return noisy_imputation(images.index_select(0, curve // n_targets), turn[curves],
                                    owner, count.repeat(len(curve)), self.noise,
                                    generator).flatten(1)

        y = curve_outputs(subject, rank, counts, self.label, inputs)
        fraction = counts.to(x.dtype) / (h * w)
        return Scores(torch.trapezoid(y, fraction, dim=2), Curve(fraction, y))
