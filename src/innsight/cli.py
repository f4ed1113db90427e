"""The ``innsight`` command line: ``innsight demo`` runs the quick-start example."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
from torch import nn

import innsight as ins


def _demo_model() -> nn.Module:
    """A small residual CNN for 1x16x16 images with 3 classes (random weights)."""

    class SmallResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
            self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
            self.pool = nn.MaxPool2d(2)
            self.head = nn.Linear(8 * 8 * 8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem(x)
            x = torch.relu(x + self.block(x))
            return self.head(torch.flatten(self.pool(x), 1)).softmax(dim=1)

    torch.manual_seed(42)
    return SmallResNet().eval()


def demo() -> None:
    """Convert a small residual CNN, check its outputs, and explain them with
    IntegratedGradient, SmoothGrad, DeepLift, LRP and SHAP."""
    model = _demo_model()
    conv = ins.convert(model, input_dim=[1, 16, 16], output_names=[["cat", "dog", "bird"]])
    print(conv, end="\n\n")
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        original, converted = model(x), conv.model(x)
    labels = conv.output_names[0][0]
    print("sample  " + "  ".join(f"{label:>8}" for label in labels) + "   max |converted - original|")
    for i in range(x.shape[0]):
        diff = (converted[i] - original[i]).abs().max().item()
        print(f"{i:>6}  " + "  ".join(f"{v:8.4f}" for v in converted[i].tolist()) + f"   {diff:.1e}")

    print()
    intgrad = ins.run_intgrad(conv, x, n=64, verbose=False)
    print(intgrad, end="\n\n")
    frame = intgrad.get_result("data.frame")
    top = frame[frame["data"] == 0].sort_values("value", key=abs, ascending=False).head(5)
    print("sample 0, the five pixels with the largest contributions:")
    print(top[["output_node", "feature", "feature_2", "value"]].to_string(index=False), end="\n\n")
    smooth = ins.run_smoothgrad(conv, x, n=32, seed=0, verbose=False)
    print(smooth, end="\n\n")
    # One reverse walk explains all three outputs; DeepLift meets its goal exactly.
    print(ins.run_deeplift(conv, x, verbose=False), end="\n\n")
    print(ins.run_lrp(conv, x, rule_name="epsilon", verbose=False), end="\n\n")
    # Model-agnostic: 4x4 patches are the players; SHAP values sum to f(x) - mean f(ref).
    rows, cols = torch.meshgrid(torch.arange(16) // 4, torch.arange(16) // 4, indexing="ij")
    background = torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    print(ins.run_shap(conv, x, background, n=16, feature_groups=rows * 4 + cols, seed=0,
                       verbose=False))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="innsight", description="Explain neural-network predictions.")
    parser.add_argument("--version", action="version", version=f"innsight {ins.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help=demo.__doc__)
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo()


if __name__ == "__main__":
    main()
