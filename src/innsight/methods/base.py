"""``InterpretingMethod``: the shared arguments and set-up of every method.

A method is constructed with a converter and data, runs at once, and *is*
its :class:`~innsight.methods.result.Result`. Subclasses implement
:meth:`InterpretingMethod._explain`.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from innsight._validation import check_bool, describe, is_int, resolve_dtype
from innsight.converter import ConvertedModel, Converter
from innsight.methods.data import prepare_data, user_dim
from innsight.methods.engine import (
    ModelFn,
    Target,
    default_batch_size,
    evaluate,
    target_values,
)
from innsight.methods.outputs import flat_labels, select_outputs
from innsight.methods.result import Result


class OutputsAtData:
    """The explained outputs and the predictions at the data, each ``(n_data, n_targets)``.

    Computed by one pass over the data on first use, unless a method that runs the
    model over the data anyway (the rule-based ones) hands them over first.
    """

    def __init__(self, model: ConvertedModel, explained: list[int], data: list[Tensor],
                 targets: list[Target], batch_size: int) -> None:
        self._args = (model, explained, data, targets, batch_size)
        self._values: tuple[Tensor, Tensor] | None = None

    def provide(self, explained: Tensor, preds: Tensor) -> None:
        self._values = (explained, preds)

    def _get(self) -> tuple[Tensor, Tensor]:
        if self._values is None:
            model, explained, data, targets, batch_size = self._args
            nodes = explained + model.output_nodes
            at_data = evaluate(lambda xs: model.run_nodes(xs, nodes), data, batch_size)
            self._values = (target_values(at_data[:len(explained)], targets),
                            target_values(at_data[len(explained):], targets))
        return self._values

    @property
    def explained(self) -> Tensor:
        return self._get()[0]

    @property
    def preds(self) -> Tensor:
        return self._get()[1]


@dataclass(frozen=True)
class Setup:
    """What a method's ``_explain`` works with, all checked and on one device and dtype."""

    model: ConvertedModel  # on the method's dtype and device
    explained: list[int]  # per output layer, the layer explained (see explained_nodes)
    model_fn: ModelFn  # inputs -> the explained outputs (pre-activation if ignore_last_act)
    data: list[Tensor]  # per input layer, (n_data, *dim), channels first
    targets: list[Target]
    at_data: OutputsAtData  # the explained outputs and predictions at the data
    batch_size: int
    generator: torch.Generator
    verbose: bool
    channels_first: bool

    @property
    def f_data(self) -> Tensor:
        """The explained outputs at the data, ``(n_data, n_targets)``."""
        return self.at_data.explained


def is_interactive() -> bool:
    """Whether a person watches: an interactive interpreter or a terminal."""
    return hasattr(sys, "ps1") or bool(getattr(sys.stderr, "isatty", lambda: False)())


def check_positive_int(value: Any, arg_name: str) -> int:
    if not is_int(value) or value < 1:
        raise ValueError(f"`{arg_name}` must be a positive int, got {describe(value)}.")
    return int(value)


