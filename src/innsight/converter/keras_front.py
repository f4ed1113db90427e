"""Keras 3 front-end: describe a Sequential or Functional model as a model dict.

Layout conventions (channels last outside, channels first inside)
-----------------------------------------------------------------
Keras tensors are channels last: a sample of shape ``(d1, ..., dk, C)``.
The converted graph runs channels first, so every Keras tensor of rank 2 or
more (without the batch axis) is held as ``(C, d1, ..., dk)``: its last axis
moved to the front. Rank-1 tensors (tabular data, class scores) are held as
they are. This applies to the model's inputs and outputs too:

- ``conv.input_dim`` and ``conv.output_dim`` are channels first, e.g. a Keras
  input ``(32, 32, 3)`` has ``input_dim`` ``(3, 32, 32)`` and a signal input
  ``(100, 4)`` (length, channels) has ``(4, 100)``;
- ``conv.model(x)`` takes and returns channels-first tensors (``np.moveaxis(x,
  -1, 1)`` of the Keras data);
- every method accepts ``channels_first=False`` to take the Keras layout
  directly and then returns its results channels last.

Weights are permuted once at conversion (convolution kernels
``(*kernel, C_in, C_out)`` become ``(C_out, C_in, *kernel)``). Operations that
depend on the axis order keep Keras' semantics: ``Flatten`` and ``Reshape``
go through the channels-last order (a ``Permute`` layer in front), and the
axis of ``Concatenate``, ``Softmax``, ``BatchNormalization``,
``LayerNormalization`` and ``Dense`` on rank > 1 inputs is mapped onto the
channels-first tensor. ``MultiHeadAttention`` works on token-major copies
``(tokens, width)`` of its inputs and moves its result back. Layers with
``data_format="channels_first"`` are wrapped in permutations to the same end.
An input that an ``Embedding`` reads holds token ids ``(tokens,)`` (an integer
``Input``, explained through the embedding output ``(tokens, D)``, which is held
``(D, tokens)`` after it).

Names
-----
Layers of the converted graph carry the Keras layer names (``outer/inner``
for layers of nested models; a shared layer's second call gets ``/call_1``,
helper layers such as permutations a suffix). The ``Input`` layers carry the
names of the Keras inputs, and the output layers those of the Keras layers
that compute the outputs (see ``print(conv)``). Keras has no labels for the
entries of a tensor, so ``conv.input_names`` and ``conv.output_names`` keep the
default axis labels (``X1..``, ``C1../L1..``, ``C1../H1../W1..``, ``Y1..``)
unless given.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from innsight._import_order import import_keras
from innsight._validation import as_dim_list
from innsight.converter.errors import ConversionError
from innsight.converter.keras_ops import handlers
from innsight.converter.keras_tensors import (
    Value,
    channels_first,
    keras_layout,
    to_numpy,
)

def is_keras_model(model: Any) -> bool:
    """A ``keras.Model`` instance (checked without importing Keras)."""
    import sys

    keras = sys.modules.get("keras")
    model_cls = getattr(keras, "Model", None) if keras is not None else None
    return isinstance(model_cls, type) and isinstance(model, model_cls)


def is_keras_file(model: Any) -> bool:
    """A path (str or ``os.PathLike``) ending in ``.keras``."""
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    return isinstance(model, str) and model.lower().endswith(".keras")


def accepts_keras(model: Any) -> bool:
    """Whether the Keras front-end takes ``model``: a Keras model or a ``.keras`` path."""
    return is_keras_model(model) or is_keras_file(model)


def load_keras_file(path: Any) -> Any:
    """Load a ``.keras`` file in Keras' safe mode (no arbitrary code is run)."""
    keras = import_keras()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`model`: no Keras file at {path!r}.")
    if not zipfile.is_zipfile(path):  # Keras would say "File not found"
        raise ConversionError(f"`model` {path!r} exists but is no Keras file: a .keras file "
                              "is the zip archive that keras.Model.save writes; this one "
                              "cannot be opened as a zip archive (corrupt or another format).")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # Keras raises several kinds of errors for bad files
        raise ConversionError(
            f"Keras could not load {path!r} in safe mode: {err}"
        ) from err


