"""In-place updates in a traced graph, rewritten into the new tensors they make.

A traced graph may update a tensor in place: ``attn[:, :, 1:, 1:] = attn[:, :, 1:, 1:] +
rel`` exports as ``aten.copy_`` into a ``slice`` of ``attn`` (MViTv2's relative position
embedding); ``x.relu_()``, ``x += y`` and modules with ``inplace=True`` update ``x``. The
converter maps every node to a layer that computes a new tensor, so a node that reads
the updated tensor later (``attn.softmax(-1)``) must read the node of the update instead.
:func:`rewrite_updates` makes it so before the graph is translated: where the update
goes through views of slices and single entries (``x[:, 1:]``, ``x[:, 0]``), it writes
the updated view back into the tensor with :func:`assign_into`; where a view that the
converter cannot write back (a reshape, a permutation) is updated and the tensor or
another view of it is read later, it refuses with a ``ConversionError`` naming the
update, so that no reader is silently left with the value before the update.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, fx, nn

from innsight.converter.errors import DIRECT_METHODS_HINT, ConversionError


def assign_into(base: Tensor, value: Tensor, index: Any) -> Tensor:
    """``base`` with ``base[index] = value``, as a new tensor (the functional form of an
    in-place update of a view of ``base``)."""
    result = base.clone()
    result[index] = value
    return result


#: Functions of the ``operator`` module that update their first operand in place.
_AUGMENTED = {operator.iadd, operator.isub, operator.imul, operator.itruediv,
              operator.ifloordiv, operator.imod, operator.ipow, operator.imatmul,
              operator.iand, operator.ior, operator.ixor, operator.ilshift, operator.irshift}

#: torch.fx methods and functions (by name) whose result may share memory with their
#: first operand: an update of one is seen through the other.
_MAY_ALIAS = {
    "view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "squeeze",
    "unsqueeze", "transpose", "permute", "t", "expand", "expand_as", "narrow", "select",
    "movedim", "moveaxis", "swapaxes", "swapdims", "contiguous", "detach", "diagonal",
    "unfold", "as_strided", "unbind", "split", "chunk", "tensor_split", "getitem",
    "getattr", "to", "float", "double", "type_as", "dropout", "dropout1d", "dropout2d",
    "dropout3d", "alpha_dropout", "feature_alpha_dropout",
}
#: Operations (by name) that return several views (``getitem`` picks one).
_SPLITS = {"unbind", "split", "chunk", "tensor_split", "split_with_sizes"}
#: Modules that may return their input itself (or a view of it).
_MAY_ALIAS_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                      nn.AlphaDropout, nn.FeatureAlphaDropout, nn.Flatten, nn.Unflatten)

#: An ATen slice ``end`` at least this large runs to the end of its axis (``x[a:]``).
TO_THE_END = 2**62

#: A view that :func:`assign_into` cannot write back (a reshape, a permutation).
_OPAQUE = object()


class UpdatingTracer(fx.Tracer):
    """``torch.fx``'s tracer, recording augmented assignments (``x += y``) and item
    assignments (``x[i] = y``) as the in-place ``operator`` calls they are: ``torch.fx``'s
    own proxies record ``x += y`` as ``x = x + y`` (which leaves other names of ``x``
    with the old values) and cannot record ``x[i] = y``."""

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _UpdatingProxy(node, self)


class _UpdatingProxy(fx.Proxy):
    """A proxy whose augmented and item assignments are recorded (see
    :class:`UpdatingTracer`)."""


def _recorder(function: Callable) -> Callable:
    def record(self: fx.Proxy, *operands: Any) -> fx.Proxy:
        return self.tracer.create_proxy("call_function", function, (self, *operands), {})

    return record


for _function in (*_AUGMENTED, operator.setitem):
    setattr(_UpdatingProxy, f"__{_function.__name__}__", _recorder(_function))


def rewrite_updates(graph_module: fx.GraphModule, where: Callable[[fx.Node], str]) -> bool:
    """Makes every node that reads a tensor after an in-place update of it (or of a view
    of it) read the updated tensor (see the module docs), on a graph whose shapes are
    recorded (``meta["tensor_meta"]``); ``where(node)`` names a node in the errors.
    Returns whether it added nodes (whose shapes are then to be recorded). Raises
    ``ConversionError`` for an update that is read afterwards through a view it cannot
    write back."""
    modules = dict(graph_module.named_modules())
    added = False
    for node in list(graph_module.graph.nodes):
        updated = _updated(modules, node)
        if updated is not None:
            added |= _rewrite(graph_module.graph, node, updated, modules, where)
    return added


def written_attributes(graph_module: fx.GraphModule) -> set[str]:
    """The attributes (``get_attr`` targets: parameters, buffers, constant tensors) that
    the graph updates in place, directly or through views of them."""
    modules = dict(graph_module.named_modules())
    found = set()
    for node in graph_module.graph.nodes:
        views, stack = {node}, [node] if node.op == "get_attr" else []
        while stack:
            for user in stack.pop().users:
                written = _written(modules, user)
                if isinstance(written, fx.Node) and written in views:
                    found.add(node.target)
                elif user not in views and _may_alias(user, modules) and user.args[0] in views:
                    views.add(user)
                    stack.append(user)
    return found


def _rewrite(graph: fx.Graph, update: fx.Node, updated: fx.Node,
             modules: dict[str, nn.Module], where: Callable[[fx.Node], str]) -> bool:
    """Makes the nodes after ``update`` read the updated tensor where they read
    ``updated`` (or the tensor ``updated`` is a view of); whether it added nodes."""
    position = {node: k for k, node in enumerate(graph.nodes)}
    chain, root = [], updated  # the views from the updated one back to their tensor
    while (index := _view_index(root, modules)) is not None:
        chain.append((root, index))
        root = root.args[0]
    after = position[update]
    items = {view.args[0]: view.args[1] for view, _ in chain  # of a split: the one taken
             if view.target is operator.getitem and _name(view.args[0]) in _SPLITS}
    views = _aliases(root, modules, items) - {root}
    for view in views:
        readers = [u for u in view.users if u is not update and position[u] > after]
        if position[view] < after and readers:
            raise _refusal(where, update, f"the view '{view.name}' of the tensor it updates "
                           f"is read afterwards by node '{readers[0].name}'")
    readers = [u for u in root.users if u is not update and position[u] > after]
    if not readers:
        return False  # only the update's own result carries the new values
    if any(index is _OPAQUE for _, index in chain):
        raise _refusal(where, update, f"it updates a view of node '{root.name}' that "
                       f"cannot be written back, and node '{readers[0].name}' reads that "
                       "tensor afterwards")
    new = update  # the updated view: the update's result, or ``x`` after ``x[i] = y``
    if update.target is operator.setitem:
        new = _insert_assign(graph, new, updated, update.args[2], update.args[1])
    for view, index in chain:  # the updated view, written back into its source
        new = _insert_assign(graph, new, view.args[0], new, index)
    for reader in readers:
        reader.replace_input_with(root, new)
    return True


def _insert_assign(graph: fx.Graph, after: fx.Node, base: fx.Node, value: Any,
                   index: Any) -> fx.Node:
    """A node ``assign_into(base, value, index)`` right after ``after``."""
    with graph.inserting_after(after):
        node = graph.create_node("call_function", assign_into, (base, value, index),
                                 name=f"{after.name}_written_back")
    node.meta = {key: value for key, value in after.meta.items()
                 if key in ("nn_module_stack", "stack_trace")}
    if "val" in base.meta:  # torch.export's fake tensor: the shape, the symbolic batch axis
        node.meta["val"] = base.meta["val"]
    return node


def _refusal(where: Callable[[fx.Node], str], update: fx.Node, why: str) -> ConversionError:
    return ConversionError(
        f"{where(update)}: the in-place update {_name(update)} is not supported by the "
        f"converter: {why}. Converted layers compute new tensors; write the update out of "
        f"place (x = x + y, torch.cat, an inplace=False module). {DIRECT_METHODS_HINT}")


def target_name(target: Any) -> str:
    """``add_`` for the method ``"add_"``, the function ``torch.add_`` and the ATen overload
    ``aten.add_.Tensor``: the name of what a traced call calls."""
    return target if isinstance(target, str) else getattr(target, "__name__", "").split(".")[0]


def _name(node: Any) -> str:
    """:func:`target_name` of ``node``'s target; ``""`` for anything but a node."""
    return target_name(node.target) if isinstance(node, fx.Node) else ""


