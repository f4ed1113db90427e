"""What a run's shards hold, and the Parquet columns that hold it.

A shard is a Parquet file with one row per sample: ``sample_id``, ``label`` (when
the source has labels) and, per output layer ``o`` with selected nodes and input
layer ``k``, ``values_o{o}_i{k}`` (the sample's values, flattened from
``(*input_dim, n_selected)`` in the layout of the data) and per output layer
``pred_o{o}``, ``goal_o{o}``, ``sum_o{o}`` (``n_selected`` each). A
:class:`Layout` records the shapes and names needed to read them back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from innsight.methods.data import to_user_layout
from innsight.methods.result import Result


@dataclass(frozen=True)
class Layout:
    """The shapes and names of a run's values (JSON-safe, stored in the manifest)."""

    method: str
    value_name: str
    channels_first: bool
    dtype: str  # "float32" or "float64"
    output_idx: list[list[int]]
    output_labels: list[list[str]]
    input_names: list[list[list[str]]]
    #: per output layer, per input layer: ``(*input_dim in the data's layout, n_selected)``;
    #: ``None`` for output layers without selected nodes
    shapes: list[list[list[int]] | None]
    has_goal: bool

    @classmethod
    def of(cls, result: Result) -> Layout:
        shapes = [None if layer is None else
                  [list(to_user_layout(v, result.channels_first, extra_axes=1).shape[1:])
                   for v in layer] for layer in result.values]
        first = next(layer for layer in result.values if layer is not None)[0]
        return cls(result.method, result.value_name, result.channels_first,
                   str(first.dtype).replace("torch.", ""), result.output_idx,
                   [list(map(str, labels)) for labels in result.output_labels],
                   [[list(map(str, axis)) for axis in names] for names in result.input_names],
                   shapes, result.decomp_goal is not None)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Layout:
        return cls(**state)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def blocks(self) -> list[tuple[int, int, tuple[int, ...]]]:
        """``(o, k, shape)`` of every values column."""
        return [(o, k, tuple(shape)) for o, layer in enumerate(self.shapes) if layer is not None
                for k, shape in enumerate(layer)]

    def outputs(self) -> list[int]:
        """The output layers with selected nodes."""
        return [o for o, layer in enumerate(self.shapes) if layer is not None]


def values_column(o: int, k: int) -> str:
    return f"values_o{o}_i{k}"


def fixed_list(array: np.ndarray) -> pa.FixedSizeListArray:
    """Rows of ``(n, *shape)`` as one fixed-size list column of ``prod(shape)`` entries."""
    flat = np.ascontiguousarray(array).reshape(len(array), -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1])


def column_array(column: pa.ChunkedArray | pa.Array, shape: tuple[int, ...]) -> np.ndarray:
    """A fixed-size list column back as ``(n, *shape)``."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(len(column), *shape).copy()  # writable, as torch wants


def result_table(result: Result, ids: np.ndarray, labels: np.ndarray | None) -> pa.Table:
    """The shard rows of one explained batch (see the module docs)."""
    columns: dict[str, Any] = {"sample_id": pa.array(np.asarray(ids, dtype=np.int64))}
    if labels is not None:
        columns["label"] = pa.array(labels)
    for o, layer in enumerate(result.values):
        if layer is None:
            continue
        for k, v in enumerate(layer):
            user = to_user_layout(v, result.channels_first, extra_axes=1)
            columns[values_column(o, k)] = fixed_list(user.detach().cpu().numpy())
        columns[f"pred_o{o}"] = fixed_list(result.preds[o].detach().cpu().numpy())
        columns[f"sum_o{o}"] = fixed_list(result.decomp_sum[o].detach().cpu().numpy())
        if result.decomp_goal is not None:
            columns[f"goal_o{o}"] = fixed_list(result.decomp_goal[o].detach().cpu().numpy())
    return pa.table(columns)
