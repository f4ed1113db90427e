"""``DatasetResult``: the results folder of :func:`innsight.explain_dataset`, read lazily.

Nothing is loaded when it is opened but the manifest: ``get_result`` reads the
shards that hold the asked samples, the summaries come from ``summary.npz``
(written when a run completes) or are added up shard by shard, and the global
plots draw the summaries with :mod:`innsight.plotting`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from innsight._validation import describe, is_int
from innsight.methods.result import RESULT_TYPES, Result


def _require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError as error:
        raise ImportError("Explaining data sets to Parquet needs pyarrow: "
                          "pip install innsight[datasets]") from error


class DatasetResult:
    """The explanations of a whole data set, in ``out/`` (see :func:`innsight.explain_dataset`).

    Parameters
    ----------
    out : str or path
        A results folder written by ``explain_dataset``.

    Attributes
    ----------
    out : Path
        The folder.
    method : str
        The method's name.
    n_samples : int
        Samples explained so far (all of them when ``complete``).
    complete : bool
        Whether the run finished.
    """

    def __init__(self, out: str | os.PathLike) -> None:
        _require_pyarrow()
        from innsight.datasets.layout import Layout
        from innsight.datasets.shards import Manifest

        if not isinstance(out, (str, os.PathLike)):
            raise TypeError(f"`out` must be a folder path, got {describe(out)}.")
        self.out = Path(out)
        manifest = Manifest.read(self.out) if self.out.is_dir() else None
        if manifest is None:
            raise ValueError(f"`out` folder {str(self.out)!r} holds no results of "
                             "explain_dataset (no manifest.json).")
        self.manifest = manifest
        self.layout = Layout.from_dict(manifest.layout)
        self._summary: Any = None

    @property
    def method(self) -> str:
        return self.layout.method

    @property
    def n_samples(self) -> int:
        return self.manifest.n_rows()

    @property
    def complete(self) -> bool:
        return self.manifest.complete

    def __len__(self) -> int:
        return self.n_samples

    # ---- samples ------------------------------------------------------------------------

    def result(self, data_idx: Any) -> Result:
        """The samples ``data_idx`` (sample ids: an int, a list of ints or a ``range``/
        slice) as an in-memory :class:`~innsight.Result`, in the order asked, e.g. to
        ``plot()`` them; its ``data`` is ``None`` (the inputs stay in the source)."""
        import pyarrow as pa

        from innsight.datasets.layout import column_array, values_column
        from innsight.datasets.shards import iter_shards

        ids = self._ids(data_idx)
        wanted = set(ids.tolist())
        chosen = {name: info for name, info in self.manifest.shards.items()
                  if np.any((ids >= info["first"]) & (ids <= info["last"]))}
        manifest = type(self.manifest)(**{**self.manifest.__dict__, "shards": chosen})
        tables = [t.filter(np.isin(t.column("sample_id").to_numpy(), ids))
                  for t in iter_shards(self.out, manifest)]
        table = pa.concat_tables(tables) if tables else None
        found = np.zeros(0, dtype=np.int64) if table is None else table.column("sample_id").to_numpy()
        missing = sorted(wanted - set(found.tolist()))
        if missing:
            raise ValueError(f"`data_idx` must name explained samples (ids 0..; {self.n_samples} "
                             f"explained so far), got ids without results: {missing[:10]}.")
        order = pa.array(np.argsort(found)[np.searchsorted(np.sort(found), ids)])
        table = table.take(order)
        layout = self.layout
        dtype = getattr(torch, layout.dtype)

        def tensor(column: str, shape: tuple[int, ...]) -> torch.Tensor:
            return torch.as_tensor(column_array(table.column(column), shape)).to(dtype)

        values = [None if layer is None else
                  [_channels_first(tensor(values_column(o, k), tuple(shape)), layout.channels_first)
                   for k, shape in enumerate(layer)] for o, layer in enumerate(layout.shapes)]
        n_sel = {o: len(layout.output_idx[o]) for o in layout.outputs()}
        preds = [tensor(f"pred_o{o}", (n_sel[o],)) if o in n_sel else None
                 for o in range(len(layout.shapes))]
        goal = None if not layout.has_goal else [
            tensor(f"goal_o{o}", (n_sel[o],)) if o in n_sel else None
            for o in range(len(layout.shapes))]
        return Result(method=layout.method, value_name=layout.value_name, args={},
                      values=values, output_idx=layout.output_idx,
                      output_labels=layout.output_labels, input_names=layout.input_names,
                      channels_first=layout.channels_first, preds=preds, decomp_goal=goal)

    def get_result(self, type: str = "array", data_idx: Any = None) -> Any:
        """The values of the samples ``data_idx`` (default: all; mind the memory) as
        ``"array"`` ``(n, *input_dim, n_selected)``, ``"torch_tensor"`` or a long
        ``"data.frame"`` (as :meth:`innsight.Result.get_result`), in the order asked;
        the frame's ``data`` column holds the sample ids."""
        if type not in RESULT_TYPES:
            raise ValueError(f"`type` must be one of {list(RESULT_TYPES)}, got {type!r}.")
        ids = self.sample_ids() if data_idx is None else self._ids(data_idx)
        values = self.result(ids).get_result(type)
        if type == "data.frame":
            values["data"] = ids[values["data"].to_numpy()]
        return values

    def sample_ids(self) -> np.ndarray:
        """The ids of the explained samples, sorted (reads one column of each shard)."""
        from innsight.datasets.shards import iter_shards

        parts = [t.column("sample_id").to_numpy() for t in
                 iter_shards(self.out, self.manifest, columns=["sample_id"])]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def _ids(self, data_idx: Any) -> np.ndarray:
        if isinstance(data_idx, slice):
            data_idx = range(*data_idx.indices(self.n_samples))
        items = [data_idx] if is_int(data_idx) else data_idx
        if (not isinstance(items, (list, tuple, range, np.ndarray)) or len(items) == 0
                or not all(is_int(i) for i in items)):
            raise TypeError("`data_idx` must be a sample id (int), a non-empty list, range or "
                            f"slice of them, or None, got {describe(data_idx)}.")
        return np.asarray(items, dtype=np.int64)

    # ---- summaries ----------------------------------------------------------------------

    @property
    def summary(self) -> Any:
        """The running sums (:class:`~innsight.datasets.summaries.Summary`): loaded from
        ``summary.npz`` of a complete run, else added up shard by shard."""
        from innsight.datasets.shards import SUMMARY, iter_shards
        from innsight.datasets.summaries import Summary

        if self._summary is None:
            path = self.out / SUMMARY
            if self.complete and path.exists():
                self._summary = Summary.load(path, self.layout)
            else:
                self._summary = Summary()
                for table in iter_shards(self.out, self.manifest):
                    self._summary.add(table, self.layout)
        return self._summary

    def summary_frame(self) -> pd.DataFrame:
        """One row per (output layer, input layer, feature position, output node): the
        mean ``|value|`` (``mean_abs``), ``mean`` and ``std`` over the samples and their
        number (``n``), with the columns of :meth:`innsight.Result.get_result` naming the
        position (``model_input``, ``model_output``, ``feature``, ``feature_2``,
        ``channel``, ``output_node``)."""
        summary = self.summary
        frames = []
        for stat, get in (("mean_abs", summary.mean_abs), ("mean", summary.mean),
                          ("std", summary.std)):
            frame = self._as_result({(o, k): get(o, k) for o, k, _ in self.layout.blocks()}
                                    ).get_result("data.frame")
            frames.append(frame.rename(columns={"value": stat}))
        keys = ["model_input", "model_output", "feature", "feature_2", "channel", "output_node"]
        frame = frames[0][[c for c in frames[0].columns if c in keys or c == "mean_abs"]]
        frame = frame.assign(mean=frames[1]["mean"].to_numpy(), std=frames[2]["std"].to_numpy(),
                             n=summary.count)
        return frame.reset_index(drop=True)

    def _as_result(self, arrays: dict[tuple[int, int], np.ndarray]) -> Result:
        """Per-feature statistics ``(*input_dim, n_selected)`` as a one-sample Result
        (no predictions), which the plots and data frames of :class:`Result` take."""
        layout = self.layout
        dtype = torch.float64
        values = [None if layer is None else
                  [_channels_first(torch.as_tensor(arrays[(o, k)], dtype=dtype)[None],
                                   layout.channels_first) for k in range(len(layer))]
                  for o, layer in enumerate(layout.shapes)]
        preds = [None if layer is None else torch.full((1, len(layout.output_idx[o])), torch.nan,
                                                       dtype=dtype)
                 for o, layer in enumerate(layout.shapes)]
        return Result(method=f"{layout.method}, mean |value| over {self.summary.count} samples",
                      value_name=layout.value_name, args={}, values=values,
                      output_idx=layout.output_idx, output_labels=layout.output_labels,
                      input_names=layout.input_names, channels_first=layout.channels_first,
                      preds=preds)

    def plot_global(self, output_idx: Any = None, output_label: Any = None,
                    aggr_channels: Any = "sum", as_plotly: bool = False,
                    normalize: bool = False, top_k: int | None = None) -> Any:
        """The mean ``|value|`` per feature and output node over the whole data set, from
        the summaries (one facet per output node): a mark per feature for tabular and
        signal inputs, the mean heatmap for images (channels aggregated by
        ``aggr_channels`` after taking magnitudes). Arguments as in
        :meth:`innsight.Result.plot_global`."""
        from innsight import plotting  # on first use: import innsight loads no plotting library

        summary = self.summary
        result = self._as_result({(o, k): summary.mean_abs(o, k) for o, k, _ in self.layout.blocks()})
        return plotting.plot_global(result, output_idx=output_idx, output_label=output_label,
                                    aggr_channels=aggr_channels, preprocess_fun=None,
                                    as_plotly=as_plotly, normalize=normalize, top_k=top_k)

    def boxplot(self, *args: Any, **kwargs: Any) -> Any:
        """Alias of :meth:`plot_global` (the summaries hold means, not quantiles)."""
        return self.plot_global(*args, **kwargs)

    def __str__(self) -> str:
        state = "complete" if self.complete else "incomplete (call explain_dataset again to resume)"
        shapes = "; ".join(f"output layer {o}, input layer {k}: {list(shape)}"
                           for o, k, shape in self.layout.blocks())
        return (f"{self.method} over {self.n_samples} samples in {str(self.out)!r}, {state}\n"
                f"  {len(self.manifest.shards)} shard(s); values per sample {shapes}")

    __repr__ = __str__


def _channels_first(values: torch.Tensor, channels_first: bool) -> torch.Tensor:
    """Values ``(n, *dim, n_selected)`` in the data's layout, channels first (inverse of
    :func:`innsight.methods.data.to_user_layout` with one extra axis)."""
    if channels_first or values.ndim <= 3:
        return values
    return values.movedim(-2, 1)

