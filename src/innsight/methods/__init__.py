"""Interpretation methods and the result object they return."""

from innsight.methods.agnostic import LIME, SHAP, run_lime, run_shap
from innsight.methods.base import InterpretingMethod
from innsight.methods.connection_weights import ConnectionWeights, run_cw
from innsight.methods.deeplift import DeepLift, DeepSHAP, run_deeplift, run_deepshap
from innsight.methods.gradcam import GradCAM, run_gradcam
from innsight.methods.gradient import (
    ExpectedGradient,
    Gradient,
    IntegratedGradient,
    SmoothGrad,
    run_expgrad,
    run_grad,
    run_intgrad,
    run_smoothgrad,
)
from innsight.methods.lrp import LRP, run_lrp
from innsight.methods.result import Result
from innsight.methods.torch_methods import (
    torch_expgrad,
    torch_grad,
    torch_intgrad,
    torch_smoothgrad,
)

__all__ = [
    "LIME", "SHAP", "run_lime", "run_shap",
    "ConnectionWeights", "DeepLift", "DeepSHAP", "LRP", "run_cw", "run_deeplift", "run_deepshap",
    "run_lrp",
    "GradCAM", "run_gradcam",
    "ExpectedGradient", "Gradient", "IntegratedGradient", "InterpretingMethod", "Result",
    "SmoothGrad", "run_expgrad", "run_grad", "run_intgrad", "run_smoothgrad", "torch_expgrad",
    "torch_grad", "torch_intgrad", "torch_smoothgrad",
]
