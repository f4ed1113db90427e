"""Bringing user data into the channels-first tensors the graph runs on, and back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from innsight._validation import describe


def is_array_like(value: Any) -> bool:
    """A numpy array, torch tensor or pandas DataFrame/Series."""
    return isinstance(value, (np.ndarray, Tensor)) or hasattr(value, "to_numpy")


def to_channels_first(x: Tensor) -> Tensor:
    """``(n, *spatial, C) -> (n, C, *spatial)``; tabular ``(n, p)`` stays as it is."""
    return x.movedim(-1, 1) if x.ndim > 2 else x


def to_user_layout(x: Tensor, channels_first: bool, extra_axes: int = 0) -> Tensor:
    """Inverse of :func:`to_channels_first` for a tensor ``(n, C, *spatial, *extra)``."""
    if channels_first or x.ndim - extra_axes <= 2:
        return x
    return x.movedim(1, x.ndim - 1 - extra_axes)


def user_dim(dim: tuple[int, ...], channels_first: bool) -> tuple[int, ...]:
    """A channels-first sample shape in the user's layout."""
    return dim if channels_first or len(dim) < 2 else (*dim[1:], dim[0])


def channels_first_dim(dim: tuple[int, ...], channels_first: bool) -> tuple[int, ...]:
    """A sample shape in the user's layout, channels first (inverse of :func:`user_dim`)."""
    return tuple(dim) if channels_first or len(dim) < 2 else (dim[-1], *dim[:-1])


def prepare_data(
    data: Any,
    dims: Sequence[tuple[int, ...]],
    channels_first: bool,
    dtype: torch.dtype,
    device: torch.device,
    arg_name: str = "data",
) -> tuple[list[Tensor], list[list[str] | None]]:
    """Check ``data`` and return one channels-first tensor ``(n, *dim)`` per input layer.

    ``data`` is an array, tensor or DataFrame for one input layer, or a list
    of them, one per input layer. A single sample may omit the batch axis.
    Also returns the column names of DataFrames (``None`` for other data).
    """
    if isinstance(data, (list, tuple)) and data and all(is_array_like(d) for d in data):
        parts = list(data)
    else:
        parts = [data]
    if len(parts) != len(dims):
        raise ValueError(
            f"`{arg_name}` must hold {len(dims)} array(s), one per input layer, got {len(parts)}."
        )
    tensors, columns = [], []
    for k, (part, dim) in enumerate(zip(parts, dims)):
        where = arg_name if len(dims) == 1 else f"{arg_name}[{k}]"
        columns.append(_column_names(part))
        tensors.append(_to_tensor(part, dim, channels_first, dtype, device, where))
    sizes = {x.shape[0] for x in tensors}
    if len(sizes) != 1:
        raise ValueError(
            f"`{arg_name}` arrays must share the number of samples, got {[x.shape[0] for x in tensors]}."
        )
    return tensors, columns


def prepare_like(value: Any, data: Sequence[Tensor], channels_first: bool, arg_name: str) -> list[Tensor]:
    """Check ``value`` (references, backgrounds) as :func:`prepare_data` does, for the
    input shapes, dtype and device of the prepared ``data``."""
    dims = [tuple(x.shape[1:]) for x in data]
    tensors, _ = prepare_data(value, dims, channels_first, data[0].dtype, data[0].device, arg_name)
    return tensors


def _column_names(part: Any) -> list[str] | None:
    columns = getattr(part, "columns", None)
    return None if columns is None else [str(c) for c in columns]


def _to_tensor(
    part: Any, dim: tuple[int, ...], channels_first: bool, dtype: torch.dtype,
    device: torch.device, where: str,
) -> Tensor:
    if hasattr(part, "to_numpy"):
        part = part.to_numpy()
    try:
        if isinstance(part, Tensor):
            x = part.detach()
        else:
            array = np.asarray(part)
            # torch warns about read-only arrays (pandas' to_numpy) and cannot hold negative
            # strides (x[..., ::-1], as BGR preprocessing makes): a copy for both
            usable = array.flags.writeable and min(array.strides, default=0) >= 0
            x = torch.as_tensor(array if usable else array.copy())
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"`{where}` must be a numpy array, torch tensor or pandas DataFrame, "
            f"got {describe(part)}."
        ) from err
    if x.layout != torch.strided:
        raise TypeError(f"`{where}` must be a dense array, got a {x.layout} tensor; pass "
                        f"`{where}.to_dense()`.")
    if x.is_complex() or x.dtype == torch.bool:  # what is left: floats and ints of any width
        raise TypeError(f"`{where}` must hold real numbers (floats or ints), got dtype {x.dtype}.")
    expected = user_dim(dim, channels_first)
    if tuple(x.shape) == expected:
        x = x.unsqueeze(0)  # one sample without the batch axis
    if tuple(x.shape[1:]) != expected or x.shape[0] == 0:
        layout = "channels first" if channels_first else "channels last"
        raise ValueError(
            f"`{where}` has shape {tuple(x.shape)}, expected (n, {', '.join(map(str, expected))}) "
            f"({layout}; set `channels_first` to match your data)."
        )
    x = x.to(device=device, dtype=dtype)
    if not torch.isfinite(x.sum()) and not torch.isfinite(x).all():  # sum: one cheap pass
        raise ValueError(f"`{where}` contains NaN or infinite values.")
    return x if channels_first else to_channels_first(x)
