"""Grad-CAM (Selvaraju et al. 2017) and Grad-CAM++ (Chattopadhay et al. 2018).

The gradients of each explained output w.r.t. a layer's activations ``A``
(the layer attribution of :mod:`~innsight.methods.layer_attribution`) weigh
its channels; the map is ``ReLU(sum_c w_c A_c)`` on the layer's spatial grid,
upsampled to the input's size. Token layers of vision transformers count as
grids when their tokens come from a patch embedding
(:mod:`~innsight.methods.layer_grid`; extra tokens such as the class token are
left out).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from innsight._validation import check_bool, describe
from innsight.converter import ConvertedModel
from innsight.methods.base import Explanation, InterpretingMethod, Setup, runner
from innsight.methods.engine import target_values
from innsight.methods.gradient import PlainGradient, explain_gradients
from innsight.methods.layer_attribution import at_layer, layer_node
from innsight.methods.layer_grid import Grid, layer_grids

#: ``F.interpolate`` modes by the number of spatial axes.
_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def cam(activations: Tensor, grads: Tensor, plus_plus: bool = False) -> Tensor:
    """Maps ``(n, *grid, n_targets)`` from activations ``(n, C, *grid)`` and the gradients
    of each target w.r.t. them ``(n, C, *grid, n_targets)``.

    Grad-CAM weighs channel ``c`` by the mean of its gradients over the grid;
    Grad-CAM++ by ``sum_ij a_ij ReLU(g_ij)`` with ``a = g^2 / (2 g^2 + sum_ab A_ab g^3)``
    (``a = 0`` where the denominator is 0). The map is ``ReLU(sum_c w_c A_c)``.
    """
    grid_axes = tuple(range(2, activations.ndim))
    acts = activations.unsqueeze(-1)
    if plus_plus:
        g2 = grads.square()
        denom = 2 * g2 + acts.sum(grid_axes, keepdim=True) * g2 * grads
        alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, 1.0), 0.0)
        weights = (alpha * grads.clamp(min=0)).sum(grid_axes, keepdim=True)
    else:
        weights = grads.mean(grid_axes, keepdim=True)
    return (weights * acts).sum(1).clamp(min=0)


def upsample(maps: Tensor, size: tuple[int, ...]) -> Tensor:
    """Maps ``(n, *grid, n_targets)`` resized to ``size`` by (bi/tri)linear interpolation
    (``align_corners=False``), as ``(n, 1, *size, n_targets)``."""
    resized = F.interpolate(maps.movedim(-1, 1), size=size, mode=_MODES[len(size)],
                            align_corners=False)
    return resized.movedim(1, -1).unsqueeze(1)


def default_layer(setup: Setup, grids: list[Grid | None]) -> int:
    """The last layer with a spatial or token grid of more than one position on which the
    first target (column) depends (one gradient at the first sample tells)."""
    model = setup.model
    candidates = sorted((i for i in model.needed(setup.explained)
                         if model.input_layers[i] and grids[i] is not None and grids[i].size > 1),
                        reverse=True)
    if not candidates:
        raise ValueError(
            "Grad-CAM needs a layer with a spatial output (C, H, W) or patch tokens before the "
            "explained output, and this model has none; use another method, e.g. Gradient.")
    with torch.inference_mode(False), torch.enable_grad():
        x = [d[:1].clone().requires_grad_(True) for d in setup.data]
        values = model.node_values(x)
        sample = torch.zeros(1, dtype=torch.long, device=x[0].device)
        first = target_values([values[i] for i in setup.explained], setup.targets, sample)[0, 0]
        grads = torch.autograd.grad(first, [values[i] for i in candidates], allow_unused=True)
    for i, grad in zip(candidates, grads):
        if grad is not None and bool(grids[i].to_map(grad).ne(0).any()):
            return i
    return candidates[0]


class GradCAM(InterpretingMethod):
    """Grad-CAM: a class-activation map from a layer's activations and gradients.

    For each explained output ``y``: ``w_c = mean_ij dy / dA_cij`` over the grid of
    the layer's activations ``A``, the map ``ReLU(sum_c w_c A_c)`` upsampled
    bilinearly (``align_corners=False``) to the input's spatial size
    (Selvaraju et al. 2017). Values are ``(n_data, 1, H, W, n_targets)``, one
    channel whose label names the layer; plot them over the input with
    ``res.plot(show_input=True)``.

    Parameters
    ----------
    layer : str or int
        A layer name from ``conv.model.layer_names`` (or its position in it) with
        a spatial output ``(C, H, W)``, or tokens ``(tokens, features)`` from a
        patch embedding (vision transformers; leading class tokens are left out).
        Default: the last such layer on which the first target depends at more than
        one position: the last feature map before global pooling in a CNN; in a
        vision transformer whose head reads the class token, a layer of the last
        attention block (the last one that mixes patch tokens into it).
    plus_plus : bool
        Grad-CAM++ weights (Chattopadhay et al. 2018, closed form for an
        exponential of the output): ``w_c = sum_ij a_cij ReLU(g_cij)``,
        ``a = g^2 / (2 g^2 + sum_ab A_cab g^3)``.

    Notes
    -----
    The model must have one image input ``(C, H, W)`` (or a volume). Further
    parameters: see :class:`InterpretingMethod`.
    """

    method_name = "GradCAM"
    value_name = "Grad-CAM"
    tunables = {"plus_plus": [False, True]}

    def __init__(self, converter: Any, data: Any, *, layer: str | int | None = None,
                 plus_plus: bool = False, **shared: Any) -> None:
        super().__init__(converter, data, layer=layer, plus_plus=plus_plus, **shared)

    def _explain(self, setup: Setup, layer: Any, plus_plus: Any) -> Explanation:
        check_bool(plus_plus, "plus_plus")
        model = setup.model
        if not isinstance(model, ConvertedModel):
            raise TypeError(f"Grad-CAM needs a converted model (ins.convert(model, ...)), got "
                            f"{describe(model)}.")
        if len(model.input_dim) != 1 or len(model.input_dim[0]) < 3:
            raise ValueError(f"Grad-CAM needs a model with one image input (C, H, W), got input "
                             f"shape(s) {model.input_dim}.")
        grids = layer_grids(model)
        if layer is None:
            node = default_layer(setup, grids)
        else:
            node = layer_node(model, layer, setup.explained, "layer")
        grid, name = grids[node], model.layer_names[node]
        size = model.input_dim[0][1:]
        if grid is None or len(grid.shape) != len(size):
            raise ValueError(
                f"`layer` {name!r} has output shape {model.layers[node].output_dim}: no "
                f"{len(size)}-d spatial grid (C, {', '.join('.' * len(size))}) nor patch tokens; "
                "Grad-CAM needs one (default: the last such layer).")
        at = at_layer(setup, node, cut=True)
        gradients = explain_gradients(PlainGradient(False), at)
        maps = upsample(cam(grid.to_map(at.data[0]), grid.to_map(gradients.values[0]),
                            plus_plus), size)
        names = [[f"Grad-CAM ({name})"], *model.input_names[0][1:]]
        return Explanation([maps], at_data=gradients.at_data, input_names=[names])


run_gradcam = runner(GradCAM, "run_gradcam")
