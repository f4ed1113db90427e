"""Rule-based methods, like the gradient ones, stay within ``batch_size``: their peak
memory grows with the rows per chunk, not with the number of samples.

Measured in a child process (``peak_memory.py``: the rise of the peak resident set,
reset through ``/proc/self/clear_refs``, with glibc returning large tensors on free).
The bound is made of ``A``, the bytes of one sample's activations in the converted
graph: a chunk of ``b`` rows may keep every activation of its forward pass and the
relevances of the walk back, :data:`PER_ROW` times ``A`` per row, on top of the result
(one input-sized tensor per sample) and :data:`FIXED` bytes of scratch. Running all
``N_DATA`` samples at once would exceed it at ``batch_size=2``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: Activations per row a chunk may hold: its forward values and the walk's relevances.
PER_ROW = 3.0
#: The least each extra row must add (of ``A``): the measurement sees the activations.
LEAST_PER_ROW = 0.25
FIXED = 32 * 2**20
#: More samples than the largest batch size, so every run is chunked: in one chunk the
#: gradient engine's result is the chunk's own gradient (no separate buffer), and the rise
#: between the batch sizes would understate the activations.
N_DATA = 16
BATCH_SIZES = (2, 8)

pytestmark = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(),
                                reason="measures the peak resident set through Linux /proc")


def peak_rises(model: str, image_size: int, methods: list[str]) -> dict[str, object]:
    """The child's measurement (see ``peak_memory.py``)."""
    here = Path(__file__).parent
    src = here.parents[1] / "src"
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536",
           "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, str(here / "peak_memory.py"), model, str(image_size), str(N_DATA),
         ",".join(methods), ",".join(map(str, BATCH_SIZES))],
        capture_output=True, text=True, env=env, cwd=here, timeout=1200, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def check_within_batch_size(measured: dict[str, object], method: str) -> None:
    """``method``'s peak below the bound at each batch size, and each extra row adds
    between :data:`LEAST_PER_ROW` and :data:`PER_ROW` activations."""
    rise = {int(b): v for b, v in measured["peak_rise"][method].items()}
    act, result = measured["activation_bytes"], measured["result_bytes"]
    for b in BATCH_SIZES:
        bound = result + PER_ROW * act * b + FIXED
        assert rise[b] <= bound, (
            f"{method}, batch_size {b}: peak rose {rise[b] / 2**20:.0f} MiB, bound "
            f"{bound / 2**20:.0f} MiB "
            f"({act / 2**20:.1f} MiB of activations per sample)")
    small, large = BATCH_SIZES
    per_row = (rise[large] - rise[small]) / (large - small) / act
    assert LEAST_PER_ROW <= per_row <= PER_ROW, (
        f"{method}: each extra row added {per_row:.2f} times a sample's activations")


def test_a_small_vit_stays_within_batch_size():
    """A 2-block ViT of width 64 on 112 x 112 images (49 patches), LRP epsilon and
    Gradient."""
    measured = peak_rises("vit_tiny", 112, ["lrp", "grad"])
    for method in ("lrp", "grad"):
        check_within_batch_size(measured, method)


@pytest.mark.slow
def test_vit_b_16_lrp_stays_within_batch_size():
    """torchvision's vit_b_16 (random weights) on 224 x 224 images, LRP epsilon."""
    check_within_batch_size(peak_rises("vit_b_16", 224, ["lrp"]), "lrp")
