"""Rule-based methods against their peers, in one process: LRP epsilon against Zennit,
DeepLift (rescale) against Captum, on a VGG-like CNN.

Usage: python benchmarks/bench_rules.py [--repeats 5]

The model: 3x32x32 images, conv 32-32, max pooling, conv 64-64, max pooling,
conv 128, max pooling, dense 256 and 10; batch 16, float32. Zennit and
Captum explain one output per call, so 10 outputs are 10 calls; innsight
carries all selected outputs through one reverse walk. Prints the median
seconds and the ratios innsight / peer (targets: at most 1.0 for 1 output
and 0.5 for 10 outputs).
"""

from __future__ import annotations

import argparse
import warnings

import torch
from bench_gradients import median_times
from captum.attr import DeepLift
from torch import nn
from zennit.attribution import Gradient as ZennitGradient
from zennit.composites import LayerMapComposite
from zennit.rules import Epsilon

import innsight as ins


def vgg_like() -> nn.Module:
    def block(c_in: int, c_out: int, n_convs: int) -> list[nn.Module]:
        layers: list[nn.Module] = []
        for k in range(n_convs):
            layers += [nn.Conv2d(c_in if k == 0 else c_out, c_out, 3, padding=1), nn.ReLU()]
        return layers + [nn.MaxPool2d(2)]

    return nn.Sequential(
        *block(3, 32, 2), *block(32, 64, 2), *block(64, 128, 1), nn.Flatten(),
        nn.Linear(128 * 4 * 4, 256), nn.ReLU(), nn.Linear(256, 10),
    ).eval()


def zennit_lrp(model: nn.Module, x: torch.Tensor, n_outputs: int) -> None:
    composite = LayerMapComposite([(nn.Conv2d, Epsilon(0.01)), (nn.Linear, Epsilon(0.01))])
    with ZennitGradient(model, composite) as attributor:
        for j in range(n_outputs):
            attributor(x, torch.eye(10)[[j]].expand(len(x), -1))


def captum_deeplift(model: nn.Module, x: torch.Tensor, n_outputs: int) -> None:
    explainer = DeepLift(model)
    for j in range(n_outputs):
        explainer.attribute(x, baselines=torch.zeros_like(x), target=j)


def run_case(model: nn.Module, conv: ins.Converter, x: torch.Tensor, n_outputs: int,
             repeats: int) -> None:
    idx = list(range(n_outputs))
    timings = {
        "innsight LRP epsilon": lambda: ins.run_lrp(conv, x, rule_name="epsilon",
                                                    output_idx=idx, verbose=False),
        "Zennit Epsilon": lambda: zennit_lrp(model, x, n_outputs),
        "innsight DeepLift": lambda: ins.run_deeplift(conv, x, output_idx=idx, verbose=False),
        "Captum DeepLift": lambda: captum_deeplift(model, x, n_outputs),
    }
    seconds = median_times(timings, repeats)
    print(f"\nVGG-like CNN: {x.shape[0]} samples of {list(x.shape[1:])}, {n_outputs} output(s)")
    for label, value in seconds.items():
        print(f"  {label:24s} {value * 1000:9.1f} ms")
    target = 1.0 if n_outputs == 1 else 0.5
    for ours, theirs in (("innsight LRP epsilon", "Zennit Epsilon"),
                         ("innsight DeepLift", "Captum DeepLift")):
        ratio = seconds[ours] / seconds[theirs]
        print(f"  {ours} / {theirs}: {ratio:.2f}x (target <= {target})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # Captum's notes about hooks on every call
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats}")
    model, x = vgg_like(), torch.randn(16, 3, 32, 32)
    conv = ins.convert(model, input_dim=[3, 32, 32])
    for n_outputs in (1, 10):
        run_case(model, conv, x, n_outputs, args.repeats)


if __name__ == "__main__":
    main()
