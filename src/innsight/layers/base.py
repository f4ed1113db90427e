"""The base class of every layer of a converted graph and the layer registry.

A layer is one node of a :class:`~innsight.converter.ConvertedModel`. It is
built from one entry of the "model as dict" format (section 4 of the design)
and turns back into exactly that entry with :meth:`Layer.get_params`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from innsight.layers.rules import RuleLayer

#: Maps the ``type`` of a layer entry (e.g. ``"Conv2D"``) to its layer class.
LAYER_TYPES: dict[str, type[Layer]] = {}


class Layer(RuleLayer, nn.Module):
    """One typed node of a converted graph.

    Subclasses declare the ``type`` names they are registered under
    (``type_names``), how many tensors they read (``n_inputs``; ``None`` for
    ``min_inputs`` or more) and their parameters: ``required`` names and ``optional``
    names with defaults. ``__init__`` receives exactly those parameters.

    The graph builder sets ``input_dim`` (one shape per read tensor) and
    ``output_dim``; shapes never include the batch axis and are channels first.
    The rule-based backward passes (LRP, DeepLift, ConnectionWeights) are the
    methods of :class:`~innsight.layers.rules.RuleLayer`; each family overrides
    those it supports.
    """

    type_names: ClassVar[tuple[str, ...]] = ()
    n_inputs: ClassVar[int | None] = 1
    #: The fewest and the most (``None``: no limit) tensors a layer with
    #: ``n_inputs = None`` reads.
    min_inputs: ClassVar[int] = 2
    max_inputs: ClassVar[int | None] = None
    required: ClassVar[tuple[str, ...]] = ()
    optional: ClassVar[Mapping[str, Any]] = {}
    #: Whether this layer is an activation (``ignore_last_act`` skips it at an output).
    is_activation: ClassVar[bool] = False
    #: Whether the output may share memory with an input (views, identity).
    returns_view: ClassVar[bool] = False
    #: Whether :meth:`forward_overwriting` can reuse the first input's memory.
    can_overwrite: ClassVar[bool] = False

    input_dim: list[tuple[int, ...]]
    output_dim: tuple[int, ...]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls.__dict__.get("type_names", ()):
            LAYER_TYPES[name] = cls

    def __init__(self, type_name: str) -> None:
        super().__init__()
        self.type_name = type_name

    @classmethod
    def from_params(cls, type_name: str, params: Mapping[str, Any], where: str) -> Layer:
        """Build a layer from the parameters of its dict entry.

        ``where`` names the entry in error messages (e.g. ``"layers[3] ('conv1')"``).
        """
        allowed = set(cls.required) | set(cls.optional)
        unknown = sorted(set(params) - allowed)
        missing = [name for name in cls.required if name not in params]
        if unknown or missing:
            problems = []
            if missing:
                problems.append(f"misses {missing}")
            if unknown:
                problems.append(f"has unknown entries {unknown}")
            raise ValueError(
                f"{where} of type '{type_name}' {' and '.join(problems)}; "
                f"required: {list(cls.required)}, optional: {sorted(cls.optional)}."
            )
        kwargs = {**cls.optional, **params}
        try:
            return cls(type_name, **kwargs)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where} of type '{type_name}': {err}") from err

    def get_params(self) -> dict[str, Any]:
        """The parameters of this layer's dict entry (arrays as tensors)."""
        return {}

    def summary(self) -> str:
        """A short description for model listings, e.g. ``Conv2D`` or ``Activation(relu)``."""
        return self.type_name

    def forward_overwriting(self, *xs: Any) -> Any:
        """``forward``, free to write the result into the first input (which the graph
        no longer needs; only called without autograd). Same values as ``forward``."""
        return self(*xs)

    def per_channel(self, v: torch.Tensor) -> torch.Tensor:
        """A vector ``(C,)`` shaped to broadcast against a sample ``(C, *spatial)``."""
        return v.view(-1, *[1] * (self.sample_rank - 1))

    def extra_repr(self) -> str:
        shapes = getattr(self, "output_dim", None)
        return f"type={self.type_name}" + (f", output_dim={shapes}" if shapes else "")


def frozen_param(value: Any, name: str) -> nn.Parameter:
    """A weight tensor that takes no gradient (methods differentiate inputs only): a copy
    of ``value`` (made once: nested lists and integers are copied by their conversion
    alone), integers as the default float dtype."""
    if isinstance(value, torch.Tensor):
        array, copied = value.detach(), False
    else:  # np.asarray copies nested lists, not an array
        array, copied = torch.as_tensor(np.asarray(value)), isinstance(value, (list, tuple))
    if not array.is_floating_point():
        array, copied = array.to(torch.get_default_dtype()), True
    array = array if copied else array.clone()
    if not torch.isfinite(array.sum()) and not torch.isfinite(array).all():  # sum: one pass
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return nn.Parameter(array, requires_grad=False)


def as_int(value: Any, name: str) -> int:
    """An int (numpy ints included); floats such as 1.5 or 2.0 are refused, never truncated."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    raise ValueError(f"`{name}` must be an int, got {value!r}.")


def as_ints(value: Any, name: str) -> tuple[int, ...]:
    """A list or tuple of ints."""
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"`{name}` must be a list of ints, got {value!r}.")
    return tuple(as_int(v, name) for v in value)


def int_tuple(value: Any, length: int, name: str) -> tuple[int, ...]:
    """An int (repeated ``length`` times) or a sequence of ``length`` ints."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value),) * length
    values = tuple(value) if isinstance(value, (list, tuple)) else None
    if values is None or len(values) != length or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values
    ):
        raise ValueError(f"`{name}` must be an int or {length} ints, got {value!r}.")
    return tuple(int(v) for v in values)


def tensor_dim(axis: int) -> int:
    """Turn an axis of a sample (no batch axis; may be negative) into a tensor dim."""
    return axis + 1 if axis >= 0 else axis
