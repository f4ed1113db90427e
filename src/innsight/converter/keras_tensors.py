"""Keras tensors as the converter holds them, shared by the Keras front-end
(:mod:`innsight.converter.keras_front`) and its handlers
(:mod:`innsight.converter.keras_ops`).

A Keras tensor is channels last, ``(d1, ..., dk, C)`` without the batch axis;
inside the converted graph a tensor of rank 2 or more is held channels first,
``(C, d1, ..., dk)``, and a rank-1 tensor as it is. This module holds the maps
between the two layouts, :class:`Value` (a Keras tensor in the converted graph)
and the reading of Keras numbers into numpy. It imports Keras only when asked, through
:func:`innsight._import_order.import_keras`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from innsight._import_order import import_keras
from innsight.converter.errors import ConversionError


def to_numpy(value: Any) -> np.ndarray:
    """A Keras variable or tensor (or a number or array) as a numpy array."""
    if hasattr(value, "numpy"):  # variables and eager tensors
        return np.asarray(value.numpy())
    keras = import_keras()
    return np.asarray(keras.ops.convert_to_numpy(value))


# ---- layouts ---------------------------------------------------------------------------


def channels_first(shape: Sequence[Any]) -> tuple[Any, ...]:
    """A Keras sample shape as held inside: the last axis first (rank >= 2)."""
    shape = tuple(shape)
    return shape if len(shape) < 2 else (shape[-1], *shape[:-1])


def keras_layout(shape: Sequence[Any]) -> tuple[Any, ...]:
    """Inverse of :func:`channels_first`."""
    shape = tuple(shape)
    return shape if len(shape) < 2 else (*shape[1:], shape[0])


def internal_axis(axis: int, rank: int) -> int:
    """Where Keras sample axis ``axis`` (0-based, no batch axis) sits inside."""
    if rank < 2:
        return axis
    return 0 if axis == rank - 1 else axis + 1


def sample_axis(axis: int, rank: int, what: str) -> int:
    """A Keras tensor axis (batch axis 0, may be negative) as a sample axis."""
    if not isinstance(axis, (int, np.integer)) or not -rank - 1 <= axis <= rank or axis == 0 \
            or axis == -rank - 1:
        raise ConversionError(
            f"{what}: axis {axis!r} is not an axis of a sample of rank {rank} (the batch axis "
            "0 is not supported)."
        )
    return int(axis) - 1 if axis > 0 else rank + int(axis)


def to_internal_array(value: Any, rank: int) -> Any:
    """A constant that broadcasts against a Keras sample of ``rank`` axes, laid out
    to broadcast against the channels-first sample (a number stays a number)."""
    array = np.asarray(value)
    if array.ndim == 0:
        return float(array)
    if array.ndim > rank:
        array = array.reshape(array.shape[array.ndim - rank:])
    array = array.reshape((1,) * (rank - array.ndim) + array.shape)
    return np.moveaxis(array, -1, 0) if rank >= 2 else array


@dataclass(frozen=True)
class Value:
    """A Keras tensor in the converted graph: the layer holding it (channels first)
    and its Keras sample shape (channels last, no batch axis)."""

    index: int
    shape: tuple[int, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)
