"""Without autograd the converted graph reuses dead activations' memory (as in-place
ops in torch models do). Each model here is built so that overwriting a value
that is still needed would change the output; the reference is the original model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import innsight as ins


class ViewTakenBeforeLastUse(nn.Module):
    """``flat`` is a view of ``a``; ``relu(a)`` is the last reader of ``a`` but ``flat``
    is still read afterwards, so ``a`` must not be overwritten."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x)
        flat = a.flatten(1)
        b = torch.relu(a)
        return self.fc(flat) + self.fc(b.flatten(1))


class SliceThenActivate(nn.Module):
    """A ShuffleNet-style split: one half is activated, the other used unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.chunk(self.conv(x), 2, dim=1)
        return torch.cat([torch.sigmoid(a), b], dim=1)


class ActivateInput(nn.Module):
    """The first layer activates the user's own tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * 2.0


class OutputReadAgain(nn.Module):
    """``a`` is a model output and also read by the relu after it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.fc(x)
        return a, torch.relu(a) + a


class SameValueTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.tanh(self.fc(x))
        return a + a


class BroadcastingSum(nn.Module):
    """The first summand (C, 1, 1) is smaller than the sum: no room to write into."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return torch.relu(y.mean((2, 3), keepdim=True) + y)


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 2, 3, padding=1)
        self.conv2 = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv1(x))
        return torch.relu(self.conv2(y) + y) + y


MODELS = [ViewTakenBeforeLastUse, SliceThenActivate, ActivateInput, OutputReadAgain,
          SameValueTwice, BroadcastingSum, Residual]


def _input_dim(model: nn.Module) -> list[int]:
    return [4] if isinstance(model, (OutputReadAgain, SameValueTwice)) else [2, 4, 4]


@pytest.mark.parametrize("model_cls", MODELS, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_inference_without_autograd_matches_the_original(model_cls: type, mode: str) -> None:
    torch.manual_seed(0)
    model = model_cls().eval()
    dim = _input_dim(model)
    conv = ins.convert(model, input_dim=dim, dtype="double")
    x = torch.randn(3, *dim, dtype=torch.float64)
    x_before = x.clone()
    context = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    with context:
        actual = conv.model(x)
        expected = model.double()(x.clone())
    assert torch.equal(x, x_before), "the user's input tensor was modified"
    actual = actual if isinstance(actual, list) else [actual]
    expected = list(expected) if isinstance(expected, tuple) else [expected]
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


def test_values_kept_for_a_method_are_not_overwritten() -> None:
    """run_nodes keeps the requested nodes intact even where a later layer is their last reader."""
    torch.manual_seed(0)
    model = Residual().eval()
    conv = ins.convert(model, input_dim=[2, 4, 4], dtype="double")
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    with torch.enable_grad():
        every = conv.model.node_values(x)
    with torch.no_grad():
        for node in range(1, len(conv.model.layers)):
            kept = conv.model.run_nodes(x, [node])[0]
            torch.testing.assert_close(kept, every[node].detach(), rtol=0, atol=0)


@pytest.mark.parametrize("model_cls", MODELS, ids=lambda cls: cls.__name__)
def test_run_nodes_runs_only_the_layers_the_nodes_need(model_cls: type) -> None:
    """Asking for a node runs the layers it depends on, none after it (e.g. no LM head
    for the embedding's output), with the same values as the whole pass."""
    torch.manual_seed(0)
    model = model_cls().eval()
    dim = _input_dim(model)
    conv = ins.convert(model, input_dim=dim, dtype="double")
    x = torch.randn(3, *dim, dtype=torch.float64)
    every = conv.model.node_values(x)
    ran: list[int] = []
    hooks = [layer.register_forward_hook(lambda m, i, o, k=k: ran.append(k))
             for k, layer in enumerate(conv.model.layers)]
    try:
        for node in range(len(conv.model.layers)):
            ran.clear()
            with torch.no_grad():
                (value,) = conv.model.run_nodes(x, [node])
            # (a layer writing into a dead input's memory runs without hooks: a subset)
            assert ran and set(ran) <= conv.model.needed([node])
            torch.testing.assert_close(value, every[node], rtol=0, atol=0)
    finally:
        for hook in hooks:
            hook.remove()


def test_outputs_come_in_the_default_layout():
    """Convolutions without gradients compute channels last on the CPU; the model's
    outputs still come contiguous (a user's ``.view`` works) and equal the original's."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    conv = ins.convert(model, input_dim=[3, 8, 8])
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out, expected = conv.model(x), model(x)
    assert out.is_contiguous()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
