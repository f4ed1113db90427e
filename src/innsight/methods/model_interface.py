"""The one interface every method explains a model through.

:class:`ExplainableModel` is what a method needs of a model: its input and
output shapes and names, which nodes to explain, and the values of nodes for
given inputs. Three kinds implement it:

- :class:`~innsight.converter.ConvertedModel`, the converted graph (every method);
- :class:`~innsight.methods.opaque_model.OpaqueModel`, any model known only by its
  predictions (LIME and SHAP);
- :class:`TorchModule`, a raw ``torch.nn.Module`` explained with its own autograd
  (the direct ``torch_*`` methods), defined here.

Methods that walk the layers of a graph (LRP, DeepLift, ...) need a converted model.
"""

from __future__ import annotations

import copy
import difflib
import functools
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from innsight._torch_modules import any_training, eval_mode, output_list
from innsight._validation import describe
from innsight.converter.names import Names, default_names
from innsight.methods.data import is_array_like


@runtime_checkable
class ExplainableModel(Protocol):
    """A model as the methods see it. Shapes exclude the batch axis and are channels first."""

    input_dim: list[tuple[int, ...]]
    output_dim: list[tuple[int, ...]]
    input_names: list[Names]
    output_names: list[Names]
    output_nodes: list[int]
    dtype: torch.dtype
    device: torch.device

    #: Whether ``run_nodes`` needs ``sample`` (arguments that differ per data sample).
    per_sample: bool

    def explained_nodes(self, ignore_last_act: bool) -> list[int]:
        """Per model output, the node a method explains."""
        ...

    def layer_outputs(self, output_layer: Any) -> tuple[list[int], list[Names]]:
        """The nodes of the layers ``output_layer`` names, and labels for their axes."""
        ...

    def run_nodes(self, inputs: list[Tensor], nodes: Sequence[int],
                  sample: Tensor | None = None) -> list[Tensor]:
        """The values ``(rows, *dim)`` of ``nodes`` for ``inputs``, one tensor
        ``(rows, *input_dim[k])`` per input, made from the data samples ``sample`` ``(rows,)``
        (``None``: row ``i`` is sample ``i``)."""
        ...


