"""innsight: explain neural-network predictions, convert once, then run any method."""

from innsight._import_order import load_triton

load_triton()  # before anything imports TensorFlow: see innsight._import_order

from innsight.converter import ConversionError, ConvertedModel, Converter, convert
from innsight.converter.huggingface import embed_tokens
from innsight.methods import (
    LIME,
    LRP,
    SHAP,
    ConnectionWeights,
    DeepLift,
    DeepSHAP,
    ExpectedGradient,
    GradCAM,
    Gradient,
    IntegratedGradient,
    InterpretingMethod,
    Result,
    SmoothGrad,
    run_cw,
    run_deeplift,
    run_deepshap,
    run_expgrad,
    run_grad,
    run_gradcam,
    run_intgrad,
    run_lime,
    run_lrp,
    run_shap,
    run_smoothgrad,
    torch_expgrad,
    torch_grad,
    torch_intgrad,
    torch_smoothgrad,
)
from innsight.methods.comparison import Comparison, compare_models
from innsight.methods.tokens import TokenExplanation, explain_tokens
from innsight import metrics
from innsight.datasets import DatasetResult, explain_dataset
from innsight.metrics import evaluate, recommend
from innsight.plotting import plot_tokens, tokens_html

__all__ = [
    "LIME", "SHAP", "run_lime", "run_shap",
    "Comparison", "compare_models", "evaluate", "metrics", "recommend",
    "DatasetResult", "explain_dataset",
    "ConnectionWeights", "DeepLift", "DeepSHAP", "LRP", "run_cw", "run_deeplift", "run_deepshap",
    "run_lrp",
    "GradCAM", "run_gradcam",
    "plot_tokens", "tokens_html", "TokenExplanation", "explain_tokens",
    "ConversionError", "ConvertedModel", "Converter", "ExpectedGradient", "Gradient",
    "IntegratedGradient", "InterpretingMethod", "Result", "SmoothGrad", "convert", "embed_tokens",
    "run_expgrad", "run_grad", "run_intgrad", "run_smoothgrad", "torch_expgrad", "torch_grad",
    "torch_intgrad", "torch_smoothgrad",
]
__version__ = "0.1.0"