def describe_keras(
    model: Any, input_dim: Any
) -> tuple[dict[str, Any], Callable[[list[Tensor]], list[Tensor]]]:
    """The model dict of a Keras model (or ``.keras`` file), and the Keras model as a
    function of channels-first tensors for the converter's dry run."""
    if is_keras_file(model):
        model = load_keras_file(model)
    keras = import_keras()
    graph = _graph_of(keras, model)
    input_shapes = _input_shapes(graph, input_dim)
    translator = _Translator(keras)
    description = translator.describe(graph, input_shapes)
    return description, _original_runner(keras, model, graph)


# ---- the model's graph --------------------------------------------------------------


def _graph_of(keras: Any, model: Any) -> Any:
    """The Functional graph of a Sequential or Functional model."""
    if isinstance(model, keras.Sequential):
        graph = getattr(model, "_functional", None)
        if graph is None:
            raise ConversionError(
                f"The Sequential model '{model.name}' is not built: it does not know its input "
                "shape. Start it with keras.Input(shape=...) or call model.build((None, *shape)) "
                "before converting."
            )
        return graph
    if not hasattr(model, "_nodes_by_depth") or not hasattr(model, "_inputs_struct"):
        raise ConversionError(
            f"The Keras model '{model.name}' ({type(model).__name__}) is a subclassed model "
            "without a layer graph; only Sequential and Functional models can be converted. "
            "Build it with the Functional API (keras.Model(inputs, outputs))."
        )
    return model


def _input_shapes(graph: Any, input_dim: Any) -> list[tuple[int, ...]]:
    """The Keras sample shape of each input; unknown sizes are taken from ``input_dim``."""
    keras_shapes = [tuple(x.shape[1:]) for x in graph.inputs]
    given = None if input_dim is None else as_dim_list(input_dim, "input_dim")
    if given is not None and len(given) != len(keras_shapes):
        raise ValueError(
            f"`input_dim` gives {len(given)} shape(s), but the Keras model has "
            f"{len(keras_shapes)} input(s) of shape(s) {[_show(s) for s in keras_shapes]}."
        )
    shapes = []
    for k, shape in enumerate(keras_shapes):
        if given is not None:
            wanted = keras_layout(given[k])
            if len(wanted) != len(shape) or any(
                s is not None and s != w for s, w in zip(shape, wanted)
            ):
                raise ValueError(
                    f"`input_dim` {list(given[k])} (channels first) does not fit the Keras "
                    f"input {k} of shape {_show(shape)} (channels last, i.e. "
                    f"{_show(channels_first(shape))} channels first)."
                )
            shapes.append(wanted)
        elif any(s is None for s in shape):
            raise ValueError(
                f"The Keras input {k} has shape {_show(shape)} with unknown sizes; give "
                "`input_dim` (channels first, e.g. "
                f"{_show(channels_first(tuple(8 if s is None else s for s in shape)))})."
            )
        else:
            shapes.append(tuple(int(s) for s in shape))
    return shapes


def _show(shape: Sequence[Any]) -> str:
    return "(" + ", ".join("None" if s is None else str(s) for s in shape) + ")"


# ---- translation -----------------------------------------------------------------


