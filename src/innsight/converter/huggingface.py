"""Hugging Face ``transformers`` models: a ``PreTrainedModel`` converts as the function of
its main input that returns its ``logits``.

Image models (``pixel_values``) take their images. Text models (``input_ids``) are
explained with respect to their input embeddings, the first tensor that can be
differentiated: the converted model takes ``inputs_embeds`` of shape
``(tokens, hidden size)`` per sample, which ``embed_tokens`` computes from token ids.
They are traced with ``torch.export`` (``transformers`` no longer supports
``torch.fx``); output names come from ``config.id2label`` where the logits are one
score per label.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from innsight._validation import as_dim_list
from innsight.converter.torch_fx import describe_torch


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


def describe_huggingface(
    model: nn.Module, input_dim: Any, tracer: str,
) -> tuple[dict[str, Any], Callable[[list[Tensor]], list[Tensor]]]:
    """The model dict of ``model``'s logits as a function of its images or, for a text
    model, of its input embeddings (``input_dim`` ``[tokens]`` or ``[tokens, hidden]``)."""
    input_name = model.main_input_name
    if input_name == "input_ids":
        input_name = "inputs_embeds"
        input_dim = _embedding_dims(model, input_dim)
    with _fused_activations():
        description, run_original = describe_torch(
            _Logits(model, input_name), input_dim, tracer="export" if tracer == "auto" else tracer)
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
    import transformers.activations as activations

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
    """The shape of one sample of each output, from the original on one zero input."""
    dtype = next(model.parameters()).dtype
    inputs = [torch.zeros(1, *d, dtype=dtype) for d in description["input_dim"]]
    return [tuple(out.shape[1:]) for out in run_original(inputs)]