def _updated(modules: dict[str, nn.Module], node: fx.Node) -> fx.Node | None:
    """The node whose tensor ``node`` updates in place (its first operand), or ``None``."""
    written = _written(modules, node)
    if not hasattr(getattr(written, "meta", {}).get("tensor_meta"), "shape"):
        return None  # nothing, or not a tensor (``n += 1`` on a size)
    return written


def _written(modules: dict[str, nn.Module], node: fx.Node) -> Any:
    """The operand that ``node`` writes to, or ``None``."""
    target = node.target
    if not node.args:
        return None
    if node.op == "call_module":
        inplace = getattr(modules.get(target), "inplace", False) is True
    elif node.op == "call_method":
        inplace = target.endswith("_") and not target.startswith("_")
    elif node.op != "call_function":
        inplace = False
    elif isinstance(target, torch._ops.OpOverload):  # ATen says which operand it writes
        first = target._schema.arguments[0] if target._schema.arguments else None
        inplace = bool(first is not None and first.alias_info and first.alias_info.is_write)
    else:
        name = getattr(target, "__name__", "")
        inplace = (target in _AUGMENTED or target is operator.setitem
                   or (name.endswith("_") and not name.startswith("_"))
                   or _inplace_flag(target, node))
    return node.args[0] if inplace else None


