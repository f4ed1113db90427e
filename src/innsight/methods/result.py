"""The result every method returns: values per output and input layer, with predictions."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from innsight._validation import describe
from innsight.converter.names import Names, default_names
from innsight.methods.data import to_user_layout
from innsight.methods.dataframe import result_frame
from innsight.methods.layer_grid import Grid
from innsight.methods.layer_report import LayerRecords

RESULT_TYPES = ("array", "data.frame", "torch_tensor")


@dataclass
class Result:
    """Explanations of ``n_data`` samples for the selected output nodes.

    ``values[o][k]`` is ``(n_data, *input_dim[k], n_selected[o])`` (channels
    first) for output layer ``o`` and input layer ``k``; ``None`` for output
    layers without selected nodes. ``preds[o]`` holds the model's outputs and
    ``decomp_goal[o]`` (or ``None``) what the values of a sample should sum to,
    both ``(n_data, n_selected[o])``. ``data[k]`` is the explained input
    ``(n_data, *input_dim[k])`` (channels first) that ``plot(show_input=True)``
    draws under the values; ``None`` for a result computed without data.
    ``sample_nodes`` holds, for a result of per-sample targets (``targets=``), the label
    of the output node each sample explains (its one column); ``None`` otherwise.
    ``attributed_to`` names the layer whose activations the values are attributed
    to (``None``: the inputs; ``data`` then holds the activations), ``token_grid``
    the patch grid of its tokens, on which plots draw them (see
    :class:`~innsight.methods.layer_grid.Grid`), and ``layer_records`` what each
    layer passed on where the method kept it (``keep_layers=True``; see
    :meth:`layer_report`).

    Two results are equal (``==``) when they are of the same class and agree in
    every field: method, arguments, selected outputs, labels, names, layout, and
    tensors of equal shape, dtype and values (exactly; NaN equals NaN, so that a
    result without data equals itself). The converter a method ran on is not
    compared. Results are mutable and compared by value, so they are unhashable.
    """

    method: str
    value_name: str  # what the values are called: "gradient", "relevance", ...
    args: dict[str, Any]
    values: list[list[Tensor] | None]
    output_idx: list[list[int]]
    output_labels: list[list[str]]
    input_names: list[Names]
    channels_first: bool
    preds: list[Tensor | None]
    decomp_goal: list[Tensor | None] | None = None
    data: list[Tensor] | None = None
    sample_nodes: list[str] | None = None
    attributed_to: str | None = None
    token_grid: Grid | None = None
    layer_records: LayerRecords | None = None
    decomp_sum: list[Tensor | None] = field(init=False)

    def __post_init__(self) -> None:
        self.decomp_sum = [
            None if layer is None else sum(v.flatten(1, -2).sum(1) for v in layer)
            for layer in self.values
        ]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Result):
            return NotImplemented
        return type(self) is type(other) and all(
            _same(getattr(self, f.name), getattr(other, f.name)) for f in fields(self))

    __hash__ = None  # type: ignore[assignment]  # equal by value, and mutable

    def get_result(self, type: str = "array") -> Any:
        """The values as ``"array"`` (numpy), ``"torch_tensor"`` or ``"data.frame"`` (pandas).

        Arrays are ``(n_data, *input_dim, n_selected)`` in the layout of the data
        (channels last when it was given so); for a model with several input or
        output layers, a list over output layers (``None`` where nothing was
        selected) of lists over input layers.
        """
        if type not in RESULT_TYPES:
            raise ValueError(f"`type` must be one of {list(RESULT_TYPES)}, got {type!r}.")
        if type == "data.frame":
            return result_frame(self)
        convert: Callable[[Tensor], Any] = (
            (lambda t: t.detach().cpu().numpy()) if type == "array" else (lambda t: t.detach())
        )
        nested = [
            None if layer is None
            else [convert(to_user_layout(v, self.channels_first, extra_axes=1)) for v in layer]
            for layer in self.values
        ]
        if len(nested) == 1 and len(nested[0]) == 1:
            return nested[0][0]
        return nested

    def plot(self, data_idx: int = 0, output_idx: Any = None, output_label: Any = None,
             aggr_channels: Any = "sum", as_plotly: bool = False, same_scale: bool = False,
             show_preds: bool = True, show_input: bool = False, normalize: bool = False,
             top_k: int | None = None, layout: str = "facets",
             sequence_axis: int | None = None) -> Any:
        """Plot one sample's explanation per selected output node (see :func:`innsight.plotting.plot`)."""
        from innsight import plotting  # on first use: import innsight loads no plotting library

        return plotting.plot(self.as_maps(), data_idx=data_idx, output_idx=output_idx,
                             output_label=output_label, aggr_channels=aggr_channels,
                             as_plotly=as_plotly, same_scale=same_scale, show_preds=show_preds,
                             show_input=show_input, normalize=normalize, top_k=top_k,
                             layout=layout, sequence_axis=sequence_axis)

    def plot_global(self, output_idx: Any = None, output_label: Any = None,
                    data_idx: Any = "all", aggr_channels: Any = "sum",
                    preprocess_fun: Callable[[Any], Any] = abs, as_plotly: bool = False,
                    normalize: bool = False, top_k: int | None = None,
                    ref_data_idx: int | None = None) -> Any:
        """Plot the explanations summarised over samples (see :mod:`innsight.plotting`)."""
        from innsight import plotting  # on first use: import innsight loads no plotting library

        return plotting.plot_global(self.as_maps(), output_idx=output_idx, output_label=output_label,
                                    data_idx=data_idx, aggr_channels=aggr_channels,
                                    preprocess_fun=preprocess_fun, as_plotly=as_plotly,
                                    normalize=normalize, top_k=top_k,
                                    ref_data_idx=ref_data_idx)

    def boxplot(self, *args: Any, **kwargs: Any) -> Any:
        """Alias of :meth:`plot_global`; warns for image inputs (drawn as mean heatmaps)."""
        if any(v.ndim == 5 for layer in self.values if layer is not None for v in layer):
            warnings.warn("boxplot() of image inputs draws mean heatmaps, not box plots; "
                          "call plot_global() to say so.", UserWarning, stacklevel=2)
        return self.plot_global(*args, **kwargs)

    def as_maps(self) -> Result:
        """This result with token values of an attributed layer (``token_grid``) as maps
        ``(n_data, features, *grid, n_selected)`` on the patch grid, extra tokens (the
        class token) dropped; the result itself where there is no token grid."""
        grid = self.token_grid
        if grid is None:
            return self
        values = [None if layer is None else [grid.to_map(v) for v in layer]
                  for layer in self.values]
        dim = next(layer for layer in values if layer is not None)[0].shape[1:-1]
        maps = Result(
            method=self.method, value_name=self.value_name, args=self.args, values=values,
            output_idx=self.output_idx, output_labels=self.output_labels,
            input_names=[default_names(tuple(dim))], channels_first=self.channels_first,
            preds=self.preds, decomp_goal=self.decomp_goal,
            data=None if self.data is None else [grid.to_map(x) for x in self.data],
            sample_nodes=self.sample_nodes, attributed_to=self.attributed_to)
        maps.decomp_sum = self.decomp_sum  # the extra tokens' values count too
        return maps

    def layer_report(self) -> pd.DataFrame:
        """Per layer, output node and sample: the rule that ran, the total value (relevance,
        contribution) coming in and going out, and what the layer absorbed (biases,
        stabilisers); from a run with ``keep_layers=True`` (LRP, DeepLift, DeepSHAP). See
        :mod:`~innsight.methods.layer_report`."""
        if self.layer_records is None:
            raise ValueError(f"This {self.method} result kept no per-layer records; rerun it "
                             "with keep_layers=True (LRP, DeepLift and DeepSHAP keep them).")
        return self.layer_records.frame(self.output_labels)

    def plot_layer_report(self, data_idx: Any = "all") -> Any:
        """A plotnine plot of :meth:`layer_report`: total value in and out per layer by
        depth, one facet per output node, summed over ``data_idx`` (ints or ``"all"``)."""
        from innsight.methods.layer_report import plot_report

        return plot_report(self.layer_report(), data_idx, self.value_name)

    def __str__(self) -> str:
        n_data = next(layer for layer in self.values if layer is not None)[0].shape[0]
        args = ", ".join(
            f"{k}={v!r}" if v is None or isinstance(v, (bool, int, float, str)) else f"{k}=<{describe(v)}>"
            for k, v in self.args.items()
        )
        lines = [f"{self.method} result ({args})" if args else f"{self.method} result",
                 f"  samples: {n_data}"]
        if self.attributed_to is not None:
            lines.append(f"  attributed to layer {self.attributed_to!r} (values shaped like its "
                         "output)")
        for o, layer in enumerate(self.values):
            if layer is None:
                continue
            labels = self.output_labels[o]
            shown = ", ".join(labels[:6]) + (", ..." if len(labels) > 6 else "")
            lines.append(f"  output layer {o}: {len(labels)} node(s) [{shown}]")
            if self.sample_nodes is not None:
                nodes = ", ".join(self.sample_nodes[:6]) + (", ..." if len(self.sample_nodes) > 6 else "")
                lines.append(f"    each sample's node: [{nodes}]")
            for k, v in enumerate(layer):
                shape = tuple(to_user_layout(v, self.channels_first, extra_axes=1).shape)
                lines.append(f"    input layer {k}: values of shape {shape}")
            if self.decomp_goal is not None and self.decomp_goal[o] is not None:
                gap = (self.decomp_sum[o] - self.decomp_goal[o]).abs().mean().item()
                lines.append(f"    mean |sum of values - decomposition goal|: {gap:.4g}")
        return "\n".join(lines)

    __repr__ = __str__


def _same(a: Any, b: Any) -> bool:
    """Value equality of fields and arguments that never raises: tensors and arrays
    by shape, dtype and exact values (NaN equal to NaN), containers item by item,
    anything else by ``==`` (unequal where that gives no single truth value)."""
    if a is b:
        return True
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return (isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and _same_values(a, b.to(a.device)))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
                and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, (pd.DataFrame, pd.Series)):
        return type(a) is type(b) and a.equals(b)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[key], b[key]) for key in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    try:
        return bool(a == b)
    except (TypeError, ValueError, RuntimeError):  # no single truth value
        return False


def _same_values(a: Tensor, b: Tensor) -> bool:
    """Exact equality of two tensors of one shape, dtype and device; NaN equals NaN."""
    if torch.equal(a, b):
        return True
    return (a.is_floating_point() or a.is_complex()) and bool(
        ((a == b) | (a.isnan() & b.isnan())).all())
