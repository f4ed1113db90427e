"""Grouped-query attention kept grouped: a repetition of key and value heads before an
attention call is undone.

Llama-family models in Hugging Face ``transformers`` repeat each key and value head
for the query heads it serves (``repeat_kv``: ``x[:, :, None].expand(b, kv, n, s,
d).reshape(b, kv * n, s, d)``) before ``F.scaled_dot_product_attention``. Converted as
written, that copies ``k`` and ``v`` once per query head in every forward pass and every
rule-based reverse walk. :func:`group_key_value_heads` rewrites such calls to read the
key and value heads themselves with ``enable_gqa=True``, which the attention layer
computes per group; the repeating nodes then drop out where nothing else reads them.
"""

from __future__ import annotations

import operator

from torch import fx

from innsight.converter.mutations import target_name

#: Calls that merge the repeated axis into the heads axis, and copies that may sit
#: between them and the expansion (``torch.export`` writes ``reshape`` as either).
_RESHAPES = {"reshape", "view", "_unsafe_view"}
_COPIES = {"clone", "contiguous"}
#: The attention call's arguments read here: (position, name).
_KEY, _VALUE = (1, "key"), (2, "value")


def _name(node: object) -> str:
    """``reshape`` for the method ``"reshape"``, ``torch.reshape`` and
    ``aten.reshape.default``; ``""`` for anything but a call."""
    if not isinstance(node, fx.Node) or node.op not in ("call_function", "call_method"):
        return ""
    return target_name(node.target)


def _shape(node: fx.Node) -> tuple[int, ...]:
    return tuple(node.meta["tensor_meta"].shape)


def _inserts_axis(node: fx.Node) -> bool:
    """Whether ``node`` adds one axis of size 1 to its operand and nothing else:
    ``unsqueeze``, or indexing with full slices and one ``None``."""
    if _name(node) == "unsqueeze":
        return True
    if not isinstance(node, fx.Node) or node.target is not operator.getitem or not isinstance(node.args[1], tuple):
        return False
    index = node.args[1]
    full = all(i is None or i is Ellipsis or i == slice(None) for i in index)
    return full and sum(i is None for i in index) == 1


def repeated_heads(node: fx.Node) -> fx.Node | None:
    """The tensor ``x (..., kv_heads, S, E)`` whose heads ``node (..., kv_heads * n, S,
    E)`` repeats, each ``n`` times in a row (``x`` with an axis of size 1 inserted after
    its heads, expanded to ``n`` and merged into them); ``None`` where ``node`` is not
    such a repetition."""
    if _name(node) not in _RESHAPES:
        return None
    expanded = node.args[0]
    if _name(expanded) in _COPIES:
        expanded = expanded.args[0]
    if _name(expanded) != "expand" or not _inserts_axis(expanded.args[0]):
        return None
    inserted = expanded.args[0]
    source = inserted.args[0]
    if not isinstance(source, fx.Node) or "tensor_meta" not in source.meta:
        return None
    x, n = _shape(source), _shape(expanded)[-3]
    if len(x) < 4 or (
            _shape(inserted) != (*x[:-2], 1, *x[-2:])
            or _shape(expanded) != (*x[:-2], n, *x[-2:])
            or _shape(node) != (*x[:-3], x[-3] * n, *x[-2:])):
        return None
    return source


def _set_argument(node: fx.Node, position: int, name: str, value: object) -> None:
    if len(node.args) > position:
        node.update_arg(position, value)
    else:
        node.update_kwarg(name, value)


def _argument(node: fx.Node, position: int, name: str) -> object:
    return node.args[position] if len(node.args) > position else node.kwargs.get(name)


def group_key_value_heads(graph: fx.Graph) -> None:
    """Rewrites every ``scaled_dot_product_attention`` call of ``graph`` whose key and
    value are repetitions of heads (:func:`repeated_heads`) of as many heads each to
    read the unrepeated heads with ``enable_gqa=True`` (the same result: query head
    ``i`` reads key head ``i // n``). The nodes must carry ``meta["tensor_meta"]``.
    Repetitions that something else reads stay as they are for it."""
    for node in graph.nodes:
        if _name(node) != "scaled_dot_product_attention":
            continue
        sources = [repeated_heads(_argument(node, *where)) for where in (_KEY, _VALUE)]
        if None in sources or _shape(sources[0])[-3] != _shape(sources[1])[-3]:
            continue
        for where, source in zip((_KEY, _VALUE), sources):
            _set_argument(node, *where, source)
        node.update_kwarg("enable_gqa", True)
