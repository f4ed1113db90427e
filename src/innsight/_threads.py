"""Torch's CPU threads, for work that loses more to them than it gains."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with one torch thread, restoring the setting afterwards.

    Threads that wait for each other in every small call (OpenMP regions, LAPACK on
    matrices of a few hundred rows) spin against other work on a shared machine: on
    two cores under load, small training batches took 10 s instead of 0.3 s, and
    ROAD's imputation four to seven times as long as on one thread.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