def _inplace_flag(function: Callable, node: fx.Node) -> bool:
    """Whether a call ``F.relu(x, inplace=True)`` has its ``inplace`` flag set."""
    try:
        bound = inspect.signature(function).bind(*node.args, **node.kwargs)
    except (TypeError, ValueError):  # a builtin without a signature, or another form
        return node.kwargs.get("inplace") is True
    return bound.arguments.get("inplace") is True


def _may_alias(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node``'s result may share memory with its first operand."""
    if not node.args or not isinstance(node.args[0], fx.Node):
        return False
    if node.op == "call_module":
        return isinstance(modules.get(node.target), _MAY_ALIAS_MODULES)
    if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
        returns = node.target._schema.returns  # (aten.dropout returns its input in eval)
        if bool(returns) and returns[0].alias_info is not None and not (
                returns[0].alias_info.is_write):
            return True
    return node.op in ("call_function", "call_method") and _name(node) in _MAY_ALIAS


def _aliases(root: fx.Node, modules: dict[str, nn.Module],
             items: dict[fx.Node, Any]) -> set[fx.Node]:
    """``root`` and the nodes that may share its memory (views of views, items of a
    split), but of the splits in ``items`` only the item it names (the other items do
    not overlap with it)."""
    found, stack = {root}, [root]
    while stack:
        for user in stack.pop().users:
            source = user.args[0] if user.args else None
            if user in found or source not in found or "tensor_meta" not in user.meta or (
                    not _may_alias(user, modules)):
                continue
            if user.target is operator.getitem and source in items and (
                    user.args[1] != items[source]):
                continue
            found.add(user)
            stack.append(user)
    return found


def _view_index(node: fx.Node, modules: dict[str, nn.Module]) -> Any:
    """The index ``i`` such that ``node``'s tensor is the view ``source[i]`` of its first
    operand (``aten.slice``, ``aten.select``, ``x[1:, 0]``); :data:`_OPAQUE` for another
    view (a reshape, a permutation, an item of a split); ``None`` where ``node`` is no
    view."""
    if not _may_alias(node, modules):
        return None
    if node.op == "call_function" and node.target is torch.ops.aten.slice.Tensor:
        defaults = [0, None, None, 1]  # dim, start, end, step
        dim, start, end, step = [*node.args[1:], *defaults[len(node.args) - 1:]]
        whole = start in (None, 0) and (end is None or end >= TO_THE_END) and step == 1
        return _at_axis(dim, slice(None) if whole else slice(start, end, step))
    if node.op == "call_function" and node.target is torch.ops.aten.select.int:
        return _at_axis(node.args[1], node.args[2])
    if node.target is operator.getitem and _is_basic_index(node.args[1]) and (
            _name(node.args[0]) not in _SPLITS):
        return node.args[1]
    return _OPAQUE


def _at_axis(dim: Any, entry: Any) -> Any:
    """The index that takes ``entry`` along axis ``dim`` (``Ellipsis`` first where ``dim``
    counts from the end)."""
    if not isinstance(dim, int):
        return _OPAQUE
    return (*[slice(None)] * dim, entry) if dim >= 0 else (
        Ellipsis, entry, *[slice(None)] * (-dim - 1))


def _is_basic_index(index: Any) -> bool:
    """Whether ``index`` takes slices and single entries only (no tensors, lists)."""
    entries = index if isinstance(index, tuple) else (index,)
    return all(isinstance(e, (int, slice, type(None), type(Ellipsis))) and not isinstance(
        e, bool) for e in entries)