class _Translator:
    """Walks a Functional graph in Keras' own execution order and collects layer
    entries. Handlers (see :mod:`innsight.converter.keras_ops`) call :meth:`emit`."""

    def __init__(self, keras: Any) -> None:
        self.keras = keras
        self.handlers = handlers(keras)
        self.layers: list[dict[str, Any]] = []
        self.name = ""  # name of the Keras layer being translated
        self.where = ""  # that layer as named in error messages

    def describe(self, graph: Any, input_shapes: list[tuple[int, ...]]) -> dict[str, Any]:
        inputs = []
        for x, shape in zip(graph.inputs, input_shapes):
            self.name = x._keras_history.operation.name if x._keras_history.operation else x.name
            inputs.append(Value(self.emit("Input", []), shape))
        outputs = self.walk(graph, inputs, prefix="")
        for x, v in zip(graph.inputs, inputs):
            self.mark_token_ids(v.index, str(x.dtype))
        return {
            "input_dim": [list(channels_first(shape)) for shape in input_shapes],
            "input_nodes": [v.index for v in inputs],
            "output_nodes": [v.index for v in outputs],
            "layers": self.layers,
        }

    def walk(self, graph: Any, inputs: list[Value], prefix: str) -> list[Value]:
        """Translate the nodes of ``graph`` fed with ``inputs``; its output values."""
        values = {id(x): v for x, v in zip(graph.inputs, inputs)}
        for depth in sorted(graph._nodes_by_depth, reverse=True):
            for node in graph._nodes_by_depth[depth]:
                if node.operation is None or node.is_input:
                    continue
                if any(id(x) not in values for x in node.input_tensors):
                    continue  # not computable from these inputs (Keras skips it too)
                xs = [values[id(x)] for x in node.input_tensors]
                for x, v in zip(node.outputs, self.translate(node, xs, prefix)):
                    values[id(x)] = v
        return [values[id(x)] for x in graph.outputs]

    def translate(self, node: Any, xs: list[Value], prefix: str) -> list[Value]:
        op = node.operation
        calls = op._inbound_nodes
        call = next((k for k, n in enumerate(calls) if n is node), 0)
        name = prefix + op.name + (f"/call_{call}" if call else "")
        if isinstance(op, self.keras.Model):  # a nested model: inline its graph
            return self.walk(_graph_of(self.keras, op), xs, prefix=name + "/")
        self.name = name
        self.where = f"layer '{name}' ({type(op).__name__})"
        handler = self.handlers.get(type(op))
        if handler is None:
            kind = "layer" if isinstance(op, self.keras.Layer) else "operation"
            raise self.unsupported(f"the Keras {kind} {type(op).__name__}")
        out_shapes = self.output_shapes(node, xs)
        try:
            indices = handler(self, node, xs, out_shapes)
        except ConversionError:
            raise
        except Exception as err:  # a form of the layer its handler did not foresee
            raise self.unsupported(f"this use of {type(op).__name__}",
                                   f"Converting it failed with {type(err).__name__}: "
                                   f"{err}. ") from err
        return [Value(i, s) for i, s in zip(indices, out_shapes)]

    def output_shapes(self, node: Any, xs: list[Value]) -> list[tuple[int, ...]]:
        """Keras sample shapes of the node's outputs for the concrete input shapes."""
        static = [tuple(x.shape[1:]) for x in node.outputs]
        if all(s is not None for shape in static for s in shape) and all(
            tuple(x.shape[1:]) == v.shape for x, v in zip(node.input_tensors, xs)
        ):
            return [tuple(int(s) for s in shape) for shape in static]
        concrete = {
            id(x): self.keras.KerasTensor((1, *v.shape), dtype=x.dtype)
            for x, v in zip(node.input_tensors, xs)
        }
        args, kwargs = node.arguments.fill_in(concrete)
        try:
            spec = node.operation.compute_output_spec(*args, **kwargs)
        except Exception as err:  # Keras' shape inference failed for these shapes
            raise ConversionError(
                f"{self.where}: Keras cannot infer its output shape for input shape(s) "
                f"{[list(v.shape) for v in xs]}: {err}"
            ) from err
        return [tuple(int(s) for s in x.shape[1:]) for x in self.keras.tree.flatten(spec)]

    def mark_token_ids(self, index: int, keras_dtype: str) -> None:
        """Make the ``Input`` entry ``index`` an input of token ids where an ``Embedding``
        reads it (Keras casts float ids to integers, so a float Keras input may hold
        them); an integer Keras input must be read by embeddings only."""
        readers = [layer for layer in self.layers if index in layer["input_layers"]]
        others = [f"'{r['name']}' ({r['type']})" for r in readers if r["type"] != "Embedding"]
        tokens = len(others) < len(readers)
        if not tokens and not keras_dtype.startswith(("int", "uint", "bool")):
            return
        if others or not tokens:
            readers_text = ", ".join(others) if others else "no Embedding layer"
            raise ConversionError(
                f"The Keras input '{self.layers[index]['name']}' holds integers or token "
                f"ids ({keras_dtype}), but is read by {readers_text}. Integer inputs convert "
                "as token ids read by Embedding layers only.")
        self.layers[index]["dtype"] = "int64"

    # ---- helpers for handlers ----------------------------------------------------

    def emit(self, type_name: str, reads: Sequence[Value | int], suffix: str = "",
             **params: Any) -> int:
        """Add a layer entry reading ``reads``; its name is the Keras layer's plus ``suffix``."""
        indices = [r.index if isinstance(r, Value) else r for r in reads]
        self.layers.append({"type": type_name, "name": self.name + suffix,
                            "input_layers": indices, **params})
        return len(self.layers) - 1

    def permute(self, index: int, perm: Sequence[int], suffix: str) -> int:
        """A Permute layer, or ``index`` itself for the identity."""
        if list(perm) == list(range(len(perm))):
            return index
        return self.emit("Permute", [index], suffix, perm=list(perm))

    def to_keras_layout(self, x: Value, suffix: str = "/to_channels_last") -> int:
        """The tensor of ``x`` in Keras' axis order (channels last)."""
        r = x.rank
        return x.index if r < 2 else self.permute(x.index, [*range(1, r), 0], suffix)

    def from_keras_layout(self, index: int, rank: int, suffix: str = "/to_channels_first") -> int:
        """A tensor in Keras' axis order moved to the inside layout (channels first)."""
        return index if rank < 2 else self.permute(index, [rank - 1, *range(rank - 1)], suffix)

    def expand_rank(self, x: Value, rank: int) -> Value:
        """``x`` with leading size-1 axes up to ``rank`` axes (as Keras broadcasts)."""
        if x.rank >= rank:
            return x
        shape = (1,) * (rank - x.rank) + x.shape
        source = self.to_keras_layout(x)
        reshaped = self.emit("Reshape", [source], "/expand", shape=list(shape))
        return Value(self.from_keras_layout(reshaped, rank), shape)

    def unsupported(self, what: str, reason: str = "") -> ConversionError:
        return ConversionError(
            f"{self.where}: {what} is not supported by the converter. {reason}"
            "Replace it by the supported layers listed in the innsight README (Keras "
            "section), or explain the model with a model-agnostic method on the model "
            "itself (ins.run_shap, ins.run_lime)."
        )


