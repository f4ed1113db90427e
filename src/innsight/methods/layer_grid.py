"""Which layers of a converted graph carry a spatial grid: feature maps and patch tokens.

A layer's output has a grid when it is an image-like map ``(C, *spatial)``
derived from an image input by layers that keep the number of axes
(convolutions, pooling, activations, sums; a permutation of the axes, as
around a channels-last layer norm, hides the grid until it is permuted
back), or when it is a sequence of tokens ``(tokens,
features)`` (or ``(features, tokens)``) that come from such a map flattened
by a patch embedding, with up to :data:`MAX_EXTRA_TOKENS` tokens added in
front (class and distillation tokens). Found from shapes, graph edges and
the axis order ``perm`` of layers that permute axes; no layer is asked what
it is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from innsight.converter import ConvertedModel

#: Tokens a vision transformer may put before its patch tokens (class, distillation).
MAX_EXTRA_TOKENS = 2


@dataclass(frozen=True)
class Grid:
    """The spatial grid ``shape`` of a layer's output: a map ``(C, *shape)`` when
    ``token_axis`` is ``None``, else tokens along ``token_axis`` (0: ``(tokens,
    features)``, 1: ``(features, tokens)``) of which the first ``n_extra`` are no
    grid position and the rest the grid positions in row-major order."""

    shape: tuple[int, ...]
    n_extra: int = 0
    token_axis: int | None = None

    @property
    def size(self) -> int:
        """How many grid positions there are."""
        return math.prod(self.shape)

    def to_map(self, values: Tensor) -> Tensor:
        """Values ``(n, *layer_dim, *rest)`` as maps ``(n, C, *shape, *rest)``: tokens
        without the extra ones, reshaped to the grid (channels are the features)."""
        if self.token_axis is None:
            return values
        if self.token_axis == 0:
            values = values.movedim(1, 2)
        values = values[:, :, self.n_extra:]
        return values.reshape(*values.shape[:2], *self.shape, *values.shape[3:])

    def map_dim(self, dim: tuple[int, ...]) -> tuple[int, ...]:
        """The shape ``(C, *shape)`` of :meth:`to_map` for a layer output of shape ``dim``."""
        if self.token_axis is None:
            return tuple(dim)
        return (dim[1 - self.token_axis], *self.shape)


def layer_grids(model: ConvertedModel) -> list[Grid | None]:
    """The grid of every layer's output (``None``: none), in layer order."""
    states: list[_State | None] = []
    for layer, reads in zip(model.layers, model.input_layers):
        dim = tuple(layer.output_dim)
        if not reads:
            states.append(_State(Grid(dim[1:])) if len(dim) >= 3 else None)
            continue
        found = None
        for j in reads:
            if states[j] is not None:
                found = _follow(states[j], tuple(model.layers[j].output_dim), dim,
                                getattr(layer, "perm", None))
            if found is not None:
                break
        states.append(found)
    return [None if state is None or state.axis != 0 else state.grid for state in states]


@dataclass(frozen=True)
class _State:
    """A layer's grid while following the graph: for a map, ``axis`` is where its channel
    axis went (a permutation may move it; the grid counts again once it is back first);
    for tokens, it is ``grid.token_axis``."""

    grid: Grid
    axis: int = 0


def _follow(state: _State, in_dim: tuple[int, ...], dim: tuple[int, ...],
            perm: Sequence[int] | None) -> _State | None:
    """The grid of an output of shape ``dim`` from an input of shape ``in_dim`` in
    ``state``; ``perm`` is the axis order of a layer that permutes axes (output axis
    ``i`` is input axis ``perm[i]``), ``None`` for other layers."""
    grid = state.grid
    if perm is not None and len(perm) != len(in_dim):
        return None
    if grid.token_axis is None and len(dim) == len(in_dim):
        axis = state.axis if perm is None else list(perm).index(state.axis)
        return _State(Grid(dim[1:]) if axis == 0 else grid, axis)
    if len(dim) != 2 or state.axis != 0:
        return None
    if grid.token_axis is None:  # a map flattened into tokens: (C, h * w)
        ok = perm is None and dim == (in_dim[0], math.prod(in_dim[1:]))
        return _State(Grid(in_dim[1:], 0, 1), 0) if ok else None
    axis = grid.token_axis if perm is None else list(perm).index(grid.token_axis)
    extra = dim[axis] - grid.size
    if 0 <= extra <= MAX_EXTRA_TOKENS:
        return _State(Grid(grid.shape, extra, axis))
    return None
