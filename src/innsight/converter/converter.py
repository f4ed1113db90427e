"""``Converter``: turns a model of any supported framework into a :class:`ConvertedModel`."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from innsight._validation import as_dim_list, describe, resolve_dtype
from innsight.converter.converted_model import ConvertedModel
from innsight.converter.dict_format import build_model, build_model_on, model_to_dict
from innsight.converter.errors import DIRECT_METHODS_HINT, ConversionError
from innsight.converter.huggingface import (
    TEXT_INPUTS,
    accepts_huggingface,
    describe_huggingface,
)
from innsight.converter.keras_front import accepts_keras, describe_keras
from innsight.converter.names import Names
from innsight.converter.onnx_front import accepts_onnx, describe_onnx
from innsight.converter.sklearn_front import accepts_sklearn, describe_sklearn
from innsight.converter.torch_fx import (
    InputSpec,
    describe_torch,
    input_specs,
    random_inputs,
)

#: Batch size of the dry run: one sample, whose forward pass through the converted
#: layers also records their shapes; it differs from the tracing batch (2) to expose
#: batch sizes baked into a model.
DRY_RUN_BATCH = 1
#: Largest allowed deviation of the dry run, relative to the output scale.
DRY_RUN_TOLERANCE = 1e-4
#: A float32 original may lie this many times the model's own float32 noise from the
#: conversion in float64 (see ``_build_checked``).
DRY_RUN_NOISE_FACTOR = 10.0

#: ``describe(model, input_dim, tracer) -> (model dict, run the original or None)``.
Describer = Callable[[Any, Any, str],
                     tuple[dict[str, Any], Callable[[list[Tensor]], list[Tensor]] | None]]


def _describe_dict(model: dict[str, Any], input_dim: Any) -> tuple[dict[str, Any], None]:
    if input_dim is not None and "input_dim" not in model:
        return {**model, "input_dim": input_dim}, None
    if input_dim is not None:
        given = as_dim_list(input_dim, "input_dim")
        described = as_dim_list(model["input_dim"], "model['input_dim']")
        if given != described:
            raise ValueError(
                f"`input_dim` {[list(d) for d in given]} differs from the model dict's "
                f"input_dim {[list(d) for d in described]}."
            )
    return model, None


def _traced_as_given(describe: Callable[[Any, Any], Any]) -> Describer:
    """A front-end that builds its own graph: ``tracer`` has no choice to make there."""

    def describe_as_given(model: Any, input_dim: Any, tracer: str) -> Any:
        if tracer != "auto":
            raise ValueError(f"`tracer` chooses how a torch nn.Module is traced; leave it "
                             f"'auto' for {type(model).__name__}, got {tracer!r}.")
        return describe(model, input_dim)

    return describe_as_given


#: Front-ends: (does it take this model?, describe it as a model dict).
FRONTENDS: list[tuple[Callable[[Any], bool], Describer]] = [
    # first: a Keras model may be an nn.Module too
    (accepts_keras, _traced_as_given(describe_keras)),
    (accepts_huggingface, describe_huggingface),
    (lambda model: isinstance(model, nn.Module), lambda model, input_dim, tracer, **options:
     describe_torch(model, input_dim, tracer=tracer, **options)),
    (lambda model: isinstance(model, dict), _traced_as_given(_describe_dict)),
    (accepts_onnx, _traced_as_given(describe_onnx)),
    (accepts_sklearn, _traced_as_given(describe_sklearn)),
]


class Converter:
    """Converts a model into one graph of typed layers that every method runs on.

    Parameters
    ----------
    model
        A torch ``nn.Module`` that ``torch.fx`` or ``torch.export`` can trace (a Hugging
        Face ``PreTrainedModel`` as the function of its images, or of its input
        embeddings for a text model: see :mod:`innsight.converter.huggingface`); a
        Keras 3 model or a path to a ``.keras`` file (loaded in safe mode); an ``onnx.ModelProto``
        or a path to a ``.onnx`` file; a fitted scikit-learn ``MLPClassifier``
        or ``MLPRegressor``; or a model dict (the format of
        :mod:`innsight.converter.dict_format`, as returned by :meth:`to_dict`).
    input_dim
        Shape of one sample without the batch axis, channels first (e.g.
        ``[3, 32, 32]``), or a list of shapes for several inputs. Required for
        torch models; checked against the model otherwise.
    input_names, output_names
        Labels per input/output layer and axis; default ``X1..`` (tabular),
        ``C1../L1..`` (signals), ``C1../H1../W1..`` (images) and ``Y1..`` (outputs).
    dtype
        ``"float"`` or ``"double"``: the precision of the converted model.
    tracer
        How a torch model becomes a graph: ``"fx"`` (``torch.fx`` symbolic tracing;
        module calls stay whole), ``"export"`` (``torch.export``: ATen operations,
        through Python control flow that ``torch.fx`` cannot follow), or ``"auto"``
        (``torch.fx`` first, ``torch.export`` where that cannot trace or convert the
        model). Other models leave it ``"auto"``.
    text_input
        What a Hugging Face text model takes: ``"ids"`` (the default: token ids
        ``(batch, tokens)``, with ``attention_mask`` (and ``token_type_ids`` where the
        model has token types) as inputs that are not explained, given per call as
        ``extra_args``; methods explain the embedding output per token) or
        ``"embeddings"`` (its input embeddings ``(batch, tokens, hidden)``, which
        :func:`~innsight.converter.huggingface.embed_tokens` computes). Other models
        leave it ``None``.
    input_kinds
        For a torch ``nn.Module``: what each input holds, ``"real"`` (the default),
        ``"ids"`` (token ids, explained per token through the ``nn.Embedding`` that
        looks them up), ``"int"`` (integers that are not explained: attention masks,
        token type ids, position ids) or ``"extra"`` (real numbers that are not
        explained). Inputs that are not explained are given per call as ``extra_args``.
    check
        Whether the conversion ends with its dry run (the default): one random sample
        through the converted model and through the original, whose outputs must
        agree. ``False`` skips both forward passes (the layers' shapes then come from a
        pass without data on the meta device): for models too large to run twice, at
        the risk of a wrong conversion going unnoticed. Models without an original to
        run (a model dict) are never checked.

    Attributes
    ----------
    model : ConvertedModel
        The converted graph; ``conv.model(x)`` reproduces the original output.
    """

    def __init__(
        self,
        model: Any,
        input_dim: Any = None,
        input_names: Any = None,
        output_names: Any = None,
        dtype: str = "float",
        tracer: str = "auto",
        text_input: str | None = None,
        input_kinds: Any = None,
        check: bool = True,
    ) -> None:
        torch_dtype = resolve_dtype(dtype)
        if not isinstance(check, bool):
            raise TypeError(f"`check` must be True or False, got {describe(check)}.")
        options: dict[str, Any] = {}
        if input_kinds is not None:
            if not isinstance(model, nn.Module) or accepts_keras(model) or accepts_huggingface(model):
                raise ValueError("`input_kinds` says what the inputs of a torch nn.Module hold; "
                                 f"got it for a {type(model).__name__}.")
            n_inputs = len(as_dim_list(input_dim, "input_dim")) if input_dim is not None else 0
            options["inputs"] = input_specs(model, input_kinds, n_inputs)
        if text_input is not None:
            if text_input not in TEXT_INPUTS or not accepts_huggingface(model) or (
                    model.main_input_name != "input_ids"):
                raise ValueError(
                    f"`text_input` chooses what a Hugging Face text model takes, one of "
                    f"{list(TEXT_INPUTS)}; got {text_input!r} for a {type(model).__name__}.")
            options["text_input"] = text_input
        describer = next((d for accepts, d in FRONTENDS if accepts(model)), None)
        if describer is None:
            raise TypeError(
                "`model` must be a torch nn.Module, a Keras 3 Sequential/Functional model "
                "or a path to a '.keras' file, an onnx.ModelProto or a path to a "
                "'.onnx' file, a fitted scikit-learn MLPClassifier/MLPRegressor, or a "
                f"model dict, got {describe(model)} "
                f"of type {type(model).__name__}."
            )
        description, run_original = describer(model, input_dim, tracer, **options)
        if run_original is None or not check:
            self.model: ConvertedModel = build_model(description, torch_dtype, input_names,
                                                     output_names, on_meta=not check)
        else:
            self.model = _build_checked(description, torch_dtype, input_names, output_names,
                                        model, run_original)

    @property
    def input_dim(self) -> list[tuple[int, ...]]:
        """Shape of each input layer, without batch axis, channels first."""
        return self.model.input_dim

    @property
    def output_dim(self) -> list[tuple[int, ...]]:
        """Shape of each output layer, without batch axis."""
        return self.model.output_dim

    @property
    def input_names(self) -> list[Names]:
        """Per input layer, one list of labels per axis."""
        return self.model.input_names

    @property
    def output_names(self) -> list[Names]:
        """Per output layer, one list of labels per axis."""
        return self.model.output_names

    def to_dict(self) -> dict[str, Any]:
        """The model as a dict of plain lists and numbers; ``convert()`` takes it back."""
        return model_to_dict(self.model)

    def __repr__(self) -> str:
        model = self.model
        header = (
            f"Converter: {len(model.layers)} layers, {len(model.input_nodes)} input(s) "
            f"{[list(d) for d in model.input_dim]}, {len(model.output_nodes)} output(s) "
            f"{[list(d) for d in model.output_dim]}, dtype {str(model.dtype).replace('torch.', '')}"
        )
        rows = [("#", "name", "type", "reads", "output shape")]
        for i, (layer, name, reads) in enumerate(zip(model.layers, model.layer_names, model.input_layers)):
            rows.append((str(i), name, layer.summary(), ",".join(map(str, reads)) or "-", str(list(layer.output_dim))))
        widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        return "\n".join([header, *("  " + line for line in lines)])


#: ``convert(model, ...)`` is ``Converter(model, ...)``.
convert = Converter


def _description_specs(description: dict[str, Any]) -> list[InputSpec] | None:
    """What each input of the described model holds, from its ``Input`` entries (random
    token ids below the smallest vocabulary of the embeddings that read them); ``None``
    (real numbers) for a description whose inputs are put in front of its layers."""
    if "input_nodes" not in description:
        return None
    layers, specs = description["layers"], []
    for node in description["input_nodes"]:
        entry = layers[node]
        vocabs = [len(layer["weight"]) for layer in layers
                  if layer["type"] == "Embedding" and node in layer.get("input_layers", ())]
        specs.append(InputSpec(entry.get("dtype", "float"), entry.get("explained", True),
                               entry.get("default"), min(vocabs, default=2)))
    return specs


def _build_checked(
    description: dict[str, Any], dtype: torch.dtype, input_names: Any, output_names: Any,
    original: Any, run_original: Callable[[list[Tensor]], list[Tensor]],
) -> ConvertedModel:
    """The converted model of ``description``, built on a random sample whose converted
    output must match the original's (the dry run: one forward pass of each).

    An output passes within ``DRY_RUN_TOLERANCE`` of its scale; an output the original
    computes in float32 also passes where the original lies within
    ``DRY_RUN_NOISE_FACTOR`` times the model's own float32 noise (the converted model in
    float32 against float64 on the same inputs) of the converted model in float64: an
    ill-conditioned model (cancellation, large activations) is accepted where its two
    float32 computations differ, a wrong conversion still is not.
    """
    dims = as_dim_list(description["input_dim"], "input_dim")
    inputs = random_inputs(original, dims, DRY_RUN_BATCH,
                           _description_specs(description))
    with torch.no_grad():
        converted, actual = build_model_on(description, dtype, inputs, input_names,
                                           output_names)
    try:
        expected = run_original(inputs)
    except Exception as err:  # the user's model raised on a batch of another size
        raise ConversionError(
            f"The original model failed on a batch of {DRY_RUN_BATCH} random sample(s): "
            f"{err}. Models must accept any batch size."
        ) from err
    noise: tuple[list[Tensor], list[Tensor]] | None = None  # float32 and float64 outputs
    for k, (a, e) in enumerate(zip(actual, expected)):
        same_shape = tuple(a.shape) == tuple(e.shape)
        scale = max(1.0, e.abs().max().item())
        error = _max_difference(a, e) if same_shape else float("nan")
        if same_shape and error <= DRY_RUN_TOLERANCE * scale:
            continue
        detail = ""
        if same_shape and e.dtype == torch.float32:
            noise = noise or _in_both_precisions(converted, inputs, actual)
            single, double = noise[0][k], noise[1][k]
            float32_noise = _max_difference(single, double)
            deviation = _max_difference(e, double)
            if deviation <= DRY_RUN_NOISE_FACTOR * float32_noise:
                continue
            detail = (f"; the original lies {deviation:.3g} from the conversion in float64, "
                      f"more than {DRY_RUN_NOISE_FACTOR:g} times the model's own float32 "
                      f"noise ({float32_noise:.3g})")
        raise ConversionError(
            f"The converted model's output {k} differs from the original's on random "
            f"inputs (shapes {list(a.shape)} vs {list(e.shape)}, max abs difference "
            f"{error:.3g} at output scale {scale:.3g}{detail}). An operation behaves "
            "differently than its conversion assumes (in-place updates of a tensor "
            f"that is used again, for example). {DIRECT_METHODS_HINT}"
        )
    return converted


def _outputs(model: ConvertedModel, inputs: list[Tensor]) -> list[Tensor]:
    with torch.no_grad():
        outputs = model(inputs)
    return outputs if isinstance(outputs, list) else [outputs]


def _max_difference(a: Tensor, b: Tensor) -> float:
    return (a.double().cpu() - b.double().cpu()).abs().max().item()


def _in_both_precisions(converted: ConvertedModel, inputs: list[Tensor],
                        outputs: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """The converted model's outputs in float32 and in float64 (``outputs`` are those in
    its own precision; a copy computes the other)."""
    other = torch.float32 if converted.dtype == torch.float64 else torch.float64
    copy_outputs = _outputs(copy.deepcopy(converted).to(dtype=other), inputs)
    return (copy_outputs, outputs) if other == torch.float32 else (outputs, copy_outputs)
