"""Hugging Face ``transformers`` models: a ``PreTrainedModel`` converts as the function of
its main input that returns its ``logits``.

Image models (``pixel_values``) take their images. Text models (``input_ids``) take
token ids by default (``text_input="ids"``): the converted model's inputs are the ids
(explained, through the embedding output) and the ``attention_mask`` (and
``token_type_ids`` where the model has token types), which are not explained, given per
call as ``extra_args`` and filled with the model's defaults (ones, zeros) where left
out. With ``text_input="embeddings"`` the converted model takes ``inputs_embeds`` of
shape ``(tokens, hidden size)`` per sample instead, which ``embed_tokens`` computes
from token ids. Models are traced with ``torch.export`` (``transformers`` no longer
supports ``torch.fx``); output names come from ``config.id2label`` where the logits
are one score per label.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from innsight._validation import as_dim_list
from innsight.converter.on_meta import OnMeta
from innsight.converter.torch_fx import InputSpec, describe_torch

#: What a text model may take (``text_input``).
TEXT_INPUTS = ("ids", "embeddings")


def accepts_huggingface(model: Any) -> bool:
    """Whether ``model`` is a ``transformers`` ``PreTrainedModel`` (without importing it)."""
    return isinstance(model, nn.Module) and all(
        hasattr(model, name) for name in ("config", "main_input_name", "get_input_embeddings"))


class _Logits(nn.Module):
    """``model(**{input_name: x}).logits``: the model as a function of one tensor."""

    def __init__(self, model: nn.Module, input_name: str) -> None:
        super().__init__()
        self.model = model
        self.input_name = input_name
        self.training = model.training  # a training-mode warning is about the model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(**{self.input_name: x}).logits


class _TokenLogits(nn.Module):
    """``model(input_ids, attention_mask, [token_type_ids]).logits``: the model as a
    function of its token ids and its non-explained inputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.training = model.training

    def forward(self, input_ids: Tensor, attention_mask: Tensor,
                token_type_ids: Tensor | None = None) -> Tensor:
        extras = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extras).logits


def describe_huggingface(
    model: nn.Module, input_dim: Any, tracer: str, dtype: torch.dtype,
    text_input: str = "ids",
) -> tuple[dict[str, Any], Callable[[list[Tensor]], list[Tensor]]]:
    """The model dict of ``model``'s logits as a function of its images or, for a text
    model, of its token ids (``input_dim`` ``[tokens]``) with its masks, or of its input
    embeddings (``text_input="embeddings"``; ``[tokens]`` or ``[tokens, hidden]``), for a
    conversion in ``dtype``."""
    input_name, specs = model.main_input_name, None
    tracer = "export" if tracer == "auto" else tracer
    if input_name == "input_ids" and text_input == "ids":
        tokens, extras = _token_dims(model, input_dim), _extra_inputs(model)
        wrapped: nn.Module = _TokenLogits(model)
        specs = [InputSpec("int64", high=model.get_input_embeddings().num_embeddings),
                 *extras.values()]
        input_dim = [[tokens]] * len(specs)
    elif input_name == "input_ids":
        wrapped, input_dim = _Logits(model, "inputs_embeds"), _embedding_dims(model, input_dim)
    else:
        wrapped = _Logits(model, input_name)
    with _fused_activations():
        description, run_original = describe_torch(wrapped, input_dim, tracer=tracer,
                                                   inputs=specs, dtype=dtype)
    if specs is not None:
        names = ["input_ids", *_extra_inputs(model)]
        for node, name in zip(description["input_nodes"], names):
            description["layers"][node]["name"] = name
    labels = getattr(model.config, "id2label", None) or {}
    if labels and _output_dims(model, run_original, description) == [(len(labels),)]:
        description["output_names"] = [[[str(labels[i]) for i in range(len(labels))]]]
    return description, run_original


