"""Sanity checks: an explanation should change when the model or the class does.

- :class:`Randomization` (Adebayo et al. 2018; Quantus' ``MPRT``, cascading, top
  down): a copy of the converted model gets the parameters of its weighted layers
  (dense and convolution layers: those with a weight of two or more axes)
  replaced by Gaussian noise of each parameter's own standard deviation, one layer
  more per step from the output down; after each step the method is re-run with
  its arguments and compared with the original explanation. The curve is the
  similarity per step (labelled by the layer randomised last), the value its mean;
  lower is better (an explanation that ignores the model keeps similarity 1).
- :class:`RandomLogit` (Sixt et al. 2020; Quantus' ``RandomLogit``): each explained
  output node's explanation against that of another node of the same output layer
  drawn at random (one draw per node, shared by the samples); lower is better.

Similarity is the Spearman rank correlation (average ranks for ties) of the
absolute values over all input entries (``absolute=False``: the signed values);
Quantus' MPRT defaults to the same, its RandomLogit to SSIM.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor

from innsight._validation import check_bool
from innsight.converter import ConvertedModel
from innsight.metrics.base import Curve, Metric, Scores
from innsight.metrics.faithfulness import pearson
from innsight.metrics.subject import Subject
from innsight.methods.engine import row_chunks
from innsight.outputs import OutputSelection


def average_ranks(a: Tensor) -> Tensor:
    """Ranks ``0..p-1`` of ``a`` ``(n, p, k)`` along axis 1, ties sharing their mean rank."""
    rows = a.movedim(1, -1).contiguous()
    ordered = rows.sort(dim=-1).values
    lower = torch.searchsorted(ordered, rows, right=False)
    upper = torch.searchsorted(ordered, rows, right=True)
    return ((lower + upper - 1).to(a.dtype) / 2).movedim(-1, 1)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation of ``a`` and ``b`` ``(n, p, k)`` along axis 1: ``(n, k)``."""
    return pearson(average_ranks(a), average_ranks(b), dim=1)


@dataclass(frozen=True)
class _Similarity(Metric):
    """Compares re-run explanations with the original ones."""

    absolute: bool = True

    def __post_init__(self) -> None:
        check_bool(self.absolute, "absolute")

    @property
    def higher_is_better(self) -> bool:
        return False

    def similarity(self, subject: Subject, values: Tensor) -> Tensor:
        """Similarity ``(n_data, n_targets)`` of ``values`` to the original values."""
        if self.absolute:
            return spearman(values.abs(), subject.values.abs())
        return spearman(values, subject.values)


@dataclass(frozen=True)
class Randomization(_Similarity):
    """Cascading model parameter randomisation, top down; see the module docs.

    Parameters
    ----------
    absolute : bool
        Compare absolute values (default) or signed ones.
    """

    name = "randomization"

    def compute(self, subject: Subject) -> Scores:
        setup = subject.model_setup(self.label)
        if not isinstance(setup.model, ConvertedModel):
            raise ValueError(f"metric 'randomization' randomises the layers of a converted "
                             f"model; {subject.name!r} explains {type(setup.model).__name__}, "
                             "convert the model with ins.convert(...) first.")
        model = copy.deepcopy(setup.model)
        weighted = [i for i in reversed(range(len(model.layers)))
                    if getattr(model.layers[i], "weight", None) is not None
                    and model.layers[i].weight.ndim >= 2]
        if not weighted:
            raise ValueError(f"metric 'randomization' found no dense or convolution layer in "
                             f"the model of {subject.name!r}.")
        generator = subject.generator()
        similarities = []
        for step in row_chunks(len(weighted), 1, subject.verbose, "randomization"):
            with torch.no_grad():
                for param in model.layers[weighted[step.start]].parameters():
                    noise = torch.randn(param.shape, generator=generator,
                                        device=generator.device, dtype=param.dtype)
                    param.copy_(noise * param.std(unbiased=False))
            values = subject.explain(model=model, generator=subject.generator(1))
            similarities.append(self.similarity(subject, values))
        y = torch.stack(similarities, dim=2)  # (n_data, n_targets, steps)
        steps = torch.arange(1, len(weighted) + 1, dtype=y.dtype, device=y.device)
        return Scores(y.mean(2), Curve(steps, y, [model.layer_names[i] for i in weighted]))


@dataclass(frozen=True)
class RandomLogit(_Similarity):
    """Similarity of each output node's explanation to that of a random other node of
    its output layer; see the module docs. ``absolute`` as for :class:`Randomization`."""

    name = "random_logit"

    def compute(self, subject: Subject) -> Scores:
        setup = subject.model_setup(self.label)
        generator = subject.generator()
        sizes = [len(labels) for labels in
                 OutputSelection.whole_model(setup.model.output_names).labels]
        others: list[list[int]] = []
        for layer, indices in enumerate(setup.selection.indices):
            size = sizes[layer]
            if indices and size < 2:
                raise ValueError(f"metric 'random_logit' needs output layers with two or more "
                                 f"nodes; output layer {layer} of {subject.name!r} has {size}.")
            draws = torch.randint(max(size - 1, 1), (len(indices),), generator=generator,
                                  device=generator.device).tolist()
            others.append([d + (d >= i) for d, i in zip(draws, indices)])
        selection = OutputSelection(others, [[str(i) for i in layer] for layer in others],
                                    computed=True)
        values = subject.explain(selection=selection, generator=subject.generator(1))
        return Scores(self.similarity(subject, values))
