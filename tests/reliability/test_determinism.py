"""Determinism and numerics: what a ``seed`` fixes, what ``batch_size`` may change,
float64 wherever it is asked for, and half precisions refused by name.

The statements tested here are the ones of ``docs/reliability.md`` ("Determinism"):
the table :data:`REDRAW_WITH_BATCH_SIZE` must match it.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from method_runs import METHODS, STOCHASTIC, images
from torch import Tensor, nn

import innsight as ins


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(12, 4), nn.Softmax(1)).eval()


@pytest.fixture(scope="module")
def converter() -> ins.Converter:
    return ins.convert(_net(), input_dim=[2, 6, 6])


#: Stochastic methods whose draws depend on how rows are cut into chunks of ``batch_size``
#: (they draw per chunk): another ``batch_size`` gives another Monte Carlo estimate.
#: DeepSHAP and SHAP draw once, before any chunking.
REDRAW_WITH_BATCH_SIZE = {"SmoothGrad", "ExpectedGradient", "LIME"}
#: Largest relative difference between two runs that only sum in another order.
ORDER_TOL = 1e-6


def _values(result: Any) -> Tensor:
    return result.get_result("torch_tensor")


def _max_rel(actual: Tensor, expected: Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


@pytest.mark.parametrize("name", STOCHASTIC)
def test_a_seed_gives_identical_values_and_another_seed_others(converter, name):
    run = METHODS[name]
    first, again, other = (_values(run(converter, images(5, 1), seed=s, verbose=False))
                           for s in (4, 4, 5))
    assert torch.equal(first, again)
    assert not torch.equal(first, other), "the seed does not reach the draws"


@pytest.mark.parametrize("name", list(METHODS))
def test_batch_size_changes_only_the_values_documented(converter, name):
    """Methods without draws, DeepSHAP and SHAP give the same values (up to summation
    order) for every ``batch_size``; the methods of :data:`REDRAW_WITH_BATCH_SIZE` give
    identical values for the same ``batch_size`` and other draws for another one."""
    run = METHODS[name]
    by_size = {b: _values(run(converter, images(5, 1), seed=4, batch_size=b, verbose=False))
               for b in (17, 80, 1000)}
    if name in REDRAW_WITH_BATCH_SIZE:
        assert torch.equal(_values(run(converter, images(5, 1), seed=4, batch_size=80,
                                       verbose=False)), by_size[80])
        assert not torch.equal(by_size[17], by_size[80]), (
            f"{name} no longer redraws with batch_size: update REDRAW_WITH_BATCH_SIZE and "
            "docs/reliability.md")
    else:
        for b in (17, 80):
            assert _max_rel(by_size[b], by_size[1000]) <= ORDER_TOL, f"batch_size {b}"


# ---- float64 --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(METHODS))
def test_double_on_a_float_converter_computes_in_float64(converter, name):
    """``dtype="double"`` on a float32 conversion: values, predictions and goals are
    float64 and equal those of a float64 conversion (1e-12: the same computation, not
    float32 numbers cast up)."""
    x = images(3, 1, torch.float64)
    converter64 = ins.convert(_net().double(), input_dim=[2, 6, 6], dtype="double")
    result = METHODS[name](converter, x, seed=4, dtype="double", verbose=False)
    reference = METHODS[name](converter64, x, seed=4, dtype="double", verbose=False)
    values = _values(result)
    assert values.dtype == torch.float64
    assert all(p.dtype == torch.float64 for p in result.preds if p is not None)
    if result.decomp_goal is not None:
        assert all(g.dtype == torch.float64 for g in result.decomp_goal if g is not None)
    assert _max_rel(values, _values(reference)) <= 1e-12


def test_double_gradient_equals_float64_autograd(converter):
    """A float32 conversion asked for float64 gives the float64 gradient (1e-12), which
    float32 arithmetic could not reach."""
    x = images(3, 1, torch.float64)
    grad = _values(ins.run_grad(converter, x, output_idx=[0, 2], dtype="double", verbose=False))
    reference = _net()[:-1].double()
    x_grad = x.clone().requires_grad_(True)
    out = reference(x_grad)
    expected = torch.stack([torch.autograd.grad(out[:, j].sum(), x_grad, retain_graph=True)[0]
                            for j in (0, 2)], -1)
    assert _max_rel(grad, expected) <= 1e-12


@pytest.mark.parametrize("fn", [ins.torch_grad, ins.torch_smoothgrad, ins.torch_intgrad,
                                ins.torch_expgrad])
def test_direct_methods_in_double_return_float64(fn):
    model = _net()
    values = fn(model, images(3, 1), dtype="double", seed=0)
    assert values.dtype == torch.float64
    assert next(model.parameters()).dtype == torch.float32  # a copy ran in float64


# ---- half precisions ----------------------------------------------------------------------

HALF = ["half", "float16", "bfloat16", torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_convert_refuses_half_precisions_by_name(dtype):
    with pytest.raises(ValueError, match=r"`dtype`.*half precisions are not supported"):
        ins.convert(_net(), input_dim=[2, 6, 6], dtype=dtype)


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("name", list(METHODS))
def test_methods_refuse_half_precisions_by_name(converter, name, dtype):
    with pytest.raises(ValueError, match=r"`dtype`.*half precisions are not supported"):
        METHODS[name](converter, images(2, 1), dtype=dtype, verbose=False)


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_direct_methods_refuse_half_precisions_by_name(dtype):
    with pytest.raises(ValueError, match=r"`dtype`.*half precisions are not supported"):
        ins.torch_grad(_net(), images(2, 1), dtype=dtype)
