"""``Converter``: turns a model of any supported framework into a :class:`ConvertedModel`."""

from __future__ import annotations

import math
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
    AUTO_TRACERS,
    InputSpec,
    InputsRefused,
    describe_torch,
    input_specs,
    random_inputs,
)

#: Batch size of the dry run: one sample, whose forward pass through the converted
#: layers also records their shapes; it differs from the tracing batch (2) to expose
#: batch sizes baked into a model.
DRY_RUN_BATCH = 1
#: Largest allowed deviation of the dry run, relative to the output's largest magnitude
#: (in float32, or, where float32 rounding exceeds it, in float64: see ``_dry_run_refusal``).
DRY_RUN_TOLERANCE = 1e-4

#: ``describe(model, input_dim, tracer, dtype) -> (model dict, run the original or
#: None)``; ``dtype``: the precision of the conversion.
Describer = Callable[[Any, Any, str, torch.dtype],
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
    """A front-end that builds its own graph in the model's precision: ``tracer`` has no
    choice to make there."""

    def describe_as_given(model: Any, input_dim: Any, tracer: str, dtype: torch.dtype) -> Any:
        if tracer != "auto":
            raise ValueError(f"`tracer` chooses how a torch nn.Module is traced; leave it "
                             f"'auto' for {type(model).__name__}, got {tracer!r}.")
        return describe(model, input_dim)

    return describe_as_given


def _describe_module(model: nn.Module, input_dim: Any, tracer: str, dtype: torch.dtype,
                     **options: Any) -> Any:
    return describe_torch(model, input_dim, tracer=tracer, dtype=dtype, **options)


#: Front-ends: (does it take this model?, describe it as a model dict).
FRONTENDS: list[tuple[Callable[[Any], bool], Describer]] = [
    # first: a Keras model may be an nn.Module too
    (accepts_keras, _traced_as_given(describe_keras)),
    (accepts_huggingface, describe_huggingface),
    (lambda model: isinstance(model, nn.Module), _describe_module),
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
        ``"float"`` or ``"double"``: the precision of the converted model. A torch model
        converted in ``"double"`` is traced in float64 (its parameters and buffers, and
        torch's default dtype, for the duration), so that the constants its forward
        computes (``self.w.exp()``, ``torch.arange(n) * 0.1``) are float64 from the start.
    tracer
        How a torch model becomes a graph: ``"fx"`` (``torch.fx`` symbolic tracing;
        module calls stay whole), ``"export"`` (``torch.export``: ATen operations,
        through Python control flow that ``torch.fx`` cannot follow), or ``"auto"``
        (``torch.fx`` first, ``torch.export`` where that cannot trace or convert the
        model or its conversion fails the dry run; an error names both failures where
        neither converts). Other models leave it ``"auto"``.
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
        # "auto" for a torch nn.Module: torch.fx, then torch.export where the conversion
        # of the graph of torch.fx fails (to trace, to convert, or its dry run)
        tracers = AUTO_TRACERS if tracer == "auto" and describer is _describe_module else [tracer]
        failures: list[ConversionError] = []
        for attempt in tracers:  # called here, not in a helper: warnings count the frames
            try:
                description, run_original = describer(model, input_dim, attempt, torch_dtype,
                                                      **options)
                if run_original is None or not check:
                    self.model: ConvertedModel = build_model(
                        description, torch_dtype, input_names, output_names, on_meta=not check)
                else:
                    self.model = _build_checked(description, torch_dtype, input_names,
                                                output_names, model, run_original)
                return
            except ConversionError as error:
                if len(tracers) == 1 or isinstance(error, InputsRefused):
                    raise  # one tracer asked for, or inputs that no tracer can help
                failures.append(error)
        fx_error, export_error = failures
        raise ConversionError(
            f"Traced with torch.fx (tracer='fx'): {fx_error}\nTraced with torch.export "
            f"instead (tracer='export'): {export_error}") from export_error

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
    output must match the original's (the dry run: one forward pass of each; see
    :func:`_dry_run_refusal`)."""
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
    refusal = _dry_run_refusal(description, converted, inputs, actual, expected, run_original)
    if refusal:
        raise ConversionError(
            f"The converted model's output {refusal}. An operation behaves differently than "
            "its conversion assumes (in-place updates of a tensor that is used again, for "
            f"example). {DIRECT_METHODS_HINT}"
        )
    return converted


def _dry_run_refusal(description: dict[str, Any], converted: ConvertedModel,
                     inputs: list[Tensor], actual: list[Tensor], expected: list[Tensor],
                     run_original: Callable[[list[Tensor]], list[Tensor]]) -> str | None:
    """Why the outputs ``actual`` of ``converted`` (built from ``description``) do not
    reproduce the original's ``expected`` on ``inputs``, or ``None`` where they do.

    An output agrees where its largest deviation is within ``DRY_RUN_TOLERANCE`` of its
    largest magnitude. Where one does not, both models run again in float64 (the
    conversion built anew from ``description``, the original through ``run_original``
    on float64 inputs, which runs a float32 torch or Keras model in float64), and the
    outputs agree where the original lies within that tolerance of the conversion in
    float64: float32 rounding that an ill-conditioned model amplifies (cancellation,
    chaotic depth) is thus told apart from a wrong conversion, which deviates in float64
    as much. An original that cannot run in float64 (an ONNX model in onnxruntime) is
    compared as it is, so a float32 output that rounding swamped is refused. Where the
    model amplifies rounding beyond float64 too, a runner that gives the original's
    values per layer (``run_original.layer_values``, Keras) has the conversion checked
    layer by layer (:func:`_layer_by_layer_refusal`).
    """
    for k, (a, e) in enumerate(zip(actual, expected)):
        if tuple(a.shape) != tuple(e.shape):
            return f"{k} differs in shape from the original's: {list(a.shape)} vs {list(e.shape)}"
    deviations = [_relative_deviation(a, e) for a, e in zip(actual, expected)]
    if all(d <= DRY_RUN_TOLERANCE for d in deviations):  # NaN does not pass
        return None
    doubles = [x.double() if x.is_floating_point() else x for x in inputs]
    with torch.no_grad():  # built anew: a float32 conversion has rounded the weights
        exact = actual if converted.dtype == torch.float64 else build_model_on(
            description, torch.float64, doubles)[1]
    try:
        original = run_original(doubles)
    except Exception:  # noqa: BLE001  (a float32 constant in the model, say: as it is)
        original = expected
    in_float64 = [_relative_deviation(x, o) for x, o in zip(exact, original)]
    if all(d <= DRY_RUN_TOLERANCE for d in in_float64):
        return None
    k = next(j for j, d in enumerate(in_float64) if not d <= DRY_RUN_TOLERANCE)
    how = ("in float64" if original[k].dtype == torch.float64 else
           "against the conversion in float64 (the original cannot run in float64)")
    refusal = (f"{k} differs from the original's on a random input by {deviations[k]:.3g} of "
               f"its largest magnitude ({expected[k].abs().max().item():.3g}), and by "
               f"{in_float64[k]:.3g} {how}; the tolerance is {DRY_RUN_TOLERANCE:g}")
    layer_values = getattr(run_original, "layer_values", None)
    if layer_values is None:
        return refusal
    by_layer = _layer_by_layer_refusal(converted, inputs, layer_values(inputs))
    return None if by_layer is None else f"{refusal}; layer by layer, {by_layer}"


def _layer_by_layer_refusal(converted: ConvertedModel, inputs: list[Tensor],
                            values: dict[str, Tensor]) -> str | None:
    """Why the converted layers do not reproduce the original's layers (``values``: the
    output of each, by name), or ``None`` where they do: every converted layer that holds
    an original layer's output (the last one named after it) gets that value, and each
    such layer, run on the values it reads, must reproduce it within
    ``DRY_RUN_TOLERANCE`` of its largest magnitude. Rounding is not amplified
    from layer to layer, so a model that amplifies it beyond float64 can still be
    checked; the outputs must be among the layers checked."""
    given: dict[int, Tensor] = {}
    for name, value in values.items():
        held = [i for i, n in enumerate(converted.layer_names)
                if n == name or n.startswith(name + "/")]
        if held and tuple(converted.layers[held[-1]].output_dim) == tuple(value.shape[1:]):
            given[held[-1]] = value.to(converted.dtype)
    unchecked = [converted.layer_names[i] for i in converted.output_nodes if i not in given]
    if unchecked:
        return f"the output layer(s) {unchecked} cannot be compared"
    with torch.no_grad():
        node_values = converted.node_values(inputs, given=given)
        for node, value in given.items():
            args = [node_values[j] for j in converted.input_layers[node]]
            if not args:
                continue
            error = _relative_deviation(converted.layers[node](*args), value)
            if not error <= DRY_RUN_TOLERANCE:
                return (f"layer '{converted.layer_names[node]}', run on the original's values, "
                        f"differs from the original's layer by {error:.3g} of its largest "
                        "magnitude")
    return None


def _relative_deviation(actual: Tensor, expected: Tensor) -> float:
    """``max |actual - expected| / max |expected|``: 0 where both are 0, NaN where
    either holds NaN."""
    error = _max_difference(actual, expected)
    scale = expected.abs().max().item()
    return error / scale if scale else math.inf if error else error


def _max_difference(a: Tensor, b: Tensor) -> float:
    return (a.double().cpu() - b.double().cpu()).abs().max().item()
