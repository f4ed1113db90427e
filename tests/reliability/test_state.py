"""No state leaks: the user's model, the converter and the caller's random state stay as
they were, whatever ran (and also where conversion or a method failed half way), and
methods give the same results interleaved, or from two threads, as alone.

The references are snapshots taken before (parameters, buffers, flags, hooks,
attributes of every submodule; the torch, numpy and ``random`` global states) and the
results of each method run alone.
"""

from __future__ import annotations

import copy
import random
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import torch
from method_runs import METHODS as CONVERTER_METHODS
from method_runs import N_REF, STOCHASTIC, images
from torch import Tensor, nn

import innsight as ins


class Net(nn.Module):
    """Input (2, 6, 6): convolution, batch norm, dropout, dense; output (3,). One frozen
    parameter, so that a change of ``requires_grad`` shows."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 4 * 4, 3)
        self.conv.bias.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.drop(torch.relu(self.bn(self.conv(x)))).flatten(1))


def _net(train: bool = False) -> Net:
    torch.manual_seed(0)
    model = Net().train(train)
    with torch.no_grad():
        model.bn.running_mean.normal_(0, 0.2)
        model.bn.running_var.uniform_(0.5, 1.5)
    return model


def snapshot(model: nn.Module) -> dict[str, Any]:
    """Everything of ``model`` a method could change: per submodule its training flag,
    attribute names and hooks; per parameter and buffer its values, dtype, device,
    ``requires_grad`` and whether it holds a gradient."""
    hook_dicts = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                  "_backward_pre_hooks", "_state_dict_hooks", "_load_state_dict_pre_hooks")
    return {
        "modules": [(name, m.training, sorted(vars(m)), [len(getattr(m, h)) for h in hook_dicts])
                    for name, m in model.named_modules()],
        "tensors": [(name, t.detach().clone(), t.dtype, t.device, t.requires_grad,
                     t.grad is None if isinstance(t, nn.Parameter) else None)
                    for name, t in [*model.named_parameters(), *model.named_buffers()]],
        "global hooks": [len(h) for h in (nn.modules.module._global_forward_hooks,
                                          nn.modules.module._global_forward_pre_hooks,
                                          nn.modules.module._global_backward_hooks)],
    }


def assert_unchanged(model: nn.Module, before: dict[str, Any]) -> None:
    after = snapshot(model)
    assert after["modules"] == before["modules"]
    assert after["global hooks"] == before["global hooks"]
    for (name, *now), (_, *then) in zip(after["tensors"], before["tensors"], strict=True):
        assert torch.equal(now[0], then[0]), f"{name}: values changed"
        assert now[1:] == then[1:], (
            f"{name}: (dtype, device, requires_grad, no grad) {then[1:]} -> {now[1:]}")


#: The methods that run the user's own torch module.
MODULE_METHODS: dict[str, Callable[..., Any]] = {
    "torch_grad": lambda m, x, **kw: ins.torch_grad(m, x, **kw),
    "torch_smoothgrad": lambda m, x, **kw: ins.torch_smoothgrad(m, x, n=8, **kw),
    "torch_intgrad": lambda m, x, **kw: ins.torch_intgrad(m, x, n=8, **kw),
    "torch_expgrad": lambda m, x, **kw: ins.torch_expgrad(m, x, data_ref=images(N_REF, 9), n=8,
                                                          **kw),
    "LIME(module)": lambda m, x, **kw: ins.run_lime(m, x, images(N_REF, 9), n=40, verbose=False,
                                                    **kw),
    "SHAP(module)": lambda m, x, **kw: ins.run_shap(m, x, images(N_REF, 9), n=4, verbose=False,
                                                    **kw),
}
MODULE_STOCHASTIC = ("torch_smoothgrad", "torch_expgrad", "LIME(module)", "SHAP(module)")


def _values(result: Any) -> Tensor:
    """The values of a result object or a direct method's tensor."""
    return result if isinstance(result, Tensor) else result.get_result("torch_tensor")


@pytest.fixture(scope="module")
def converter() -> ins.Converter:
    return ins.convert(_net(), input_dim=[2, 6, 6])


# ---- the user's model and the converter --------------------------------------------------


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("dtype", ["float", "double"])
def test_conversion_leaves_the_model_as_it_was(train, dtype):
    model = _net(train)
    before = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the train-mode warning
        ins.convert(model, input_dim=[2, 6, 6], dtype=dtype)
    assert_unchanged(model, before)


