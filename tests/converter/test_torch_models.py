"""Whole torch architectures: the converted model reproduces the original's output.

The reference is always the original model's own forward pass, in float32
(tolerance 1e-5 relative to the output scale) and, after
``copy.deepcopy(model).double()``, in float64 (tolerance 1e-10).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import innsight as ins

#: Architectures of the model zoo that convert; inputs 3 x 64 x 64.
ZOO = [
    "resnet18", "vgg11_bn", "mobilenet_v2", "densenet121", "squeezenet1_1",
    "efficientnet_b0", "mnasnet0_5", "googlenet",
    "mobilenet_v3_small", "shufflenet_v2_x0_5", "regnet_y_400mf", "resnext50_32x4d",
]


@pytest.mark.parametrize(
    ("fixture", "input_dim", "output_dims"),
    [
        ("mlp", [5], [(3,)]),
        ("cnn1d", [2, 20], [(2,)]),
        ("cnn2d", [3, 12, 12], [(4,)]),
        ("residual_net", [3, 16, 16], [(5,)]),
        ("two_input_net", [[3, 10, 10], [4]], [(2,)]),
        ("two_output_net", [6], [(3,), (1,)]),
    ],
    ids=["mlp", "cnn1d", "cnn2d-batchnorm-maxpool", "residual", "two-inputs", "two-outputs"],
)
def test_architecture_matches_original(request, assert_converts, fixture, input_dim,
                                       output_dims):
    model = request.getfixturevalue(fixture)
    conv = assert_converts(model, input_dim)
    assert conv.output_dim == output_dims


def test_sequential_model_matches_original(assert_converts, torch_seed):
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.3),
        nn.Flatten(), nn.Linear(4 * 3 * 3, 6), nn.Sigmoid(), nn.Linear(6, 2),
    ).eval()
    assert_converts(model, [1, 8, 8])


def test_deep_residual_with_shared_inputs_matches_original(assert_converts, torch_seed):
    """A value read by several later layers (dense-net style concatenation of all
    earlier feature maps, plus a long skip connection)."""

    class DenseStack(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = nn.ModuleList(nn.Conv2d(2 + 3 * i, 3, 3, padding=1) for i in range(3))
            self.fc = nn.Linear(2 + 9, 3)

        def forward(self, x):
            features = [x]
            for conv in self.convs:
                features.append(torch.relu(conv(torch.cat(features, dim=1))))
            pooled = torch.cat(features, dim=1).mean((2, 3))
            return self.fc(pooled) + pooled[:, :3]

    assert_converts(DenseStack().eval(), [2, 6, 6])


def test_list_output_matches_original(assert_converts, torch_seed):
    class ListOutput(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return [self.fc(x), torch.tanh(x)]

    conv = assert_converts(ListOutput().eval(), [4])
    assert conv.output_dim == [(2,), (4,)]


def test_scalar_output_per_sample_matches_original(assert_converts, torch_seed):
    """A regression head returning shape (batch,): an output without sample axes."""

    class Regression(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))

        def forward(self, x):
            return self.body(x).squeeze(-1)

    conv = assert_converts(Regression().eval(), [4])
    assert conv.output_dim == [()]


def test_optional_forward_argument_matches_original(assert_converts, explained_exactly,
                                                    torch_seed):
    """``forward(x, mask=None)`` (timm's Hiera): torch.fx keeps the default-valued
    argument as a graph input, which is not a model input."""

    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x, mask=None):
            return self.fc(x if mask is None else x * mask).tanh()

    conv = assert_converts(Masked().eval(), [4], tracer="fx")
    assert conv.input_dim == [(4,)]
    explained_exactly(Masked().eval(), [4], tracer="fx")


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_matches_original(assert_converts, zoo_model, name):
    conv = assert_converts(zoo_model(name), [3, 64, 64], batch=2)
    assert conv.output_dim == [(1000,)]


@pytest.mark.slow
def test_convnext_matches_original_and_its_gradient(assert_converts, zoo_model):
    """Layer norm over the channels (torchvision's LayerNorm2d: permute, layer_norm, permute)
    and over the last axis (nn.LayerNorm between the blocks' permutes), at 32 x 32; the
    Gradient of the converted model against autograd on the original."""
    model = zoo_model("convnext_tiny")
    conv = assert_converts(model, [3, 32, 32], batch=2)
    assert sum(layer.type_name == "LayerNorm" for layer in conv.model.layers) == 23
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    res = ins.run_grad(conv, x, output_idx=[0, 500])
    x.requires_grad_(True)
    out = model(x)
    expected = torch.stack([torch.autograd.grad(out[:, j].sum(), x, retain_graph=True)[0]
                            for j in (0, 500)], -1)
    error = (res.get_result("torch_tensor") - expected).abs().max()
    assert error <= 1e-5 * expected.abs().max()


def test_vision_transformer_matches_original_and_its_gradient(assert_converts, small_vit):
    """The class token (a constant expanded to the batch and concatenated), the positional
    embedding, nn.MultiheadAttention and layer norms; the Gradient of the converted model
    (float64) against autograd on the original."""
    conv = assert_converts(small_vit, [3, 32, 32], batch=2)
    assert [layer.type_name for layer in conv.model.layers].count("ScaledDotProductAttention") == 2
    model = small_vit.double()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3),
                    dtype=torch.float64)
    res = ins.run_grad(ins.convert(model, input_dim=[3, 32, 32], dtype="double"), x,
                       dtype="double")
    x.requires_grad_(True)
    out = model(x)
    expected = torch.stack([torch.autograd.grad(out[:, j].sum(), x, retain_graph=True)[0]
                            for j in range(5)], -1)
    error = (res.get_result("torch_tensor") - expected).abs().max()
    assert error <= 1e-12 * expected.abs().max()


@pytest.mark.slow
def test_vit_b_16_matches_original(assert_converts, zoo_model):
    """torchvision's vit_b_16 (12 blocks of 12 heads, width 768) built for 32 x 32 images;
    its zero-initialised head is drawn at random."""
    model = zoo_model("vit_b_16", image_size=32)
    nn.init.normal_(model.heads.head.weight, std=0.02)
    conv = assert_converts(model, [3, 32, 32], batch=2)
    assert conv.output_dim == [(1000,)]


#: torchvision's segmentation models: a dict {"out": (21, H, W)} at the input's size.
SEGMENTATION = ["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large",
                pytest.param("fcn_resnet50", marks=pytest.mark.slow)]


@pytest.mark.parametrize("tracer", ["fx", "export"])
@pytest.mark.parametrize("name", SEGMENTATION)
def test_segmentation_model_matches_original_and_its_gradient(zoo_model, name, tracer):
    """Interpolation back to the input size, a dict output, a map as output layer."""
    model = zoo_model(name, weights_backbone=None, aux_loss=False)
    conv = ins.convert(model, input_dim=[3, 64, 64], tracer=tracer)
    assert conv.output_dim == [(21, 64, 64)]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)["out"]
        scale = expected.abs().max()
        assert (conv.model(x) - expected).abs().max() <= 1e-5 * scale
    node = 7 * 64 * 64 + 20 * 64 + 33  # class 7 at pixel (20, 33)
    grad = ins.run_grad(conv, x, output_idx=[node]).get_result("torch_tensor")[..., 0]
    xg = x.clone().requires_grad_(True)
    (reference,) = torch.autograd.grad(model(xg)["out"].flatten(1)[:, node].sum(), xg)
    assert (grad - reference).abs().max() <= 1e-4 * reference.abs().max()


class FoldedConstants(nn.Module):
    """Tensors that do not depend on the input, which the converter folds into
    constants: computed from float32 parameters and buffers (``w.exp() / 3``, a product
    of two buffers) or created in forward (``arange(n) * 0.1``, a scale
    ``torch.tensor(1 / sqrt(d))``); an integer index and a boolean mask among them."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(6))
        self.register_buffer("a", torch.rand(6) + 0.5)
        self.register_buffer("b", torch.rand(6) + 0.5)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.w.exp() / 3
        ramp = torch.arange(6) * 0.1
        scale = torch.tensor(1 / math.sqrt(6))
        h = (x * gate + ramp) * scale * (self.a * self.b)
        h = h * (torch.arange(6) % 3 != 0)
        return self.fc(h[:, torch.arange(5, -1, -1)])


@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_double_conversion_folds_constants_in_float64(torch_seed, outputs_match,
                                                      default_float64, tracer):
    """A float32 model converted in double reproduces the model in float64 throughout
    (its float64 copy, run with float64 as the default dtype) to float64 rounding: the
    constants its forward computes are computed in float64, not cast from float32 (which
    deviates by about 1e-8); the model and the default dtype are left as they were."""
    model = FoldedConstants().eval()
    tensors = {name: t.clone() for name, t in model.state_dict().items()}
    conv = ins.convert(model, input_dim=[6], tracer=tracer, dtype="double")
    x = torch.randn(4, 6, dtype=torch.float64)
    with torch.no_grad(), default_float64():
        expected = copy.deepcopy(model).double()(x)
    with torch.no_grad():
        outputs_match(conv.model(x), expected, 1e-12)
    assert torch.get_default_dtype() == torch.float32
    for name, tensor in model.state_dict().items():
        assert tensor.dtype == torch.float32 and torch.equal(tensor, tensors[name]), name


class Float32Attribute(nn.Module):
    """A float32 tensor attribute that is no parameter or buffer (``model.double()``
    leaves it float32), multiplied with a parameter: the model cannot run in float64."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.proj = torch.randn(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ (self.proj @ self.fc.weight.T)


@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_double_conversion_of_a_model_that_cannot_run_in_float64(torch_seed, outputs_match,
                                                                 tracer):
    """It is traced in its own precision: its constant is computed in float32, then cast."""
    model = Float32Attribute().eval()
    conv = ins.convert(model, input_dim=[5], tracer=tracer, dtype="double")
    x = torch.randn(4, 5, dtype=torch.float64)
    with torch.no_grad():
        outputs_match(conv.model(x), x @ (model.proj.double() @ model.fc.weight.double().T),
                      1e-6)
