"""PyTorch front-end: trace an ``nn.Module`` into a graph and describe it as a model dict.

The module is traced into a ``torch.fx`` graph, symbolically with ``torch.fx``
(``tracer="fx"``: module calls stay whole, e.g. ``nn.MultiheadAttention``) or
with ``torch.export`` (``tracer="export"``: ATen operations, through Python
control flow that ``torch.fx`` cannot follow), run once on random inputs to
record the shape of every intermediate tensor, and each graph node is then
mapped to layer entries by the op registry of :mod:`innsight.converter.torch_ops`.
``tracer="auto"`` (see :class:`~innsight.converter.converter.Converter`) tries
``torch.fx`` first (its graphs keep attention modules whole, whose ATen form moves the
batch axis) and ``torch.export`` where that fails.
"""

from __future__ import annotations

import inspect
import operator
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, fx, nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.fx.passes.shape_prop import _extract_tensor_metadata

from innsight._torch_modules import (
    any_training,
    computing_in,
    eval_mode,
    in_float64,
    kept,
    output_list,
)
from innsight._validation import as_dim_list
from innsight.converter.errors import DIRECT_METHODS_HINT, ConversionError
from innsight.converter.mutations import (
    UpdatingTracer,
    rewrite_updates,
    target_name,
    written_attributes,
)
from innsight.converter.on_meta import OnMeta
from innsight.converter.torch_gqa import group_key_value_heads
from innsight.converter.torch_ops import (
    BATCH_AXIS_HANDLERS,
    FUNCTIONS,
    FUNCTIONS_BY_NAME,
    METHODS,
    MODULES,
    Handler,
    Outputs,
    Split,
)
from innsight.layers.input import INPUT_DTYPES
from innsight.layers.tokens import DROPPED_KWARGS, encode_argument

#: Batch size of the random inputs that record shapes; the dry run uses another.
TRACE_BATCH = 2


#: How a torch model may be traced (see the module docs).
TRACERS = ("auto", "fx", "export")
#: The tracers that ``tracer="auto"`` tries, in order.
AUTO_TRACERS = ("fx", "export")


@dataclass(frozen=True)
class InputSpec:
    """What one model input holds: its :class:`~innsight.layers.input.Input` parameters
    (``dtype``, ``explained``, ``default``), and for integers without a default the
    exclusive upper bound ``high`` of random example values (the vocabulary size)."""

    dtype: str = "float"
    explained: bool = True
    default: float | None = None
    high: int = 2

    def params(self) -> dict[str, Any]:
        """The parameters of its ``Input`` layer entry that differ from the defaults."""
        found = {"dtype": self.dtype, "explained": self.explained, "default": self.default}
        return {k: v for k, v in found.items() if v != InputSpec.__dataclass_fields__[k].default}

    def example(self, batch: int, dim: tuple[int, ...], generator: torch.Generator,
                dtype: torch.dtype, device: torch.device) -> Tensor:
        """Random example values: standard normal reals, integers in ``[0, high)``, or
        ``default`` throughout."""
        if self.default is not None:
            kind = dtype if self.dtype == "float" else INPUT_DTYPES[self.dtype]
            return torch.full((batch, *dim), self.default, dtype=kind, device=device)
        if self.dtype == "float":
            return torch.randn(batch, *dim, generator=generator, dtype=dtype).to(device)
        return torch.randint(self.high, (batch, *dim), generator=generator).to(
            device=device, dtype=INPUT_DTYPES[self.dtype])


#: What a torch model's input may hold (``input_kinds`` of ``ins.convert``): real
#: numbers or token ids, explained; or integers (masks, token type ids, position ids)
#: or real numbers (an additive mask) that are not explained, given per call.
INPUT_KINDS = {"real": InputSpec(), "ids": InputSpec("int64"),
               "int": InputSpec("int64", explained=False),
               "extra": InputSpec(explained=False)}


def input_specs(model: nn.Module, kinds: Any, n_inputs: int) -> list[InputSpec]:
    """The :class:`InputSpec` of each of ``n_inputs`` inputs from ``input_kinds``; random
    token ids stay below the smallest ``nn.Embedding`` vocabulary of ``model``."""
    if (not isinstance(kinds, (list, tuple)) or len(kinds) != n_inputs
            or any(kind not in INPUT_KINDS for kind in kinds)):
        raise ValueError(f"`input_kinds` must list one of {list(INPUT_KINDS)} per input "
                         f"({n_inputs}), got {kinds!r}.")
    vocab = min((m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)),
                default=2)
    return [replace(INPUT_KINDS[kind], high=vocab if kind == "ids" else 2) for kind in kinds]


