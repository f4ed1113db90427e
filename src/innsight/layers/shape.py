"""Shape-only operations: values move, none change.

Flatten, reshape, permute and slicing only rearrange or select entries, so a
rule-based backward pass moves values back to where they came from unchanged
(:class:`~innsight.layers.rules.Mover`).
Every axis named here is a sample axis (0 = channels), never the batch axis.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from innsight.layers.base import Layer, as_ints
from innsight.layers.rules import Mover


class Flatten(Mover, Layer):
    """``(batch, *dim) -> (batch, prod(dim))``."""

    type_names = ("Flatten",)
    returns_view = True

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)

    def _move_back(self, upstream: Tensor) -> list[Tensor]:
        return [upstream.reshape(*upstream.shape[:2], *self.input_dim[0])]


class Reshape(Mover, Layer):
    """``(batch, *dim) -> (batch, *shape)`` keeping row-major order (``shape`` may hold one -1)."""

    type_names = ("Reshape",)
    returns_view = True
    required = ("shape",)

    def __init__(self, type_name: str, shape: Any) -> None:
        super().__init__(type_name)
        self.shape = as_ints(shape, "shape")
        if sum(v == -1 for v in self.shape) > 1 or any(v < -1 or v == 0 for v in self.shape):
            raise ValueError(f"`shape` must hold positive sizes and at most one -1, got {shape!r}.")

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def _move_back(self, upstream: Tensor) -> list[Tensor]:
        return [upstream.reshape(*upstream.shape[:2], *self.input_dim[0])]

    def get_params(self) -> dict[str, Any]:
        return {"shape": list(self.shape)}


class Permute(Mover, Layer):
    """Reorders the sample axes: output axis ``i`` is input axis ``perm[i]``."""

    type_names = ("Permute",)
    returns_view = True
    required = ("perm",)

    def __init__(self, type_name: str, perm: Any) -> None:
        super().__init__(type_name)
        self.perm = as_ints(perm, "perm")
        if sorted(self.perm) != list(range(len(self.perm))):
            raise ValueError(f"`perm` must be a permutation of 0..n-1, got {perm!r}.")

    def forward(self, x: Tensor) -> Tensor:
        if len(self.perm) != x.ndim - 1:
            raise ValueError(
                f"`perm` {list(self.perm)} has {len(self.perm)} axes but the input has "
                f"{x.ndim - 1} sample axes."
            )
        return x.permute(0, *(p + 1 for p in self.perm))

    def _move_back(self, upstream: Tensor) -> list[Tensor]:
        inverse = sorted(range(len(self.perm)), key=self.perm.__getitem__)
        return [upstream.permute(0, 1, *(p + 2 for p in inverse))]

    def get_params(self) -> dict[str, Any]:
        return {"perm": list(self.perm)}


class Slice(Mover, Layer):
    """Selects ``start:stop:step`` along every sample axis (one triple per axis)."""

    type_names = ("Slice",)
    returns_view = True
    required = ("ranges",)

    def __init__(self, type_name: str, ranges: Any) -> None:
        super().__init__(type_name)
        triples = []
        for r in ranges if isinstance(ranges, (list, tuple)) else [ranges]:
            triple = as_ints(r, "ranges")
            if len(triple) != 3 or not (0 <= triple[0] < triple[1] and triple[2] >= 1):
                raise ValueError(
                    f"`ranges` must hold [start, stop, step] with 0 <= start < stop and "
                    f"step >= 1, got {r!r}."
                )
            triples.append(triple)
        self.ranges = tuple(triples)
        self._index = (slice(None),) + tuple(slice(*r) for r in self.ranges)

    def forward(self, x: Tensor) -> Tensor:
        sizes = x.shape[1:]
        if len(self.ranges) != len(sizes) or any(r[1] > n for r, n in zip(self.ranges, sizes)):
            raise ValueError(
                f"`ranges` {[list(r) for r in self.ranges]} do not fit the input's sample "
                f"shape {list(sizes)} (one [start, stop, step] per axis, stop <= size)."
            )
        return x[self._index]

    def _move_back(self, upstream: Tensor) -> list[Tensor]:
        back = upstream.new_zeros(*upstream.shape[:2], *self.input_dim[0])
        back[(slice(None), *self._index)] = upstream
        return [back]

    def get_params(self) -> dict[str, Any]:
        return {"ranges": [list(r) for r in self.ranges]}
