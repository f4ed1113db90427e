"""Shapes without data: the short cuts of ``OnMeta`` against the real operations, the
shapes a conversion records on meta (``check=False``) against those of a real run, and
the weights a conversion holds as copies of the original's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import innsight as ins
from innsight.converter.on_meta import ELEMENTWISE, SAME_SHAPE, OnMeta

pytestmark = pytest.mark.usefixtures("torch_seed")

FLOAT_TOL = 1e-5


def _call(func, *operands):
    """``func`` of the first operand, or of all (a sum or product) where it takes two."""
    try:
        return func(operands[0])
    except (TypeError, RuntimeError):  # it takes two
        return func(*operands)


def _name(func) -> str:
    return str(func) if isinstance(func, torch._ops.OpOverload) else (
        f"{getattr(func, '__module__', None) or 'Tensor'}.{func.__qualname__}")


@pytest.mark.parametrize("func", sorted(ELEMENTWISE, key=_name), ids=_name)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_elementwise_short_cut_has_the_real_shape_dtype_and_strides(func, layout):
    """Contiguous operands take the short cut; others (channels last) the meta kernel,
    whose strides may differ from the real kernel's."""
    memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(2, 3, 4, 5).to(memory_format=memory_format)
    y = torch.randn(2, 3, 4, 5).to(memory_format=memory_format)
    expected = _call(func, x.clone(), y)
    with OnMeta():
        found = _call(func, x.clone(), y)
    assert found.is_meta and (found.shape, found.dtype) == (expected.shape, expected.dtype)
    if layout == "contiguous":
        assert found.stride() == expected.stride()


@pytest.mark.parametrize("func", SAME_SHAPE, ids=_name)
def test_per_channel_short_cut_has_the_real_shape(func):
    x, stats = torch.randn(2, 3, 4, 5), [torch.rand(3) + 0.5 for _ in range(4)]
    args = (x, *stats, False, 0.1, 1e-5, False) if func is SAME_SHAPE[1] else (
        x, stats[0], stats[1], stats[2], stats[3], False, 0.1, 1e-5)
    expected = func(*args)
    with OnMeta():
        found = func(*args)
    assert found.is_meta and (found.shape, found.dtype) == (expected.shape, expected.dtype)


def test_operands_the_short_cuts_do_not_cover_run_their_meta_kernels():
    """Broadcasting, other dtypes and integers take the kernels, whose shapes and dtypes
    are those of the real operations."""
    cases = [
        (torch.add, torch.randn(2, 3, 1), torch.randn(4)),  # broadcast
        (torch.mul, torch.randn(2, 3), torch.randn(2, 3, dtype=torch.float64)),  # promotion
        (torch.relu, torch.arange(6).reshape(2, 3)),  # integers
        (torch.sigmoid, torch.arange(6).reshape(2, 3)),  # integers to floats
    ]
    for func, *operands in cases:
        expected = func(*operands)
        with OnMeta():
            found = func(*operands)
        assert found.is_meta and (found.shape, found.dtype) == (expected.shape, expected.dtype)


class Mixed(nn.Module):
    """Many layer families and in-place operations on one image: convolutions, batch
    norm, elementwise activations (in place too), sums and products of equal and of
    broadcast shapes, concatenation, pooling, layer norm, flatten, dense, softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.act = nn.ReLU(inplace=True)
        self.branch = nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=2)
        self.up = nn.ConvTranspose2d(6, 4, 2, stride=2)
        self.norm = nn.LayerNorm(4)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(7 * 4 * 4, 5)
        self.scale = nn.Parameter(torch.rand(6, 1, 1) + 0.5)

    def forward(self, x):
        h = self.act(self.bn(self.conv(x)))
        g = F.gelu(h) * torch.sigmoid(h) + F.silu(h)
        g = g * self.scale + torch.tanh(h)
        g += F.hardswish(h)
        u = F.leaky_relu(self.up(F.elu(self.branch(g))), 0.1)
        u = self.norm(u.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        c = torch.cat([u, F.relu6(g[:, :4]) + u], dim=1)[:, 1:]
        return torch.softmax(self.head(torch.flatten(self.pool(c), 1)), dim=1)


@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_shapes_recorded_on_meta_are_those_of_a_real_run(tracer, outputs_match):
    model = Mixed().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 1.5)
    unchecked = ins.convert(model, input_dim=[3, 8, 8], tracer=tracer, check=False).model
    checked = ins.convert(model, input_dim=[3, 8, 8], tracer=tracer).model
    assert unchecked.layer_names == checked.layer_names
    for layer, reference in zip(unchecked.layers, checked.layers, strict=True):
        assert (layer.input_dim, layer.output_dim) == (reference.input_dim, reference.output_dim)
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        outputs_match(unchecked(x), model(x), FLOAT_TOL)


@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_converted_weights_are_copies(tracer, cnn2d):
    """Changing the original's weights after conversion leaves the conversion as it was."""
    conv = ins.convert(cnn2d, input_dim=[3, 12, 12], tracer=tracer)
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        before = conv.model(x)
        for tensor in [*cnn2d.parameters(), *cnn2d.buffers()]:
            if tensor.is_floating_point():
                tensor.add_(1.0)
        assert not torch.allclose(cnn2d(x), before)
        assert torch.equal(conv.model(x), before)


@pytest.mark.parametrize("weights", ["array", "tensor", "list"])
def test_weights_of_a_dict_are_copies(weights):
    """A model dict's arrays and tensors are copied; changing them afterwards changes
    nothing (nested lists need no copy)."""
    weight = torch.randn(3, 4)
    given = {"array": weight.numpy().copy(), "tensor": weight.clone(),
             "list": weight.tolist()}[weights]
    conv = ins.convert({"input_dim": [4], "layers": [{"type": "Dense", "weight": given}]})
    x = torch.randn(2, 4)
    expected = x @ weight.T
    if weights != "list":
        given[...] = 0.0
    with torch.no_grad():
        assert torch.allclose(conv.model(x), expected, atol=FLOAT_TOL)
