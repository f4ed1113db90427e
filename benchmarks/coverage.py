"""Which models of a zoo convert: one model per family, random weights, a small input.

    python benchmarks/coverage.py timm [--tracer auto] [--limit N] [--size 64] [--out F]
    python benchmarks/coverage.py torchvision
    python benchmarks/coverage.py keras [--size 32] [--float64]

For each family (a timm model module, or a torchvision classifier) the smallest
model by name is built without pretrained weights, converted, and its output
compared with the original's on random inputs. Before converting, every
floating-point parameter but a bias that is entirely zero gets seeded random values
(see ``randomise_zero_parameters``): timm zero-initialises classifier heads and the
last norm scale of residual branches, and a zero head or branch makes every
comparison read 0 whatever the conversion computes. Prints one row per model:
``converted`` with the largest deviation relative to the output scale, the same for
the difference between the outputs of two inputs (``between``: a model whose output
hardly depends on its input would hide a wrong conversion of what does; in brackets
how far the two outputs lie apart, relative to their scale: near float32's rounding,
``between`` cannot be small), and the method checks (Gradient against autograd on the original, DeepLift's sum
against its goal, both as the largest deviation relative to their scale, and
whether LRP epsilon runs), ``refused`` with the first line of the
ConversionError (which names the operation), or ``crashed`` with the exception
type (a defect: every refusal must be a ConversionError), and the counts.
``--out`` writes the rows as JSON (the docs' coverage page shows
``docs/data/coverage_timm.json``). Needs ``pip install timm`` for timm.

The ``keras`` mode takes every ``keras.applications`` model at ``--size`` (or the
smallest size it accepts) with random weights and logits out, on uniform [0, 255]
images passed through the application's own ``preprocess_input`` (the input range it
expects), and reports two norm-wise relative errors ``||ours - keras|| / ||keras||``
over the whole tensor (all samples, all entries): the logits, and the float32
Gradient of two logits against Keras' float32 ``tf.GradientTape`` (the larger of
the two). ``--float64`` adds the gradients of a float64 copy of the Keras model
(``tf.GradientTape``) and of our float64 conversion, and reports against them
Keras' float32 gradient, ours in float32, and ours in float64 against Keras'
float64: a float32 gradient far from Keras' float32 one but close to the float64
ones is the accurate one, and an input where Keras' own float32 gradient is far
from its float64 one is ill-conditioned for any float32 implementation.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision  # noqa: F401  (before anything that may load tensorflow)

import innsight as ins

# the tests' Keras references (forward, tf.GradientTape, float64 models)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "converter"))

#: Name fragments of small variants, smallest first: the first match names a family's model.
SIZES = ["atto", "femto", "pico", "nano", "tiny", "xxs", "xs", "small", "mini", "s", "18",
         "b0", "050", "100", "base", "m", "medium"]


def _size_rank(name: str) -> tuple[int, int, str]:
    parts = re.split(r"[_.\-]", name)
    rank = min((SIZES.index(p) for p in parts if p in SIZES), default=len(SIZES))
    return rank, len(name), name


def timm_models() -> Iterator[tuple[str, Callable[[int], torch.nn.Module]]]:
    import timm

    for module in sorted(timm.list_modules()):
        names = sorted(timm.list_models(module=module), key=_size_rank)
        if names:
            yield names[0], lambda size, name=names[0]: _timm_model(timm, name, size)


def _timm_model(timm: Any, name: str, size: int) -> torch.nn.Module:
    try:  # models with a fixed input size take it as img_size
        return timm.create_model(name, pretrained=False, img_size=size)
    except TypeError:
        return timm.create_model(name, pretrained=False)


def torchvision_models() -> Iterator[tuple[str, Callable[[int], torch.nn.Module]]]:
    for name in torchvision.models.list_models(module=torchvision.models):
        yield name, lambda size, name=name: torchvision.models.get_model(name, weights=None)


#: The logits whose gradients the keras mode compares.
KERAS_CLASSES = [0, 7]


def keras_applications() -> Iterator[tuple[str, Callable[[int], tuple[Any, np.ndarray]]]]:
    import keras
    from keras_reference import application

    for name in sorted(n for n in dir(keras.applications) if n[0].isupper()):
        yield name, lambda size, name=name: application(name, size)


def check_keras(make: Callable[[int], tuple[Any, np.ndarray]], size: int, float64: bool,
                seconds: int) -> tuple[str, str]:
    """(status, detail) of converting one Keras application and comparing its logits and
    float32 gradients with Keras' (see the module's docstring)."""
    from keras_reference import float64 as keras_float64
    from keras_reference import keras_outputs, norm_rel_error, tape_gradients

    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        model, x = make(size)
        conv = ins.convert(model)
        with torch.no_grad():
            logits = conv.model(torch.as_tensor(np.moveaxis(x, -1, 1))).numpy()
        forward = norm_rel_error(logits, keras_outputs(model, [x])[0])
        res = ins.run_grad(conv, x, channels_first=False, output_idx=KERAS_CLASSES)
        ours = np.asarray(res.get_result("array"))
        tape = tape_gradients(model, [x], 0, KERAS_CLASSES)[0]
        grad = max(norm_rel_error(ours[..., k], tape[..., k]) for k in range(len(KERAS_CLASSES)))
        detail = f"logits {forward:.1e}  gradient {grad:.1e}"
        if float64:
            with keras_float64():
                double, _ = make(size)  # the same architecture in float64
            double.set_weights([w.astype("float64") for w in model.get_weights()])
            exact = tape_gradients(double, [x.astype("float64")], 0, KERAS_CLASSES)[0]
            ours64 = np.asarray(ins.run_grad(conv, x, channels_first=False, dtype="double",
                                             output_idx=KERAS_CLASSES).get_result("array"))

            def error(a: np.ndarray, e: np.ndarray) -> float:
                return max(norm_rel_error(a[..., k], e[..., k]) for k in range(len(KERAS_CLASSES)))

            detail += (f"  keras f32 vs f64 {error(tape, exact):.1e}  ours f32 vs keras f64 "
                       f"{error(ours, exact):.1e}  ours f32 vs f64 {error(ours, ours64):.1e}  "
                       f"ours f64 vs keras f64 {error(ours64, exact):.1e}")
        return "converted", detail
    except ins.ConversionError as err:
        return "refused", str(err).splitlines()[0][:160]
    except _Timeout:
        return "timeout", f"more than {seconds} s"
    except Exception as err:  # a defect: every refusal must be a ConversionError
        return "crashed", f"{type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}"
    finally:
        signal.alarm(0)


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout


def check(make: Callable[[int], torch.nn.Module], size: int, tracer: str,
          seconds: int) -> tuple[str, str, int | None]:
    """(status, detail, how many all-zero parameters were randomised, None where the model
    did not build) of converting one model at ``size`` x ``size`` pixels."""
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    randomised = None
    try:
        model = make(size).eval()
        randomised = randomise_zero_parameters(model)
        size = _working_size(model, size)
        conv = ins.convert(model, input_dim=[3, size, size], tracer=tracer)
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            expected, actual = model(x), conv.model(x)
        expected, actual = _first(expected), _first(actual)
        between = _relative(actual[0] - actual[1], expected[0] - expected[1])
        dependence = _relative(expected[0], expected[1])  # how much the output moves at all
        detail = (f"{_relative(actual, expected):.1e}  between {between:.1e} (of "
                  f"{dependence:.1e})  " + _method_checks(model, conv, x))
        return "converted", detail, randomised
    except ins.ConversionError as err:
        return "refused", _last_reason(str(err))[:160], randomised
    except _Timeout:
        return "timeout", f"more than {seconds} s", randomised
    except Exception as err:  # the model itself failed to build or run: not our refusal
        message = str(err).splitlines()[0][:120] if str(err) else ""
        return "crashed", f"{type(err).__name__}: {message}", randomised
    finally:
        signal.alarm(0)


#: Standard deviation of the values given to an all-zero parameter, relative to a standard
#: init (``1 / sqrt(fan_in)`` for a weight, 1 for a norm scale or other vector).
ZERO_PARAMETER_SCALE = 0.2


def randomise_zero_parameters(model: torch.nn.Module, seed: int = 0) -> int:
    """Give every floating-point parameter of ``model`` that is entirely zero, biases
    excepted, normal values in place; returns how many parameters it changed. Buffers
    (batch norm's running statistics) stay as they are.

    Notes
    -----
    A zero classifier head makes the output identically 0 and a zero last norm scale
    (timm's ``zero_init_last``) makes a residual branch add exactly 0, so a wrongly
    converted head or branch would still reproduce the original exactly. The values
    have ``ZERO_PARAMETER_SCALE`` times the spread of a standard init (``1 / sqrt(fan_in)``
    for a parameter with two or more dimensions, ``fan_in`` as in torch's initialisers;
    1 for a vector or scalar such as a norm scale): large enough to make every branch
    count, small enough to keep deep residual stacks finite. Biases (``bias``,
    ``*_bias``) keep their standard zero init: through a randomly initialised network
    with batch norm's unit running statistics the input's signal shrinks with depth,
    and random biases (even at 0.02) swamp it, leaving outputs that vary with the
    input by 1e-7 of their size (tiny_vit, nextvit, lcnetv2, regnetv), which hides
    a wrong conversion as well as a zero head does."""
    generator = torch.Generator().manual_seed(seed)
    changed = 0
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if (leaf == "bias" or leaf.endswith("_bias") or not parameter.is_floating_point()
                    or parameter.numel() == 0 or parameter.any()):
                continue
            fan_in = parameter[0].numel() if parameter.dim() >= 2 else 1
            values = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.copy_(values * (ZERO_PARAMETER_SCALE / fan_in ** 0.5))
            changed += 1
    return changed


def _relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """The largest deviation of ``actual`` from ``expected`` relative to its scale."""
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item()


def _method_checks(model: torch.nn.Module, conv: Any, x: torch.Tensor) -> str:
    """``grad <err> deeplift <err> lrp ok|<error>`` for the original's top output of the
    first sample: the Gradient against autograd on the original relative to its scale,
    the DeepLift sum (zero reference) against ``f(x) - f(0)`` relative to the larger of
    ``|f(x)|`` and ``|f(0)|``."""
    x = x[:1]
    with torch.no_grad():
        k = int(_first(model(x)).argmax())
    source = x.clone().requires_grad_(True)
    _first(model(source))[:, k].sum().backward()
    grad = ins.run_grad(conv, x, output_idx=[k], ignore_last_act=False)
    grad_error = _relative(grad.get_result("torch_tensor")[..., 0], source.grad)
    deeplift = ins.run_deeplift(conv, x, output_idx=[k], ignore_last_act=False)
    with torch.no_grad():
        at_x, at_zero = _first(model(x))[:, k], _first(model(torch.zeros_like(x)))[:, k]
    total = deeplift.get_result("torch_tensor")[..., 0].flatten(1).sum(1)
    # relative to the output's scale: with random weights f(x) - f(0) can be ~0
    scale = torch.stack([at_x.abs(), at_zero.abs()]).max().clamp_min(1e-12)
    deeplift_error = ((total - (at_x - at_zero)).abs().max() / scale).item()
    try:
        lrp = ins.run_lrp(conv, x, rule_name="epsilon", output_idx=[k], ignore_last_act=False)
        lrp_state = "ok" if bool(lrp.get_result("torch_tensor").isfinite().all()) else "nonfinite"
    except Exception as err:  # report, do not stop the sweep
        lrp_state = type(err).__name__
    return f"grad {grad_error:.1e} deeplift {deeplift_error:.1e} lrp {lrp_state}"


def _first(output: Any) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output[0]


def _working_size(model: torch.nn.Module, size: int) -> int:
    """``size``, or where the model itself cannot run on it (too small for its strides or
    its position tables), its own input size (timm's ``pretrained_cfg``)."""
    try:
        with torch.no_grad():
            model(torch.randn(2, 3, size, size))
        return size
    except Exception:  # the model's own limits, whatever it raises
        cfg = getattr(model, "pretrained_cfg", None) or {}
        return cfg.get("input_size", (3, 224, 224))[-1]


#: How a ConversionError of ``tracer="auto"`` introduces the reason of its second try.
_EXPORT_REASON = "Traced with torch.export instead (tracer='export'): "


def _last_reason(message: str) -> str:
    """The reason of the last tracer tried: torch.export's where torch.fx failed first."""
    lines = message.splitlines()
    last = next((line for line in reversed(lines) if line.startswith(_EXPORT_REASON)), None)
    return "export: " + last[len(_EXPORT_REASON):] if last else lines[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zoo", choices=["timm", "torchvision", "keras"])
    parser.add_argument("--tracer", default="auto", choices=["auto", "fx", "export"])
    parser.add_argument("--size", type=int, default=None, help="default 64 (keras: 32)")
    parser.add_argument("--float64", action="store_true",
                        help="keras: also the gradients against float64 ones (Keras', ours)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--seconds", type=int, default=120, help="per model")
    parser.add_argument("--only", default=None,
                        help="comma-separated parts of model names: check only those")
    parser.add_argument("--out", default=None, help="write the rows to this JSON file")
    parser.add_argument("--part", default="0/1",
                        help="i/n: check only every n-th model from the i-th (parallel runs)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    zoos = {"timm": timm_models, "torchvision": torchvision_models, "keras": keras_applications}
    models = zoos[args.zoo]()
    size = args.size or (32 if args.zoo == "keras" else 64)
    part, parts = (int(n) for n in args.part.split("/"))
    counts: dict[str, int] = {}
    rows = []
    for k, (name, make) in enumerate(models):
        if args.limit is not None and k >= args.limit:
            break
        if args.only and not any(part in name for part in args.only.split(",")):
            continue
        if k % parts != part:
            continue
        start = time.perf_counter()
        randomised = None
        if args.zoo == "keras":
            status, detail = check_keras(make, size, args.float64, args.seconds)
        else:
            status, detail, randomised = check(make, size, args.tracer, args.seconds)
        counts[status] = counts.get(status, 0) + 1
        seconds = time.perf_counter() - start
        row = {"model": name, "status": status, "seconds": round(seconds, 1), "detail": detail}
        rows.append(row if randomised is None else {**row, "randomised": randomised})
        zeros = "" if randomised is None else f"  ({randomised} zero parameters randomised)"
        print(f"{name:45s} {status:9s} {seconds:6.1f} s  {detail}{zeros}", flush=True)
    print("counts:", ", ".join(f"{status} {n}" for status, n in sorted(counts.items())))
    if args.out:
        with open(args.out, "w") as file:
            json.dump({"zoo": args.zoo, "size": size, "tracer": args.tracer,
                       "torch": torch.__version__, "rows": rows}, file, indent=1)


if __name__ == "__main__":
    main()
