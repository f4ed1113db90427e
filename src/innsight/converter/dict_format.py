"""The "model as dict" format: the one description every front-end emits.

``build_model`` checks a description and turns it into a
:class:`ConvertedModel`; ``model_to_dict`` writes a model back into exactly
that description (weights as nested lists, so it survives ``json.dumps``).

Top-level keys: ``input_dim`` (one shape per model input, no batch axis,
channels first), ``input_nodes`` (the ``Input`` layer of each model input),
``output_nodes`` (the layer of each model output), ``input_names``,
``output_names`` (optional) and ``layers``. Each layer has ``type``,
``input_layers`` (indices of the earlier layers it reads; empty for
``Input``), ``output_layers`` (optional; checked when given), an optional
``name`` and the parameters of its type. Indices are 0-based.

A plain chain may leave out ``input_nodes``, ``output_nodes`` and every
``input_layers``/``output_layers``: an ``Input`` layer is put in front and
each layer reads the one before it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from innsight._validation import as_dim_list, describe
from innsight.converter.converted_model import ConvertedModel, last_uses, readers_of
from innsight.converter.names import check_names, default_names
from innsight.converter.on_meta import OnMeta
from innsight.layers import LAYER_TYPES, Layer

TOP_KEYS = ("input_dim", "input_nodes", "input_names", "output_nodes", "output_names", "layers")
GRAPH_KEYS = ("type", "name", "input_layers", "output_layers")


def build_model(
    description: Mapping[str, Any],
    dtype: torch.dtype,
    input_names: Any = None,
    output_names: Any = None,
    on_meta: bool = False,
) -> ConvertedModel:
    """Check ``description`` and build its :class:`ConvertedModel` in ``dtype``.

    ``input_names``/``output_names`` override the names in the description. The
    layers' shapes come from one pass of zeros; with ``on_meta``, on the meta device (no
    arithmetic; for descriptions of a traced model: meta kernels check less than real
    ones, a softmax along an axis the tensor lacks passes), where every layer runs there.
    """
    return _build(description, dtype, None, input_names, output_names, on_meta)[0]


def build_model_on(
    description: Mapping[str, Any],
    dtype: torch.dtype,
    sample: list[torch.Tensor],
    input_names: Any = None,
    output_names: Any = None,
) -> tuple[ConvertedModel, list[torch.Tensor]]:
    """:func:`build_model`, and the model's outputs ``(1, *output_dim)`` for ``sample``
    (one tensor ``(1, *input_dim)`` per input), from the one forward pass that infers
    the layers' shapes (a front-end's dry run compares them with the original's)."""
    return _build(description, dtype, sample, input_names, output_names)


def _build(
    description: Mapping[str, Any], dtype: torch.dtype, sample: list[torch.Tensor] | None,
    input_names: Any, output_names: Any, on_meta: bool = False,
) -> tuple[ConvertedModel, list[torch.Tensor]]:
    """The model of ``description`` and its outputs for ``sample`` (zeros where ``None``;
    see :func:`build_model` for ``on_meta``)."""
    if not isinstance(description, Mapping):
        raise TypeError(f"A model description must be a dict, got {describe(description)}.")
    unknown = sorted(set(description) - set(TOP_KEYS))
    if unknown:
        raise ValueError(f"Model dict has unknown keys {unknown}; allowed: {list(TOP_KEYS)}.")
    for key in ("input_dim", "layers"):
        if key not in description:
            raise ValueError(f"Model dict misses the key '{key}'.")
    input_dim = as_dim_list(description["input_dim"], "input_dim")
    entries, input_nodes, output_nodes, offset = _graph_entries(description, len(input_dim))

    layers: list[Layer] = []
    names: list[str] = []
    for i, entry in enumerate(entries):
        name = str(entry.get("name", f"layer_{i - offset}"))
        where = f"layers[{i - offset}] ('{name}')"
        params = {k: v for k, v in entry.items() if k not in GRAPH_KEYS}
        layer_cls = LAYER_TYPES[entry["type"]]
        layers.append(layer_cls.from_params(entry["type"], params, where))
        names.append(name)
    reads = [tuple(entry["input_layers"]) for entry in entries]
    for layer in layers:
        layer.to(dtype)
    graph = (layers, names, reads, input_nodes, output_nodes, offset, dtype)
    if sample is None and on_meta:
        values = _shapes_on_meta(*graph, input_dim)
    else:
        values = _record_shapes(*graph, sample or [torch.zeros(1, *dim, dtype=dtype)
                                                   for dim in input_dim])

    in_dims = [layers[i].output_dim for i in input_nodes]
    out_dims = [layers[i].output_dim for i in output_nodes]
    model = ConvertedModel(
        layers,
        names,
        reads,
        input_nodes,
        output_nodes,
        input_names=_names(input_names, description.get("input_names"), in_dims, "input_names", False),
        output_names=_names(output_names, description.get("output_names"), out_dims, "output_names", True),
    )
    return model.to(dtype), values