@dataclass(frozen=True)
class ExtraArgs:
    """Forward arguments of a module that are not explained (``extra_args``): positional
    ``args`` after the inputs and keyword ``kwargs``. A tensor whose first axis has one
    entry per data sample is taken row by row along with the data (noisy copies and path
    points of a sample get that sample's entry); anything else is passed unchanged."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    n_data: int

    @classmethod
    def build(cls, extra_args: Any, n_data: int, dtype: torch.dtype,
              device: torch.device) -> ExtraArgs:
        """Check ``extra_args`` (``None``, a tuple/list or a dict); floating-point tensors
        take the method's dtype, every tensor its device."""
        if extra_args is None:
            return cls((), {}, n_data)
        if not isinstance(extra_args, (tuple, list, Mapping)):
            raise TypeError("`extra_args` must be a tuple (positional arguments after the "
                            "data) or a dict (keyword arguments) of the model's forward, got "
                            f"{describe(extra_args)}.")

        def prepare(value: Any) -> Any:
            if not isinstance(value, Tensor):
                return value
            value = value.detach().to(device)
            return value.to(dtype) if value.is_floating_point() else value

        if isinstance(extra_args, Mapping):
            return cls((), {str(k): prepare(v) for k, v in extra_args.items()}, n_data)
        return cls(tuple(prepare(v) for v in extra_args), {}, n_data)

    @property
    def per_sample(self) -> bool:
        return any(self._is_per_sample(v) for v in (*self.args, *self.kwargs.values()))

    def _is_per_sample(self, value: Any) -> bool:
        return isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == self.n_data

    def rows(self, sample: Tensor | None) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The arguments for rows made from the data samples ``sample`` (``None``: every
        sample in order)."""
        def pick(value: Any) -> Any:
            if sample is None or not self._is_per_sample(value):
                return value
            return value[sample.to(value.device)]

        return (tuple(pick(v) for v in self.args),
                {k: pick(v) for k, v in self.kwargs.items()})


class TorchModule:
    """A raw ``nn.Module`` in the :class:`ExplainableModel` interface: its inputs are the
    module's positional arguments, with the shapes of ``data`` (which must have a batch
    axis), followed by ``extra_args`` (see :class:`ExtraArgs`); its output nodes are the
    module's outputs (a tensor, or each tensor of a tuple), ``n`` nodes each (their
    entries, flattened). The outputs of named submodules (``layer_outputs``) are caught
    by forward hooks, removed after each call. The module runs in eval mode (its own
    flags are restored after each call), on ``dtype`` (a copy where its parameters
    differ) and on the device of its parameters."""

    def __init__(self, module: Any, data: Any, dtype: torch.dtype,
                 extra_args: Any = None) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"`model` must be a torch nn.Module, got {describe(module)}.")
        param = next((p for p in module.parameters() if p.is_floating_point()), None)
        self.device = param.device if param is not None else torch.device("cpu")
        self.dtype = dtype
        if any_training(module):
            warnings.warn(f"{type(module).__name__} is in training mode; it is explained in "
                          "eval mode.", UserWarning, stacklevel=4)
        self.module = module if param is None or param.dtype == dtype else (
            copy.deepcopy(module).to(dtype))
        parts = list(data) if isinstance(data, (list, tuple)) else [data]
        for k, part in enumerate(parts):
            if not is_array_like(part) or len(part.shape) < 2:
                raise TypeError(
                    f"`data` must be a tensor or array with a batch axis (or a list of them, "
                    f"one per model input), got {describe(part)} for input {k}."
                )
        self.input_dim = [tuple(part.shape[1:]) for part in parts]
        self.input_names = [default_names(d) for d in self.input_dim]
        self.extra = ExtraArgs.build(extra_args, len(parts[0]), dtype, self.device)
        self.per_sample = self.extra.per_sample
        self.hooked: list[str] = []  # submodules whose outputs follow the module's outputs
        self._first = [(part[:1] if isinstance(part, Tensor)
                        else torch.as_tensor(np.asarray(part)[:1]))
                       .to(dtype=dtype, device=self.device) for part in parts]
        self.output_dim = [(math.prod(out.shape[1:]),) for out in self._first_outputs()]
        self.output_names = [default_names(d, output=True) for d in self.output_dim]
        self.output_nodes = list(range(len(self.output_dim)))

    def explained_nodes(self, ignore_last_act: bool) -> list[int]:
        """The module's outputs as it returns them (``ignore_last_act`` cannot look inside)."""
        return list(self.output_nodes)

    def layer_outputs(self, output_layer: Any) -> tuple[list[int], list[Names]]:
        """The submodules ``output_layer`` names (``dict(module.named_modules())``, one
        name or a list): their outputs become nodes after the module's outputs."""
        names = list(output_layer) if isinstance(output_layer, (list, tuple)) else [output_layer]
        modules = dict(self.module.named_modules())
        for name in names:
            if not isinstance(name, str) or name not in modules:
                close = difflib.get_close_matches(str(name), list(modules), n=5)
                raise ValueError(
                    f"`output_layer` must name submodules of the model (see "
                    f"dict(model.named_modules())), got {describe(name)}"
                    + (f"; close names: {close}." if close else "."))
        if not names:
            raise ValueError("`output_layer` must name at least one module, got an empty list.")
        self.hooked = names
        n_out = len(self.output_nodes)
        caught = self._first_outputs()[n_out:]
        return ([n_out + j for j in range(len(names))],
                [default_names((math.prod(out.shape[1:]),), output=True) for out in caught])

    def run_nodes(self, inputs: list[Tensor], nodes: Sequence[int],
                  sample: Tensor | None = None) -> list[Tensor]:
        """The values ``(rows, *shape)`` of ``nodes`` (outputs as the module returns them)."""
        outputs = self._outputs(inputs, sample, any(node >= len(self.output_nodes)
                                                    for node in nodes))
        return [outputs[node] for node in nodes]

    def _first_outputs(self) -> list[Tensor]:
        with torch.no_grad():
            sample = torch.zeros(1, dtype=torch.long, device=self.device)
            return self._outputs(self._first, sample, True)

    def _outputs(self, inputs: list[Tensor], sample: Tensor | None, hooks: bool) -> list[Tensor]:
        """The module's outputs, then (with ``hooks``) those of the hooked submodules."""
        args, kwargs = self.extra.rows(sample)
        modules = dict(self.module.named_modules())
        caught: dict[str, Tensor] = {}

        def catch(name: str, _module: nn.Module, _inputs: Any, output: Any) -> None:
            if name in caught:
                raise ValueError(f"`output_layer` {name!r} runs more than once in one forward "
                                 "pass, so its output is ambiguous; name a module that runs "
                                 "once (e.g. the block around it).")
            if not isinstance(output, Tensor):
                raise TypeError(f"`output_layer` {name!r} returns {describe(output)}; only "
                                "modules that return one tensor can be explained.")
            caught[name] = output

        handles = [modules[name].register_forward_hook(functools.partial(catch, name))
                   for name in (self.hooked if hooks else [])]
        try:
            with eval_mode(self.module):
                outputs = output_list(self.module(*inputs, *args, **kwargs), "the model's output")
        finally:
            for handle in handles:
                handle.remove()
        missing = [name for name in self.hooked if hooks and name not in caught]
        if missing:
            raise ValueError(f"`output_layer` {missing} did not run in the model's forward pass.")
        return outputs + ([caught[name] for name in self.hooked] if hooks else [])
