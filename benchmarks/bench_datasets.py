"""Whole data sets through IntegratedGradient: throughput and peak memory of
``explain_dataset``, local and on Ray.

Usage: python benchmarks/bench_datasets.py [--rows 20000] [--images 2000 20000]
       [--n 20] [--no-ray]

Tabular: ``rows`` rows of 32 features through an MLP (32-64-64-10). Images:
32x32 RGB images through a small CNN (10 classes). The data are memory-mapped
files written in chunks; every run explains all 10 outputs with ``n`` path
points, in a fresh process that reports samples per second (the whole call:
reading, explaining, writing shards and summaries), the CPU seconds of the local
engine (on a busy machine a steadier measure than the wall clock) and its peak
resident memory above the level before the call. Ray runs start a local Ray with 3 CPUs: 2
explaining actors and one CPU for Ray's read and write tasks (its start is not
timed; the actors' start is).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

SHAPES = {"tabular": (32,), "images": (3, 32, 32)}


def model(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "tabular":
        return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                             nn.Linear(64, 10)).eval()
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(16 * 8 * 8, 10)).eval()


def write_data(path: Path, kind: str, n_samples: int) -> None:
    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                  shape=(n_samples, *SHAPES[kind]))
    for start in range(0, n_samples, 5_000):
        rows = min(5_000, n_samples - start)
        x[start:start + rows] = np.random.default_rng(start).normal(size=(rows, *SHAPES[kind]))
    x.flush()


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(engine: str, kind: str, n_samples: int, n: int) -> dict[str, object]:
    """Runs in the child process."""
    import innsight as ins

    conv = ins.convert(model(kind), input_dim=[list(SHAPES[kind])])
    with tempfile.TemporaryDirectory() as folder:
        write_data(Path(folder) / "x.npy", kind, n_samples)
        x = np.load(Path(folder) / "x.npy", mmap_mode="r")
        ray_args = {}
        if engine == "ray":
            import ray

            ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
            ray_args = {"concurrency": 2}
        before = peak_mib()
        start, cpu_start = time.perf_counter(), time.process_time()
        res = ins.explain_dataset(conv, x, out=Path(folder) / "out", engine=engine, n=n,
                                  batch_size=500, verbose=False, **ray_args)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        assert res.complete and len(res) == n_samples
    local = engine == "local"  # Ray's work and memory are in its worker processes
    return {"engine": engine, "data": kind, "samples": n_samples, "seconds": round(seconds, 1),
            "samples_per_s": round(n_samples / seconds),
            "cpu_seconds": round(cpu_seconds, 1) if local else None,
            "peak_increase_mib": round(peak_mib() - before) if local else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[20_000])
    parser.add_argument("--images", type=int, nargs="+", default=[2_000, 20_000])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        engine, kind, n_samples, n = args.child
        print(json.dumps(measure(engine, kind, int(n_samples), int(n))))
        return
    runs = [("local", "tabular", s) for s in args.rows] + [("local", "images", s) for s in args.images]
    if not args.no_ray:
        runs += [("ray", "tabular", max(args.rows)), ("ray", "images", min(args.images))]
    print(f"IntegratedGradient (n={args.n}, 10 outputs, batch_size=500) over memory-mapped data")
    print(f"{'engine':7} {'data':8} {'samples':>8} {'seconds':>8} {'samples/s':>10} "
          f"{'CPU s':>8} {'peak +MiB':>10}")
    for engine, kind, n_samples in runs:
        done = subprocess.run([sys.executable, __file__, "--child", engine, kind, str(n_samples),
                               str(args.n)], capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        cpu, peak = (("-" if row[key] is None else row[key])
                     for key in ("cpu_seconds", "peak_increase_mib"))
        print(f"{engine:7} {kind:8} {n_samples:>8} {row['seconds']:>8} {row['samples_per_s']:>10} "
              f"{cpu:>8} {peak:>10}", flush=True)


if __name__ == "__main__":
    main()
