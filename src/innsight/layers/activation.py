"""Activation functions: elementwise nonlinearities and softmax."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from innsight.layers.base import Layer, tensor_dim


@dataclass(frozen=True)
class ActivationSpec:
    """How to apply one named activation and which parameters it takes."""

    fn: Callable[..., Tensor]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    #: The same function writing into its input, where torch has one.
    fn_: Callable[..., Tensor] | None = None


def _softmax(x: Tensor, axis: int) -> Tensor:
    return torch.softmax(x, dim=tensor_dim(axis))


def _identity(x: Tensor) -> Tensor:
    return x


def _hardsigmoid(x: Tensor) -> Tensor:
    # Closed form: torch's fused kernel differentiates with a float32 1/6 even in float64.
    return (x / 6 + 0.5).clamp(0, 1)


def _hardswish(x: Tensor) -> Tensor:
    return x * _hardsigmoid(x)


#: Activation name in the dict format -> how to compute it. ``axis`` counts
#: sample axes (0 = channels), never the batch axis.
ACTIVATIONS: dict[str, ActivationSpec] = {
    "relu": ActivationSpec(F.relu, fn_=F.relu_),
    "relu6": ActivationSpec(F.relu6, fn_=lambda x: F.hardtanh_(x, 0.0, 6.0)),
    "leaky_relu": ActivationSpec(F.leaky_relu, {"negative_slope": 0.01}, fn_=F.leaky_relu_),
    "elu": ActivationSpec(F.elu, {"alpha": 1.0}, fn_=F.elu_),
    "gelu": ActivationSpec(F.gelu, {"approximate": "none"}),
    "silu": ActivationSpec(F.silu, fn_=lambda x: F.silu(x, inplace=True)),
    "softplus": ActivationSpec(F.softplus, {"beta": 1.0, "threshold": 20.0}),
    "sigmoid": ActivationSpec(torch.sigmoid, fn_=torch.sigmoid_),
    "tanh": ActivationSpec(torch.tanh, fn_=torch.tanh_),
    "hardtanh": ActivationSpec(F.hardtanh, {"min_val": -1.0, "max_val": 1.0}, fn_=F.hardtanh_),
    "hardsigmoid": ActivationSpec(_hardsigmoid),
    "hardswish": ActivationSpec(_hardswish),
    "softmax": ActivationSpec(_softmax, {"axis": 0}),
    "identity": ActivationSpec(_identity),
}


class Activation(Layer):
    """An activation function ``act_name`` applied to ``(batch, *dim)``, same shape out.

    Parameters: ``act_name`` (a key of :data:`ACTIVATIONS`) and that
    activation's own parameters, e.g. ``negative_slope`` for ``leaky_relu`` or
    ``axis`` (a sample axis, 0 = channels) for ``softmax``.
    """

    type_names = ("Activation",)
    required = ("act_name",)
    is_activation = True

    @classmethod
    def from_params(cls, type_name: str, params: Mapping[str, Any], where: str) -> Layer:
        name = params.get("act_name")
        if not isinstance(name, str) or name not in ACTIVATIONS:
            raise ValueError(
                f"{where}: unknown `act_name` {name!r}; expected one of {sorted(ACTIVATIONS)}."
            )
        allowed = set(ACTIVATIONS[name].defaults) | {"act_name"}
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise ValueError(
                f"{where}: activation '{name}' has unknown entries {unknown}; "
                f"it takes {sorted(ACTIVATIONS[name].defaults) or 'no parameters'}."
            )
        args = {**ACTIVATIONS[name].defaults, **params}
        del args["act_name"]
        return cls(type_name, name, args)

    def __init__(self, type_name: str, act_name: str, args: Mapping[str, Any]) -> None:
        super().__init__(type_name)
        self.act_name = act_name
        self.args = dict(args)
        self.spec = ACTIVATIONS[act_name]
        self.can_overwrite = self.spec.fn_ is not None
        self.returns_view = act_name == "identity"

    def forward(self, x: Tensor) -> Tensor:
        return self.spec.fn(x, **self.args)

    def forward_overwriting(self, x: Tensor) -> Tensor:
        if self.spec.fn_ is None:
            return self.forward(x)
        return self.spec.fn_(x, **self.args)

    def get_params(self) -> dict[str, Any]:
        return {"act_name": self.act_name, **self.args}

    def summary(self) -> str:
        return f"{self.type_name}({self.act_name})"

    def extra_repr(self) -> str:
        return f"{self.act_name}" + "".join(f", {k}={v!r}" for k, v in self.args.items())
