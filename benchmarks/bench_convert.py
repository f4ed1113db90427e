"""What converting a model costs, against one forward pass of the original.

Usage: python benchmarks/bench_convert.py [--model resnet50] [--size 224] [--repeats 3]

Prints the median time of one forward of the original on one sample, of tracing
alone (``torch.fx`` symbolic tracing; ``torch.export`` with a free batch size),
and of ``ins.convert`` with each tracer, and the ratios of conversion to the
forward pass (the design asks for at most 1.5 forwards plus tracing). Runs
alternate so that machine load affects all alike.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torchvision

import innsight as ins


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = torchvision.models.get_model(args.model, weights=None).eval()
    dim = [3, args.size, args.size]
    x = torch.randn(1, *dim)
    batch = torch.export.Dim("batch")

    def forward() -> None:
        with torch.no_grad():
            model(x)

    steps = {
        "forward (1 sample)": forward,
        "fx trace": lambda: torch.fx.symbolic_trace(model),
        "export trace": lambda: torch.export.export(
            model, (torch.randn(2, *dim),), dynamic_shapes=({0: batch},)),
        "convert fx": lambda: ins.convert(model, input_dim=dim, tracer="fx"),
        "convert export": lambda: ins.convert(model, input_dim=dim, tracer="export"),
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            times[name].append(_seconds(step))
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"{args.model} at {args.size} x {args.size}, median of {args.repeats}:")
    for name, seconds in median.items():
        print(f"  {name:20s} {seconds:7.3f} s")
    forward_s = median["forward (1 sample)"]
    for tracer in ("fx", "export"):
        extra = median[f"convert {tracer}"] - median[f"{tracer} trace"]
        print(f"  convert {tracer}: {median[f'convert {tracer}'] / forward_s:5.1f} forwards in all, "
              f"{extra / forward_s:5.1f} forwards besides tracing")


if __name__ == "__main__":
    main()
