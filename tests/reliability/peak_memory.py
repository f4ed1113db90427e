"""Peak resident memory of one method run, measured in a child process.

``python peak_memory.py MODEL IMAGE_SIZE N_DATA METHODS BATCH_SIZES`` converts
``MODEL`` (a torchvision ViT with random weights: ``vit_b_16`` or ``vit_tiny``, a
2-block ViT of width 64), then for each of the comma-separated ``METHODS`` (``lrp``,
``grad``) and ``BATCH_SIZES`` runs the method on ``N_DATA`` images for one output node
and prints one JSON line: per method and batch size the rise of the peak resident set
above the level just before the run, and the bytes of one sample's activations in the
converted graph (the unit a bound is made of).

The measurement: Linux keeps the peak resident set size (``VmHWM`` in
``/proc/self/status``) and resets it to the current size when ``5`` is written to
``/proc/self/clear_refs``. The parent runs the child with ``MALLOC_MMAP_THRESHOLD_``
set low, so that glibc serves every large tensor with its own mapping and returns it
on free: the resident set then follows the live tensors, and a run with one batch size
leaves no cached heap behind that would hide the next one's peak.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

import torch
import torchvision

import innsight as ins

MIB = 2**20


def _status(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> int:
    """Reset the peak resident set to the current one; returns the current one."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    return _status("VmRSS")


def model(name: str, image_size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "vit_b_16":
        return torchvision.models.vit_b_16(weights=None, image_size=image_size).eval()
    return torchvision.models.VisionTransformer(
        image_size=image_size, patch_size=16, num_layers=2, num_heads=4, hidden_dim=64,
        mlp_dim=128, num_classes=10).eval()


def activation_bytes(converter: ins.Converter, image_size: int) -> int:
    """Bytes of every layer's output for one sample."""
    with torch.no_grad():
        values = converter.model.node_values(torch.zeros(1, 3, image_size, image_size))
    return sum(v.numel() * v.element_size() for v in values if isinstance(v, torch.Tensor))


def measure(name: str, image_size: int, n_data: int, methods: list[str],
            batch_sizes: list[int]) -> dict[str, object]:
    converter = ins.convert(model(name, image_size), input_dim=[3, image_size, image_size])
    x = torch.randn(n_data, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    runs = {"lrp": lambda data, b: ins.run_lrp(converter, data, rule_name="epsilon",
                                               output_idx=[0], batch_size=b, verbose=False),
            "grad": lambda data, b: ins.run_grad(converter, data, output_idx=[0], batch_size=b,
                                                 verbose=False)}
    peaks: dict[str, dict[int, int]] = {}
    for method in methods:
        runs[method](x[:1], 1)  # warm-up: lazily made kernels and caches
        peaks[method] = {}
        for b in batch_sizes:
            before = reset_peak()
            result = runs[method](x, b)
            peaks[method][b] = _status("VmHWM") - before
            del result
    return {"peak_rise": peaks, "activation_bytes": activation_bytes(converter, image_size),
            "result_bytes": x.numel() * x.element_size()}


if __name__ == "__main__":
    name, size, n, methods, sizes = sys.argv[1:]
    print(json.dumps(measure(name, int(size), int(n), methods.split(","),
                             [int(b) for b in sizes.split(",")])))
