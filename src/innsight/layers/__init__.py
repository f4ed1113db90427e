"""Typed layers of a converted graph, one module per layer family.

Importing this package registers every layer type in :data:`LAYER_TYPES`.
"""

from innsight.layers import (  # noqa: F401  (imported to register the layer types)
    activation,
    affine,
    attention,
    conv,
    dense,
    input,
    merge,
    normalization,
    padding,
    pooling,
    reduction,
    resize,
    shape,
    tokens,
)
from innsight.layers.activation import ACTIVATIONS
from innsight.layers.base import LAYER_TYPES, Layer

__all__ = ["ACTIVATIONS", "LAYER_TYPES", "Layer"]
