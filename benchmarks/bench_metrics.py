"""Metrics against Quantus and against the bare batched forward passes, in one process.

Usage: python benchmarks/bench_metrics.py [--repeats 3]

The model: 3x32x32 images, conv 16-32 with max pooling, dense 10 (the CNN of
bench_agnostic.py); 16 images, float32; one explanation (gradient x input of
class 0, computed once) scored for class 0. Pixel flipping: 32 features (entries)
per step, 96 steps, baseline 0, most relevant first; both libraries get the same
explanation and settings (Quantus with ``softmax=False``, ``normalise=False``), and
their curves are checked to agree. The floor is the bare forward pass of every
perturbed input the metric needs (16 x 95 inner steps), batched as innsight batches
them, inputs built beforehand, through the original model and through the converted
graph (which innsight evaluates). Sparseness and complexity need no model. Prints the
median seconds and the ratios innsight / Quantus and innsight / floor.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torchvision  # noqa: F401  (before quantus imports tensorflow: the reverse order segfaults)
from bench_agnostic import small_cnn
from bench_gradients import median_times

import innsight as ins
import quantus  # noqa: E402

STEP, CLASS, BATCH = 32, 0, 512


def floor_fn(model: torch.nn.Module, x: torch.Tensor, values: torch.Tensor):
    """Bare forwards of every inner deletion step, the perturbed inputs made beforehand."""
    flat, a = x.flatten(1), values.flatten(1)
    rank = a.argsort(dim=1, descending=True, stable=True).argsort(dim=1)
    counts = torch.arange(STEP, flat.shape[1], STEP)
    inputs = torch.where(rank[:, None] < counts[None, :, None], 0.0, flat[:, None])
    inputs = inputs.reshape(-1, *x.shape[1:])

    def run() -> None:
        with torch.no_grad():
            for start in range(0, len(inputs), BATCH):
                model(inputs[start:start + BATCH])
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    repeats = parser.parse_args().repeats
    torch.manual_seed(0)
    model = small_cnn()
    conv = ins.convert(model, input_dim=[3, 32, 32])
    x = torch.randn(16, 3, 32, 32)
    res = ins.run_grad(conv, x, output_idx=CLASS, times_input=True, batch_size=BATCH)
    values = res.get_result("torch_tensor")[..., 0]
    y = np.full(len(x), CLASS)
    deletion = ins.metrics.Deletion(features_in_step=STEP)
    quantus_metrics = {
        "pixel flipping": quantus.PixelFlipping(features_in_step=STEP, perturb_baseline=0.0,
                                                normalise=False, abs=False,
                                                disable_warnings=True),
        "sparseness": quantus.Sparseness(disable_warnings=True),
        "complexity": quantus.Complexity(disable_warnings=True),
    }
    ours = {"pixel flipping": deletion, "sparseness": "sparseness", "complexity": "complexity"}

    def quantus_call(metric):
        return lambda: metric(model=model, x_batch=x.numpy(), y_batch=y, a_batch=values.numpy(),
                              softmax=False, channel_first=True, device="cpu", batch_size=64)

    curves = ins.evaluate(res, [deletion]).attrs["curves"]
    theirs = np.asarray(quantus_call(quantus_metrics["pixel flipping"])())
    mine = curves.pivot(index="data", columns="step", values="value").to_numpy()[:, 1:]
    print(f"pixel flipping curves: max |innsight - Quantus| = {np.abs(mine - theirs).max():.2e}")

    fns = {"floor": floor_fn(model, x, values), "floor converted": floor_fn(conv.model, x, values)}
    for name in ours:
        fns[f"innsight {name}"] = lambda m=ours[name]: ins.evaluate(res, [m], batch_size=BATCH)
        fns[f"quantus {name}"] = quantus_call(quantus_metrics[name])
    times = median_times(fns, repeats)
    print(f"{'metric':<16}{'innsight s':>12}{'Quantus s':>12}{'innsight/Quantus':>18}"
          f"{'floor s':>10}{'innsight/floor':>16}")
    for name in ours:
        mine_s, theirs_s = times[f"innsight {name}"], times[f"quantus {name}"]
        floor = f"{times['floor']:>10.3f}{mine_s / times['floor']:>16.2f}" \
            if name == "pixel flipping" else f"{'-':>10}{'-':>16}"
        print(f"{name:<16}{mine_s:>12.4f}{theirs_s:>12.4f}{mine_s / theirs_s:>18.2f}{floor}")
    print(f"floor through the converted graph: {times['floor converted']:.3f} s (innsight / it: "
          f"{times['innsight pixel flipping'] / times['floor converted']:.2f})")


if __name__ == "__main__":
    main()
