"""Converting models of every framework into one graph of typed layers."""

from innsight.converter.converted_model import ConvertedModel
from innsight.converter.converter import Converter, convert
from innsight.converter.errors import ConversionError

__all__ = ["ConversionError", "ConvertedModel", "Converter", "convert"]
