"""Which layers of a converted graph carry a spatial grid: feature maps and patch tokens.

A layer's output has a grid when it is an image-like map ``(C, *spatial)``
derived from an image input by layers that keep the number of axes
(convolutions, pooling, activations, sums; a permutation of the axes, as
around a channels-last layer norm, hides the grid until it is permuted
back), or when it is a sequence of tokens ``(tokens,
features)`` (or ``(features, tokens)``) that come from such a map flattened
by a patch embedding, with up to :data:`MAX_EXTRA_TOKENS` tokens added in
front (class and distillation tokens). Found from shapes and graph edges
alone: no layer is asked what it is.
"""

from __future__ import annotations

import math
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
    states = _grid_states(model)
    return [None if state is None or state.moved else state.grid for state in states]


@dataclass(frozen=True)
class _State:
    """A layer's grid while following the graph: ``moved`` where its axes are a
    permutation of a map's (the channel axis not first)."""

    grid: Grid
    moved: bool = False


def _grid_states(model: ConvertedModel) -> list[_State | None]:
    grids: list[_State | None] = []
    for layer, reads in zip(model.layers, model.input_layers):
        dim = tuple(layer.output_dim)
        if not reads:
            grids.append(_State(Grid(dim[1:])) if len(dim) >= 3 else None)
            continue
        found = None
        for j in reads:
            grid = grids[j]
            if grid is not None:
                found = _follow(grid, tuple(model.layers[j].output_dim), dim)
            if found is not None:
                break
        grids.append(found)
    return grids


def _follow(state: _State, in_dim: tuple[int, ...], dim: tuple[int, ...]) -> _State | None:
    """The grid state of an output of shape ``dim`` computed from an input of shape
    ``in_dim`` in ``state``."""
    grid = state.grid
    if grid.token_axis is None and len(dim) == len(in_dim):
        permuted = sorted(dim) == sorted(in_dim) and dim != in_dim
        return _State(Grid(dim[1:]), state.moved != permuted)
    if len(dim) != 2 or state.moved:
        return None
    size = grid.size
    if grid.token_axis is None:  # a map flattened into tokens
        size = math.prod(in_dim[1:])
        shape, axes = in_dim[1:], (1, 0)
    else:
        shape, axes = grid.shape, (grid.token_axis, 1 - grid.token_axis)
    for axis in axes:
        extra = dim[axis] - size
        if 0 <= extra <= MAX_EXTRA_TOKENS and (grid.token_axis is not None or extra == 0):
            return _State(Grid(tuple(shape), extra, axis))
    return None