def model_to_dict(model: ConvertedModel) -> dict[str, Any]:
    """The description of ``model``; ``build_model`` of it gives the same model."""
    layers = []
    for layer, name, reads, outs in zip(
        model.layers, model.layer_names, model.input_layers, model.output_layers
    ):
        entry = {
            "type": layer.type_name,
            "name": name,
            "input_layers": list(reads),
            "output_layers": list(outs),
        }
        entry.update({k: _plain(v) for k, v in layer.get_params().items()})
        layers.append(entry)
    return {
        "input_dim": [list(d) for d in model.input_dim],
        "input_nodes": list(model.input_nodes),
        "input_names": model.input_names,
        "output_nodes": list(model.output_nodes),
        "output_names": model.output_names,
        "layers": layers,
    }


def _plain(value: Any) -> Any:
    """Tensors and arrays as nested lists of Python numbers."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _graph_entries(
    description: Mapping[str, Any], n_inputs: int
) -> tuple[list[dict[str, Any]], list[int], list[int], int]:
    """Layer entries with ``input_layers`` filled in, the input and output nodes, and
    how many layers were put in front of the user's (1 for a plain chain's Input)."""
    raw = description["layers"]
    if not isinstance(raw, (list, tuple)) or not raw:
        raise ValueError(f"Model dict 'layers' must be a non-empty list, got {describe(raw)}.")
    for i, entry in enumerate(raw):
        if not isinstance(entry, Mapping):
            raise TypeError(f"layers[{i}] must be a dict, got {describe(entry)}.")
        if not isinstance(entry.get("type"), str) or entry["type"] not in LAYER_TYPES:
            raise ValueError(
                f"layers[{i}] has unknown type {entry.get('type')!r}; "
                f"known types: {sorted(LAYER_TYPES)}."
            )
    entries = [dict(entry) for entry in raw]
    graph_given = any("input_layers" in e or "output_layers" in e for e in entries) or any(
        key in description for key in ("input_nodes", "output_nodes")
    )
    if not graph_given and all(e["type"] != "Input" for e in entries):
        if n_inputs != 1:
            raise ValueError(
                "A model dict with several inputs must give 'input_nodes', 'output_nodes' "
                "and each layer's 'input_layers'."
            )
        entries = [{"type": "Input", "name": "input"}] + entries
        for i, entry in enumerate(entries):
            entry["input_layers"] = [i - 1] if i else []
        return entries, [0], [len(entries) - 1], 1

    for key in ("input_nodes", "output_nodes"):
        if key not in description:
            raise ValueError(f"Model dict misses the key '{key}' (needed unless the layers form a plain chain).")
    for i, entry in enumerate(entries):
        if "input_layers" not in entry:
            raise ValueError(f"layers[{i}] misses 'input_layers' (the indices of the layers it reads).")
        entry["input_layers"] = _indices(entry["input_layers"], f"layers[{i}]['input_layers']", len(entries))
        late = [j for j in entry["input_layers"] if j >= i]
        if late:
            raise ValueError(
                f"layers[{i}] reads layers {late}, which do not come before it; list the "
                "layers in topological order."
            )
        layer_cls = LAYER_TYPES[entry["type"]]
        n_reads, wanted, fewest = len(entry["input_layers"]), layer_cls.n_inputs, layer_cls.min_inputs
        most = layer_cls.max_inputs
        if (wanted is None and not fewest <= n_reads <= (most or n_reads)) or (
                wanted is not None and n_reads != wanted):
            expected = (str(wanted) if wanted is not None else f"{fewest} to {most}" if most
                        else f"{'two' if fewest == 2 else fewest} or more")
            raise ValueError(
                f"layers[{i}] of type '{entry['type']}' reads {n_reads} layer(s), expected {expected}."
            )
    readers = readers_of([entry["input_layers"] for entry in entries])
    for i, entry in enumerate(entries):
        if "output_layers" in entry:
            given = sorted(_indices(entry["output_layers"], f"layers[{i}]['output_layers']", len(entries)))
            actual = list(readers[i])
            if given != actual:
                raise ValueError(
                    f"layers[{i}]['output_layers'] is {given}, but the layers reading it are {actual}."
                )
    input_nodes = _indices(description["input_nodes"], "input_nodes", len(entries))
    output_nodes = _indices(description["output_nodes"], "output_nodes", len(entries))
    input_layers = [i for i, e in enumerate(entries) if e["type"] == "Input"]
    if sorted(input_nodes) != input_layers or len(input_nodes) != n_inputs:
        raise ValueError(
            f"'input_nodes' {input_nodes} must list each of the Input layers {input_layers} once, "
            f"one per entry of 'input_dim' ({n_inputs})."
        )
    if not output_nodes:
        raise ValueError("'output_nodes' must name at least one layer.")
    return entries, input_nodes, output_nodes, 0


def _indices(value: Any, where: str, n_layers: int) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v < n_layers
        for v in value
    ):
        raise ValueError(
            f"{where} must be a list of layer indices in 0..{n_layers - 1}, got {describe(value)}."
        )
    return [int(v) for v in value]


def _shapes_on_meta(
    layers: list[Layer], names: list[str], reads: list[tuple[int, ...]], input_nodes: list[int],
    output_nodes: list[int], offset: int, dtype: torch.dtype, input_dim: list[tuple[int, ...]],
) -> list[torch.Tensor]:
    """:func:`_record_shapes` of zeros on the meta device (no arithmetic), or for real
    where a layer cannot run there (it reads values)."""
    graph = (layers, names, reads, input_nodes, output_nodes, offset, dtype)
    try:
        with OnMeta():
            return _record_shapes(*graph, [torch.zeros(1, *dim, dtype=dtype, device="meta")
                                           for dim in input_dim])
    except Exception:  # a layer that reads values; the real run below reports any error
        return _record_shapes(*graph, [torch.zeros(1, *dim, dtype=dtype) for dim in input_dim])


def _record_shapes(
    layers: list[Layer],
    names: list[str],
    reads: list[tuple[int, ...]],
    input_nodes: list[int],
    output_nodes: list[int],
    offset: int,
    dtype: torch.dtype,
    sample: list[torch.Tensor],
) -> list[torch.Tensor]:
    """Run the layers (in ``dtype``) in order on ``sample`` (one tensor ``(1, *input_dim)``
    per input), set each layer's ``input_dim``/``output_dim`` from the shapes seen, and
    return the values of ``output_nodes`` (the others are freed after their last use).
    ``offset`` layers were put in front of the user's; messages count without them."""
    values: list[torch.Tensor | None] = [None] * len(layers)
    free_after = last_uses(reads, keep=set(output_nodes))
    for k, node in enumerate(input_nodes):
        values[node] = sample[k].to(layers[node].value_dtype(dtype))
        layers[node].input_dim = [tuple(sample[k].shape[1:])]
        layers[node].output_dim = tuple(sample[k].shape[1:])
    for i, layer in enumerate(layers):
        if not reads[i]:
            continue
        inputs = [values[j] for j in reads[i]]
        layer.input_dim = [tuple(x.shape[1:]) for x in inputs]
        try:
            out = layer(*inputs)
        except (RuntimeError, ValueError, IndexError, TypeError) as err:
            raise ValueError(
                f"layers[{i - offset}] ('{names[i]}', type '{layer.type_name}') cannot take "
                f"input shape(s) {[list(d) for d in layer.input_dim]}: {err}"
            ) from err
        if not isinstance(out, torch.Tensor) or out.shape[0] != 1:
            raise ValueError(f"layers[{i - offset}] ('{names[i]}') does not keep the batch axis.")
        layer.output_dim = tuple(out.shape[1:])
        values[i] = out
        for j in free_after[i]:
            values[j] = None
    return [values[i] for i in output_nodes]


def _names(given: Any, described: Any, dims: list[tuple[int, ...]], arg_name: str, output: bool) -> list:
    if given is not None:
        return check_names(given, dims, arg_name)
    if described is not None:
        return check_names(described, dims, arg_name)
    return [default_names(d, output) for d in dims]
