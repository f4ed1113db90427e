"""innsight: explain neural-network predictions, convert once, then run any method."""

from innsight.converter import ConversionError, ConvertedModel, Converter, convert
from innsight.methods import (
    ExpectedGradient,
    Gradient,
    IntegratedGradient,
    InterpretingMethod,
    Result,
    SmoothGrad,
    run_expgrad,
    run_grad,
    run_intgrad,
    run_smoothgrad,
    torch_expgrad,
    torch_grad,
    torch_intgrad,
    torch_smoothgrad,
)

__all__ = [
    "ConversionError", "ConvertedModel", "Converter", "ExpectedGradient", "Gradient",
    "IntegratedGradient", "InterpretingMethod", "Result", "SmoothGrad", "convert",
    "run_expgrad", "run_grad", "run_intgrad", "run_smoothgrad", "torch_expgrad", "torch_grad",
    "torch_intgrad", "torch_smoothgrad",
]
__version__ = "0.1.0"
