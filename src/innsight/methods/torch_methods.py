"""Direct torch methods: gradient-based explanations of any ``nn.Module``, no conversion.

Each runs the same method class as ``run_*`` (the same checks, output
selection and chunking) on the module itself, wrapped as a
:class:`~innsight.methods.model_interface.TorchModule`: its own forward pass
and autograd, in eval mode for the duration (the module's flags are restored).
``data`` is one tensor ``(n_data, *input_shape)`` or a list of tensors, one per
model input; the output nodes are the module's outputs, each flattened
(``output_idx`` as in ``run_*``: default the first 10 nodes of the first
output). The values are ``(n_data, *input_shape, n_outputs)`` (a list per
input for several inputs), or the method's result object with
``return_object=True``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from innsight._validation import check_bool, resolve_dtype
from innsight.methods.base import InterpretingMethod
from innsight.methods.gradient import (
    ExpectedGradient,
    Gradient,
    IntegratedGradient,
    SmoothGrad,
)
from innsight.methods.model_interface import TorchModule


def _direct(method: type[InterpretingMethod], model: Any, data: Any, return_object: Any,
            dtype: str, extra_args: Any, **args: Any) -> Any:
    check_bool(return_object, "return_object")
    module = TorchModule(model, data, resolve_dtype(dtype), extra_args)
    result = method(module, data, dtype=dtype, verbose=False, **args)
    if return_object:
        return result
    blocks = [layer for layer in result.values if layer is not None]
    if len(blocks) > 1:  # nodes of several outputs: one list per output
        return result.get_result("torch_tensor")
    return blocks[0][0] if len(blocks[0]) == 1 else blocks[0]


def torch_grad(model: nn.Module, data: Any, output_idx: Any = None, times_input: bool = False,
               dtype: str = "float", return_object: bool = False, batch_size: int | None = None,
               seed: int | None = None, *, targets: Any = None, target_fun: Any = None,
               target_weights: Any = None, output_layer: Any = None,
               extra_args: Any = None) -> Any:
    """Gradient (times input) of ``model``'s outputs w.r.t. ``data``; see :class:`Gradient`."""
    return _direct(Gradient, model, data, return_object, dtype, extra_args,
                   output_idx=output_idx, times_input=times_input, batch_size=batch_size,
                   seed=seed, targets=targets, target_fun=target_fun,
                   target_weights=target_weights, output_layer=output_layer)


def torch_smoothgrad(model: nn.Module, data: Any, output_idx: Any = None, n: int = 50,
                     noise_level: float = 0.1, times_input: bool = False, dtype: str = "float",
                     return_object: bool = False, batch_size: int | None = None,
                     seed: int | None = None, *, targets: Any = None, target_fun: Any = None,
                     target_weights: Any = None, output_layer: Any = None,
                     extra_args: Any = None) -> Any:
    """SmoothGrad of ``model``: mean gradient over ``n`` noisy copies (noise scale per
    sample); see :class:`SmoothGrad`."""
    return _direct(SmoothGrad, model, data, return_object, dtype, extra_args,
                   output_idx=output_idx, n=n, noise_level=noise_level, times_input=times_input,
                   batch_size=batch_size, seed=seed, targets=targets, target_fun=target_fun,
                   target_weights=target_weights, output_layer=output_layer)


def torch_intgrad(model: nn.Module, data: Any, x_ref: Any = None, output_idx: Any = None,
                  n: int = 50, times_input: bool = True, dtype: str = "float",
                  return_object: bool = False, batch_size: int | None = None,
                  seed: int | None = None, *, targets: Any = None, target_fun: Any = None,
                  target_weights: Any = None, output_layer: Any = None,
                  extra_args: Any = None) -> Any:
    """IntegratedGradient of ``model`` from ``x_ref`` (default zeros), right Riemann sum;
    see :class:`IntegratedGradient`."""
    return _direct(IntegratedGradient, model, data, return_object, dtype, extra_args,
                   x_ref=x_ref, output_idx=output_idx, n=n, times_input=times_input,
                   batch_size=batch_size, seed=seed, targets=targets, target_fun=target_fun,
                   target_weights=target_weights, output_layer=output_layer)


def torch_expgrad(model: nn.Module, data: Any, data_ref: Any = None, output_idx: Any = None,
                  n: int = 50, dtype: str = "float", return_object: bool = False,
                  batch_size: int | None = None, seed: int | None = None, *,
                  targets: Any = None, target_fun: Any = None, target_weights: Any = None,
                  output_layer: Any = None, extra_args: Any = None) -> Any:
    """ExpectedGradient of ``model`` with references drawn from ``data_ref`` (default:
    ``data``); see :class:`ExpectedGradient`."""
    return _direct(ExpectedGradient, model, data, return_object, dtype, extra_args,
                   data_ref=data_ref, output_idx=output_idx, n=n, batch_size=batch_size,
                   seed=seed, targets=targets, target_fun=target_fun,
                   target_weights=target_weights, output_layer=output_layer)
