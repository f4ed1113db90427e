"""The long data frame of a result: one row per sample, input feature and output node."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import Tensor

if TYPE_CHECKING:
    from innsight.methods.result import Result

COLUMNS = ["data", "model_input", "model_output", "feature", "feature_2", "channel",
           "output_node", "value", "pred", "decomp_sum", "decomp_goal", "input_dimension"]


def as_numpy(value: Tensor | None, shape: tuple[int, ...]) -> np.ndarray:
    """A tensor as float64 numpy, or NaNs of ``shape`` where there is none."""
    if value is None:
        return np.full(shape, np.nan)
    return value.detach().cpu().to(torch.float64).numpy()


def _axis_columns(rank: int) -> list[str]:
    """Which column labels each sample axis: tabular ``feature``; else channel first."""
    if rank == 1:
        return ["feature"]
    return ["channel", "feature", "feature_2", "feature_3"][:rank]


def result_frame(result: Result) -> pd.DataFrame:
    """One row per (sample, input layer, feature position, output node)."""
    frames = []
    for o, layer in enumerate(result.values):
        if layer is None:
            continue
        labels = np.asarray(result.output_labels[o], dtype=object)
        n_data, n_sel = result.preds[o].shape
        pred = as_numpy(result.preds[o], (n_data, n_sel))
        goal = as_numpy(None if result.decomp_goal is None else result.decomp_goal[o], (n_data, n_sel))
        dsum = as_numpy(result.decomp_sum[o], (n_data, n_sel))
        for k, values in enumerate(layer):
            array = as_numpy(values, tuple(values.shape))
            index = np.indices(array.shape).reshape(array.ndim, -1)
            sample, node = index[0], index[-1]
            columns = {
                "data": sample,
                "model_input": k,
                "model_output": o,
                "output_node": (labels[node] if result.sample_nodes is None else
                                np.asarray(result.sample_nodes, dtype=object)[sample]),
                "value": array.ravel(),
                "pred": pred[sample, node],
                "decomp_sum": dsum[sample, node],
                "decomp_goal": goal[sample, node],
                "input_dimension": array.ndim - 2,
            }
            names = result.input_names[k]
            for axis, column in enumerate(_axis_columns(array.ndim - 2)):
                columns[column] = np.asarray(names[axis], dtype=object)[index[axis + 1]]
            frames.append(pd.DataFrame(columns))
    frame = pd.concat(frames, ignore_index=True)
    for column in ("feature_2", "channel"):
        if column not in frame:
            frame[column] = None
    extra = [c for c in frame if c not in COLUMNS]  # feature_3 of volumes
    return frame[COLUMNS + extra]
