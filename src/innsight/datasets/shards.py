"""The folder of a run: Parquet shards under ``out/shards/`` and ``out/manifest.json``.

The manifest names the run (a fingerprint of model, method, arguments, source and
batch size), its :class:`~innsight.datasets.layout.Layout` and every shard
committed so far. A shard is committed in two atomic steps: its file is written
under a temporary name and renamed, then the manifest that lists it replaces the
old one. A run stopped between the two leaves a finished shard file that the
manifest does not list yet; resuming adopts it (after checking that it holds
exactly the batch's samples) instead of writing it again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

#: The manifest's format name; a folder without it is not a run of this package.
FORMAT = "innsight-dataset/1"
MANIFEST = "manifest.json"
SHARDS = "shards"
SUMMARY = "summary.npz"
#: Parquet writer options of every shard: dictionary encoding of float values cost
#: 30 times the time of the write (0.55 s for 500 rows of 320 values) and saved nothing.
WRITE_OPTIONS = {"use_dictionary": False}


def shard_name(batch: int) -> str:
    return f"part-{batch:06d}.parquet"


@dataclass
class Manifest:
    """A run's record (see the module docs). ``shards`` maps a shard file (relative to
    ``shards/``) to the smallest and largest sample id (``first``, ``last``) and the
    number of rows it holds; the local engine names shards by batch, Ray's writer by
    its own scheme."""

    fingerprint: str
    engine: str
    batch_size: int
    layout: dict[str, Any]
    has_labels: bool
    n_samples: int | None = None
    complete: bool = False
    shards: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def read(cls, out: Path) -> Manifest | None:
        path = out / MANIFEST
        if not path.exists():
            return None
        state = json.loads(path.read_text(encoding="utf-8"))
        if state.pop("format", None) != FORMAT:
            raise ValueError(f"`out` folder {str(out)!r} holds a {MANIFEST} that is not an "
                             f"innsight results manifest (format {FORMAT!r}).")
        return cls(**state)

    def write(self, out: Path) -> None:
        """Replace the manifest atomically."""
        _atomic_write(out / MANIFEST, json.dumps({"format": FORMAT, **self.__dict__}, indent=1)
                      .encode("utf-8"))

    def n_rows(self) -> int:
        return sum(s["rows"] for s in self.shards.values())


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_shard(out: Path, name: str, table: pa.Table) -> None:
    """Write one shard file atomically (temporary name, then rename)."""
    path = out / SHARDS / name
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, **WRITE_OPTIONS)
    os.replace(tmp, path)


def read_shard(out: Path, name: str, columns: list[str] | None = None) -> pa.Table | None:
    """A shard file's table (``None`` when it is missing or unreadable)."""
    path = out / SHARDS / name
    if not path.exists():
        return None
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, OSError):
        return None


def iter_shards(out: Path, manifest: Manifest, columns: list[str] | None = None
                ) -> Iterator[pa.Table]:
    """The committed shards in order of their first sample, one at a time."""
    for name, info in sorted(manifest.shards.items(), key=lambda item: item[1]["first"]):
        table = read_shard(out, name, columns)
        if table is None:
            raise FileNotFoundError(f"Shard {name!r} listed in {str(out / MANIFEST)!r} is missing "
                                    "or unreadable; run explain_dataset again with resume=True "
                                    "to recompute it.")
        yield table


def clear(out: Path) -> None:
    """Remove a run's own files (manifest, summary, shards) and nothing else."""
    for path in [out / MANIFEST, out / SUMMARY]:
        path.unlink(missing_ok=True)
    shards = out / SHARDS
    if shards.is_dir():
        for path in shards.iterdir():
            if path.suffix in (".parquet", ".tmp") or path.name.endswith(".parquet.tmp"):
                path.unlink()
