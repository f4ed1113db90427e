"""One batch of samples through one method: the unit of work of every engine.

An :class:`Explainer` holds the model, the method and its arguments; it explains
a :class:`~innsight.datasets.sources.Batch` into the rows of a shard. Stochastic
methods get a seed per batch, derived from the run's ``seed`` and the batch's
first sample id, so that a batch gets the same noise in every engine and on every
resumed run. ``targets="labels"`` becomes the batch's labels (one output node per
sample, for methods that take per-sample ``targets``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from innsight.datasets.layout import result_table
from innsight.datasets.sources import Batch
from innsight.methods.base import InterpretingMethod
from innsight.methods.result import Result

#: ``targets=LABELS`` explains each sample's output node given by its label.
LABELS = "labels"


def batch_seed(seed: int | None, first_id: int) -> int | None:
    """The seed of the batch starting at sample ``first_id`` (``None`` stays ``None``)."""
    if seed is None:
        return None
    return int(np.random.SeedSequence([int(seed), int(first_id)]).generate_state(1)[0])


@dataclass
class Explainer:
    """A method with its model and arguments (``seed`` apart), applied batch by batch."""

    model: Any
    method: type[InterpretingMethod]
    method_args: dict[str, Any]
    seed: int | None = None

    def result(self, batch: Batch) -> Result:
        """The method's result for one batch."""
        args = dict(self.method_args)
        if isinstance(args.get("targets"), str) and args["targets"] == LABELS:
            args["targets"] = batch.labels
        data = batch.inputs if len(batch.inputs) > 1 else batch.inputs[0]
        return self.method(self.model, data, verbose=False,
                           seed=batch_seed(self.seed, batch.ids[0]), **args)

    def table(self, batch: Batch) -> pa.Table:
        """The shard rows of one batch."""
        return result_table(self.result(batch), batch.ids, batch.labels)
