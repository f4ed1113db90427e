"""The error raised when a model cannot be converted."""


class ConversionError(ValueError):
    """A model, or one of its operations, cannot be converted (the message says which)."""


#: The way out named in conversion errors.
DIRECT_METHODS_HINT = (
    "To explain this model anyway, use the direct torch methods (ins.torch_grad, "
    "ins.torch_smoothgrad, ins.torch_intgrad, ins.torch_expgrad), which work on any "
    "nn.Module without conversion, or the model-agnostic ins.run_shap / ins.run_lime on "
    "the model itself."
)