class UpdatesItsState(nn.Module):
    """Input (4,), output (3,): updates a parameter and a buffer in place in its forward
    (through operations ``torch.fx`` records), the output reads the updated parameter."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 3)
        self.scale = nn.Parameter(torch.full((3,), 1.5), requires_grad=False)
        self.register_buffer("cache", torch.zeros(3))

    def forward(self, x: Tensor) -> Tensor:
        self.scale.mul_(2)
        h = self.fc(x) * self.scale
        self.cache.copy_(h[0])
        return h


class CountsItsCalls(UpdatesItsState):
    """:class:`UpdatesItsState` that also counts its calls in a buffer, ``steps += 1``,
    which ``torch.fx`` runs on the buffer instead of recording it; the output reads it."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("steps", torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        self.steps += 1
        return super().forward(x) + self.steps


@pytest.mark.parametrize("tracer", ["fx", "export", "auto"])
@pytest.mark.parametrize("model_class", [UpdatesItsState, CountsItsCalls])
def test_conversion_leaves_a_model_updating_its_state_as_it_was(model_class, tracer):
    """The converted model computes what one call of the forward computes from the state
    before conversion (a copy of the model, called once, is the reference), or torch.fx
    refuses the update it cannot record by the buffer's name; either way the model is as
    it was."""
    model = model_class().eval()
    before = snapshot(model)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = copy.deepcopy(model)(x)
    if model_class is CountsItsCalls and tracer == "fx":
        with pytest.raises(ins.ConversionError, match=r"updates the buffer\(s\) \['steps'\]"):
            ins.convert(model, input_dim=[4], tracer=tracer)
    else:
        conv = ins.convert(model, input_dim=[4], tracer=tracer)
        with torch.no_grad():
            torch.testing.assert_close(conv.model(x), expected, rtol=1e-6, atol=1e-6)
    assert_unchanged(model, before)


@pytest.mark.parametrize("name", list(CONVERTER_METHODS))
@pytest.mark.parametrize("dtype", ["float", "double"])
def test_methods_leave_the_converted_model_as_it_was(converter, name, dtype):
    before = snapshot(converter.model)
    CONVERTER_METHODS[name](converter, images(3, 1), dtype=dtype, verbose=False)
    assert_unchanged(converter.model, before)


@pytest.mark.parametrize("name", list(MODULE_METHODS))
@pytest.mark.parametrize("dtype", ["float", "double"])
def test_direct_methods_leave_the_users_module_as_it_was(name, dtype):
    model = _net(train=True)  # train mode: the flags must come back
    before = snapshot(model)
    with pytest.warns(UserWarning, match="training mode"):
        MODULE_METHODS[name](model, images(3, 1), dtype=dtype)
    assert_unchanged(model, before)


class FailsLate(nn.Module):
    """:class:`Net`, then an operation the converter refuses (``torch.sort``)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _net(train=True)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sort(self.net(x), dim=1).values


class FailsOnCall(nn.Module):
    """:class:`Net` that raises on its ``fail_at``-th call (counting from 1)."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.net, self.calls, self.fail_at = _net(train=True), 0, fail_at

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("fails half way")
        return self.net(x)


@pytest.mark.parametrize("dtype", ["float", "double"])
def test_a_conversion_failing_half_way_leaves_the_model_as_it_was(dtype):
    model = FailsLate()
    before = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(ins.ConversionError, match="sort"):
            ins.convert(model, input_dim=[2, 6, 6], dtype=dtype)
    assert_unchanged(model, before)


