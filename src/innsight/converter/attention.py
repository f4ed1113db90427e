"""Attention written out as layers, shared by the torch and Keras front-ends.

Both front-ends hand in an :data:`Emit` function, so that the same layer graph
comes out whichever framework the attention came from: dense projections of
token-major ``(tokens, width)`` tensors, a reshape and permutation per head,
``softmax(scale * q @ k^T) @ v`` as one attention layer whose weights LRP holds
fixed by default (the AH-rule), the heads joined again and the output projection.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor

#: ``emit(type_name, reads, part, **params) -> index``: add a layer reading ``reads``
#: (layer indices, or whatever the front-end reads from), named after the converted
#: operation and ``part`` (a label such as ``"q_heads"``; ``""`` for the operation
#: itself), and return its index.
Emit = Callable[..., int]


def emit_attention(emit: Emit, q: Any, k: Any, v: Any, scale: float, part: str = "",
                   mask: Tensor | None = None, bias: Any = None,
                   masked_rows: str = "softmax") -> int:
    """``softmax(scale * q @ k^T + mask + bias) @ v`` over the last two sample axes of
    ``q (..., L, E)``, ``k (..., S, E)`` and ``v (..., S, Ev)``, as one
    :class:`~innsight.layers.attention.ScaledDotProductAttention` layer named ``part``
    (its softmax, the part ``weights``, is held fixed under LRP by default: the
    AH-rule). ``mask`` is a constant added to the scores (a causal or padding mask: 0
    where attending, a large negative number where not); ``bias`` a tensor computed
    from the inputs added to them (a relative position term, or a mask made from the
    masks given per call); ``masked_rows`` what a query row that attends to no key
    yields (the layer's parameter: ``"zero"`` where the original masked with booleans)."""
    reads = [q, k, v] if bias is None else [q, k, v, bias]
    return emit("ScaledDotProductAttention", reads, part, scale=float(scale), mask=mask,
                masked_rows=masked_rows)


def emit_multi_head_attention(emit: Emit, inputs: Sequence[Any], lengths: Sequence[int],
                              projections: Sequence[tuple[Any, Any]], output: tuple[Any, Any],
                              num_heads: int, scale: float,
                              gate: tuple[Any, Any] | None = None) -> int:
    """Multi-head attention of token-major query, key and value ``inputs``
    (``(lengths[i], width_i)`` each) as layers; the result is ``(lengths[0], out)``.

    ``projections`` holds per input a dense ``(weight (num_heads * head_dim, width_i),
    bias or None)`` whose rows are head-major (row ``h * head_dim + d``); ``output``
    the output projection ``(weight (out, num_heads * value_head_dim), bias or None)``
    reading the heads joined in the same order. Query and key share ``head_dim``.
    A ``gate`` (a dense map of the query like the value's projection) multiplies the
    joined heads by its sigmoid before the output projection.
    """
    heads = []
    for name, x, length, (weight, bias) in zip("qkv", inputs, lengths, projections):
        projected = emit("Dense", [x], name, weight=weight, bias=bias)
        split = emit("Reshape", [projected], f"{name}_heads",
                     shape=[length, num_heads, weight.shape[0] // num_heads])
        heads.append(emit("Permute", [split], f"{name}_t", perm=[1, 0, 2]))
    attended = emit_attention(emit, *heads, scale, part="context")
    merged = emit("Permute", [attended], "merge", perm=[1, 0, 2])
    weight, bias = output
    joined = emit("Reshape", [merged], "join", shape=[lengths[0], weight.shape[1]])
    if gate is not None:
        opened = emit("Dense", [inputs[0]], "gate", weight=gate[0], bias=gate[1])
        opened = emit("Activation", [opened], "gate_sigmoid", act_name="sigmoid")
        joined = emit("Multiply", [joined, opened], "gated")
    return emit("Dense", [joined], "out", weight=weight, bias=bias)
