"""Small models and data sets for the whole-data-set tests.

References are closed forms (IntegratedGradient of a linear model is
``W[c, f] * x[f]`` for any number of path points) or the same method run on the
whole data in memory, which the method tests check against autograd and Captum.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

import innsight as ins

N_FEATURES, N_CLASSES = 5, 3


@pytest.fixture
def linear() -> tuple[ins.Converter, np.ndarray]:
    """A converted linear model (5 -> 3) and its weight matrix ``(3, 5)``."""
    torch.manual_seed(0)
    net = nn.Linear(N_FEATURES, N_CLASSES).eval()
    return ins.convert(net, input_dim=[N_FEATURES]), net.weight.detach().double().numpy()


@pytest.fixture
def mlp() -> ins.Converter:
    """A converted MLP 5 -> 8 -> 3 with a ReLU (a nonlinear, deterministic model)."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(N_FEATURES, 8), nn.ReLU(), nn.Linear(8, N_CLASSES)).eval()
    return ins.convert(net, input_dim=[N_FEATURES])


@pytest.fixture
def cnn() -> ins.Converter:
    """A converted CNN on (3, 8, 8) images with 4 classes."""
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(4 * 4 * 4, 4)).eval()
    return ins.convert(net, input_dim=[3, 8, 8])


@pytest.fixture
def table() -> Callable[[int], np.ndarray]:
    """``table(n)``: ``n`` rows of 5 features, float32, the same for every call."""
    return lambda n: np.random.default_rng(0).normal(size=(n, N_FEATURES)).astype(np.float32)


@pytest.fixture
def in_memory() -> Callable[..., np.ndarray]:
    """``in_memory(conv, data, method="IntegratedGradient", **args)``: the method's values on
    the whole data at once, as an array."""
    def run(conv: ins.Converter, data: object, method: str = "IntegratedGradient",
            **args: object) -> np.ndarray:
        cls = getattr(ins, method)
        return cls(conv, data, verbose=False, **args).get_result("array")
    return run


#: Largest difference from the in-memory run, relative to its largest magnitude: float32
#: sums over other batch compositions differ in the last bits, nothing more.
FLOAT_TOL = 1e-6


@pytest.fixture
def assert_close() -> Callable[[np.ndarray, np.ndarray], None]:
    """``assert_close(actual, expected)``: equal shapes and values within :data:`FLOAT_TOL`
    of the expected values' largest magnitude."""
    def check(actual: np.ndarray, expected: np.ndarray) -> None:
        assert actual.shape == expected.shape
        scale = max(float(np.abs(expected).max()), 1e-30)
        assert float(np.abs(actual - expected).max()) <= FLOAT_TOL * scale
    return check
