"""Small results to plot: tabular, signal, image, and two inputs with two outputs.

Expected plot data are recomputed from ``get_result()`` with numpy in the tests,
never taken from the plotting code.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # never open a window

import pytest
import torch
from torch import nn

import innsight as ins


def _data(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def tabular_result() -> ins.methods.result.Result:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).eval()
    return ins.run_grad(ins.convert(model, input_dim=[4]), _data(5, 4))


@pytest.fixture(scope="module")
def signal_result() -> ins.methods.result.Result:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(3, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 10, 2)).eval()
    return ins.run_grad(ins.convert(model, input_dim=[3, 12]), _data(4, 3, 12), times_input=True)


@pytest.fixture(scope="module")
def image_result() -> ins.methods.result.Result:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3)).eval()
    return ins.run_intgrad(ins.convert(model, input_dim=[3, 8, 8]), _data(4, 3, 8, 8), n=5)


@pytest.fixture(scope="module")
def many_images() -> ins.methods.result.Result:
    """20 samples x 3 nodes of 1 x 8 x 8 images: 60 facets, more than MAX_FACETS."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3)).eval()
    data = torch.randn(20, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    return ins.run_grad(ins.convert(model, input_dim=[1, 8, 8]), data)


@pytest.fixture
def two_in_two_out_result(two_in_two_out: torch.nn.Module) -> ins.methods.result.Result:
    conv = ins.convert(two_in_two_out, input_dim=[[2, 6, 6], [4]])
    return ins.run_grad(conv, [_data(3, 2, 6, 6), _data(3, 4)], output_idx=[[0, 2], [1]])
