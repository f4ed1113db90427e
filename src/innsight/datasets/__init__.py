"""Whole data sets: one method over a stream of samples, results as Parquet shards.

:func:`explain_dataset` reads a data set batch by batch (locally, or on a Ray
cluster), writes each batch's explanations as one Parquet shard with a manifest,
and resumes a stopped run; :class:`DatasetResult` reads the shards lazily and
draws global plots from running summaries. Needs ``pip install innsight[datasets]``
(pyarrow), and ``innsight[ray]`` for the Ray engine.
"""

from innsight.datasets.explain import explain_dataset
from innsight.datasets.result import DatasetResult

__all__ = ["DatasetResult", "explain_dataset"]
