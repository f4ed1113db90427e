"""Argument checks shared by the converter and the methods.

Every check raises ``ValueError`` or ``TypeError`` that names the argument,
what was given and what was expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

DTYPES = {"float": torch.float32, "double": torch.float64}
#: Half precisions, refused with a reason: LRP and DeepLift divide by small sums that
#: vanish in 10 or 7 mantissa bits, and path and noise averages lose their small terms.
HALF_DTYPES = {"half": torch.float16, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype: Any, arg_name: str = "dtype") -> torch.dtype:
    """Map ``"float"``/``"double"`` (or the torch dtypes) to a torch dtype."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    if dtype in HALF_DTYPES.values() or (isinstance(dtype, str) and dtype in HALF_DTYPES):
        raise ValueError(
            f"`{arg_name}` must be 'float' or 'double', got {dtype!r}: half precisions are not "
            "supported (rule-based methods divide by sums that vanish in half precision, and "
            "averages over noisy copies or path points lose their small terms); compute in "
            "'float' and cast the results."
        )
    raise ValueError(
        f"`{arg_name}` must be 'float' or 'double', got {dtype!r}."
    )


def describe(value: Any) -> str:
    """A short description of a value for error messages."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"an array of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def as_dim(value: Any, arg_name: str) -> tuple[int, ...]:
    """Check one shape without batch axis: a non-empty sequence of positive ints."""
    if isinstance(value, (torch.Size, np.ndarray)):
        value = tuple(value.tolist() if isinstance(value, np.ndarray) else value)
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) == 0
        or not all(is_int(v) and v > 0 for v in value)
    ):
        raise ValueError(
            f"`{arg_name}` must be a shape without the batch axis: a non-empty "
            f"list of positive ints such as [3, 32, 32], got {describe(value)}."
        )
    return tuple(int(v) for v in value)


def as_dim_list(value: Any, arg_name: str) -> list[tuple[int, ...]]:
    """Check one shape (``[3, 32, 32]``) or a list of shapes, one per input layer."""
    if (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) > 0
        and all(isinstance(v, (Sequence, torch.Size)) and not isinstance(v, str) for v in value)
    ):
        return [as_dim(v, f"{arg_name}[{i}]") for i, v in enumerate(value)]
    return [as_dim(value, arg_name)]


def is_int(value: Any) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A Python or numpy real number, not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def check_bool(value: Any, arg_name: str) -> bool:
    """``value`` if it is a bool; a TypeError naming ``arg_name`` otherwise."""
    if not isinstance(value, bool):
        raise TypeError(f"`{arg_name}` must be True or False, got {describe(value)}.")
    return value


def check_bools(**flags: Any) -> None:
    """:func:`check_bool` for each keyword argument, named by its keyword."""
    for name, flag in flags.items():
        check_bool(flag, name)
