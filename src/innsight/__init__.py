"""innsight: explain neural-network predictions, convert once, then run any method."""

from innsight.converter import ConversionError, ConvertedModel, Converter, convert

__all__ = ["ConversionError", "ConvertedModel", "Converter", "convert"]
__version__ = "0.1.0"
