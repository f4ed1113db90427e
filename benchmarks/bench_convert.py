"""What converting a model costs, against one forward pass of the original.

Usage: python benchmarks/bench_convert.py [--model resnet50] [--size 224] [--repeats 3]
                                          [--threads N] [--cpu-time]
       python benchmarks/bench_convert.py --ab OLD_SRC [--tracer fx] [--unchecked] [--threads N]

Prints the median time of one forward of the original on one sample, of tracing alone
(``torch.fx`` symbolic tracing; ``torch.export`` with a free batch size), and of
``ins.convert`` with each tracer (and with ``check=False``, which skips the dry run:
shapes then come from a pass on the meta device), and the ratios of conversion to the
forward pass (the design asks for at most 1.5 forwards plus tracing). Runs alternate
so that machine load affects all alike. ``--threads`` sets torch's threads: on a
loaded machine one thread gives steadier ratios (with more, torch's threads wait on
each other), and it is the harder measure, since the Python work of conversion does
not shrink with the forward.

``--ab OLD_SRC`` compares two trees in one run: subprocesses alternately import
innsight from ``OLD_SRC`` and from this checkout's ``src`` and each time the
conversion with ``--tracer`` (``--unchecked``: ``check=False``) and one forward; it
prints the median conversion time of each tree in forwards of the original and the
ratio old / new.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

import innsight as ins

#: The clock of the measurements (``--cpu-time``: the process's CPU time).
_CLOCK = [time.perf_counter]


def _seconds(fn: Callable[[], object]) -> float:
    start = _CLOCK[0]()
    fn()
    return _CLOCK[0]() - start


#: One A/B measurement, run in a subprocess: "<forward s> <convert s>" of the tree on its path.
_ONE_RUN = """
import statistics, time, torch, torchvision, innsight as ins
if {threads}:
    torch.set_num_threads({threads})
model = torchvision.models.get_model({model!r}, weights=None).eval()
x = torch.randn(1, 3, {size}, {size})
with torch.no_grad():
    model(x)
    times = []
    for _ in range(3):
        start = time.perf_counter(); model(x); times.append(time.perf_counter() - start)
    forward = statistics.median(times)
start = time.perf_counter()
ins.convert(model, input_dim=[3, {size}, {size}], tracer={tracer!r}, check={check})
print(forward, time.perf_counter() - start)
"""


def _ab(old_src: str, model: str, size: int, tracer: str, repeats: int, threads: int,
        check: bool) -> None:
    """Conversion of the old and the new tree, alternately in subprocesses."""
    trees = {"old": str(Path(old_src).resolve()),
             "new": str(Path(__file__).resolve().parents[1] / "src")}
    code = _ONE_RUN.format(model=model, size=size, tracer=tracer, threads=threads, check=check)
    forwards: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(repeats):
        for name, path in trees.items():
            result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    env={**os.environ, "PYTHONPATH": path}, check=True)
            forward, convert = map(float, result.stdout.split()[-2:])
            forwards[name].append(convert / forward)
    median = {name: statistics.median(values) for name, values in forwards.items()}
    print(f"{model} at {size} x {size}, tracer={tracer}, check={check}, median of {repeats} "
          "runs per tree:")
    for name, value in median.items():
        print(f"  {name}: convert = {value:5.2f} forwards of one sample  ({trees[name]})")
    print(f"  old / new: {median['old'] / median['new']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ab", default=None, metavar="OLD_SRC",
                        help="compare with the innsight source tree at OLD_SRC")
    parser.add_argument("--tracer", default="fx", help="the tracer of the A/B runs")
    parser.add_argument("--unchecked", action="store_true", help="A/B runs with check=False")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time by the process's CPU time (with --threads 1: the work "
                             "done, whatever else loads the machine)")
    args = parser.parse_args()
    if args.ab:
        _ab(args.ab, args.model, args.size, args.tracer, args.repeats, args.threads,
            not args.unchecked)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_time:
        _CLOCK[0] = time.process_time

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
        "convert fx unchecked": lambda: ins.convert(model, input_dim=dim, tracer="fx",
                                                    check=False),
        "convert export unchecked": lambda: ins.convert(model, input_dim=dim, tracer="export",
                                                        check=False),
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            times[name].append(_seconds(step))
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"{args.model} at {args.size} x {args.size}, median of {args.repeats}:")
    for name, seconds in median.items():
        print(f"  {name:24s} {seconds:7.3f} s")
    forward_s = median["forward (1 sample)"]
    for name, tracer in (("fx", "fx"), ("export", "export"), ("fx unchecked", "fx"),
                         ("export unchecked", "export")):
        extra = median[f"convert {name}"] - median[f"{tracer} trace"]
        print(f"  convert {name:16s}: {median[f'convert {name}'] / forward_s:5.2f} forwards "
              f"in all, {extra / forward_s:5.2f} forwards besides tracing")


if __name__ == "__main__":
    main()