def test_a_conversion_whose_dry_run_fails_leaves_the_model_as_it_was():
    """With ``tracer="fx"``: ``"auto"`` would convert it with torch.export after the
    failed dry run, as the model fails once only."""
    model = FailsOnCall(fail_at=2)  # traced (no call), the shape run passes, the dry run raises
    before = snapshot(model.net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises((ins.ConversionError, RuntimeError), match="fails half way"):
            for _ in range(3):  # whichever call of conversion fails
                ins.convert(model, input_dim=[2, 6, 6], tracer="fx")
    assert_unchanged(model.net, before)


@pytest.mark.parametrize("name", list(MODULE_METHODS))
def test_a_direct_method_failing_half_way_leaves_the_module_as_it_was(name):
    """The module raises on its third call: after the shape probe, in the chunks."""
    model = FailsOnCall(fail_at=3)
    before = snapshot(model.net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(RuntimeError, match="fails half way"):
            MODULE_METHODS[name](model, images(4, 1), batch_size=2)
    assert model.calls == 3
    assert_unchanged(model.net, before)


# ---- the caller's random state -------------------------------------------------------------


def _global_rng_states() -> tuple[Tensor, Any, Any]:
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def _assert_rng_untouched(before: tuple[Tensor, Any, Any]) -> None:
    torch_state, numpy_state, python_state = _global_rng_states()
    assert torch.equal(torch_state, before[0]), "torch's global random state changed"
    assert numpy_state[0] == before[1][0] and np.array_equal(numpy_state[1], before[1][1]) and (
        numpy_state[2:] == before[1][2:]), "numpy's global random state changed"
    assert python_state == before[2], "python's random state changed"


@pytest.mark.parametrize("seed", [None, 3], ids=["unseeded", "seeded"])
@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_methods_leave_the_global_random_state(converter, name, seed):
    before = _global_rng_states()
    CONVERTER_METHODS[name](converter, images(3, 1), seed=seed, verbose=False)
    _assert_rng_untouched(before)


@pytest.mark.parametrize("seed", [None, 3], ids=["unseeded", "seeded"])
@pytest.mark.parametrize("name", MODULE_STOCHASTIC)
def test_stochastic_direct_methods_leave_the_global_random_state(name, seed):
    model = _net()
    before = _global_rng_states()
    MODULE_METHODS[name](model, images(3, 1), seed=seed)
    _assert_rng_untouched(before)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_seeded_methods_ignore_the_global_random_state(converter, name):
    """The same seed gives the same values after the caller reseeded or drew."""
    torch.manual_seed(1)
    first = _values(CONVERTER_METHODS[name](converter, images(3, 1), seed=5, verbose=False))
    torch.manual_seed(2)
    np.random.seed(2)
    random.seed(2)
    torch.rand(7)
    second = _values(CONVERTER_METHODS[name](converter, images(3, 1), seed=5, verbose=False))
    assert torch.equal(first, second)


# ---- interleaved and concurrent runs ---------------------------------------------------------

#: Seeded, so that every run of a method is comparable to its run alone.
SEEDED = {"seed": 11, "verbose": False}


@pytest.fixture(scope="module")
def alone(converter) -> dict[str, Tensor]:
    """Each method's values, run alone."""
    return {name: _values(run(converter, images(3, 1), **SEEDED))
            for name, run in CONVERTER_METHODS.items()}


def test_interleaved_methods_give_the_values_they_give_alone(converter, alone):
    """Every method after others, in three orders (forward, backward, odd after even)."""
    names = list(CONVERTER_METHODS)
    for name in names + names[::-1] + names[::2] + names[1::2]:
        values = _values(CONVERTER_METHODS[name](converter, images(3, 1), **SEEDED))
        assert torch.equal(values, alone[name]), name


def test_two_threads_on_one_converter_give_the_values_alone(converter, alone):
    """Two threads run every method four times on the same converter, in opposite orders."""
    names = list(CONVERTER_METHODS)
    jobs = [name for _ in range(4) for name in names]

    def run_all(order: list[str]) -> list[tuple[str, Tensor]]:
        return [(name, _values(CONVERTER_METHODS[name](converter, images(3, 1), **SEEDED)))
                for name in order]

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run_all, [jobs, jobs[::-1]]))
    for name, values in (item for result in results for item in result):
        assert torch.equal(values, alone[name]), name


def test_two_threads_on_one_training_module_give_eval_values_and_keep_its_flags():
    """Direct methods switch the user's module to eval mode for each forward pass and
    back: two threads must neither see its dropout active nor leave it in eval mode."""
    model = _net(train=True)
    before = snapshot(model)
    x = images(3, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        expected = ins.torch_grad(model, x)
        barrier = threading.Barrier(2, timeout=120)

        def run(_: int) -> list[Tensor]:
            barrier.wait()
            return [ins.torch_grad(model, x) for _ in range(30)]

        with ThreadPoolExecutor(2) as pool:
            results = [v for values in pool.map(run, range(2)) for v in values]
    assert all(torch.equal(v, expected) for v in results), "a forward pass ran in train mode"
    assert_unchanged(model, before)
