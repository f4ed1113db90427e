"""Group normalisation written out as layers, shared by the torch and Keras front-ends.

Both hand in an :data:`~innsight.converter.attention.Emit` function, so that a
group norm becomes the same layers whichever framework it came from: the sample
``(C, *spatial)`` reshaped to one row per group of consecutive channels, a layer
norm over each row (so LRP follows the LN-rule and DeepLift its exact primitive
rules), the sample shape back, and the per-channel scale and shift.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from innsight.converter.attention import Emit


def emit_group_norm(emit: Emit, source: Any, shape: Sequence[int], groups: int, weight: Any,
                    bias: Any, eps: float) -> int:
    """Group norm of ``source`` (one sample ``shape = (C, *spatial)``, channels first) over
    ``groups`` groups of ``C / groups`` consecutive channels, then ``weight`` and ``bias``
    ``(C,)`` (``None`` where absent)."""
    grouped = emit("Reshape", [source], "groups", shape=[groups, math.prod(shape) // groups])
    normed = emit("LayerNorm", [grouped], "norm", axes=[1], eps=float(eps))
    affine = weight is not None or bias is not None
    result = emit("Reshape", [normed], "channels" if affine else "", shape=list(shape))
    if not affine:
        return result
    per_channel = (shape[0], *[1] * (len(shape) - 1))
    return emit("Affine", [result], "",
                scale=1.0 if weight is None else weight.reshape(per_channel),
                shift=0.0 if bias is None else bias.reshape(per_channel))
