"""Stand-in methods for the metric tests: explanations given in advance, or computed
from the data alone (an edge detector that ignores the model).

Neither sets its own ``method_name``, so neither joins the method registry (and
its conformance suite).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from innsight.methods.base import Explanation, InterpretingMethod, Setup


class Given(InterpretingMethod):
    """Returns ``values`` ``(n_data, *input_dim, n_outputs)`` (one input layer), whatever
    the model and data: the explanation a metric is tested on."""

    def __init__(self, converter: Any, data: Any, *, values: Any, **shared: Any) -> None:
        super().__init__(converter, data, values=values, **shared)

    def _explain(self, setup: Setup, values: Any) -> Explanation:
        return Explanation([torch.as_tensor(values, dtype=setup.data[0].dtype)])


class EdgeDetector(InterpretingMethod):
    """The absolute Sobel gradient magnitude of each channel of ``(C, H, W)`` data, the
    same for every output node: an 'explanation' that never looks at the model."""

    def __init__(self, converter: Any, data: Any, **shared: Any) -> None:
        super().__init__(converter, data, **shared)

    def _explain(self, setup: Setup) -> Explanation:
        x = setup.data[0]
        sobel = x.new_tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        kernels = torch.stack([sobel, sobel.T])[:, None].repeat(x.shape[1], 1, 1, 1)
        grads = F.conv2d(x, kernels, padding=1, groups=x.shape[1])
        edges = grads.view(x.shape[0], x.shape[1], 2, *x.shape[2:]).norm(dim=2)
        return Explanation([edges[..., None].expand(-1, -1, -1, -1, len(setup.targets))])


@pytest.fixture
def given() -> type[Given]:
    return Given


@pytest.fixture
def edge_detector() -> type[EdgeDetector]:
    return EdgeDetector


@pytest.fixture
def small_cnn() -> nn.Module:
    """Input (3, 8, 8): conv, relu, conv, relu, average pooling, dense (4 logits)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 4),
    ).eval()


@pytest.fixture
def images() -> Tensor:
    return torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
