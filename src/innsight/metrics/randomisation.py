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
  drawn at random (one draw per node, shared by the samples; with one node per sample,
  ``targets=``, one draw per sample); lower is better.

Similarity (:mod:`innsight.metrics.similarity`) is the Spearman rank correlation
(average ranks for ties) of the absolute values over all input entries
(``absolute=False``: the signed values), or with ``similarity="ssim"`` the mean
structural similarity of the maps over their spatial axes, channel by channel
(inputs with a channel axis and 1 to 3 spatial axes; ``win_size`` the side of its
windows). Quantus' MPRT defaults to Spearman, its RandomLogit to SSIM.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor

from innsight._validation import check_bool, describe, is_int
from innsight.converter import ConvertedModel
from innsight.metrics.base import Curve, Metric, Scores, check_choice
from innsight.metrics.similarity import spearman, ssim
from innsight.metrics.subject import Subject
from innsight.methods.engine import row_chunks
from innsight.methods.targets import PerSampleTargets
from innsight.outputs import OutputSelection

SIMILARITIES = ("spearman", "ssim")


@dataclass(frozen=True)
class _Similarity(Metric):
    """Compares re-run explanations with the original ones."""

    absolute: bool = True
    similarity: str = "spearman"
    win_size: int = 7

    def __post_init__(self) -> None:
        check_bool(self.absolute, "absolute")
        check_choice(self.similarity, SIMILARITIES, "similarity")
        if not is_int(self.win_size) or self.win_size < 3 or self.win_size % 2 == 0:
            raise ValueError(f"`win_size` must be an odd int of at least 3, got "
                             f"{describe(self.win_size)}.")

    @property
    def label(self) -> str:
        return self.name if self.similarity == SIMILARITIES[0] else f"{self.name}_{self.similarity}"

    @property
    def higher_is_better(self) -> bool:
        return False

    def similar(self, subject: Subject, values: Tensor) -> Tensor:
        """Similarity ``(n_data, n_targets)`` of ``values`` to the original values."""
        a, b = (values.abs(), subject.values.abs()) if self.absolute else (values, subject.values)
        if self.similarity == "spearman":
            return spearman(a, b)
        dim = self._map_dim(subject)
        maps = [v.movedim(2, 1).reshape(-1, *dim) for v in (a, b)]  # (n_data * n_targets, ...)
        return ssim(*maps, self.win_size).view(subject.n_data, subject.n_targets)

    def _map_dim(self, subject: Subject) -> tuple[int, ...]:
        data = subject.model_setup(self.label).data
        dim = tuple(data[0].shape[1:])
        if len(data) != 1 or not 2 <= len(dim) <= 4 or min(dim[1:]) < self.win_size:
            raise ValueError(
                f"`similarity='ssim'` compares maps with a channel axis and 1 to 3 spatial axes "
                f"of at least `win_size` ({self.win_size}) entries, from one input layer; "
                f"{subject.name!r} explains inputs of shape "
                f"{[tuple(x.shape[1:]) for x in data]}.")
        return dim


@dataclass(frozen=True)
class Randomization(_Similarity):
    """Cascading model parameter randomisation, top down; see the module docs.

    Parameters
    ----------
    absolute : bool
        Compare absolute values (default) or signed ones.
    similarity : {"spearman", "ssim"}
        Rank correlation over all entries, or the structural similarity of the maps
        (images and signals; see the module docs).
    win_size : int
        Side of the SSIM windows (odd; skimage's default 7).
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
            similarities.append(self.similar(subject, values))
        y = torch.stack(similarities, dim=2)  # (n_data, n_targets, steps)
        steps = torch.arange(1, len(weighted) + 1, dtype=y.dtype, device=y.device)
        return Scores(y.mean(2), Curve(steps, y, [model.layer_names[i] for i in weighted]))


@dataclass(frozen=True)
class RandomLogit(_Similarity):
    """Similarity of each output node's explanation to that of a random other node of
    its output layer; see the module docs. ``absolute``, ``similarity``,
    ``win_size`` as for :class:`Randomization`."""

    name = "random_logit"

    def compute(self, subject: Subject) -> Scores:
        setup = subject.model_setup(self.label)
        generator = subject.generator()
        sizes = [len(labels) for labels in
                 OutputSelection.whole_model(setup.model.output_names).labels]
        targets = setup.custom_targets
        if targets is None:
            others = [_others(torch.tensor(indices, dtype=torch.long), sizes[layer], layer,
                              subject.name, generator).tolist()
                      for layer, indices in enumerate(setup.selection.indices)]
            changes: dict = {"selection": OutputSelection(
                others, [[str(i) for i in layer] for layer in others], computed=True)}
        elif isinstance(targets, PerSampleTargets):
            changes = {"custom_targets": PerSampleTargets(targets.layer, _others(
                targets.nodes, sizes[targets.layer], targets.layer, subject.name, generator))}
        else:
            raise ValueError(f"metric 'random_logit' compares the explanations of output "
                             f"nodes; {subject.name!r} explains weighted sums or a function "
                             "of the outputs (`target_weights=`, `target_fun=`).")
        values = subject.explain(generator=subject.generator(1), **changes)
        return Scores(self.similar(subject, values))


def _others(nodes: Tensor, size: int, layer: int, name: str,
            generator: torch.Generator) -> Tensor:
    """For each of ``nodes`` ``(k,)`` of an output layer of ``size`` nodes, another node
    of it drawn uniformly, ``(k,)``."""
    if len(nodes) and size < 2:
        raise ValueError(f"metric 'random_logit' needs output layers with two or more "
                         f"nodes; output layer {layer} of {name!r} has {size}.")
    draws = torch.randint(max(size - 1, 1), (len(nodes),), generator=generator,
                          device=generator.device).to(nodes.device)
    return draws + (draws >= nodes).long()
