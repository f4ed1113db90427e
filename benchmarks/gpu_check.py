"""Every method on a CUDA device against the same method on the CPU, then timings.

Usage: python benchmarks/gpu_check.py [--device cuda] [--repeats 5] [--skip-timing]

(``--device cpu`` runs the same checks CPU against CPU: a dry run of the script.)

Part 1 (correctness): three small models (a CNN with batch norm and max pooling, a
two-block ViT, a two-input network with two outputs), converted on the CPU, explained
by every method with ``device=<--device>`` and with ``device="cpu"``, in float64 and
float32 (TF32 off). Deterministic methods must agree within 1e-9 (float64) and 1e-4
(float32) relative to the largest CPU value. Stochastic methods draw other numbers
on the GPU's generator, so they must agree as Monte Carlo estimates: their distance
at most 3 times the distance between two CPU seeds. The direct ``torch_*`` methods
and LIME/SHAP on a raw module run on a module moved to the device. Every result
must also live on the device it was asked for.

Part 2 (timing): the median seconds of each method on the device for a ResNet-18
(batch 16, 224 x 224) and a ViT-B/16 (batch 8), random weights, float32, and the
same on the CPU for the small CNN, so that the speed-up is visible.

Exits with status 1 and a message when no CUDA device is present, and with status 1
and the list of failures when a check fails.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

import innsight as ins

#: Relative tolerances of a device result against the CPU result, by dtype.
TOL = {"double": 1e-9, "float": 1e-4}
#: A stochastic method's device result may be this many seed-to-seed distances away.
SPREAD_FACTOR = 3.0


@dataclass(frozen=True)
class Problem:
    name: str
    model: nn.Module
    input_dim: Any  # for ins.convert
    data: list[Tensor]
    background: list[Tensor]
    #: LIME's and SHAP's players (``feature_groups``): image patches where pixels are many.
    groups: Any = None


def problems() -> list[Problem]:
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                        nn.Flatten(), nn.Linear(32, 5), nn.Softmax(1)).eval()
    with torch.no_grad():
        cnn[1].running_mean.normal_(0, 0.2)
        cnn[1].running_var.uniform_(0.5, 1.5)
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
        num_classes=5).eval()
    with torch.no_grad():
        for p in vit.parameters():
            p.normal_(0, 0.3)

    class TwoInTwoOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.tab = nn.Conv2d(2, 3, 3), nn.Linear(4, 5)
            self.cls, self.reg = nn.Linear(3 * 16 + 5, 3), nn.Linear(3 * 16 + 5, 2)

        def forward(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
            h = torch.cat([torch.relu(self.conv(a)).flatten(1), torch.tanh(self.tab(b))], 1)
            return self.cls(h), self.reg(h)

    two = TwoInTwoOut().eval()
    g = torch.Generator().manual_seed(1)
    return [
        Problem("cnn", cnn, [3, 12, 12], [torch.randn(4, 3, 12, 12, generator=g)],
                [torch.randn(6, 3, 12, 12, generator=g)]),
        Problem("vit", vit, [3, 32, 32], [torch.randn(3, 3, 32, 32, generator=g)],
                [torch.randn(4, 3, 32, 32, generator=g)],
                torch.arange(64).reshape(8, 8).repeat_interleave(4, 0).repeat_interleave(4, 1)),
        Problem("two-in-two-out", two, [[2, 6, 6], [4]],
                [torch.randn(4, 2, 6, 6, generator=g), torch.randn(4, 4, generator=g)],
                [torch.randn(6, 2, 6, 6, generator=g), torch.randn(6, 4, generator=g)]),
    ]


def _one(xs: list[Tensor]) -> Any:
    return xs[0] if len(xs) == 1 else xs


#: name -> (run(converter_or_module, data, background, feature_groups, **shared), stochastic)
METHODS: dict[str, tuple[Callable[..., Any], bool]] = {
    "Gradient": (lambda c, x, r, g, **kw: ins.run_grad(c, x, times_input=True, **kw), False),
    "SmoothGrad": (lambda c, x, r, g, **kw: ins.run_smoothgrad(c, x, n=64, **kw), True),
    "IntegratedGradient": (lambda c, x, r, g, **kw: ins.run_intgrad(c, x, n=16, **kw), False),
    "ExpectedGradient": (lambda c, x, r, g, **kw: ins.run_expgrad(c, x, data_ref=r, n=64, **kw),
                         True),
    "DeepLift": (lambda c, x, r, g, **kw: ins.run_deeplift(c, x, **kw), False),
    "DeepLift reveal_cancel": (lambda c, x, r, g, **kw: ins.run_deeplift(
        c, x, rule_name="reveal_cancel", **kw), False),
    "DeepSHAP": (lambda c, x, r, g, **kw: ins.run_deepshap(c, x, data_ref=r, **kw), False),
    "DeepSHAP limit_ref": (lambda c, x, r, g, **kw: ins.run_deepshap(c, x, data_ref=r, limit_ref=3,
                                                                  **kw), True),
    "LRP epsilon": (lambda c, x, r, g, **kw: ins.run_lrp(c, x, rule_name="epsilon", **kw), False),
    "LRP alpha_beta": (lambda c, x, r, g, **kw: ins.run_lrp(c, x, rule_name="alpha_beta",
                                                         rule_param=2, **kw), False),
    "LIME": (lambda c, x, r, g, **kw: ins.run_lime(c, x, r, n=200, feature_groups=g, **kw), True),
    "SHAP": (lambda c, x, r, g, **kw: ins.run_shap(c, x, r, n=8, feature_groups=g, **kw), True),
}
DIRECT: dict[str, tuple[Callable[..., Any], bool]] = {
    "torch_grad": (lambda m, x, r, g, **kw: ins.torch_grad(m, x, return_object=True, **kw), False),
    "torch_smoothgrad": (lambda m, x, r, g, **kw: ins.torch_smoothgrad(
        m, x, n=64, return_object=True, **kw), True),
    "torch_intgrad": (lambda m, x, r, g, **kw: ins.torch_intgrad(m, x, n=16, return_object=True,
                                                              **kw), False),
    "torch_expgrad": (lambda m, x, r, g, **kw: ins.torch_expgrad(
        m, x, data_ref=r, n=64, return_object=True, **kw), True),
    "SHAP(module)": (lambda m, x, r, g, **kw: ins.run_shap(m, x, r, n=8, feature_groups=g,
                                                          verbose=False, **kw), True),
}


def _flat(result: Any) -> Tensor:
    """Every value of a result as one float64 CPU vector, and the device it lives on."""
    values = result.get_result("torch_tensor")
    parts = values if isinstance(values, list) else [values]
    flat = []
    for part in parts:
        flat += part if isinstance(part, list) else [part]
    return torch.cat([v.detach().reshape(-1).double().cpu() for v in flat if v is not None])


def _devices(result: Any) -> set[str]:
    values = result.get_result("torch_tensor")
    stack, found = [values], set()
    while stack:
        v = stack.pop()
        if isinstance(v, list):
            stack += v
        elif isinstance(v, Tensor):
            found.add(v.device.type)
    return found


def compare(label: str, run: Callable[..., Any], stochastic: bool, on_device: Callable[..., Any],
            on_cpu: Callable[..., Any], dtype: str, device: str) -> str | None:
    """``None`` where the device result agrees with the CPU result, else what failed."""
    got = on_device(run, seed=0)
    if _devices(got) != {torch.device(device).type}:
        return f"{label}: results on {_devices(got)}, asked for {device}"
    expected = _flat(on_cpu(run, seed=0))
    actual = _flat(got)
    if not torch.isfinite(actual).all():
        return f"{label}: non-finite values on {device}"
    gap = (actual - expected).norm() if stochastic else (actual - expected).abs().max()
    if stochastic:
        spread = (expected - _flat(on_cpu(run, seed=1))).norm()
        if gap > SPREAD_FACTOR * spread:
            return f"{label}: distance {gap:.3g} > {SPREAD_FACTOR} x seed spread {spread:.3g}"
        return None
    scale = expected.abs().max().clamp_min(1e-12)
    if gap > TOL[dtype] * scale:
        return f"{label}: max abs difference {gap:.3g} at scale {scale:.3g} (tol {TOL[dtype]:g})"
    return None


def check_methods(device: str) -> list[str]:
    failures = []
    for problem in problems():
        converter = ins.convert(problem.model, input_dim=problem.input_dim)
        module = copy.deepcopy(problem.model).to(device)
        for dtype in ("double", "float"):
            x, r, g = _one(problem.data), _one(problem.background), problem.groups
            for name, (run, stochastic) in METHODS.items():
                label = f"{problem.name} {dtype} {name}"
                shared = {"dtype": dtype, "verbose": False}
                result = compare(
                    label, run, stochastic,
                    lambda f, **kw: f(converter, x, r, g, device=device, **shared, **kw),
                    lambda f, **kw: f(converter, x, r, g, device="cpu", **shared, **kw),
                    dtype, device)
                print(f"  {'FAIL' if result else 'ok  '} {label}", flush=True)
                failures += [result] if result else []
            for name, (run, stochastic) in DIRECT.items():
                label = f"{problem.name} {dtype} {name}"
                xd = [t.to(device) for t in problem.data]
                rd = [t.to(device) for t in problem.background]
                result = compare(
                    label, run, stochastic,
                    lambda f, **kw: f(module, _one(xd), _one(rd), g, dtype=dtype, **kw),
                    lambda f, **kw: f(problem.model, x, r, g, dtype=dtype, **kw),
                    dtype, device)
                print(f"  {'FAIL' if result else 'ok  '} {label}", flush=True)
                failures += [result] if result else []
    return failures


def median_seconds(fn: Callable[[], Any], repeats: int, device: str) -> float:
    fn()  # warm-up: kernels, caches, cuDNN's algorithm search
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timing(device: str, repeats: int) -> None:
    torch.manual_seed(0)
    cases = [
        ("ResNet-18, 16 x 224^2", torchvision.models.resnet18(weights=None).eval(),
         torch.randn(16, 3, 224, 224), [device]),
        ("ViT-B/16, 8 x 224^2", torchvision.models.vit_b_16(weights=None).eval(),
         torch.randn(8, 3, 224, 224), [device]),
        ("small CNN, 4 x 12^2", problems()[0].model, problems()[0].data[0], [device, "cpu"]),
    ]
    runs = {
        "Gradient": lambda c, x, d: ins.run_grad(c, x, device=d, verbose=False),
        "SmoothGrad n=50": lambda c, x, d: ins.run_smoothgrad(c, x, n=50, device=d, seed=0,
                                                              verbose=False),
        "IntegratedGradient n=50": lambda c, x, d: ins.run_intgrad(c, x, n=50, device=d,
                                                                   verbose=False),
        "DeepLift": lambda c, x, d: ins.run_deeplift(c, x, device=d, verbose=False),
        "LRP epsilon": lambda c, x, d: ins.run_lrp(c, x, rule_name="epsilon", device=d,
                                                   verbose=False),
    }
    print(f"\nTiming: median of {repeats} seconds, float32, 10 outputs")
    for label, model, x, devices in cases:
        converter = ins.convert(model, input_dim=list(x.shape[1:]))
        for name, run in runs.items():
            seconds = {d: median_seconds(lambda d=d: run(converter, x.to(d), d), repeats, d)
                       for d in devices}
            cells = [f"{d}: {s:8.3f} s" for d, s in seconds.items()]
            print(f"  {label:24s} {name:26s} " + "   ".join(cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args()
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device is present (torch.cuda.is_available() is False, "
                 f"torch {torch.__version__}, CUDA build {torch.version.cuda}); run it on a "
                 "machine with an NVIDIA GPU.")
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 comparisons at float32 accuracy
    torch.backends.cudnn.allow_tf32 = False
    name = (torch.cuda.get_device_name(args.device) if args.device.startswith("cuda")
            else args.device)
    print(f"torch {torch.__version__}, {name}")
    print("Methods on the device against the CPU:")
    failures = check_methods(args.device)
    if not args.skip_timing:
        timing(args.device, args.repeats)
    if failures:
        sys.exit("gpu_check failed:\n" + "\n".join(failures))
    print("\ngpu_check: every method agrees with the CPU.")


if __name__ == "__main__":
    main()
