"""Nothing assumes the CPU: checks that run on a CPU-only machine and would catch what
fails on a GPU (``benchmarks/gpu_check.py`` runs the methods on CUDA itself).

- A converted model moved with ``.to("meta")`` keeps no tensor behind: every tensor a
  layer holds (parameters, buffers, and plain attributes, in lists and dicts too) is
  on the meta device. A tensor kept as a plain attribute would stay on the CPU and
  meet CUDA tensors in the forward pass.
- While a method runs, no tensor factory (``torch.zeros``, ``randn``, ``arange`` ...)
  is called from innsight without ``device=``: such a tensor is made on the CPU
  whatever device the method runs on. Zero-dimensional tensors are exempt (torch mixes
  CPU scalars with any device), and so is the conversion of the user's input
  (``methods/data.py``), which moves it to the method's device at once.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from random_nets import NetSpec, build, examples, nets
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

import innsight as ins

PACKAGE = Path(ins.__file__).parent
#: Where a tensor may be made on the CPU: the user's input, moved to the device next.
INPUT_CONVERSION = PACKAGE / "methods" / "data.py"
FACTORIES = {torch.zeros, torch.ones, torch.empty, torch.full, torch.arange, torch.linspace,
             torch.logspace, torch.eye, torch.rand, torch.randn, torch.randint, torch.randperm,
             torch.tensor, torch.as_tensor, torch.scalar_tensor, torch.normal, torch.tril_indices,
             torch.triu_indices}


def held_tensors(value: Any, depth: int = 3) -> Iterator[Tensor]:
    """Tensors in ``value``, and in its lists, tuples and dicts down to ``depth``."""
    if isinstance(value, Tensor):
        yield value
    elif depth > 0 and isinstance(value, (list, tuple)):
        for item in value:
            yield from held_tensors(item, depth - 1)
    elif depth > 0 and isinstance(value, dict):
        for item in value.values():
            yield from held_tensors(item, depth - 1)


def off_device(model: nn.Module, device: str) -> list[str]:
    """``module.attribute`` of every tensor ``model``'s submodules hold off ``device``."""
    return [f"{name or 'model'}.{attr}" for name, module in model.named_modules()
            for attr, value in vars(module).items() for t in held_tensors(value)
            if t.device.type != device]


@settings(max_examples=examples(0.2))
@given(spec=nets())
def test_a_converted_random_network_moves_every_tensor_it_holds(spec: NetSpec) -> None:
    conv = ins.convert(build(spec), input_dim=list(spec.input_dim), dtype="double")
    assert off_device(conv.model.to("meta"), "meta") == []


@pytest.mark.parametrize("fixture", ["cnn1d", "cnn2d", "residual_net", "small_vit",
                                     "two_in_two_out", "two_input_net"])
def test_converted_models_move_every_tensor_they_hold(fixture, request):
    model = request.getfixturevalue(fixture)
    dims = {"cnn1d": [2, 20], "cnn2d": [3, 12, 12], "residual_net": [3, 16, 16],
            "small_vit": [3, 32, 32], "two_in_two_out": [[2, 6, 6], [4]],
            "two_input_net": [[3, 10, 10], [4]]}[fixture]
    conv = ins.convert(model, input_dim=dims)
    assert off_device(conv.model.to("meta"), "meta") == []


class FactoryWatch(TorchFunctionMode):
    """Records ``file:line (factory)`` of each call from innsight's code that makes a
    tensor with at least one axis without naming its device."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in FACTORIES and "device" not in kwargs and isinstance(out, Tensor) and out.ndim:
            ours = [f for f in traceback.extract_stack()
                    if Path(f.filename).is_relative_to(PACKAGE)]
            if ours and Path(ours[-1].filename) != INPUT_CONVERSION:
                self.calls.append(f"{ours[-1].filename}:{ours[-1].lineno} ({func.__name__})")
        return out


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(12, 4), nn.Softmax(1)).eval()


X = torch.randn(3, 2, 6, 6, generator=torch.Generator().manual_seed(1))
REF = torch.randn(6, 2, 6, 6, generator=torch.Generator().manual_seed(2))
RUNS: dict[str, Callable[[Any], Any]] = {
    "Gradient": lambda c: ins.run_grad(c, X, times_input=True),
    "SmoothGrad": lambda c: ins.run_smoothgrad(c, X, n=4, seed=0),
    "IntegratedGradient": lambda c: ins.run_intgrad(c, X, x_ref=REF[:1], n=4),
    "ExpectedGradient": lambda c: ins.run_expgrad(c, X, data_ref=REF, n=4, seed=0),
    "DeepLift": lambda c: ins.run_deeplift(c, X, rule_name="reveal_cancel"),
    "DeepSHAP": lambda c: ins.run_deepshap(c, X, data_ref=REF, limit_ref=3, seed=0),
    "LRP": lambda c: ins.run_lrp(c, X, rule_name="alpha_beta", rule_param=2),
    "LIME": lambda c: ins.run_lime(c, X, REF, n=20, seed=0),
    "SHAP": lambda c: ins.run_shap(c, X, REF, n=2, seed=0,
                                   feature_groups=torch.arange(72).reshape(2, 6, 6) // 4),
}


@pytest.fixture(scope="module")
def converter() -> ins.Converter:
    return ins.convert(_net(), input_dim=[2, 6, 6])


@pytest.mark.parametrize("name", list(RUNS))
def test_methods_name_the_device_of_every_tensor_they_make(converter, name):
    with FactoryWatch() as watch:
        RUNS[name](converter).get_result("torch_tensor")
    assert watch.calls == []


@pytest.mark.parametrize("fn", [ins.torch_grad, ins.torch_smoothgrad, ins.torch_intgrad,
                                ins.torch_expgrad])
def test_direct_methods_name_the_device_of_every_tensor_they_make(fn):
    with FactoryWatch() as watch:
        fn(_net(), X, seed=0)
    assert watch.calls == []


def test_the_watch_sees_a_factory_without_device():
    """The check itself: a layer that makes a CPU tensor in its forward is reported."""
    conv = ins.convert(_net(), input_dim=[2, 6, 6])
    layer = conv.model.layers[-1]
    forward = layer.forward
    layer.forward = lambda x: forward(x) + torch.zeros(x.shape[1:])  # no device=
    with FactoryWatch() as watch:
        ins.run_grad(conv, X)
    assert any("converted_model.py" in call and "(zeros)" in call for call in watch.calls)
