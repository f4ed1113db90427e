"""Gradient methods against Captum and against the raw autograd floor, in one process.

Usage: python benchmarks/bench_gradients.py [--repeats 5]

Cases: (a) a small CNN on 32x32 images, batch 8, n=50, with 1 and 10
explained outputs; (b) an iris-size MLP, 150 samples, 4 features, 3 outputs,
n=50; (c) the plain Gradient of a torchvision resnet18 on 8 images of 224x224,
one output. The raw floor of a method is the least any implementation does:
build its stacked batch with plain torch (the samples themselves for Gradient,
n noisy copies of every sample for SmoothGrad, n path points for
IntegratedGradient), run one forward pass of it through the original model and
one backward pass per output. A second
floor row does the backward passes as one batched vector-Jacobian product
(``is_grads_batched=True``) to show which of the two is faster here. Prints
the median seconds of each, the ratio innsight / floor of the same method and
Captum / innsight.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torchvision
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency
from torch import nn

import innsight as ins

N = 50


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 10),
    ).eval()


def iris_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 3)).eval()


def noisy_copies(x: torch.Tensor) -> torch.Tensor:
    """SmoothGrad's stacked batch: N copies of each sample plus noise scaled per sample."""
    stacked = x.repeat_interleave(N, dim=0)
    spread = x.flatten(1).amax(1) - x.flatten(1).amin(1)
    sigma = (0.1 * spread).repeat_interleave(N).view(-1, *[1] * (x.ndim - 1))
    return torch.addcmul(stacked, torch.randn_like(stacked), sigma)


def path_points(x: torch.Tensor) -> torch.Tensor:
    """IntegratedGradient's stacked batch from a zero baseline: (k/N) x, k = 1..N."""
    alphas = torch.arange(1, N + 1, dtype=x.dtype) / N
    return (x.unsqueeze(1) * alphas.view(1, N, *[1] * (x.ndim - 1))).flatten(0, 1)


def raw_floor(model: nn.Module, stack: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
              n_outputs: int, batched: bool) -> None:
    """Build the stacked batch, one forward pass, then the gradients of every output."""
    stacked = stack(x).requires_grad_(True)
    out = model(stacked)
    if batched:
        eye = torch.zeros(n_outputs, *out.shape)
        eye[torch.arange(n_outputs), :, torch.arange(n_outputs)] = 1.0
        torch.autograd.grad(out, stacked, eye, is_grads_batched=True)
        return
    for j in range(n_outputs):
        torch.autograd.grad(out[:, j].sum(), stacked, retain_graph=j < n_outputs - 1)


def captum_gradient(model: nn.Module, x: torch.Tensor, n_outputs: int) -> None:
    explainer = Saliency(model)
    for j in range(n_outputs):
        explainer.attribute(x, target=j, abs=False)


def captum_smoothgrad(model: nn.Module, x: torch.Tensor, n_outputs: int) -> None:
    explainer = NoiseTunnel(Saliency(model))
    for j in range(n_outputs):
        explainer.attribute(x, nt_type="smoothgrad", nt_samples=N, stdevs=0.1, target=j, abs=False)


def captum_intgrad(model: nn.Module, x: torch.Tensor, n_outputs: int) -> None:
    explainer = IntegratedGradients(model)
    for j in range(n_outputs):
        explainer.attribute(x, baselines=torch.zeros_like(x), target=j, n_steps=N,
                            method="riemann_right")


def median_times(fns: dict[str, Callable[[], None]], repeats: int,
                 clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median seconds of each function; rounds alternate between them so load hits all alike.
    ``clock``: wall time by default, ``time.process_time`` for the process's CPU time (which
    other jobs on a loaded machine disturb less)."""
    times: dict[str, list[float]] = {label: [] for label in fns}
    for round_ in range(repeats + 1):
        for label, fn in fns.items():
            start = clock()
            fn()
            if round_:  # round 0 warms up
                times[label].append(clock() - start)
    return {label: statistics.median(values) for label, values in times.items()}


#: method -> (its stacked batch, innsight's call, Captum's call)
METHODS = {
    "Gradient": (torch.clone, lambda conv, x, idx: ins.run_grad(
        conv, x, output_idx=idx, verbose=False), captum_gradient),
    "SmoothGrad": (noisy_copies, lambda conv, x, idx: ins.run_smoothgrad(
        conv, x, n=N, output_idx=idx, verbose=False), captum_smoothgrad),
    "IntegratedGradient": (path_points, lambda conv, x, idx: ins.run_intgrad(
        conv, x, n=N, output_idx=idx, verbose=False), captum_intgrad),
}


def run_case(name: str, model: nn.Module, x: torch.Tensor, n_outputs: int, repeats: int,
             methods: tuple[str, ...] = tuple(METHODS)) -> None:
    conv = ins.convert(model, input_dim=list(x.shape[1:]))
    idx = list(range(n_outputs))
    timings = {}
    for method in methods:
        stack, ours, theirs = METHODS[method]
        timings[f"{method} floor (backward per output)"] = (
            lambda stack=stack: raw_floor(model, stack, x, n_outputs, batched=False))
        timings[f"{method} floor (batched VJP)"] = (
            lambda stack=stack: raw_floor(model, stack, x, n_outputs, batched=True))
        timings[f"innsight {method}"] = lambda ours=ours: ours(conv, x, idx)
        timings[f"Captum {method}"] = lambda theirs=theirs: theirs(model, x, n_outputs)
    seconds = median_times(timings, repeats)
    print(f"\n{name}: {x.shape[0]} samples of {list(x.shape[1:])}, n={N}, {n_outputs} output(s)")
    for label, value in seconds.items():
        print(f"  {label:40s} {value * 1000:9.1f} ms")
    for method in methods:
        ours = seconds[f"innsight {method}"]
        print(f"  innsight {method}: {ours / seconds[f'{method} floor (backward per output)']:.2f}x "
              f"its floor; Captum takes {seconds[f'Captum {method}'] / ours:.1f}x as long")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats}")
    cnn, images = small_cnn(), torch.randn(8, 3, 32, 32)
    run_case("(a) small CNN", cnn, images, 1, args.repeats)
    run_case("(a) small CNN", cnn, images, 10, args.repeats)
    run_case("(b) iris MLP", iris_mlp(), torch.randn(150, 4), 3, args.repeats)
    run_case("(c) resnet18", torchvision.models.resnet18().eval(), torch.randn(8, 3, 224, 224),
             1, args.repeats, methods=("Gradient",))


if __name__ == "__main__":
    main()
