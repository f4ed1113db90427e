"""Layer attribution (``attribute_to=``): values for a layer's activations, not the input.

Gradient methods see the model *cut* at the layer: a :class:`CutModel` whose
explained input is the layer's output; where something bypasses the layer (skip
connections), the model inputs at each row's data sample feed it unchanged, as
per-sample arguments of the cut model (``run_nodes(..., sample)``).
Every gradient recipe then acts on the activations: the gradient at them
(times them with ``times_input``), noise added to them (SmoothGrad, with the
noise scale from each sample's activation range), the straight path from the
activations at the reference to those at the input (IntegratedGradient: the
semantics of Captum's ``LayerIntegratedGradients``), or from those of
reference samples (ExpectedGradient). Rule-based methods walk back from the
outputs and stop at the layer (:func:`~innsight.methods.reverse_walk.explain_by_walk`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from innsight.converter import ConvertedModel
from innsight.converter.names import Names, default_names
from innsight.methods.data import prepare_like
from innsight.methods.engine import evaluate
from innsight.methods.layer_grid import Grid, layer_grids

if TYPE_CHECKING:
    from innsight.methods.base import Setup


def layer_node(model: Any, name: Any, explained: Sequence[int], arg_name: str) -> int:
    """The index of the layer ``name`` (a name in ``model.layer_names`` or its position,
    see :meth:`~innsight.converter.ConvertedModel.layer_index`); it must be one that an
    explained output depends on."""
    if not isinstance(model, ConvertedModel):
        raise TypeError(f"`{arg_name}` needs a converted model (ins.convert(model, ...)); the "
                        "direct torch_* methods explain the input only.")
    names = model.layer_names
    node = model.layer_index(name, arg_name)
    if node not in model.needed(explained):
        raise ValueError(
            f"`{arg_name}` {name!r} (layer {node}) does not lead to the explained output "
            f"layer(s) {[names[i] for i in explained]}: it comes after them or on another "
            "branch; choose a layer before the output.")
    return node


@dataclass(frozen=True)
class AttributedLayer:
    """The layer values are attributed to: its index ``node`` and ``name``, its output
    shape ``dim`` and axis ``names``, its ``activations`` at the data ``(n_data, *dim)``,
    and its ``grid`` (:mod:`~innsight.methods.layer_grid`; ``None``: no spatial grid)."""

    node: int
    name: str
    dim: tuple[int, ...]
    names: Names
    activations: Tensor
    grid: Grid | None
    #: ``lift(value, arg_name)``: the activations at references given like the data,
    #: checked as ``arg_name`` (zero inputs for ``None``); ``None`` where the method works on the whole model
    #: (rule-based methods).
    lift: Callable[[Any, str], Tensor] | None = None
    #: Whether the layer is where the inputs start to be explained (a token embedding,
    #: see :mod:`~innsight.methods.model_inputs`): references live in its space for every
    #: method, and the model inputs feed the rest sample by sample.
    start: bool = False


class CutModel:
    """A converted model seen from one of its layers (the
    :class:`~innsight.methods.model_interface.ExplainableModel` interface): its one
    input is that layer's output. Where the model inputs reach the layers ``used`` (the
    explained and predicting ones) other than through the layer, ``bypass`` holds them
    at the data ``(n_data, *dim)``: each row takes its data sample's (``sample`` of
    ``run_nodes``), so the model has per-sample arguments."""

    def __init__(self, model: ConvertedModel, node: int, data: list[Tensor],
                 used: Sequence[int]) -> None:
        self.model, self.node = model, node
        self.input_dim = [tuple(model.layers[node].output_dim)]
        self.input_names = [default_names(self.input_dim[0])]
        self.output_dim, self.output_names = model.output_dim, model.output_names
        self.output_nodes = model.output_nodes
        self.dtype, self.device = model.dtype, model.device
        needed = model.needed(used, stop={node})
        self.bypass = data if any(i in needed for i in model.input_nodes) else []
        self.per_sample = bool(self.bypass)

    def explained_nodes(self, ignore_last_act: bool) -> list[int]:
        return self.model.explained_nodes(ignore_last_act)

    def run_nodes(self, inputs: list[Tensor], nodes: Sequence[int],
                  sample: Tensor | None = None) -> list[Tensor]:
        """``nodes`` for the layer's values ``inputs[0]`` made from the data samples
        ``sample`` ``(rows,)`` (``None``: row ``i`` is sample ``i``), which pick the model
        inputs where something bypasses the layer."""
        rows = len(inputs[0])
        if self.bypass:
            n_data = len(self.bypass[0])
            if sample is None and rows != n_data:
                raise ValueError(
                    f"A skip connection bypasses layer {self.model.layer_names[self.node]!r}, "
                    "so the model cut there needs each row's data sample; got "
                    f"{rows} rows without samples for {n_data} data samples.")
            model_inputs = self.bypass if sample is None else [x[sample] for x in self.bypass]
        else:  # shapes only: unused (zeros pass the checks of token ids)
            model_inputs = [torch.zeros(rows, *dim, device=self.device,
                                        dtype=self.model.layers[node].value_dtype(self.dtype))
                            for node, dim in zip(self.model.input_nodes, self.model.input_dim)]
        return self.model.run_nodes(model_inputs, nodes, given={self.node: inputs[0]})


def attributed_layer(setup: Setup, node: int, cut: bool) -> AttributedLayer:
    """Layer ``node`` with its activations at the data."""
    model = setup.model

    def activations(inputs: list[Tensor]) -> Tensor:
        return evaluate(lambda xs, sample: model.run_nodes(xs, [node], sample), inputs,
                        setup.batch_size)[0]

    def lift(value: Any, arg_name: str) -> Tensor:
        if value is None:
            return activations([x.new_zeros(1, *x.shape[1:]) for x in setup.data])
        return activations(prepare_like(value, setup.data, setup.channels_first, arg_name))

    dim = tuple(model.layers[node].output_dim)
    return AttributedLayer(node, model.layer_names[node], dim, default_names(dim),
                           activations(setup.data),
                           layer_grids(model)[node], lift if cut else None)


def at_layer(setup: Setup, node: int, cut: bool,
             lift: Callable[[Any, str], Tensor] | None = None) -> Setup:
    """``setup`` attributing to layer ``node`` (see :func:`layer_node`): for gradient
    methods (``cut``) the model cut at the layer with its activations as data; for
    rule-based methods the whole model, whose walk stops at the layer. A ``lift`` of
    its own makes the layer the start of the inputs (token embeddings): references are
    given in its space for every method."""
    layer = attributed_layer(setup, node, cut)
    if lift is not None:
        layer = replace(layer, lift=lift, start=True)
    if not cut:
        return replace(setup, layer=layer)
    model = CutModel(setup.model, layer.node, setup.data,
                     setup.explained + setup.prediction_nodes)
    return replace(setup, model=model, data=[layer.activations], layer=layer)
