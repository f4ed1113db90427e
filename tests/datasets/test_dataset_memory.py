"""Peak memory stays flat in the data set size.

Each size runs in a fresh interpreter, which reports its peak resident memory
(``ru_maxrss``, exact, including the imports). The source is a memory-mapped file
written in chunks; 8x more samples would hold about 90 MB more values if anything
kept them (70,000 more samples x 32 features x 10 outputs x 4 bytes, plus 9 MB of
inputs), while the mapped file's pages may add at most its 9 MB.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import resource, sys
    import numpy as np, torch
    import innsight as ins

    n, folder = int(sys.argv[1]), sys.argv[2]
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    conv = ins.convert(net.eval(), input_dim=[32])
    x = np.lib.format.open_memmap(folder + "/x.npy", mode="w+", dtype=np.float32, shape=(n, 32))
    for start in range(0, n, 10_000):  # written in chunks, never whole in memory
        rows = min(10_000, n - start)
        x[start:start + rows] = np.random.default_rng(start).normal(size=(rows, 32))
    x.flush()
    del x
    res = ins.explain_dataset(conv, np.load(folder + "/x.npy", mmap_mode="r"), method="Gradient",
                              out=folder + "/out", batch_size=2_000, verbose=False)
    assert res.complete and len(res) == n and res.summary.count == n
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
""")


def _peak_mib(n: int, folder: Path) -> float:
    folder.mkdir()
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(n), str(folder)], check=True,
                          capture_output=True, text=True, timeout=600)
    return int(done.stdout.split()[-1]) / 1024


def test_peak_memory_does_not_grow_with_the_number_of_samples(tmp_path):
    small = _peak_mib(10_000, tmp_path / "small")
    large = _peak_mib(80_000, tmp_path / "large")
    assert large - small < 40, f"peak RSS {small:.0f} MiB at 10,000 samples, {large:.0f} MiB at 80,000"
