"""Segmentation models and Swin transformers of the model zoos, explained.

torchvision's FCN, DeepLabV3 and LRASPP (interpolation back to the input size, a
``(21, H, W)`` map as output) and Swin (torchvision's ``swin_t``, timm's
``swin_tiny_patch4_window7_224``: roll, relative position bias, window partition,
patch merging), without pretrained weights.

References: the original model's forward (float32, 1e-5 relative to the output
scale), and, in the model with every bias set to zero (biases of linear maps and
norms, batch norm means, Swin's relative position bias tables), torch autograd
(Gradient), the axiom that DeepLift sums to ``f(x) - f(x_ref)``, and conservation of
LRP epsilon relevance. The conversions of the segmentation models and their
Gradient with biases are checked in ``tests/converter/test_torch_models.py``.

The full-size Swin models run on 3 x 56 x 56 images (a 14 x 14 patch grid: two
shifted windows of 7 per side in the first stage, padding to the window in the third;
the weights are those of the 224 models) and the segmentation models on 3 x 32 x 32
images, to keep the suite's time; the Swin models and ``fcn_resnet50`` are ``slow``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

import innsight as ins


def without_biases(model: nn.Module) -> nn.Module:
    """``model`` with every bias (linear maps, norms, batch norm means, Swin's relative
    position bias tables) set to zero, in float64. (Batch norm's affine map is then a
    pure scaling.)"""
    with torch.no_grad():
        for module in model.modules():
            for name in ("bias", "running_mean", "relative_position_bias_table"):
                value = getattr(module, name, None)
                if isinstance(value, torch.Tensor):
                    value.zero_()
    return model.double()


class MapOnly(nn.Module):
    """A segmentation model's map ``out`` from the dict it returns."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def segmentation(name: str, zoo_model: Callable[..., nn.Module]) -> nn.Module:
    """torchvision's model with seeded weights and random batch-norm statistics (so that
    the map varies with the input; without them an untrained DeepLabV3's hardly does)."""
    return MapOnly(zoo_model(name, weights_backbone=None, aux_loss=False)).eval()


def swin(name: str, zoo_model: Callable[..., nn.Module]) -> nn.Module:
    if name == "swin_t":
        return zoo_model(name)
    torch.manual_seed(0)
    timm = pytest.importorskip("timm")
    return timm.create_model(name, pretrained=False, img_size=56).eval()


#: name -> (builder, input_dim, output nodes explained: classes at pixels of the map).
SEGMENTATION = {name: (segmentation, [3, 32, 32], [3 * 1024 + 10 * 32 + 20, 500]) for name in
                ("lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large", "fcn_resnet50")}
SWIN = {name: (swin, [3, 56, 56], [3, 700])
        for name in ("swin_t", "swin_tiny_patch4_window7_224")}
MODELS = {**SEGMENTATION, **SWIN}
SLOW = {"fcn_resnet50", *SWIN}


def _params(names: list[str]) -> list[object]:
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SWIN))
def test_swin_reproduces_the_original(name, zoo_model):
    build, input_dim, _ = SWIN[name]
    model = build(name, zoo_model)
    conv = ins.convert(model, input_dim=input_dim)
    x = torch.randn(2, *input_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x)
        assert (conv.model(x) - expected).abs().max() <= 1e-5 * expected.abs().max()


@pytest.mark.parametrize("name", _params(list(MODELS)))
def test_gradient_deeplift_and_lrp_epsilon_without_biases(name, zoo_model):
    """In float64, in the model with every bias zero (one conversion for all three): the
    Gradient equals autograd, DeepLift (rescale, a random reference) sums to
    ``f(x) - f(x_ref)``, and LRP epsilon relevance sums to the explained output (an
    epsilon of 1e-9 times the output scale keeps what its stabiliser absorbs below 1e-6:
    without biases, DeepLabV3's outputs are of order 1e-11)."""
    build, input_dim, nodes = MODELS[name]
    model = without_biases(build(name, zoo_model))
    conv = ins.convert(model, input_dim=input_dim, dtype="double")
    generator = torch.Generator().manual_seed(2)
    x, x_ref = (torch.randn(1, *input_dim, generator=generator, dtype=torch.float64)
                for _ in range(2))
    xg = x.clone().requires_grad_(True)
    out = model(xg).flatten(1)
    expected = torch.stack([torch.autograd.grad(out[:, j].sum(), xg, retain_graph=True)[0]
                            for j in nodes], -1)
    grad = ins.run_grad(conv, x, output_idx=nodes, dtype="double").get_result("torch_tensor")
    assert (grad - expected).abs().max() <= 1e-9 * expected.abs().max()

    res = ins.run_deeplift(conv, x, x_ref=x_ref, output_idx=nodes, dtype="double")
    with torch.no_grad():
        goal = (model(x) - model(x_ref)).flatten(1)[:, nodes]
    assert goal.abs().min() > 1e-6 * out.abs().max(), "degenerate: f(x) = f(x_ref)"
    sums = res.get_result("torch_tensor").flatten(1, -2).sum(1)
    assert (sums - goal).abs().max() <= 1e-8 * goal.abs().max()

    res = ins.run_lrp(conv, x, output_idx=nodes, rule_name="epsilon",
                      rule_param=1e-9 * out.abs().max().item(), dtype="double")
    sums, goal = res.decomp_sum[0], res.decomp_goal[0]
    assert goal.abs().min() > 0, "degenerate: an explained output is zero"
    assert ((sums - goal).abs() <= 1e-6 * goal.abs().max()).all()
