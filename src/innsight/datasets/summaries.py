"""Running global summaries of a run, added up shard by shard.

For every values column (output layer ``o``, input layer ``k``) a
:class:`Summary` keeps, per feature position and output node, the number of
samples and the sums of ``|value|``, ``value`` and ``value**2`` in float64: the
mean magnitude per feature and class, the mean and the standard deviation follow
without loading more than one shard at a time. Sums of shards add, so summaries
of parts (Ray blocks, a resumed run) merge exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from innsight.datasets.layout import Layout, column_array, values_column

STATISTICS = ("abs_sum", "sum", "sq_sum")


@dataclass
class Summary:
    """Sums per values column ``(o, k)``, each ``(*input_dim, n_selected)`` in the
    data's layout, over ``count`` samples."""

    count: int = 0
    sums: dict[tuple[int, int], dict[str, np.ndarray]] = field(default_factory=dict)

    def add(self, table: pa.Table, layout: Layout) -> None:
        """Add the samples of one shard."""
        for o, k, shape in layout.blocks():
            values = column_array(table.column(values_column(o, k)), shape).astype(np.float64)
            parts = {"abs_sum": np.abs(values).sum(0), "sum": values.sum(0),
                     "sq_sum": np.square(values).sum(0)}
            current = self.sums.setdefault((o, k), {s: np.zeros(shape) for s in STATISTICS})
            for name, part in parts.items():
                current[name] += part
        self.count += table.num_rows

    def mean_abs(self, o: int, k: int) -> np.ndarray:
        """Mean ``|value|`` per feature and output node, ``(*input_dim, n_selected)``."""
        return self.sums[(o, k)]["abs_sum"] / max(self.count, 1)

    def mean(self, o: int, k: int) -> np.ndarray:
        """Mean value per feature and output node."""
        return self.sums[(o, k)]["sum"] / max(self.count, 1)

    def std(self, o: int, k: int) -> np.ndarray:
        """Standard deviation (over samples) per feature and output node."""
        mean = self.mean(o, k)
        return np.sqrt(np.maximum(self.sums[(o, k)]["sq_sum"] / max(self.count, 1) - mean**2, 0))

    def save(self, path: Path) -> None:
        arrays = {f"o{o}_i{k}_{name}": array for (o, k), stats in self.sums.items()
                  for name, array in stats.items()}
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, count=np.array(self.count), **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, layout: Layout) -> Summary:
        with np.load(path) as stored:
            sums = {(o, k): {name: stored[f"o{o}_i{k}_{name}"] for name in STATISTICS}
                    for o, k, _ in layout.blocks()}
            return cls(int(stored["count"]), sums)
