"""Converted forward pass vs the original model, timed in one process.

Usage: python benchmarks/bench_forward.py [--model resnet18] [--batch 8] [--size 224] [--repeats 15]

Prints the median time of both and their ratio (converted / original); the
design target is a ratio of at most 1.10. Runs alternate between the two
models so that machine load affects both alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

import innsight as ins


def _time_once(fn, x: torch.Tensor) -> float:
    start = time.perf_counter()
    fn(x)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = torchvision.models.get_model(args.model, weights=None).eval()
    converted = ins.convert(model, input_dim=[3, args.size, args.size]).model
    x = torch.randn(args.batch, 3, args.size, args.size)

    timings: dict[str, list[float]] = {"original": [], "converted": []}
    with torch.inference_mode():
        for fn in (model, converted):  # warm-up
            fn(x)
        for _ in range(args.repeats):
            timings["original"].append(_time_once(model, x))
            timings["converted"].append(_time_once(converted, x))
    original = statistics.median(timings["original"])
    conv = statistics.median(timings["converted"])
    print(f"{args.model}, batch {args.batch}, {args.size}x{args.size}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}:")
    print(f"  original  {original * 1000:8.1f} ms")
    print(f"  converted {conv * 1000:8.1f} ms")
    print(f"  ratio converted/original: {conv / original:.3f}")


if __name__ == "__main__":
    main()
