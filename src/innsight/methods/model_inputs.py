"""Models with token inputs or non-explained inputs (attention masks, token type ids).

Such a converted model is explained with respect to the *start* of its explained input:
the output of the :class:`~innsight.layers.tokens.Embedding` that looks its token ids
up (the first tensor that can be differentiated), or the input itself where it holds
real numbers. The methods attribute to that layer (see
:mod:`~innsight.methods.layer_attribution`) while the model inputs, the explained one
and those given per call as ``extra_args``, feed everything else (masks, positions)
sample by sample; references (``x_ref``, ``data_ref``) live in the start's space.
Results come back per token: summed over the embedding dimension for methods whose
values add up to a goal, as their 2-norm for plain gradients, or per dimension with
``keep_embedding_dim=True``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from innsight._validation import describe, is_int
from innsight.converter import ConvertedModel
from innsight.methods.data import prepare_data, prepare_like


def needs_start(model: Any) -> bool:
    """Whether ``model`` is a converted model with token or non-explained inputs."""
    if not isinstance(model, ConvertedModel):
        return False
    inputs = [model.layers[node] for node in model.input_nodes]
    return any(layer.kind != "float" or not layer.explained for layer in inputs)


@dataclass(frozen=True)
class ModelInputs:
    """The inputs of one run: every model input at the data ``(n_data, *dim)``, the
    position ``k`` of the explained one, the layer ``start`` it is explained through,
    and whether that is an embedding of token ids (``tokens``)."""

    tensors: list[Tensor]
    columns: list[Any]
    k: int
    start: int
    tokens: bool

    @classmethod
    def build(cls, model: ConvertedModel, data: Any, extra_args: Any, channels_first: bool,
              dtype: torch.dtype, device: torch.device) -> ModelInputs:
        explained = model.explained_inputs
        if len(explained) != 1:
            raise ValueError(
                f"A model with token ids or non-explained inputs is explained for one input; "
                f"this one has {len(explained)} explained inputs "
                f"{[model.layer_names[model.input_nodes[k]] for k in explained]}.")
        k = explained[0]
        embedding = model.token_embedding(k)
        dim = model.input_dim[k]
        if embedding is None:
            values, columns = prepare_data(data, [dim], channels_first, dtype, device)
            value = values[0]
        else:
            value, columns = _integers(model, data, k, "data", None), [None]
        extras = _extra_inputs(model, extra_args, value.shape[0])
        tensors = [value if j == k else extras[j] for j in range(len(model.input_nodes))]
        tensors = [t.to(device) for t in tensors]
        start = model.input_nodes[k] if embedding is None else embedding
        return cls(tensors, columns, k, start, embedding is not None)

    def lift(self, model: ConvertedModel, value: Any, arg_name: str,
             channels_first: bool) -> Tensor:
        """References ``(n_ref, *start_dim)`` in the start's space from ``value``: zeros
        for ``None``; for token inputs a token id (a pad or mask token, the same at every
        position) or ids ``(n_ref, tokens)``, looked up in the embedding; for real inputs
        values given like the data."""
        like = self.tensors[self.k]
        dim = model.layers[self.start].output_dim
        if value is None:
            return torch.zeros(1, *dim, dtype=model.dtype, device=like.device)
        if not self.tokens:
            return prepare_like(value, [like.to(model.dtype)], channels_first, arg_name)[0]
        if is_int(value):
            ids = torch.full((1, *like.shape[1:]), int(value), dtype=torch.long)
        else:
            ids = _integers(model, value, self.k, arg_name, like.shape[1:])
        ids = model.check_integers(ids, self.k, f"`{arg_name}`").to(like.device)
        with torch.no_grad():
            return model.layers[self.start](ids)


def _integers(model: ConvertedModel, value: Any, k: int, arg_name: str,
              dim: tuple[int, ...] | None) -> Tensor:
    """Token ids ``(n, *input_dim[k])`` from a tensor or array of integers (one sample may
    omit the batch axis); float values are refused, not rounded."""
    tensor = value if isinstance(value, Tensor) else None
    if tensor is None:
        try:
            tensor = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"`{arg_name}` must be a tensor or array of token ids, got "
                            f"{describe(value)}.") from err
    dim = model.input_dim[k] if dim is None else tuple(dim)
    if tuple(tensor.shape) == dim:
        tensor = tensor.unsqueeze(0)
    if tuple(tensor.shape[1:]) != dim:
        raise ValueError(f"`{arg_name}` has shape {tuple(tensor.shape)}, expected "
                         f"(n, {', '.join(map(str, dim))}): token ids.")
    return model.check_integers(tensor.detach(), k, f"`{arg_name}`").long()


def _extra_inputs(model: ConvertedModel, extra_args: Any, n_data: int) -> dict[int, Tensor]:
    """The non-explained inputs ``(n_data, *dim)`` from ``extra_args`` (a dict keyed by
    input name, or a tuple in the order of the inputs), each filled with its default
    where left out; one sample broadcasts to all."""
    extra = [k for k in range(len(model.input_nodes)) if k not in model.explained_inputs]
    names = {model.layer_names[model.input_nodes[k]]: k for k in extra}
    if extra_args is None:
        given: dict[int, Any] = {}
    elif isinstance(extra_args, Mapping):
        unknown = sorted(str(name) for name in extra_args if name not in names)
        if unknown:
            raise ValueError(f"`extra_args` names {unknown}, which are no non-explained "
                             f"inputs of the model; these are {list(names)}.")
        given = {names[name]: value for name, value in extra_args.items()}
    elif isinstance(extra_args, (tuple, list)):
        if len(extra_args) > len(extra):
            raise ValueError(f"`extra_args` holds {len(extra_args)} values, but the model has "
                             f"{len(extra)} non-explained inputs {list(names)}.")
        given = dict(zip(extra, extra_args))
    else:
        raise TypeError(f"`extra_args` must be a dict keyed by input name {list(names)} or a "
                        f"tuple in that order, got {describe(extra_args)}.")
    out = {}
    for name, k in names.items():
        layer, dim = model.layers[model.input_nodes[k]], model.input_dim[k]
        what = f"`extra_args['{name}']`"
        if k not in given:
            if layer.default is None:
                raise ValueError(f"{what} is required (the model input '{name}' has no default).")
            out[k] = torch.full((n_data, *dim), layer.default,
                                dtype=layer.value_dtype(model.dtype))
            continue
        value = given[k]
        value = value.detach() if isinstance(value, Tensor) else torch.as_tensor(value)
        if tuple(value.shape) == dim:
            value = value.unsqueeze(0).expand(n_data, *dim)
        if tuple(value.shape) != (n_data, *dim):
            raise ValueError(f"{what} has shape {tuple(value.shape)}, expected "
                             f"({n_data}, {', '.join(map(str, dim))}): one row per data sample.")
        out[k] = model.check_integers(value, k, what).to(layer.value_dtype(model.dtype))
    return out


def per_token(values: Tensor, how: str) -> Tensor:
    """Values ``(n, tokens, D, n_targets)`` of an embedding output as one value per token
    ``(n, tokens, n_targets)``: their sum (``"sum"``) or 2-norm (``"norm"``) over ``D``."""
    return values.sum(-2) if how == "sum" else torch.linalg.vector_norm(values, dim=-2)
