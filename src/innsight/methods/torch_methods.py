"""Direct torch methods: gradient-based explanations of any ``nn.Module``, no conversion.

They use the same recipes as the converter-based methods, on the module's
own forward pass (in eval mode for the duration; the module's flags are
restored). ``data`` is one tensor ``(n_data, *input_shape)`` or a list of
tensors, one per model input; outputs are the module's first output,
flattened. The result is ``(n_data, *input_shape, n_outputs)`` (a list per
input for several inputs), or a :class:`Result` with ``return_object=True``.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from innsight._validation import any_training, check_bool, describe, is_int, resolve_dtype
from innsight.converter.names import default_names
from innsight.converter.torch_fx import eval_mode, flatten_outputs
from innsight.methods.base import METHODS, make_generator, split_by_output
from innsight.methods.data import is_array_like, prepare_data
from innsight.methods.engine import Target, default_batch_size, evaluate, target_values
from innsight.methods.gradient import (
    NoisyCopies,
    PathPoints,
    PlainGradient,
    Recipe,
    ReferenceDraws,
    explain_gradients,
)
from innsight.methods.outputs import DEFAULT_N_OUTPUTS, flat_labels
from innsight.methods.result import Result


def _direct(
    method: str,
    model: Any,
    data: Any,
    output_idx: Any,
    dtype: str,
    return_object: Any,
    make_recipe: Any,
    args: dict[str, Any],
) -> Any:
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch nn.Module, got {describe(model)}.")
    check_bool(return_object, "return_object")
    torch_dtype = resolve_dtype(dtype)
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    device = param.device if param is not None else torch.device("cpu")
    if param is not None and param.dtype != torch_dtype:
        model = copy.deepcopy(model).to(torch_dtype)
    tensors = _as_tensors(data)
    dims = [tuple(x.shape[1:]) for x in tensors]
    tensors, _ = prepare_data(tensors, dims, True, torch_dtype, device)
    if any_training(model):
        warnings.warn(f"{type(model).__name__} is in training mode; it is explained in eval mode.",
                      UserWarning, stacklevel=3)

    def model_fn(xs: list[Tensor]) -> list[Tensor]:
        return flatten_outputs(model(*xs), "the model's output")[:1]

    with eval_mode(model):
        out_size = evaluate(model_fn, [x[:1] for x in tensors], 1)[0][0].numel()
        indices = _output_indices(output_idx, out_size)
        targets = [Target(0, j) for j in indices]
        batch_size = default_batch_size(dims, len(targets), torch_dtype.itemsize, device)
        recipe: Recipe = make_recipe(tensors)
        preds = target_values(evaluate(model_fn, tensors, batch_size), targets)
        values, goal = explain_gradients(recipe, model_fn, tensors, targets, batch_size,
                                         make_generator(None, device), False, preds)
    if not return_object:
        return values[0] if len(values) == 1 else values
    return Result(
        method=method,
        value_name=METHODS[method].value_name,
        args=args,
        values=split_by_output(values, [indices]),
        output_idx=[indices],
        output_labels=[[flat_labels(default_names((out_size,), output=True))[j] for j in indices]],
        input_names=[default_names(d) for d in dims],
        channels_first=True,
        preds=[preds],
        decomp_goal=None if goal is None else [goal],
        data=tensors,
    )


def _as_tensors(data: Any) -> list[Any]:
    """``data`` as a list of arrays, one per model input (its shapes define the inputs)."""
    parts = list(data) if isinstance(data, (list, tuple)) else [data]
    for k, part in enumerate(parts):
        if not is_array_like(part):
            raise TypeError(
                f"`data` must be a tensor or array (or a list of them, one per model input), "
                f"got {describe(part)} for input {k}."
            )
    return parts


def _output_indices(output_idx: Any, out_size: int) -> list[int]:
    if output_idx is None:
        return list(range(min(DEFAULT_N_OUTPUTS, out_size)))
    indices = [output_idx] if is_int(output_idx) else output_idx
    if not isinstance(indices, (list, tuple)) or not indices or not all(is_int(i) for i in indices):
        raise TypeError(f"`output_idx` must be an int or a list of ints, got {describe(output_idx)}.")
    bad = [i for i in indices if not 0 <= i < out_size]
    if bad:
        raise ValueError(f"`output_idx` {bad} out of range for {out_size} output nodes.")
    return [int(i) for i in indices]


def torch_grad(model: nn.Module, data: Any, output_idx: Any = None, times_input: bool = False,
               dtype: str = "float", return_object: bool = False) -> Any:
    """Gradient (times input) of ``model``'s outputs w.r.t. ``data``."""
    check_bool(times_input, "times_input")
    return _direct("Gradient", model, data, output_idx, dtype, return_object,
                   lambda xs: PlainGradient(times_input), {"times_input": times_input})


def torch_smoothgrad(model: nn.Module, data: Any, output_idx: Any = None, n: int = 50,
                     noise_level: float = 0.1, times_input: bool = False, dtype: str = "float",
                     return_object: bool = False) -> Any:
    """SmoothGrad of ``model``: mean gradient over ``n`` noisy copies (noise scale per sample)."""
    return _direct("SmoothGrad", model, data, output_idx, dtype, return_object,
                   lambda xs: NoisyCopies.build(xs, n, noise_level, times_input),
                   {"n": n, "noise_level": noise_level, "times_input": times_input})


def torch_intgrad(model: nn.Module, data: Any, x_ref: Any = None, output_idx: Any = None,
                  n: int = 50, times_input: bool = True, dtype: str = "float",
                  return_object: bool = False) -> Any:
    """IntegratedGradient of ``model`` from ``x_ref`` (default zeros), right Riemann sum."""
    return _direct("IntegratedGradient", model, data, output_idx, dtype, return_object,
                   lambda xs: PathPoints.build(xs, x_ref, n, times_input, True),
                   {"n": n, "times_input": times_input})


def torch_expgrad(model: nn.Module, data: Any, data_ref: Any = None, output_idx: Any = None,
                  n: int = 50, dtype: str = "float", return_object: bool = False) -> Any:
    """ExpectedGradient of ``model`` with references drawn from ``data_ref`` (default: ``data``)."""
    return _direct("ExpectedGradient", model, data, output_idx, dtype, return_object,
                   lambda xs: ReferenceDraws.build(xs, data_ref, n, True), {"n": n})