def describe_torch(
    model: nn.Module, input_dim: Any, graph_module: fx.GraphModule | None = None,
    tracer: str = "fx", inputs: Sequence[InputSpec] | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[dict[str, Any], Callable[[list[Tensor]], list[Tensor]]]:
    """The model dict of ``model`` and a function running the original on inputs.

    ``graph_module`` is a graph of ``model`` that a front-end built itself (ONNX
    through onnx2torch); without it, ``model`` is traced by ``tracer`` (``"fx"`` or
    ``"export"``). ``inputs`` says what each input holds (default: real numbers, all
    explained); values computed from integer inputs become
    :class:`~innsight.layers.tokens.Helper` layers, which needs ``tracer="export"``.
    ``dtype`` is the precision of the conversion: for float64, the model is traced and
    run in float64 (see :func:`~innsight._torch_modules.computing_in`), so that the
    constants it computes in its forward fold in float64, as the model computes them
    in float64; a model that cannot be traced so (a float32 tensor attribute that is
    no parameter or buffer, used with one) is traced in its own precision, its
    constants then cast to float64 when the layers are built.
    """
    if tracer not in TRACE:
        raise ValueError(f"`tracer` must be one of {list(TRACERS)}, got {tracer!r}.")
    if input_dim is None:
        raise ValueError(
            "`input_dim` is required for a torch model: the shape of one sample without "
            "the batch axis, channels first, e.g. input_dim=[3, 32, 32] (a list of such "
            "shapes for several inputs)."
        )
    dims = as_dim_list(input_dim, "input_dim")
    specs = list(inputs) if inputs is not None else [InputSpec()] * len(dims)
    if any_training(model):
        warnings.warn(
            f"The model {type(model).__name__} is in training mode; it is converted with "
            "eval semantics (dropout off, batch norm with its running statistics). Call "
            "model.eval() before converting to silence this warning.",
            UserWarning,
            stacklevel=4,  # Converter -> its front-end table -> here
        )

    def described() -> Described:
        if graph_module is not None:
            return _describe_graph(model, graph_module, dims, specs)
        return _describe_graph(model, TRACE[tracer](model, dims, specs), dims, specs)

    with eval_mode(model):
        try:
            with computing_in(model, dtype):
                description, written = described()
        except ConversionError:
            if dtype != torch.float64 or graph_module is not None:
                raise  # (a graph given is not traced anew, and may have been rewritten)
            description, written = described()  # the error of the model's own precision

    def run_original(inputs: list[Tensor]) -> list[Tensor]:
        """The model's outputs; in float64 where an input is float64 (the dry run's
        re-check of an ill-conditioned model); what its forward updates in place is
        restored afterwards."""
        double = any(x.dtype == torch.float64 for x in inputs)
        with kept(written), eval_mode(model), torch.no_grad(), (
                in_float64(model) if double else nullcontext()):
            try:
                return output_list(model(*inputs), "the model's output")
            except TypeError as err:
                raise ConversionError(str(err)) from err

    return description, run_original


#: A model dict and the parameters and buffers of the model its forward updates in place.
Described = tuple[dict[str, Any], list[Tensor]]


def _describe_graph(model: nn.Module, graph_module: fx.GraphModule,
                    dims: list[tuple[int, ...]], specs: list[InputSpec]) -> Described:
    """The model dict of a traced graph of ``model``, after one run on random inputs that
    records every node's shape (on meta or fake tensors where the graph allows; on
    copies of the tensors the graph updates in place) and with grouped-query attention
    kept grouped (:mod:`~innsight.converter.torch_gqa`), and those tensors of ``model``."""
    examples = random_inputs(model, dims, TRACE_BATCH, specs)
    written = written_attributes(graph_module)
    _record_shapes(model, graph_module, examples, written)
    if rewrite_updates(graph_module, _where):  # the nodes it added
        _record_shapes(model, graph_module, examples, written)
    group_key_value_heads(graph_module.graph)
    return _Translator(graph_module, dims, specs).describe(), _attributes(graph_module, written)


def _attributes(graph_module: fx.GraphModule, targets: set[str]) -> list[Tensor]:
    """The tensors that the ``get_attr`` targets ``targets`` of ``graph_module`` name."""
    return [operator.attrgetter(target)(graph_module) for target in sorted(targets)]


def _record_shapes(model: nn.Module, graph_module: fx.GraphModule,
                   examples: list[Tensor], written: set[str]) -> None:
    """:func:`_propagate`, where the model raises with a message naming the inputs."""
    try:
        with torch.no_grad():
            _propagate(graph_module, examples, written)
    except Exception as err:  # the user's model raised: report it with the shapes we used
        cause = err.__cause__ or err  # the interpreter wraps the model's own error
        message = (f"Running {type(model).__name__} on random inputs of shape(s) "
                   f"{[list(x.shape) for x in examples]} (batch of {TRACE_BATCH} + "
                   f"`input_dim`) failed: {cause}. Check `input_dim` (no batch axis, "
                   "channels first).")
        if _fails_on(model, examples, _attributes(graph_module, written)):
            # the inputs are wrong, not the trace: no chain
            raise InputsRefused.hiding(message, err) from None
        raise ConversionError(message) from err


class InputsRefused(ConversionError):
    """The model itself raised on inputs of the shapes ``input_dim`` gives (the message
    says so; the model's error is :attr:`ConversionError.internal`)."""


def _fails_on(model: nn.Module, examples: list[Tensor], written: list[Tensor]) -> bool:
    """Whether ``model`` raises on ``examples`` (then no tracer can help); the tensors
    ``written`` that its forward updates in place are restored afterwards."""
    try:
        with kept(written), torch.no_grad(), eval_mode(model):
            model(*examples)
    except Exception:  # any error the user's code raises
        return True
    return False


def random_inputs(model: nn.Module, dims: Sequence[tuple[int, ...]], batch: int,
                  specs: Sequence[InputSpec] | None = None) -> list[Tensor]:
    """Random inputs (see :meth:`InputSpec.example`; default standard normal) on the
    model's device and in its dtype, from a private seed."""
    params = model.parameters() if isinstance(model, nn.Module) else ()  # e.g. an ONNX model
    param = next((p for p in params if p.is_floating_point()), None)
    dtype = param.dtype if param is not None else torch.get_default_dtype()
    device = param.device if param is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(batch)
    specs = specs or [InputSpec()] * len(dims)
    return [spec.example(batch, d, generator, dtype, device) for spec, d in zip(specs, dims)]


def _trace(model: nn.Module, n_inputs: int) -> fx.GraphModule:
    params = list(inspect.signature(model.forward).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < n_inputs or any(
        p.default is p.empty for p in positional[n_inputs:]
    ):
        raise ValueError(
            f"`input_dim` gives {n_inputs} input shape(s), but {type(model).__name__}.forward "
            f"takes {len(positional)} input(s) ({', '.join(p.name for p in positional)})."
        )
    concrete = {p.name: p.default for p in positional[n_inputs:]}
    buffers = dict(model.named_buffers())
    try:  # torch.fx runs operations on buffers (``self.steps += 1``) for real: undone
        with kept(buffers.values()) as updated:
            tracer = UpdatingTracer()
            graph = tracer.trace(model, concrete_args=concrete or None)
    except Exception as err:  # fx raises many kinds of errors for untraceable code
        raise ConversionError(
            f"torch.fx cannot trace {type(model).__name__}: {err}. Models whose forward "
            f"branches on tensor values cannot be converted. {DIRECT_METHODS_HINT}"
        ) from err
    if updated:
        names = [name for name, buffer in buffers.items() if any(buffer is u for u in updated)]
        raise ConversionError(
            f"torch.fx cannot trace {type(model).__name__}: its forward updates the "
            f"buffer(s) {names} in place by operations that torch.fx runs instead of "
            f"recording them (torch.export records them: tracer='export'). "
            f"{DIRECT_METHODS_HINT}")
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def _export(model: nn.Module, dims: list[tuple[int, ...]],
            specs: list[InputSpec]) -> fx.GraphModule:
    """The ATen graph of ``model`` from ``torch.export``, its batch size left free."""
    examples = tuple(random_inputs(model, dims, TRACE_BATCH, specs))
    batch = torch.export.Dim("batch")
    try:
        with warnings.catch_warnings():  # nn.RNN's ``_flat_weights``, which export re-reads
            # from the parameters, which the graph takes: nothing is lost
            warnings.filterwarnings("ignore", "The tensor attributes .*_flat_weights")
            exported = torch.export.export(model, examples,
                                           dynamic_shapes=tuple({0: batch} for _ in examples))
    except Exception as err:  # export raises many kinds of errors for code it cannot follow
        raise ConversionError(
            f"torch.export cannot export {type(model).__name__} with a free batch size: "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}. "
            f"{DIRECT_METHODS_HINT}"
        ) from err
    return _inline_wrappers(_unlifted(exported))


#: The lifted inputs of an exported graph that :func:`_unlifted` turns into attributes.
_LIFTED = ("PARAMETER", "BUFFER", "CONSTANT_TENSOR")


def _unlifted(exported: torch.export.ExportedProgram) -> fx.GraphModule:
    """The graph of ``exported`` reading its parameters, buffers and constant tensors as
    attributes (``get_attr`` nodes) instead of taking them as inputs, as
    ``exported.module()`` does, without that module's copy of the graph and its code
    generation: the front-end only reads the graph and interprets it node by node, so
    the module's code is left as it was (call it through ``fx.Interpreter`` only).
    ``exported`` gives up its graph. Where the graph has other lifted inputs or outputs
    (effect tokens, buffer mutations), ``exported.module()``."""
    signature = exported.graph_signature
    kinds = {spec.kind.name for spec in signature.input_specs}
    if not kinds <= {"USER_INPUT", *_LIFTED} or any(
            spec.kind.name != "USER_OUTPUT" for spec in signature.output_specs):
        return exported.module()
    graph_module = exported.graph_module
    graph = graph_module.graph
    placeholders = [node for node in graph.nodes if node.op == "placeholder"]
    first_call = next(node for node in graph.nodes if node.op != "placeholder")
    for k, (node, spec) in enumerate(zip(placeholders, signature.input_specs, strict=True)):
        if spec.kind.name == "USER_INPUT":
            continue
        value = (exported.state_dict[spec.target] if spec.target in exported.state_dict
                 else exported.constants[spec.target])
        name = f"_lifted_{k}"
        if isinstance(value, nn.Parameter):
            graph_module.register_parameter(name, value)
        else:
            graph_module.register_buffer(name, value)
        with graph.inserting_before(first_call):
            attribute = graph.get_attr(name)
        attribute.meta = node.meta
        node.replace_all_uses_with(attribute)
        graph.erase_node(node)
    return graph_module


def _wrapped_call(node: fx.Node) -> tuple[fx.Node, tuple] | None:
    """``(submodule node, operands)`` of a region that ``torch.export`` wraps in a
    higher-order call although it computes as written: ``with torch.autocast(...,
    enabled=False)`` (the precision stays the model's) or ``with torch.set_grad_enabled``;
    ``None`` for any other node."""
    higher_order = getattr(torch.ops, "higher_order", None)
    autocast = getattr(higher_order, "wrap_with_autocast", None)
    grad_mode = getattr(higher_order, "wrap_with_set_grad_enabled", None)
    if autocast is not None and node.target is autocast and node.args[2] is False:
        return node.args[4], node.args[5:]
    if grad_mode is not None and node.target is grad_mode:
        return node.args[1], node.args[2:]
    return None


def _inline_wrappers(graph_module: fx.GraphModule) -> fx.GraphModule:
    """``graph_module`` with the graphs of its wrapped regions (see :func:`_wrapped_call`)
    copied in place of their calls; where none is, as it was."""
    graph = graph_module.graph
    calls = [(node, found) for node in graph.nodes if (found := _wrapped_call(node))]
    for node, (submodule_node, operands) in calls:
        submodule = graph_module.get_submodule(submodule_node.target)
        for inner in submodule.graph.nodes:  # its attributes, as seen from the outer module
            if inner.op == "get_attr":
                inner.target = f"{submodule_node.target}.{inner.target}"
        placeholders = [n for n in submodule.graph.nodes if n.op == "placeholder"]
        with graph.inserting_before(node):
            results = graph.graph_copy(submodule.graph, dict(zip(placeholders, operands)))
        for user in list(node.users):  # getitem(call, i) of the tuple it returns
            user.replace_all_uses_with(results[user.args[1]])
            graph.erase_node(user)
        graph.erase_node(node)
    if calls:
        graph.lint()
        graph_module.recompile()
    return graph_module


#: ``tracer`` -> how it turns a model with inputs of shapes ``dims`` into a graph.
TRACE: dict[str, Callable[[nn.Module, list[tuple[int, ...]], list[InputSpec]],
                          fx.GraphModule]] = {
    "fx": lambda model, dims, specs: _trace(model, len(dims)),
    "export": _export,
}


#: How :class:`_ShapeAndValueProp` runs the tensors that depend on the inputs' values,
#: cheapest first: on the meta device (shapes only, through meta kernels), as fake tensors
#: (shapes only, more operations, slower dispatch), or for real.
PROPAGATIONS = ("meta", "fake", "real")


def _propagate(graph_module: fx.GraphModule, examples: list[Tensor],
               written: set[str]) -> None:
    """Record shapes, dependencies and constants of every node of ``graph_module`` (see
    :class:`_ShapeAndValueProp`; ``written``: the attributes it updates in place), by the
    cheapest of :data:`PROPAGATIONS` that runs the graph; the error of the real run where
    none does."""
    for on in PROPAGATIONS:
        try:
            _ShapeAndValueProp(graph_module, on, written).propagate(*examples)
            return
        except Exception:  # an operation without data cannot run (it reads values)
            if on == PROPAGATIONS[-1]:
                raise


class _ShapeAndValueProp(fx.Interpreter):
    """Records tensor shapes (``meta["tensor_meta"]``), non-tensor values such as sizes
    (``meta["static_value"]``) that later index or scale tensors, what each value depends
    on (``meta["depends_on"]``, see :func:`_depends_on`) and the value of every tensor
    that does not depend on the inputs' values (``meta["constant_value"]``: a parameter,
    an ``arange`` position table, a mask expanded to the batch, a tensor without entries
    such as the slice ``x[:, :0]`` of no prefix tokens), so that those fold into constants.

    ``on`` (one of :data:`PROPAGATIONS`) says how the tensors that depend on the inputs'
    values are run: ``"meta"`` and ``"fake"`` keep shapes and dtypes, no data (recording
    costs no forward pass); only the constants are computed for real. The attributes in
    ``written``, which the graph updates in place, are read as copies (one per attribute),
    so that the user's model stays as it was.
    """

    def __init__(self, graph_module: fx.GraphModule, on: str, written: set[str]) -> None:
        super().__init__(graph_module)
        self.copies: dict[str, Tensor] = {}
        self.written = written
        self.mode: OnMeta | FakeTensorMode | None = (
            OnMeta() if on == "meta" else
            FakeTensorMode(allow_non_fake_inputs=True) if on == "fake" else None)
        self.device = torch.device("cpu")  # of the inputs: where real stand-ins go
        #: Placeholders still to come that the inputs fill; the rest are arguments left
        #: at their defaults (``torch.fx`` keeps one per ``concrete_args`` entry).
        self.unfilled = 0

    def propagate(self, *inputs: Tensor) -> Any:
        self.device = inputs[0].device if inputs else self.device
        self.unfilled = len(inputs)
        if isinstance(self.mode, FakeTensorMode):
            inputs = tuple(self.mode.from_tensor(x) for x in inputs)
        elif self.mode is not None:
            inputs = tuple(x.to("meta") for x in inputs)
        return self.run(*inputs)

    def get_attr(self, target: Any, args: tuple, kwargs: dict) -> Any:
        value = super().get_attr(target, args, kwargs)
        if target not in self.written:
            return value
        if target not in self.copies:
            self.copies[target] = value.detach().clone()
        return self.copies[target]

    def run_node(self, n: fx.Node) -> Any:
        if n.op == "placeholder":  # an input, or an argument bound to its default
            n.meta["depends_on"] = "values" if self.unfilled else "nothing"
            self.unfilled -= bool(self.unfilled)
        else:
            n.meta["depends_on"] = _depends_on(n)
        if self.mode is not None and n.meta["depends_on"] == "values":
            with self.mode:
                result = super().run_node(n)
        else:
            result = super().run_node(n)
        if isinstance(result, Tensor) and result.numel() == 0:
            n.meta["depends_on"] = "nothing"  # no entries whose values could depend on anything
            result = self._real_stand_in(result)
        if isinstance(result, Tensor) and n.meta["depends_on"] != "values":
            n.meta["constant_value"] = result.detach()
        if isinstance(result, Tensor) or (
                isinstance(result, (tuple, list)) and any(isinstance(r, Tensor) for r in result)):
            n.meta["tensor_meta"] = fx.node.map_aggregate(  # shapes and dtypes are read
                result, lambda r: _extract_tensor_metadata(r, include_contiguity=False)
                if isinstance(r, Tensor) else r)
        else:
            n.meta["static_value"] = result
        return result

    def fetch_args_kwargs_from_env(self, n: fx.Node) -> tuple[tuple, dict]:
        """The operands of ``n``; where ``n`` reads only the type or shape of a meta or
        fake operand (``x.new_zeros(size)``), a real empty stand-in of that operand."""
        args, kwargs = super().fetch_args_kwargs_from_env(n)
        if self.mode is None or n.meta["depends_on"] == "values":
            return args, kwargs
        return fx.node.map_aggregate((args, kwargs), self._real_stand_in)

    def _real_stand_in(self, value: Any) -> Any:
        """A real tensor of ``value``'s shape and dtype (its data unset) for a meta or fake
        tensor, on the inputs' device."""
        if isinstance(value, Tensor) and (value.is_meta or isinstance(value, FakeTensor)):
            return torch.zeros(value.shape, dtype=value.dtype, device=self.device)
        return value


#: What a traced value may depend on, from least to most.
DEPENDENCIES = ("nothing", "shapes", "values")
#: Calls and attributes that read the shape of their tensor argument (the batch size
#: among it), or only what every input has the same whatever its values.
_SHAPE_READERS = {"sym_size", "size", "numel", "shape"}
_TYPE_READERS = {"dtype", "device", "ndim", "dim"}


def _depends_on(node: fx.Node) -> str:
    """``"nothing"`` for a value that is the same whatever the inputs (a module attribute,
    deterministic operations on such values: ``arange``, a sin/cos table), ``"shapes"``
    for one that depends on the inputs' shapes only (the batch size: a constant expanded
    to the batch), ``"values"`` for the rest."""
    if node.op == "get_attr":
        return "nothing"
    if node.op not in ("call_function", "call_method") or _is_random(node):
        return "values"
    operands = node.all_input_nodes
    name = node.args[1] if node.target is getattr else target_name(node.target)
    if name.startswith("new_") or name in _TYPE_READERS:  # x.new_zeros(size): x's dtype
        operands = operands[1:]
    found = [a.meta.get("depends_on", "values") for a in operands]
    if name in _SHAPE_READERS:
        found = [min(f, "shapes", key=DEPENDENCIES.index) for f in found]
    return max(found, key=DEPENDENCIES.index, default="nothing")


#: Calls that return their operand's values in its shape (a view of the token ids).
_SAME_VALUES = {"view", "reshape", "_unsafe_view", "clone", "contiguous", "alias"}

#: Dropout calls: random only with their training flag (the third argument) set.
_DROPOUTS = {"dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
             "feature_dropout", "feature_alpha_dropout"}


def _is_random(node: fx.Node) -> bool:
    """Whether a call draws random numbers (its value would not fold into a constant)."""
    name = target_name(node.target)
    if name in _DROPOUTS:
        training = node.args[2] if len(node.args) > 2 else node.kwargs.get(
            "training", node.kwargs.get("train", True))
        return training is not False
    if torch.Tag.nondeterministic_seeded in getattr(node.target, "tags", ()):
        return True
    return name in (
        "rand", "randn", "randint", "rand_like", "randn_like", "randint_like", "bernoulli",
        "normal", "multinomial", "randperm")


@dataclass(frozen=True)
class BatchAxis:
    """Where the batch axis of a traced tensor is: at ``position``, with the samples'
    leading ``merged`` entries folded into it (``x.reshape(B * windows, ...)``; 1: none).

    The converted layer holds the tensor batch-first: ``(batch, merged, *other axes)``,
    the ``merged`` axis only where it is > 1, the other axes in the traced order.
    """

    position: int = 0
    merged: int = 1


BATCH_FIRST = BatchAxis()


class _Translator:
    """Walks the traced graph and collects layer entries of the model dict.

    Handlers (see :mod:`torch_ops`) call :meth:`emit` to add layers and the
    helpers below to read shapes, constants and tensor arguments.
    """

    def __init__(self, graph_module: fx.GraphModule, dims: list[tuple[int, ...]],
                 specs: list[InputSpec]) -> None:
        self.graph_module = graph_module
        self.dims = dims
        self.specs = specs
        #: Nodes computed from integer or non-explained inputs only (no gradient reaches
        #: them): they become :class:`~innsight.layers.tokens.Helper` layers.
        self.helpers: set[fx.Node] = set()
        #: The explained inputs of integers (token ids).
        self.token_inputs: set[fx.Node] = set()
        self.layers: list[dict[str, Any]] = []
        #: Layer names given so far: a module called twice gets ``name_1`` the second time.
        self.layer_names: set[str] = set()
        self.layer_of_node: dict[fx.Node, int] = {}
        self.splits: dict[fx.Node, Split] = {}
        #: Per boolean attention mask node, the helper layer adding it to the scores.
        self.additive_masks: dict[fx.Node, int] = {}
        self.outputs: dict[fx.Node, Outputs] = {}
        #: Constants expanded to the batch: one sample's value and where the batch axis is.
        self.batch_constants: dict[fx.Node, tuple[Tensor, BatchAxis]] = {}

    def describe(self) -> dict[str, Any]:
        graph = self.graph_module.graph
        output = next(n for n in graph.nodes if n.op == "output")
        needed = _ancestors(output)
        input_nodes = []
        for node in graph.nodes:
            if node.op == "placeholder":
                if len(input_nodes) == len(self.specs):
                    continue  # an argument at its default: a constant (see _ShapeAndValueProp)
                spec = self.specs[len(input_nodes)]
                input_nodes.append(self.emit(node, "Input", [], **spec.params()))
                self.layer_of_node[node] = input_nodes[-1]
                if spec.dtype != "float" or not spec.explained:
                    (self.token_inputs if spec.explained else self.helpers).add(node)
            elif node in needed and node.op in ("call_module", "call_function", "call_method"):
                self._translate(node)
        results = _output_args(output)
        results = list(results) if isinstance(results, (tuple, list)) else [results]
        for node in results:
            if isinstance(node, fx.Node) and self.batch_axis(node) != BATCH_FIRST:
                raise self.unsupported(node, "a model output whose batch axis is not first",
                                       "Outputs must be batch-first. ")
        output_nodes = [self.layer(n) for n in results]
        return {
            "input_dim": [list(d) for d in self.dims],
            "input_nodes": input_nodes,
            "output_nodes": output_nodes,
            "layers": self.layers,
        }

    def _translate(self, node: fx.Node) -> None:
        if node in self.layer_of_node:
            return  # folded into the layer of an earlier node (a scaled embedding)
        meta = node.meta.get("tensor_meta")
        if meta is None or node.meta["depends_on"] == "nothing":
            return  # a size or a flag (only shapes depend on it), or a folded constant
        if node.meta["depends_on"] == "shapes":
            if "constant_value" in node.meta:  # not a list, whose items fold one by one
                self._fold_batch_constant(node)
            return
        source = node.args[0] if node.args else None
        if (source in self.token_inputs and target_name(node.target) in _SAME_VALUES
                and node.meta["tensor_meta"].shape == source.meta["tensor_meta"].shape):
            self.token_inputs.add(node)  # input_ids.view(-1, tokens): the same ids
            self.layer_of_node[node] = self.layer(source)
            return
        if self._is_helper(node):
            self.helpers.add(node)
            if target_name(node.target) in _DROPOUTS and not _is_random(node):
                self.layer_of_node[node] = self.layer(node.args[0])  # dropout switched off
                return
            if node.target is operator.getitem:  # one tensor of a helper returning several
                self.layer_of_node[node] = self._emit_helper(node.args[0], node.args[1], node)
                return
            if not self._is_lookup(node):  # a lookup of token types or positions: a layer
                if _single_tensor(node):  # else its getitem nodes emit it
                    self.layer_of_node[node] = self._emit_helper(node)
                return
        handler = self._handler(node)
        self._check_batch_axes(node, handler)
        try:
            result = handler(self, node)
        except ConversionError:
            raise
        except Exception as err:  # a form of the operation its handler did not foresee
            raise self.unsupported(
                node, f"this call of {_qualified_name(node.target)}"
                if node.op != "call_module" else f"this call of module '{node.target}'",
                f"Converting it failed with {type(err).__name__}: {err}. ") from err
        if isinstance(result, Split):
            self.splits[node] = result
        elif isinstance(result, Outputs):
            self.outputs[node] = result
        else:
            if BATCH_AXIS_HANDLERS.get(handler) == "any":
                self.batch_axis(node)  # a shape operation must leave one to follow
            self.layer_of_node[node] = result

    def _handler(self, node: fx.Node) -> Handler:
        if node.op == "call_module":
            module = self.module(node)
            handler = MODULES.get(type(module))
            what = f"module {type(module).__module__}.{type(module).__name__}"
        elif node.op == "call_function":
            name = _qualified_name(node.target)
            handler = FUNCTIONS.get(node.target) or FUNCTIONS_BY_NAME.get(name)
            what = f"function {name}"
        else:
            handler = METHODS.get(node.target)
            what = f"tensor method .{node.target}()"
        if handler is None:
            raise self.unsupported(node, what)
        return handler

    def _is_helper(self, node: fx.Node) -> bool:
        """Whether ``node`` computes from integer or non-explained inputs only (an
        embedding lookup of token ids is the first value that is explained)."""
        operands = [a for a in node.all_input_nodes if a.meta.get("depends_on") == "values"]
        found = [a in self.helpers or a in self.token_inputs for a in operands]
        if not found or not all(found):
            return False
        return not (self._is_lookup(node) and any(a in self.token_inputs for a in operands))

    def _is_lookup(self, node: fx.Node) -> bool:
        """Whether ``node`` is an embedding lookup (``nn.Embedding``, ``F.embedding``,
        ``aten.embedding``)."""
        if node.op == "call_module":
            return isinstance(self.module(node), nn.Embedding)
        return node.op == "call_function" and target_name(node.target) == "embedding"

    def _emit_helper(self, node: fx.Node, item: int | None = None,
                     named: fx.Node | None = None) -> int:
        """A :class:`~innsight.layers.tokens.Helper` layer computing ``node`` as traced
        (its tensor ``item`` where it returns several; named after ``named``): its
        operands as layers (operands computed from shapes, e.g. ``arange`` of the batch
        size, as helpers of their own), constants and sizes in place."""
        if not isinstance(node.target, torch._ops.OpOverload):
            raise self.unsupported(
                node, f"{_qualified_name(node.target)} on values computed from integer or "
                "non-explained inputs", "Such values are computed by ATen operations: "
                "convert with tracer='export'. ")
        reads: list[int] = []

        def encode(value: Any) -> Any:
            if self.is_tensor(value) or (isinstance(value, fx.Node)
                                         and value.meta.get("depends_on") == "shapes"
                                         and "tensor_meta" in value.meta):
                layer = self.layer(value) if self.is_tensor(value) else self._emit_helper(value)
                self.layer_of_node.setdefault(value, layer)
                reads.append(layer)
                return {"input": len(reads) - 1}
            constant = self.constant(value) if isinstance(value, fx.Node) else None
            if isinstance(constant, Tensor):
                return constant
            if isinstance(value, fx.Node):
                return self._static_size(node, value)
            return value

        args = encode_argument(fx.node.map_aggregate(node.args, encode))
        kwargs = encode_argument(fx.node.map_aggregate(
            {k: v for k, v in node.kwargs.items() if k not in DROPPED_KWARGS}, encode))
        if not reads:  # it reads the batch size only: from the first input
            reads.append(self.layer_of_node[next(n for n in self.graph_module.graph.nodes
                                                 if n.op == "placeholder")])
        extra = {} if item is None else {"item": item}
        return self.emit(named or node, "Helper", reads, op=str(node.target), args=args,
                         kwargs=kwargs, **extra)

    def _static_size(self, node: fx.Node, value: fx.Node) -> Any:
        """A size argument of a helper: a number, or ``{"batch": f}`` for ``f`` times the
        batch size of a ``torch.export`` graph."""
        found = value.meta.get("val")
        if isinstance(found, torch.SymInt):
            expr = found.node.expr
            symbols = expr.free_symbols
            factor = expr / next(iter(symbols)) if len(symbols) == 1 else None
            if factor is None or not factor.is_Integer:
                raise self.unsupported(node, f"the size {expr} of a helper computation",
                                       "Sizes must be numbers or multiples of the batch size. ")
            return {"batch": int(factor)}
        return self.static(value)

    def _fold_batch_constant(self, node: fx.Node) -> None:
        """A tensor computed from constants and the inputs' shapes: without a batch axis
        it is a constant; a class token or a mask expanded to the batch becomes one
        sample's value (as a layer would hold it) where every sample has the same;
        otherwise (``arange`` of the batch size) it stays unconverted, and using it as a
        tensor is refused."""
        batch, value = _find_batch_axis(node), node.meta["constant_value"]
        if batch is None:
            node.meta["depends_on"] = "nothing"  # the same tensor for any batch
            return
        samples = value.movedim(batch.position, 0)
        samples = samples.reshape(TRACE_BATCH, batch.merged, *samples.shape[1:])
        if bool((samples == samples[:1]).all()):
            self.batch_constants[node] = (samples[0] if batch.merged > 1 else samples[0, 0],
                                          batch)

    def _check_batch_axes(self, node: fx.Node, handler: Handler) -> None:
        """Refuses a handler that assumes batch-first tensors on a tensor whose batch axis
        was moved or merged (see :data:`BATCH_AXIS_HANDLERS`)."""
        kind = BATCH_AXIS_HANDLERS.get(handler)
        if kind == "any":
            return  # a shape operation: the result's batch axis is checked once it is a layer
        operands = [self.batch_axis(a) for a in node.all_input_nodes if self.is_tensor(a)]
        result = _find_batch_axis(node) if _single_tensor(node) else None
        result = result or BATCH_FIRST  # a result without one: its handler says why
        follows = kind == "same" or (kind == "entries" and result.position == 0)
        expected = result if follows else BATCH_FIRST
        for found in [result, *operands]:
            if found != expected:
                moved = next(b for b in (result, *operands) if b != BATCH_FIRST)
                raise self.unsupported(
                    node, "this operation on a tensor whose batch axis is "
                    + (f"at position {moved.position}" if moved.merged == 1 else
                       f"merged with {moved.merged} entries of each sample"),
                    "Permutations, reshapes, indexing and elementwise or last-axis "
                    "operations follow a moved batch axis, convolutions, pooling and "
                    "batch norm one that merges entries of each sample into it; this "
                    "operation needs its operands batch-first. ")

    # ---- helpers for handlers -------------------------------------------------

    def emit(
        self, node: fx.Node, type_name: str, reads: Sequence[fx.Node | int], suffix: str = "",
        **params: Any,
    ) -> int:
        """Add a layer entry for ``node`` reading ``reads`` (graph nodes or layer indices).

        The layer is named after the module path (or the node) plus ``suffix``, with
        ``_1``, ``_2``, ... appended for the second, third, ... call of a module.
        """
        base = (node.target if node.op == "call_module" else node.name) + suffix
        name, calls = base, 0
        while name in self.layer_names:
            calls += 1
            name = f"{base}_{calls}"
        self.layer_names.add(name)
        indices = [r if isinstance(r, int) else self.layer(r) for r in reads]
        self.layers.append({"type": type_name, "name": name, "input_layers": indices, **params})
        return len(self.layers) - 1

    def layer(self, node: Any) -> int:
        """The layer index holding the tensor value of ``node``."""
        if isinstance(node, fx.Node) and node in self.layer_of_node:
            return self.layer_of_node[node]
        raise ConversionError(
            f"{_where(node) if isinstance(node, fx.Node) else repr(node)} is used as a tensor "
            "input but is not a tensor computed from the model inputs (constant tensors "
            f"are only supported as factors or summands). {DIRECT_METHODS_HINT}"
        )

    def is_tensor(self, value: Any) -> bool:
        return isinstance(value, fx.Node) and value in self.layer_of_node

    def module(self, node: fx.Node) -> nn.Module:
        return self.graph_module.get_submodule(node.target)

    def batch_axis(self, node: fx.Node) -> BatchAxis:
        """Where the batch axis of ``node``'s tensor is: read off the symbolic batch size
        of a ``torch.export`` graph, or (``torch.fx``, ONNX) required first."""
        found = _find_batch_axis(node)
        if found is None:
            shape = list(node.meta["tensor_meta"].shape)
            raise self.unsupported(
                node, f"an operation with output shape {shape}",
                "It does not keep a batch axis. " if "val" in node.meta else
                "It does not keep the batch axis first (torch.export graphs follow a "
                "moved one: tracer='export'). ")
        return found

    def shape(self, node: fx.Node) -> tuple[int, ...]:
        """Shape of one sample of ``node``'s tensor as its layer holds it (no batch axis;
        see :class:`BatchAxis` for a tensor whose batch axis moved)."""
        batch, shape = self.batch_axis(node), list(node.meta["tensor_meta"].shape)
        del shape[batch.position]
        return tuple([batch.merged] if batch.merged > 1 else []) + tuple(shape)

    def axis(self, node: fx.Node, dim: int) -> int:
        """A torch dim of ``node``'s tensor (may be negative) as an axis of one sample
        as its layer holds it (0 = channels for a batch-first tensor)."""
        ndim = len(node.meta["tensor_meta"].shape)
        if not isinstance(dim, int) or not -ndim <= dim < ndim:
            raise self.unsupported(node, f"dim={dim!r}", f"Expected an int in [{-ndim}, {ndim}). ")
        dim, batch = dim % ndim, self.batch_axis(node)
        if dim == batch.position:
            raise self.unsupported(node, f"an operation along the batch axis (dim {dim})",
                                   "Samples must be processed independently. ")
        return (batch.merged > 1) + dim - (dim > batch.position)

    def constant(self, value: Any) -> Any:
        """A number, or a tensor that does not depend on the inputs (a module attribute,
        a folded subgraph), as traced: it broadcasts with the traced tensors. (Constants
        expanded to the batch are in :attr:`batch_constants`.)

        Returns ``None`` if ``value`` is not a constant.
        """
        if isinstance(value, fx.Node) and value.meta.get("depends_on") == "nothing" and (
                "constant_value" in value.meta):
            return value.meta["constant_value"]
        if isinstance(value, fx.Node) and "static_value" in value.meta:
            value = value.meta["static_value"]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        return None

    def static(self, value: Any) -> Any:
        """``value`` with every graph node in it replaced by its recorded non-tensor value."""

        def resolve(node: fx.Node) -> Any:
            if "static_value" not in node.meta:
                raise self.unsupported(node, "using a tensor as an index or size")
            return node.meta["static_value"]

        return fx.node.map_arg(value, resolve)

    def unsupported(self, node: fx.Node, what: str, reason: str = "") -> ConversionError:
        return ConversionError(
            f"{_where(node)}: {what} is not supported by the converter. {reason}"
            f"{DIRECT_METHODS_HINT}"
        )


def _ancestors(output: fx.Node) -> set[fx.Node]:
    """The nodes whose values reach the model output."""
    seen: set[fx.Node] = set()
    stack = [output]
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(node.all_input_nodes)
    return seen


def _output_args(output: fx.Node) -> Any:
    """What the traced model returns; a dict (torchvision's segmentation models) as its
    values in order, as the original's outputs are read (see ``output_list``)."""
    value = output.args[0]
    return list(value.values()) if isinstance(value, dict) else value


def _single_tensor(node: fx.Node) -> bool:
    """Whether ``node`` computes one tensor (not a tuple or list of them)."""
    return hasattr(node.meta.get("tensor_meta"), "shape")


def _find_batch_axis(node: fx.Node) -> BatchAxis | None:
    """The :class:`BatchAxis` of ``node``'s tensor: as the front-end recorded it in
    ``meta["batch_axis"]`` (ONNX), read off the symbolic batch size of a ``torch.export``
    graph, else (``torch.fx``) the first axis if it has the batch's size; ``None`` where
    there is none."""
    value, shape = node.meta.get("val"), node.meta["tensor_meta"].shape
    if "batch_axis" in node.meta:  # found by the front-end (ONNX: at two batch sizes)
        return node.meta["batch_axis"]
    if isinstance(value, Tensor):
        return _symbolic_batch_axis(value)
    return BATCH_FIRST if len(shape) and shape[0] == TRACE_BATCH else None


def _symbolic_batch_axis(value: Tensor) -> BatchAxis | None:
    """The :class:`BatchAxis` of a ``torch.export`` fake tensor: the one axis whose size is
    the batch size times a whole number; ``None`` where none or several are."""
    found = []
    for position, size in enumerate(value.shape):
        if isinstance(size, torch.SymInt):
            expr = size.node.expr
            symbols = expr.free_symbols
            factor = expr / next(iter(symbols)) if len(symbols) == 1 else None
            if factor is None or not factor.is_Integer or factor < 1:
                return None
            found.append(BatchAxis(position, int(factor)))
    return found[0] if len(found) == 1 else None


def _qualified_name(target: Any) -> str:
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", repr(target))
    return f"{module}.{name}" if module else name


def _where(node: fx.Node) -> str:
    """``node 'relu_1' in module 'layer1.0' (BasicBlock)`` for error messages."""
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path, cls = list(stack.values())[-1]
        cls_name = cls if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
        return f"node '{node.name}' in module '{path}' ({cls_name.split('.')[-1]})"
    return f"node '{node.name}'"