# ---- checking against the original ---------------------------------------------------


def _original_runner(keras: Any, model: Any, graph: Any) -> Callable[[list[Tensor]], list[Tensor]]:
    """The Keras model as a function of channels-first tensors, for the converter's dry
    run: inputs are moved to channels last and cast to the Keras inputs' dtypes, the
    outputs moved back to channels first. Float64 inputs run a float64 copy of the model
    (the dry run's re-check of an ill-conditioned model), made on first use, where Keras
    can rebuild the model from its config; otherwise the model as it is."""
    copies: dict[str, Any] = {}

    def run(inputs: list[Tensor]) -> list[Tensor]:
        runs = model
        if any(x.dtype == torch.float64 for x in inputs):
            if "float64" not in copies:
                copies["float64"] = _float64_copy(keras, model)
            runs = copies["float64"] or model
        outputs = run_keras(keras, runs, graph, _keras_arrays(_graph_of(keras, runs), inputs))
        return [torch.as_tensor(np.moveaxis(e, -1, 1) if e.ndim > 2 else e) for e in outputs]

    def layer_values(inputs: list[Tensor]) -> dict[str, Tensor]:
        """The output of every layer called once with one output, channels first."""
        layers = [layer for layer in graph.layers
                  if not isinstance(layer, keras.layers.InputLayer)
                  and len(layer._inbound_nodes) == 1 and not isinstance(layer.output, (list, tuple))]
        probe = keras.Model(graph.inputs, [layer.output for layer in layers])
        outputs = run_keras(keras, probe, graph, _keras_arrays(graph, inputs))
        return {layer.name: torch.as_tensor(np.moveaxis(e, -1, 1) if e.ndim > 2 else e)
                for layer, e in zip(layers, outputs)}

    run.layer_values = layer_values  # type: ignore[attr-defined]  # the dry run's last resort
    return run


def _keras_arrays(graph: Any, inputs: list[Tensor]) -> list[np.ndarray]:
    """Channels-first tensors as channels-last arrays in the dtypes of ``graph``'s inputs."""
    return [(np.moveaxis(x.cpu().numpy(), 1, -1) if x.ndim > 2 else x.cpu().numpy()).astype(
        k.dtype) for x, k in zip(inputs, graph.inputs)]


def _float64_copy(keras: Any, model: Any) -> Any:
    """A copy of the model computing in float64 with its weights cast exactly, or
    ``None`` where Keras cannot rebuild a layer from its config."""

    def in_float64(layer: Any) -> Any:
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float64"})

    try:
        copy = keras.models.clone_model(model, clone_function=in_float64, recursive=True)
        copy.set_weights([w.astype("float64") if np.issubdtype(w.dtype, np.floating) else w
                          for w in model.get_weights()])
    except Exception:  # noqa: BLE001  (custom layers, configs Keras cannot round-trip)
        return None
    return copy


def run_keras(keras: Any, model: Any, graph: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The Keras model's outputs (channels last, as numpy arrays) for ``inputs``."""
    feed = keras.tree.pack_sequence_as(graph._inputs_struct, inputs)
    outputs = model(feed, training=False)
    return [to_numpy(o) for o in keras.tree.flatten(outputs)]
