"""Helpers for running a user's ``torch.nn.Module`` as it is: eval mode for the
duration, and its outputs as a list. Used by the torch front-end and by the
methods that explain raw modules (the direct ``torch_*`` methods, LIME and SHAP)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn


def any_training(model: nn.Module) -> bool:
    """Whether the module or any of its submodules is in training mode."""
    return any(module.training for module in model.modules())


#: Guards :data:`_EVAL_USERS`.
_EVAL_LOCK = threading.Lock()
#: Per module in :func:`eval_mode` (by id): how many runs are inside, and the flags the
#: first one found, to be restored when the last one leaves.
_EVAL_USERS: dict[int, tuple[int, dict[nn.Module, bool]]] = {}


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the duration, then the user's own train/eval flags back. Runs that
    overlap (threads, or nested calls) share one switch: the first saves the flags, the
    last restores them, so none sees train mode and none leaves the module in eval mode."""
    key = id(model)
    with _EVAL_LOCK:
        users, flags = _EVAL_USERS.get(key, (0, {}))
        if users == 0:
            flags = {module: module.training for module in model.modules()}
            model.eval()
        _EVAL_USERS[key] = (users + 1, flags)
    try:
        yield
    finally:
        with _EVAL_LOCK:
            users, flags = _EVAL_USERS.pop(key)
            if users > 1:
                _EVAL_USERS[key] = (users - 1, flags)
            else:
                for module, flag in flags.items():
                    module.training = flag


@contextmanager
def kept(tensors: Iterable[Tensor]) -> Iterator[list[Tensor]]:
    """The values of ``tensors`` (parameters, buffers of a user's module) back after the
    duration, where something updated them in place (a forward's ``self.steps += 1``).
    Yields a list that holds, after the duration, the tensors that were updated."""
    saved = [(tensor, tensor._version, tensor.detach().clone()) for tensor in tensors]
    updated: list[Tensor] = []
    try:
        yield updated
    finally:
        with torch.no_grad():
            for tensor, version, values in saved:
                if tensor._version != version:
                    tensor.copy_(values)
                    updated.append(tensor)


@contextmanager
def in_float64(model: nn.Module) -> Iterator[None]:
    """The module's floating-point parameters and buffers in float64 for the duration,
    then their own values back (the same tensor objects throughout, so that a traced
    graph holding them holds the model's own). For the converter, which traces a model
    for a float64 conversion and re-runs a float32 original in float64 in its dry run;
    the model must not be used by another thread meanwhile."""
    saved: list[tuple[Tensor, Tensor]] = []  # (the model's tensor, its own data)
    try:
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point() and tensor.dtype != torch.float64:
                saved.append((tensor, tensor.data))
                tensor.data = tensor.data.double()
        yield
    finally:
        for tensor, data in reversed(saved):
            tensor.data = data


@contextmanager
def computing_in(model: nn.Module, dtype: torch.dtype) -> Iterator[None]:
    """For ``dtype`` float64: the module in float64 (:func:`in_float64`) and float64 as
    torch's default dtype for the duration, so that whatever its forward computes from
    its parameters and buffers or creates (``torch.arange(n) * 0.1``, ``torch.tensor``)
    is float64 from the start; for other dtypes, nothing changes. The default dtype is
    global: no other thread may create tensors meanwhile."""
    if dtype != torch.float64:
        yield
        return
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with in_float64(model):
            yield
    finally:
        torch.set_default_dtype(default)


def output_list(output: Any, what: str) -> list[Tensor]:
    """A tensor, a tuple/list of tensors or a dict of tensors (its values in order) as a
    list of tensors; a TypeError naming ``what`` for anything else."""
    if isinstance(output, Mapping):
        output = list(output.values())
    outputs = list(output) if isinstance(output, (tuple, list)) else [output]
    if not outputs or not all(isinstance(o, Tensor) for o in outputs):
        raise TypeError(
            f"{what} must be a tensor, or a tuple, list or dict of tensors, got "
            f"{type(output).__name__}."
        )
    return outputs
