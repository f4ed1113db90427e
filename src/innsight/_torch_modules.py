"""Helpers for running a user's ``torch.nn.Module`` as it is: eval mode for the
duration, and its outputs as a list. Used by the torch front-end and by the
methods that explain raw modules (the direct ``torch_*`` methods, LIME and SHAP)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn


def any_training(model: nn.Module) -> bool:
    """Whether the module or any of its submodules is in training mode."""
    return any(module.training for module in model.modules())


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the duration, then the user's own train/eval flags back."""
    flags = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags.items():
            module.training = flag


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
