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
import math
import warnings
from collections.abc import Sequence
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

    def explained_nodes(self, ignore_last_act: bool) -> list[int]:
        """Per model output, the node a method explains."""
        ...

    def run_nodes(self, inputs: list[Tensor], nodes: Sequence[int]) -> list[Tensor]:
        """The values ``(rows, *dim)`` of ``nodes`` for ``inputs``, one tensor
        ``(rows, *input_dim[k])`` per input."""
        ...


class TorchModule:
    """A raw ``nn.Module`` in the :class:`ExplainableModel` interface: its inputs are the
    module's positional arguments, with the shapes of ``data`` (which must have a batch
    axis); its output nodes are the module's outputs (a tensor, or each tensor of a
    tuple), flattened to ``(rows, n)``. The module runs in eval mode (its own flags are
    restored after each call), on ``dtype`` (a copy where its parameters differ) and on
    the device of its parameters."""

    def __init__(self, module: Any, data: Any, dtype: torch.dtype) -> None:
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
        sample = [(part[:1] if isinstance(part, Tensor) else torch.as_tensor(np.asarray(part)[:1]))
                  .to(dtype=dtype, device=self.device) for part in parts]
        self.output_dim = [(math.prod(out.shape[1:]),) for out in self._outputs(sample)]
        self.output_names = [default_names(d, output=True) for d in self.output_dim]
        self.output_nodes = list(range(len(self.output_dim)))

    def explained_nodes(self, ignore_last_act: bool) -> list[int]:
        """The module's outputs as it returns them (``ignore_last_act`` cannot look inside)."""
        return list(self.output_nodes)

    def run_nodes(self, inputs: list[Tensor], nodes: Sequence[int]) -> list[Tensor]:
        outputs = self._outputs(inputs)
        return [outputs[node].reshape(outputs[node].shape[0], -1) for node in nodes]

    def _outputs(self, inputs: list[Tensor]) -> list[Tensor]:
        with eval_mode(self.module):
            return output_list(self.module(*inputs), "the model's output")
