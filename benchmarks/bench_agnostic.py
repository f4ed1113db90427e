"""Model-agnostic methods against Captum, in one process: SHAP against
ShapleyValueSampling and LIME against Lime, on a small CNN with image patches.

Usage: python benchmarks/bench_agnostic.py [--repeats 5]

The model: 3x32x32 images, conv 16-32 with max pooling, dense 10; 4 samples,
float32; the players are the 16 patches of 8x8 pixels (all channels), absent
patches take the values of one reference image. SHAP: 20 permutations each
(innsight pairs each with its reverse); LIME: 200 coalitions each. Captum
explains one output per call, so 10 outputs are 10 calls; innsight evaluates
every coalition once for all selected outputs. Prints the median seconds and
the ratios innsight / Captum.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch
from bench_gradients import median_times
from captum._utils.models.linear_model import SkLearnLinearRegression
from captum.attr import Lime, ShapleyValueSampling
from torch import nn

import innsight as ins

PERMUTATIONS, COALITIONS, PER_EVAL = 20, 200, 64


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 8 * 8, 10),
    ).eval()


def patches() -> np.ndarray:
    rows, cols = np.indices((32, 32)) // 8
    return rows * 4 + cols


def run_case(model: nn.Module, conv: ins.Converter, x: torch.Tensor, ref: torch.Tensor,
             n_outputs: int, repeats: int) -> None:
    idx = list(range(n_outputs))
    ids = patches()
    mask = torch.as_tensor(ids)[None, None]  # Captum: (1, 1, 32, 32), broadcast over channels
    svs, lime = ShapleyValueSampling(model), Lime(model, SkLearnLinearRegression())
    timings = {
        "innsight SHAP": lambda: ins.run_shap(conv, x, ref, n=PERMUTATIONS, feature_groups=ids,
                                              output_idx=idx, verbose=False),
        "Captum ShapleyValueSampling": lambda: [
            svs.attribute(x, baselines=ref, target=j, feature_mask=mask, n_samples=PERMUTATIONS,
                          perturbations_per_eval=PER_EVAL) for j in idx],
        "innsight LIME": lambda: ins.run_lime(conv, x, ref, n=COALITIONS, feature_groups=ids,
                                              output_idx=idx, verbose=False),
        "Captum Lime": lambda: [
            lime.attribute(x, baselines=ref, target=j, feature_mask=mask, n_samples=COALITIONS,
                           perturbations_per_eval=PER_EVAL) for j in idx],
    }
    seconds = median_times(timings, repeats)
    print(f"\nsmall CNN: {x.shape[0]} samples of {list(x.shape[1:])}, 16 patches, "
          f"{n_outputs} output(s)")
    for label, value in seconds.items():
        print(f"  {label:28s} {value * 1000:9.1f} ms")
    for ours, theirs in (("innsight SHAP", "Captum ShapleyValueSampling"),
                         ("innsight LIME", "Captum Lime")):
        print(f"  {ours} / {theirs}: {seconds[ours] / seconds[theirs]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats}")
    model, x, ref = small_cnn(), torch.randn(4, 3, 32, 32), torch.randn(1, 3, 32, 32)
    conv = ins.convert(model, input_dim=[3, 32, 32])
    for n_outputs in (1, 10):
        run_case(model, conv, x, ref, n_outputs, args.repeats)


if __name__ == "__main__":
    main()
