"""The local engine: batches in order, one shard per batch, the manifest after each.

Memory holds one batch (its inputs, the method's work, its shard rows) and the
running summary, whatever the data set size. A resumed run keeps every committed
shard, adopts a finished shard file that the manifest does not list yet, and
explains only the batches that are missing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from innsight.datasets.explainer import Explainer
from innsight.datasets.layout import Layout
from innsight.datasets.shards import (
    SUMMARY,
    Manifest,
    iter_shards,
    read_shard,
    shard_name,
    write_shard,
)
from innsight.datasets.sources import Batch, Source
from innsight.datasets.summaries import Summary


def run_local(out: Path, source: Source, explainer: Explainer, manifest: Manifest,
              verbose: bool) -> None:
    """Explain every batch of ``source`` not yet in ``manifest``, committing each."""
    layout = Layout.from_dict(manifest.layout)
    size = manifest.batch_size
    summary = Summary()
    for table in iter_shards(out, manifest):  # a resumed run: what is done, shard by shard
        summary.add(table, layout)
    total = None if source.n_samples is None else math.ceil(source.n_samples / size)
    bar = tqdm(total=total, initial=len(manifest.shards), disable=not verbose,
               desc="explain_dataset", unit="batch")
    for batch in _missing(source, size, manifest):
        name = shard_name(int(batch.ids[0]) // size)
        table = read_shard(out, name)  # finished before a stop, not yet in the manifest
        if table is None or not np.array_equal(table.column("sample_id").to_numpy(), batch.ids):
            table = explainer.table(batch)
            write_shard(out, name, table)
        summary.add(table, layout)
        manifest.shards[name] = {"first": int(batch.ids[0]), "last": int(batch.ids[-1]),
                                 "rows": len(batch)}
        manifest.write(out)
        bar.update()
    bar.close()
    summary.save(out / SUMMARY)
    manifest.n_samples = manifest.n_rows()
    manifest.complete = True
    manifest.write(out)


def _missing(source: Source, size: int, manifest: Manifest) -> Iterator[Batch]:
    """The batches without a committed shard: read directly where the source allows it,
    else read past in order."""
    if source.random_access:
        assert source.n_samples is not None
        for index in range(math.ceil(source.n_samples / size)):
            if shard_name(index) not in manifest.shards:
                yield source.batch(index, size)
        return
    for batch in source.batches(size):
        if shard_name(int(batch.ids[0]) // size) not in manifest.shards:
            yield batch
