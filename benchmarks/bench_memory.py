"""Peak memory of SmoothGrad grows with ``batch_size``, not with ``n``.

Usage: python benchmarks/bench_memory.py [--ns 50 1000] [--batch-sizes 8 32]

Each (n, batch_size) runs SmoothGrad on a small 224x224 CNN (2 images,
1 output) in a fresh process and reports that process's peak resident
memory above its level just before the method ran.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch
from torch import nn


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
        nn.Flatten(), nn.Linear(32 * 16, 10),
    ).eval()


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(n: int, batch_size: int) -> dict[str, float]:
    """Runs in the child process."""
    import innsight as ins

    torch.manual_seed(0)
    conv = ins.convert(cnn(), input_dim=[3, 224, 224])
    x = torch.randn(2, 3, 224, 224)
    ins.run_smoothgrad(conv, x, n=2, batch_size=batch_size, output_idx=[0], verbose=False)
    before = peak_mib()
    ins.run_smoothgrad(conv, x, n=n, batch_size=batch_size, output_idx=[0], seed=0, verbose=False)
    return {"n": n, "batch_size": batch_size, "peak_increase_mib": peak_mib() - before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ns", type=int, nargs="+", default=[50, 1000])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--child", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return
    print("SmoothGrad on a 224x224 CNN, 2 images: peak resident memory above the baseline")
    for batch_size in args.batch_sizes:
        for n in args.ns:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(n), str(batch_size)],
                check=True, capture_output=True, text=True,
            ).stdout
            row = json.loads(out.strip().splitlines()[-1])
            print(f"  batch_size {batch_size:4d}  n {n:5d}  (rows {2 * n:5d}):  "
                  f"+{row['peak_increase_mib']:7.1f} MiB")


if __name__ == "__main__":
    main()
