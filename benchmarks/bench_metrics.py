"""Metrics against Quantus and against the bare batched forward passes, in one process.

Usage: python benchmarks/bench_metrics.py [--repeats 5] [--metrics ROAD "ROAD (grey)" ...]
       [--no-quantus] [--clock cpu] [--threads 1]

The model: 3x32x32 images, conv 16-32 with max pooling, dense 10 (the CNN of
bench_agnostic.py); 16 images, float32; one explanation (gradient x input of
class 0, computed once) scored for class 0. Pixel flipping: 32 features (entries)
per step, 96 steps, baseline 0, most relevant first; both libraries get the same
explanation and settings (Quantus with ``softmax=False``, ``normalise=False``), and
their curves are checked to agree. ROAD: 21 pixels per step (49 steps, as Quantus'
1, 3, ..., 99 percent), noise 0.01. Quantus' ROAD fails on three-channel images (it
ranks channel entries but imputes pixels), so it is timed on a greyscale twin
(1x32x32 images, the same CNN with one input channel): "ROAD (grey)". Quantus
records whether the predicted class survives and we record the output, but both
impute 16 x 49 or 50 images and evaluate them; its imputation is a direct sparse
solve per image and step, ours two dense Cholesky factors of half the pixels per image
for all its steps.
Faithfulness correlation: 100 random subsets of 307 entries per sample (Quantus with
the same counts); infidelity: 50 Gaussian perturbations per sample (Quantus'
infidelity perturbs patches instead, so it is not timed); max-sensitivity: 10 noisy
copies per sample in a box of half-width 0.2, each re-explained by gradient x input
(Quantus through Captum's InputXGradient, ours by re-running the method).

The floor of a curve metric is the bare forward pass of every input it needs (the
unchanged and the fully changed input and every step between, 16 x 97 rows for
pixel flipping, 16 x 49 for ROAD), batched as innsight batches them, the inputs
built beforehand, through the original model (and, printed below the table, through
the converted graph, which innsight evaluates); of faithfulness correlation and
infidelity the bare forwards of the samples and their perturbed copies; of a
sensitivity the autograd gradient x input of every noisy copy (weights frozen), the
noise drawn beforehand (a second floor, printed below the table, draws it in the call).
Sparseness and complexity need no model. Rounds alternate between all timed functions;
the table holds medians.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
import torchvision  # noqa: F401  (before quantus imports tensorflow: the reverse order segfaults)
from bench_agnostic import small_cnn
from bench_gradients import median_times

import innsight as ins
import quantus  # noqa: E402

STEP, ROAD_STEP, CLASS, BATCH = 32, 21, 0, 512
RUNS, SUBSET, PERTURBATIONS, NOISY = 100, 307, 50, 10


def grey_cnn() -> torch.nn.Module:
    """:func:`small_cnn` for one input channel."""
    model = small_cnn()
    model[0] = torch.nn.Conv2d(1, 16, 3, padding=1)
    return model.eval()


def floor_fn(model: torch.nn.Module, x: torch.Tensor, values: torch.Tensor, step: int = STEP,
             pixels: bool = False):
    """Bare forwards of every input of a deletion curve (0, step, 2 step, ... entries or
    pixels removed, up to all entries, or up to the last step before all pixels), the
    perturbed inputs made beforehand (removed entries 0: the imputation is not counted)."""
    a = values.sum(1) if pixels else values
    flat, a = x.flatten(1), a.flatten(1)
    rank = a.argsort(dim=1, descending=True, stable=True).argsort(dim=1)
    ends = [] if pixels else [a.shape[1]]
    counts = torch.tensor([*range(0, a.shape[1], step), *ends])
    removed = rank[:, None] < counts[None, :, None]  # (n, steps, entries or pixels)
    if pixels:
        removed = removed.view(len(x), len(counts), 1, -1).expand(-1, -1, x.shape[1], -1)
    inputs = torch.where(removed.reshape(len(x), len(counts), -1), 0.0, flat[:, None])
    return forwards(model, inputs.reshape(-1, *x.shape[1:]))


def forwards(model: torch.nn.Module, inputs: torch.Tensor):
    """Bare forwards of ``inputs``, ``BATCH`` rows at a time."""
    def run() -> None:
        with torch.no_grad():
            for start in range(0, len(inputs), BATCH):
                model(inputs[start:start + BATCH])
    return run


def perturbed_floor(model: torch.nn.Module, x: torch.Tensor, n: int):
    """Bare forwards of ``n`` perturbed copies of each sample and the samples themselves
    (faithfulness correlation, infidelity), the copies made beforehand."""
    copies = x.repeat_interleave(n, 0) + 0.1 * torch.randn(len(x) * n, *x.shape[1:])
    return forwards(model, torch.cat([x, copies]))


def gradient_floor(model: torch.nn.Module, x: torch.Tensor, n: int, draw: bool = False):
    """Gradient x input of class ``CLASS`` by autograd on ``n`` noisy copies of each sample
    (a sensitivity's re-explanations), ``BATCH`` rows at a time, the weights frozen (no
    autograd bookkeeping for them, as in the converted graph); the noise drawn beforehand,
    or with ``draw`` inside the timed call."""
    model = copy.deepcopy(model).requires_grad_(False)
    made = x.repeat_interleave(n, 0) + 0.2 * (2 * torch.rand(len(x) * n, *x.shape[1:]) - 1)

    def run() -> None:
        noisy = made if not draw else x.repeat(n, 1, 1, 1) + torch.empty(
            n * len(x), *x.shape[1:]).uniform_(-0.2, 0.2)
        for start in range(0, len(noisy), BATCH):
            rows = noisy[start:start + BATCH].requires_grad_(True)
            grad, = torch.autograd.grad(model(rows)[:, CLASS].sum(), rows)
            grad * rows
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--metrics", nargs="+", metavar="NAME",
                        help="time only these rows of the table (default: all)")
    parser.add_argument("--no-quantus", action="store_true",
                        help="time innsight against the floors only")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall time, or the process's CPU time (steadier under load)")
    parser.add_argument("--threads", type=int,
                        help="torch's threads (default its own); under load from other jobs "
                             "one thread is steadier: two stall in every LAPACK call")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats
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
        "ROAD (grey)": quantus.ROAD(percentages=list(range(1, 100, 2)), noise=0.01,
                                    normalise=False, disable_warnings=True),
        "faithfulness corr.": quantus.FaithfulnessCorrelation(
            nr_runs=RUNS, subset_size=SUBSET, perturb_baseline="black", normalise=False,
            abs=False, return_aggregate=False, disable_warnings=True),
        "max-sensitivity": quantus.MaxSensitivity(
            nr_samples=NOISY, lower_bound=0.2, normalise=False, abs=False,
            disable_warnings=True),
    }
    road = ins.metrics.ROAD(features_in_step=ROAD_STEP)
    ours = {"pixel flipping": deletion, "ROAD": road, "ROAD (grey)": road,
            "faithfulness corr.": ins.metrics.FaithfulnessCorrelation(n=RUNS, subset_size=SUBSET),
            "infidelity": ins.metrics.Infidelity(n=PERTURBATIONS),
            "max-sensitivity": ins.metrics.Sensitivity(n=NOISY, radius=0.2),
            "sparseness": "sparseness", "complexity": "complexity"}
    unknown = set(args.metrics or []) - set(ours)
    if unknown:
        parser.error(f"unknown --metrics {sorted(unknown)}; the rows are {list(ours)}")
    ours = {name: m for name, m in ours.items() if args.metrics is None or name in args.metrics}
    grey_model = grey_cnn()
    grey_x = torch.rand(16, 1, 32, 32)
    grey_res = ins.run_grad(ins.convert(grey_model, input_dim=[1, 32, 32]), grey_x,
                            output_idx=CLASS, times_input=True, batch_size=BATCH)
    grey_values = grey_res.get_result("torch_tensor")[..., 0]
    results = {name: grey_res if name == "ROAD (grey)" else res for name in ours}

    def quantus_call(metric, net=model, data=x, explanation=values):
        return lambda: metric(model=net, x_batch=data.numpy(), y_batch=y,
                              a_batch=explanation.numpy(), softmax=False, channel_first=True,
                              device="cpu", batch_size=64, explain_func=quantus.explain,
                              explain_func_kwargs={"method": "InputXGradient", "reduce_axes": ()})

    if "pixel flipping" in ours and not args.no_quantus:
        curves = ins.evaluate(res, [deletion]).attrs["curves"]
        theirs = np.asarray(quantus_call(quantus_metrics["pixel flipping"])())
        mine = curves.pivot(index="data", columns="step", values="value").to_numpy()[:, 1:]
        print(f"pixel flipping curves: max |innsight - Quantus| = "
              f"{np.abs(mine - theirs).max():.2e}")

    floors = {"pixel flipping": floor_fn(model, x, values),
              "ROAD": floor_fn(model, x, values, ROAD_STEP, pixels=True),
              "ROAD (grey)": floor_fn(grey_model, grey_x, grey_values, ROAD_STEP, pixels=True),
              "faithfulness corr.": perturbed_floor(model, x, RUNS),
              "infidelity": perturbed_floor(model, x, PERTURBATIONS),
              "max-sensitivity": gradient_floor(model, x, NOISY)}
    fns = {f"floor {name}": fn for name, fn in floors.items() if name in ours}
    if "pixel flipping" in ours:
        fns["floor converted pixel flipping"] = floor_fn(conv.model, x, values)
    if "max-sensitivity" in ours:
        fns["floor drawing max-sensitivity"] = gradient_floor(model, x, NOISY, draw=True)
    for name in ours:
        fns[f"innsight {name}"] = lambda m=ours[name], r=results[name]: ins.evaluate(
            r, [m], batch_size=BATCH)
        if name == "ROAD (grey)" and not args.no_quantus:
            fns[f"quantus {name}"] = quantus_call(quantus_metrics[name], grey_model, grey_x,
                                                  grey_values)
        elif name in quantus_metrics and not args.no_quantus:
            fns[f"quantus {name}"] = quantus_call(quantus_metrics[name])
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    times = median_times(fns, repeats, clock)
    print(f"medians of {repeats} rounds, {args.clock} time")
    print(f"{'metric':<20}{'innsight s':>12}{'floor s':>10}{'innsight/floor':>16}"
          f"{'Quantus s':>12}{'Quantus/innsight':>18}")
    for name in ours:
        mine_s = times[f"innsight {name}"]
        floor = times.get(f"floor {name}")
        floor_text = (f"{floor:>10.4f}{mine_s / floor:>16.2f}" if floor is not None
                      else f"{'-':>10}{'-':>16}")
        theirs = times.get(f"quantus {name}")
        theirs_text = (f"{theirs:>12.4f}{theirs / mine_s:>18.2f}" if theirs is not None
                       else f"{'-':>12}{'-':>18}")
        print(f"{name:<20}{mine_s:>12.4f}{floor_text}{theirs_text}")
    if "pixel flipping" in ours:
        converted = times["floor converted pixel flipping"]
        print(f"pixel flipping floor through the converted graph: {converted:.4f} s (innsight / "
              f"it: {times['innsight pixel flipping'] / converted:.2f})")
    if "max-sensitivity" in ours:
        drawing = times["floor drawing max-sensitivity"]
        print(f"max-sensitivity floor drawing its noise in the timed call: {drawing:.4f} s "
              f"(innsight / it: {times['innsight max-sensitivity'] / drawing:.2f})")


if __name__ == "__main__":
    main()
