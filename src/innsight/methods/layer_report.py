"""The per-layer report of a rule-based method (``keep_layers=True``; LRP, DeepLift).

During the reverse walk each layer receives an upstream value at its output
and passes values to its inputs. :class:`LayerRecords` keeps, per layer,
output node and sample, the totals of both, as the method counts them
(relevance for LRP, contributions ``multiplier * (x - x_ref)`` for DeepLift):
what comes in, what goes out, and their difference, which biases and
stabilisers absorbed (zero for a conserving rule). Nothing is recorded
unless asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
from torch import Tensor

from innsight._validation import describe, is_int


def _total(values: Tensor) -> Tensor:
    """``(n_targets, rows, *dim) -> (n_targets, rows)``."""
    return values.flatten(2).sum(2)


class LayerRecords:
    """Totals per layer of what it received (``in``) and passed on (``out``), each
    ``(n_targets, n_data)``, for the layers of ``model`` that the walk went through;
    ``rule_of(i)`` names the rule layer ``i`` ran."""

    def __init__(self, model: Any, n_targets: int, n_data: int,
                 rule_of: Callable[[int], str]) -> None:
        self.names = list(model.layer_names)
        self.types = [layer.type_name for layer in model.layers]
        self.rule_of = rule_of
        self.n_targets, self.n_data = n_targets, n_data
        self.totals: dict[int, tuple[Tensor, Tensor]] = {}

    def recorder(self, model: Any, finish: Callable[[int, Any], Tensor],
                 sample: Tensor) -> Callable[[int, Any, Sequence[Any]], None]:
        """The ``record`` callback of one chunk's walk: its rows belong to ``sample``;
        ``finish(node, upstream)`` turns an upstream into values ``(n_targets, rows, *dim)``."""

        def record(i: int, upstream: Any, backs: Sequence[Any]) -> None:
            came = _total(finish(i, upstream))
            went = sum((_total(finish(j, back)) for j, back in zip(model.input_layers[i], backs)
                        if back is not None), came.new_zeros(came.shape))
            if i not in self.totals:
                zeros = came.new_zeros(self.n_targets, self.n_data)
                self.totals[i] = (zeros, zeros.clone())
            self.totals[i][0].index_add_(1, sample, came)
            self.totals[i][1].index_add_(1, sample, went)

        return record

    def scale(self, factor: float) -> None:
        """Multiply every total by ``factor`` (the mean over a sample's copies)."""
        for came, went in self.totals.values():
            came.mul_(factor)
            went.mul_(factor)

    def frame(self, output_labels: Sequence[Sequence[str]]) -> pd.DataFrame:
        """One row per layer, output node and sample, deepest layer (the output) first:
        ``layer_index`` (topological order), ``layer``, ``type``, ``rule``,
        ``output_node``, ``data``, ``value_in``, ``value_out``, ``absorbed``
        (``value_in - value_out``)."""
        labels = [label for layer in output_labels for label in layer]
        parts = []
        for i in sorted(self.totals, reverse=True):
            came, went = (t.detach().cpu().double().numpy() for t in self.totals[i])
            for t, label in enumerate(labels):
                parts.append(pd.DataFrame({
                    "layer_index": i, "layer": self.names[i], "type": self.types[i],
                    "rule": self.rule_of(i), "output_node": label,
                    "data": range(self.n_data), "value_in": came[t], "value_out": went[t],
                }))
        frame = pd.concat(parts, ignore_index=True)
        frame["absorbed"] = frame["value_in"] - frame["value_out"]
        return frame


def plot_report(frame: pd.DataFrame, data_idx: Any, value_name: str) -> Any:
    """Totals in and out per layer index summed over the samples ``data_idx`` (a list of
    ints or ``"all"``), one facet per output node (plotnine)."""
    import plotnine as p9

    if isinstance(data_idx, str) and data_idx == "all":
        chosen = frame
    else:
        ids = [data_idx] if is_int(data_idx) else data_idx
        if not isinstance(ids, (list, tuple)) or not ids or not all(is_int(i) for i in ids):
            raise TypeError(f"`data_idx` must be an int, a list of ints or 'all', got "
                            f"{describe(data_idx)}.")
        n_data = frame["data"].max() + 1
        bad = [i for i in ids if not 0 <= i < n_data]
        if bad:
            raise ValueError(f"`data_idx` {bad} out of range: the report has {n_data} samples "
                             f"(valid: 0..{n_data - 1}).")
        chosen = frame[frame["data"].isin(ids)]
    sums = chosen.groupby(["layer_index", "output_node"], as_index=False, sort=False)[
        ["value_in", "value_out"]].sum()
    long = sums.melt(id_vars=["layer_index", "output_node"], var_name="total",
                     value_name="value")
    long["total"] = long["total"].map({"value_in": "in", "value_out": "out"})
    return (p9.ggplot(long, p9.aes("layer_index", "value", colour="total"))
            + p9.geom_line() + p9.geom_point(size=1)
            + p9.facet_wrap("output_node")
            + p9.labs(x="layer (topological order: input left, output right)",
                      y=f"total {value_name}", colour="")
            + p9.theme_bw())
