"""The Ray engine: the same batches explained by actors of Ray Data, written by Ray.

The converter travels to the workers as its model dict (``to_dict()``) and is
converted back once per actor (:class:`RayExplainer`, one per worker; ``concurrency``
actors, ``num_gpus`` each). Two pipelines:

- a source of this package (arrays, frames, Parquet, images, torch data sets): a
  Ray data set of batch indices, each actor reading its batch from the source
  itself (a memory map travels as its file name; the files must be where the
  workers can read them), so that batches, their seeds and thus the values are
  those of the local engine;
- a ``ray.data.Dataset``: its rows numbered in order (``sample_id``) and explained
  in ``map_batches`` batches of ``batch_size``.

Ray's Parquet writer writes the shards; the summary is then added up shard by
shard. Ray works on whatever cluster ``ray.init`` connected to (a local one is
started when none is). A stopped Ray run starts again from the beginning.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from innsight.converter import Converter, convert
from innsight.datasets.explainer import Explainer
from innsight.datasets.layout import Layout
from innsight.datasets.shards import (
    SHARDS,
    SUMMARY,
    WRITE_OPTIONS,
    Manifest,
    clear,
    iter_shards,
)
from innsight.datasets.sources import ID_COLUMN, Batch, RaySource, Source
from innsight.datasets.summaries import Summary
from innsight.methods.base import METHODS


class RayExplainer:
    """The callable class of ``map_batches``: converts the model once per actor and
    explains batches (by index from a source of this package, or rows of a Ray data set)."""

    def __init__(self, model_dict: dict[str, Any], dtype: str, method: str,
                 method_args: dict[str, Any], seed: int | None, source: Source,
                 batch_size: int) -> None:
        model = convert(model_dict, dtype=dtype)
        self.explainer = Explainer(model, METHODS[method], method_args, seed)
        self.source = source
        self.batch_size = batch_size

    def __call__(self, columns: dict[str, np.ndarray]) -> pa.Table:
        if isinstance(self.source, RaySource):
            inputs, labels = self.source.to_inputs(columns)
            batch = Batch(np.asarray(columns[ID_COLUMN]), inputs, labels)
            return self.explainer.table(batch)
        return pa.concat_tables([self.explainer.table(self.source.batch(int(b), self.batch_size))
                                 for b in columns["batch"]])


def run_ray(out: Path, source: Source, converter: Converter, explainer: Explainer,
            manifest: Manifest, concurrency: int | None, num_gpus: float | None) -> None:
    """Explain every sample of ``source`` on Ray and record the shards in ``manifest``."""
    import ray

    if not ray.is_initialized():
        ray.init()
    clear(out)  # a stopped Ray run starts again
    (out / SHARDS).mkdir(parents=True, exist_ok=True)
    manifest.write(out)
    size = manifest.batch_size
    if concurrency is None:
        concurrency = default_concurrency(ray.cluster_resources(), num_gpus)
    constructor = {"model_dict": converter.to_dict(), "dtype": _dtype_name(converter),
                   "method": explainer.method.method_name, "method_args": explainer.method_args,
                   "seed": explainer.seed, "source": source, "batch_size": size}
    if isinstance(source, RaySource):
        dataset = _numbered(source.dataset)
        batch_rows = size
    else:
        assert source.n_samples is not None
        dataset = ray.data.range(-(-source.n_samples // size)).rename_columns({"id": "batch"})
        batch_rows = 1
    explained = dataset.map_batches(RayExplainer, fn_constructor_kwargs=constructor,
                                    batch_size=batch_rows, batch_format="numpy",
                                    compute=ray.data.ActorPoolStrategy(size=concurrency),
                                    num_gpus=num_gpus)
    options = ray.data.DataContext.get_current().execution_options
    keep, options.preserve_order = options.preserve_order, True  # rows numbered in order
    try:
        explained.write_parquet(str(out / SHARDS), **WRITE_OPTIONS)
    finally:
        options.preserve_order = keep
    _record(out, manifest)


def default_concurrency(resources: dict[str, float], num_gpus: float | None) -> int:
    """Actors for a cluster's ``resources``: one per GPU share with ``num_gpus``, else one
    per CPU but one, which is left to Ray's read and write tasks (with every CPU held by
    an actor they would never be scheduled)."""
    if num_gpus:
        return max(1, int(resources.get("GPU", 0) / num_gpus))
    return max(1, int(resources.get("CPU", 1)) - 1)


def _numbered(dataset: Any) -> Any:
    """A Ray data set with a ``sample_id`` column: its own where it has one, else each
    row's position (``Dataset.zip`` with a range, in the order Ray reads the rows, which
    the run keeps deterministic with ``preserve_order``)."""
    import ray

    if ID_COLUMN in dataset.schema().names:
        return dataset
    ids = ray.data.range(dataset.count()).rename_columns({"id": ID_COLUMN})
    with warnings.catch_warnings():  # zip is deprecated from Ray 2.60 on, for a key join
        warnings.simplefilter("ignore", DeprecationWarning)
        return dataset.zip(ids)


def _dtype_name(converter: Converter) -> str:
    return "double" if converter.model.dtype == torch.float64 else "float"


def _record(out: Path, manifest: Manifest) -> None:
    """List the shards Ray wrote in the manifest, add up the summary, mark it complete."""
    for path in sorted((out / SHARDS).glob("*.parquet")):
        ids = pq.read_table(path, columns=["sample_id"]).column("sample_id").to_numpy()
        if len(ids):
            manifest.shards[path.name] = {"first": int(ids.min()), "last": int(ids.max()),
                                          "rows": len(ids)}
        else:
            path.unlink()
    layout = Layout.from_dict(manifest.layout)
    summary = Summary()
    for table in iter_shards(out, manifest):
        summary.add(table, layout)
    summary.save(out / SUMMARY)
    manifest.n_samples = manifest.n_rows()
    manifest.complete = True
    manifest.write(out)
