"""The error raised when a model cannot be converted."""

from __future__ import annotations


class ConversionError(ValueError):
    """A model, or one of its operations, cannot be converted (the message says which).

    ``internal`` holds the error of torch, Keras or onnx behind the message where it is
    not chained into the traceback (``raise ... from None``: a long framework traceback
    would come before the message that says what to do); inspect it for debugging.
    """

    internal: BaseException | None = None

    @classmethod
    def hiding(cls, message: str, internal: BaseException) -> ConversionError:
        """The error with ``message`` that keeps ``internal`` as :attr:`internal`; raise
        it ``from None``."""
        error = cls(message)
        error.internal = internal
        return error


#: The way out named in conversion errors.
DIRECT_METHODS_HINT = (
    "To explain this model anyway, use the direct torch methods (ins.torch_grad, "
    "ins.torch_smoothgrad, ins.torch_intgrad, ins.torch_expgrad), which work on any "
    "nn.Module without conversion, or the model-agnostic ins.run_shap / ins.run_lime on "
    "the model itself."
)