def make_generator(seed: Any, device: torch.device) -> torch.Generator:
    """A private random generator: seeded when ``seed`` is an int, else from entropy."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    elif is_int(seed):
        generator.manual_seed(int(seed))
    else:
        raise TypeError(f"`seed` must be an int or None, got {describe(seed)}.")
    return generator


def resolve_device(device: Any, default: torch.device) -> torch.device:
    if device is None:
        return default
    try:
        resolved = torch.device(device)
        torch.empty(0, device=resolved)  # fails where the device is not usable
    except (RuntimeError, TypeError, AssertionError) as err:
        raise ValueError(
            f"`device` must name a usable torch device such as 'cpu' or 'cuda', got "
            f"{device!r}: {err}"
        ) from err
    return resolved


#: Every method class by its ``method_name``; a subclass that sets ``method_name``
#: registers itself (and joins the method conformance suite).
METHODS: dict[str, type[InterpretingMethod]] = {}


class InterpretingMethod(Result):
    """Base of every method; see the shared parameters below.

    Parameters
    ----------
    converter : Converter
        The converted model.
    data
        A numpy array, torch tensor or pandas DataFrame ``(n_data, *input_dim)``
        (a single sample may omit the batch axis), or a list of them, one per
        input layer. DataFrame column names become the input names.
    channels_first : bool
        Whether ``data`` is channels first (torch) or channels last (Keras);
        results come back in the same layout.
    output_idx : int, list of int, or list of such per output layer
        Output nodes (flat, 0-based) to explain; default the first 10 of the
        first output layer.
    output_label
        Output nodes chosen by label instead, in the same forms.
    ignore_last_act : bool
        Explain the input of a final activation (e.g. the logits before softmax).
    verbose : bool
        Show a progress bar; default: when running interactively.
    dtype : {"float", "double"}
        Precision of the computation.
    batch_size : int
        Most rows (samples, noisy copies and path points together) sent through
        the model at once; default from a memory budget.
    seed : int
        Makes stochastic methods reproducible.
    device : str or torch.device
        Where to compute, e.g. ``"cuda"``; default the model's device.
    """

    method_name = "InterpretingMethod"
    #: What the values are called on plot axes and legends ("gradient", "relevance", ...).
    value_name = "attribution"
    #: Whether ``data=None`` is allowed (a global method); its predictions are then NaN.
    data_optional = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "method_name" in vars(cls):  # shared bases (no name of their own) are no methods
            METHODS[cls.method_name] = cls

    def __init__(
        self,
        converter: Converter,
        data: Any,
        *,
        channels_first: bool = True,
        output_idx: Any = None,
        output_label: Any = None,
        ignore_last_act: bool = True,
        verbose: bool | None = None,
        dtype: str = "float",
        batch_size: int | None = None,
        seed: int | None = None,
        device: Any = None,
        **own_args: Any,
    ) -> None:
        check_bool(channels_first, "channels_first")
        check_bool(ignore_last_act, "ignore_last_act")
        verbose = is_interactive() if verbose is None else check_bool(verbose, "verbose")
        torch_dtype = resolve_dtype(dtype)
        model = self._graph(converter, data, channels_first, torch_dtype, device)
        torch_device = model.device

        without_data = data is None and self.data_optional
        if without_data:
            data = [torch.zeros(1, *user_dim(dim, channels_first))
                    for dim in model.input_dim]  # shapes only
        tensors, columns = prepare_data(data, model.input_dim, channels_first, torch_dtype, torch_device)
        selected = select_outputs(output_idx, output_label, model.output_dim, model.output_names)
        targets = [Target(o, j) for o, indices in enumerate(selected) for j in indices]
        if batch_size is None:
            batch_size = default_batch_size(
                model.input_dim, len(targets), torch_dtype.itemsize, torch_device
            )
        batch_size = check_positive_int(batch_size, "batch_size")
        explained = model.explained_nodes(ignore_last_act)
        setup = Setup(
            model=model,
            explained=explained,
            model_fn=lambda xs: model.run_nodes(xs, explained),
            data=tensors,
            targets=targets,
            at_data=OutputsAtData(model, explained, tensors, targets, batch_size),
            batch_size=batch_size,
            generator=make_generator(seed, torch_device),
            verbose=verbose,
            channels_first=channels_first,
        )
        self.converter = converter
        values, goal = self._explain(setup, **own_args)
        if without_data:  # no data, no predictions: nothing is run for them
            preds = tensors[0].new_full((1, len(targets)), float("nan"))
        else:
            preds = setup.at_data.preds
        input_names = [
            [cols] if cols is not None and len(names) == 1 else names
            for cols, names in zip(columns, model.input_names)
        ]
        super().__init__(
            method=self.method_name,
            value_name=self.value_name,
            args=own_args,
            values=split_by_output(values, selected),
            output_idx=selected,
            output_labels=[
                [flat_labels(names)[j] for j in indices]
                for names, indices in zip(model.output_names, selected)
            ],
            input_names=input_names,
            channels_first=channels_first,
            preds=split_targets(preds, selected),
            decomp_goal=None if goal is None else split_targets(goal, selected),
            data=None if without_data else tensors,
        )

    def _graph(self, converter: Any, data: Any, channels_first: bool, dtype: torch.dtype,
               device: Any) -> ConvertedModel:
        """The converted model on ``dtype`` and ``device`` (a copy where they differ)."""
        if not isinstance(converter, Converter):
            raise TypeError(
                f"`converter` must be an innsight Converter (from ins.convert(model, ...)), "
                f"got {describe(converter)}."
            )
        model = converter.model
        torch_device = resolve_device(device, model.device)
        if model.dtype != dtype or model.device != torch_device:
            model = copy.deepcopy(model).to(dtype=dtype, device=torch_device)
        return model

    def _explain(self, setup: Setup, **own_args: Any) -> tuple[list[Tensor], Tensor | None]:
        """Values per input layer ``(n_data, *dim, n_targets)`` and the decomposition
        goal ``(n_data, n_targets)`` (or ``None``)."""
        raise NotImplementedError


def split_targets(tensor: Tensor, selected: list[list[int]]) -> list[Tensor | None]:
    """Split the last axis (the targets) into one block per output layer; ``None``
    for output layers without selected nodes."""
    blocks, start = [], 0
    for indices in selected:
        blocks.append(tensor[..., start:start + len(indices)] if indices else None)
        start += len(indices)
    return blocks


def split_by_output(values: list[Tensor], selected: list[list[int]]) -> list[list[Tensor] | None]:
    """Per input layer ``(n, *dim, n_targets)`` into ``[output layer][input layer]`` blocks."""
    per_input = [split_targets(v, selected) for v in values]
    return [
        [blocks[o] for blocks in per_input] if indices else None
        for o, indices in enumerate(selected)
    ]