#: ``transformers`` activation modules that write a GELU out in primitive operations
#: (``0.5 * x * (1 + tanh(...))``), and the fused function they equal: while a model is
#: traced they call it, so that the graph holds one GELU layer, which rule-based methods
#: treat as one nonlinearity (LRP's identity rule), not as a product of two branches.
_FUSED_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "NewGELUActivation": partial(F.gelu, approximate="tanh"),
    "FastGELUActivation": partial(F.gelu, approximate="tanh"),
    "GELUTanh": partial(F.gelu, approximate="tanh"),
    "GELUActivation": F.gelu,
}


@contextlib.contextmanager
def _fused_activations() -> Iterator[None]:
    """The classes of :data:`_FUSED_ACTIVATIONS` computing their fused function, for the
    duration of the block (the conversion's dry run then compares against the original)."""
    from transformers import activations

    classes = [(cls, cls.__dict__["forward"]) for cls in (
        getattr(activations, name, None) for name in _FUSED_ACTIVATIONS) if cls is not None]
    try:
        for cls, _ in classes:
            fused = _FUSED_ACTIVATIONS[cls.__name__]
            cls.forward = lambda self, x, fused=fused: fused(x)
        yield
    finally:
        for cls, forward in classes:
            cls.forward = forward


def embed_tokens(model: nn.Module, input_ids: Tensor) -> Tensor:
    """The input embeddings ``(batch, tokens, hidden)`` of token ids ``(batch, tokens)``:
    the data that a converted text model takes."""
    with torch.no_grad():
        return model.get_input_embeddings()(input_ids)


def _extra_inputs(model: nn.Module) -> dict[str, InputSpec]:
    """The non-explained inputs of a text model with their defaults: ``attention_mask``
    (ones), and ``token_type_ids`` (zeros) where the model has several token types."""
    extras = {"attention_mask": InputSpec("int64", explained=False, default=1)}
    takes = inspect.signature(model.forward).parameters
    if "token_type_ids" in takes and getattr(model.config, "type_vocab_size", 1) > 1:
        extras["token_type_ids"] = InputSpec("int64", explained=False, default=0)
    return extras


def _token_dims(model: nn.Module, input_dim: Any) -> int:
    """The number of tokens from ``input_dim`` ``[tokens]``."""
    dims = as_dim_list(input_dim, "input_dim") if input_dim is not None else None
    if dims is None or len(dims) != 1 or len(dims[0]) != 1:
        raise ValueError(
            f"`input_dim` of the text model {type(model).__name__} must be [tokens] (it "
            f"takes token ids; the masks have the same shape), got {input_dim!r}."
        )
    return dims[0][0]


def _embedding_dims(model: nn.Module, input_dim: Any) -> list[int]:
    """``[tokens, hidden]`` from ``[tokens]`` or ``[tokens, hidden]``."""
    hidden = model.get_input_embeddings().embedding_dim
    dims = as_dim_list(input_dim, "input_dim") if input_dim is not None else None
    if dims is None or len(dims) != 1 or len(dims[0]) not in (1, 2) or (
            len(dims[0]) == 2 and dims[0][1] != hidden):
        raise ValueError(
            f"`input_dim` of the text model {type(model).__name__} must be [tokens] or "
            f"[tokens, {hidden}] (it is explained with respect to its input embeddings of "
            f"width {hidden}), got {input_dim!r}."
        )
    return [dims[0][0], hidden]


def _output_dims(model: nn.Module, run_original: Callable[[list[Tensor]], list[Tensor]],
                 description: dict[str, Any]) -> list[tuple[int, ...]]:
    """The shape of one sample of each output, from the original on one zero input: on
    the meta device (no arithmetic), or for real where the model reads values."""
    dtype = next(model.parameters()).dtype
    kinds = [description["layers"][node].get("dtype", "float") for node in description["input_nodes"]]
    inputs = [torch.zeros(1, *d, dtype=dtype if kind == "float" else torch.int64)
              for d, kind in zip(description["input_dim"], kinds)]
    try:
        with OnMeta():
            outputs = run_original([x.to("meta") for x in inputs])
    except Exception:  # an operation that reads values; the real run reports any error
        outputs = run_original(inputs)
    return [tuple(out.shape[1:]) for out in outputs]
