"""Shared fixtures of the method tests: small models and independent references.

Every reference here is computed from the original torch model with
``torch.autograd`` or with Captum; nothing is taken from innsight's own output.
Helpers are handed to tests as fixtures (not imported), as in ``tests/conftest.py``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Relative tolerances (max abs difference over the reference's largest magnitude).
FLOAT_TOL = 1e-5
DOUBLE_TOL = 1e-10
TOLERANCES = {"float": FLOAT_TOL, "double": DOUBLE_TOL}
TORCH_DTYPES = {"float": torch.float32, "double": torch.float64}


# ---- environment ----------------------------------------------------------------------


# ---- models ---------------------------------------------------------------------------


class SoftmaxCNN(nn.Module):
    """Input (2, 8, 8): conv, batch norm, relu, max pooling, conv, dense, softmax (3)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 4, 3)
        self.fc = nn.Linear(4 * 2 * 2, 3)

    def logits(self, x: Tensor) -> Tensor:
        x = self.pool(F.relu(self.bn(self.conv1(x))))
        return self.fc(torch.flatten(torch.tanh(self.conv2(x)), 1))

    def forward(self, x: Tensor) -> Tensor:
        return F.softmax(self.logits(x), dim=1)


@pytest.fixture
def softmax_mlp(seeded: Callable[..., nn.Module]) -> nn.Sequential:
    """Input (5,), output a softmax over 3 classes; ``model[:-1]`` gives the logits."""
    return seeded(lambda: nn.Sequential(
        nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 3), nn.Softmax(dim=1)
    ))


@pytest.fixture
def softmax_cnn(seeded: Callable[..., nn.Module]) -> SoftmaxCNN:
    """Input (2, 8, 8), output a softmax over 3 classes; ``model.logits`` before it."""
    return seeded(SoftmaxCNN)


@pytest.fixture
def linear_model(seeded: Callable[..., nn.Module]) -> nn.Linear:
    """``nn.Linear(6, 3)``: f(x) = W x + b, gradient W[j] everywhere."""
    return seeded(lambda: nn.Linear(6, 3), seed=3)


# ---- data -----------------------------------------------------------------------------


def randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    """Seeded standard normal data (drawn in float64, then cast)."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64).to(dtype)


@pytest.fixture
def make_data() -> Callable[..., Tensor]:
    """``make_data(*shape, seed=0, dtype=torch.float64)``: seeded normal data."""
    return randn


# ---- references -----------------------------------------------------------------------


def as_list(value: Any) -> list[Tensor]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def reference_gradients(f: Callable[..., Any], xs: Tensor | Sequence[Tensor],
                        idx: Sequence[int], output: int = 0) -> list[Tensor]:
    """Autograd: per input, ``d f(xs)[output][:, j] / d xs`` stacked over ``j in idx``
    as ``(n, *dim, len(idx))``. ``f`` takes the inputs as positional arguments and
    returns a tensor or a tuple of tensors. The rows of a batch are independent (eval
    mode), so the gradient of a node summed over rows is each row's gradient."""
    inputs = [x.detach().clone().requires_grad_(True) for x in as_list(xs)]
    out = as_list(f(*inputs))[output].flatten(1)
    per_target = [
        torch.autograd.grad(out[:, j].sum(), inputs, retain_graph=True, allow_unused=True)
        for j in idx
    ]
    return [
        torch.stack([g[k] if g[k] is not None else torch.zeros_like(inputs[k])
                     for g in per_target], dim=-1)
        for k in range(len(inputs))
    ]


def reference_intgrad(f: Callable[..., Any], xs: Tensor | Sequence[Tensor],
                      refs: Tensor | Sequence[Tensor], idx: Sequence[int], n: int,
                      output: int = 0, times_input: bool = True) -> list[Tensor]:
    """Right Riemann sum of the path integral from the sources, written out with autograd:
    ``(x - x') * (1/n) sum_{k=1..n} grad f(x' + (k/n)(x - x'))`` (without the factor
    ``(x - x')`` when ``times_input`` is false)."""
    xs, refs = as_list(xs), [r.expand_as(x) for r, x in zip(as_list(refs), as_list(xs))]
    total = None
    for k in range(1, n + 1):
        points = [r + (k / n) * (x - r) for x, r in zip(xs, refs)]
        grads = reference_gradients(f, points, idx, output)
        total = grads if total is None else [t + g for t, g in zip(total, grads)]
    means = [t / n for t in total]
    if not times_input:
        return means
    return [m * (x - r).unsqueeze(-1) for m, x, r in zip(means, xs, refs)]


def captum_intgrad(model: Callable[..., Tensor], x: Tensor, baseline: Tensor | float,
                   idx: Sequence[int], n: int) -> Tensor:
    """Captum's ``IntegratedGradients(model).attribute(..., method="riemann_right")`` per
    target, stacked as ``(n_data, *dim, len(idx))``. Captum builds its path points with
    ``torch.linspace`` in the default dtype, so that is set to the data's dtype for the
    call (float64 points for float64 comparisons). Captum casts its step sizes ``1/n``
    to float32, so float64 comparisons take ``n`` a power of two (1/n exact)."""
    from captum.attr import IntegratedGradients

    explainer = IntegratedGradients(model)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(x.dtype)
    try:
        columns = [
            explainer.attribute(x, baselines=baseline, target=j, n_steps=n,
                                method="riemann_right").detach()
            for j in idx
        ]
    finally:
        torch.set_default_dtype(previous)
    return torch.stack(columns, dim=-1)


def assert_close(actual: Any, expected: Any, rel_tol: float, what: str = "values") -> None:
    """Same shape, and max abs difference at most ``rel_tol`` times the expected
    values' largest magnitude."""
    actual = actual.detach().cpu().numpy() if isinstance(actual, Tensor) else np.asarray(actual)
    expected = (expected.detach().cpu().numpy() if isinstance(expected, Tensor)
                else np.asarray(expected))
    assert actual.shape == expected.shape, (
        f"{what}: shape {actual.shape}, expected {expected.shape}")
    scale = max(float(np.abs(expected).max()), 1e-12)
    error = float(np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max())
    assert error <= rel_tol * scale, (
        f"{what}: max abs difference {error:.3g} at scale {scale:.3g} exceeds {rel_tol:g} relative")


@pytest.fixture
def grad_ref() -> Callable[..., list[Tensor]]:
    """:func:`reference_gradients`."""
    return reference_gradients


@pytest.fixture
def intgrad_ref() -> Callable[..., list[Tensor]]:
    """:func:`reference_intgrad`."""
    return reference_intgrad


@pytest.fixture
def captum_ig() -> Callable[..., Tensor]:
    """:func:`captum_intgrad`."""
    return captum_intgrad


@pytest.fixture
def close() -> Callable[..., None]:
    """:func:`assert_close` (``close(actual, expected, rel_tol, what)``)."""
    return assert_close


@pytest.fixture
def as_dtype() -> Callable[[nn.Module, str], nn.Module]:
    """``as_dtype(model, "float"|"double")``: a copy of the model in that precision."""

    def convert(model: nn.Module, dtype: str) -> nn.Module:
        return copy.deepcopy(model).to(TORCH_DTYPES[dtype])

    return convert


@pytest.fixture
def tolerances() -> dict[str, float]:
    """Relative tolerance per method dtype: ``{"float": 1e-5, "double": 1e-10}``."""
    return dict(TOLERANCES)
