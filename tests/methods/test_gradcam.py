"""Grad-CAM and Grad-CAM++ against the papers' formulas written here with torch hooks on
the original model (Selvaraju et al. 2017; Chattopadhay et al. 2018)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import innsight as ins

TARGETS = [0, 1, 2]


def cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 3)).eval()


def paper_cam(model: nn.Module, module: nn.Module, x: Tensor, targets: list[Any],
              plus_plus: bool = False, tokens: int | None = None) -> Tensor:
    """Maps ``(n, 1, H, W, len(targets))`` from the module's output ``A`` and the gradients
    ``g`` of each target, an output node or a function ``out -> (n,)`` (hooks on the
    original model). ``tokens``: ``A`` holds ``(n, 1 + tokens, features)`` of which the
    first is the class token."""
    store = {}

    def hook(mod: nn.Module, args: object, out: Tensor) -> None:
        out.retain_grad()
        store["a"] = out

    handle = module.register_forward_hook(hook)
    try:
        out = model(x)
    finally:
        handle.remove()
    maps = []
    for t in targets:
        store["a"].grad = None
        (out[:, t] if isinstance(t, int) else t(out)).sum().backward(retain_graph=True)
        a, g = store["a"].detach(), store["a"].grad
        if tokens is not None:  # (n, 1 + h*w, C) -> (n, C, h, w)
            side = int(tokens ** 0.5)
            a, g = (v[:, 1:].reshape(len(x), side, side, -1).permute(0, 3, 1, 2) for v in (a, g))
        if plus_plus:
            alpha = g ** 2 / (2 * g ** 2 + a.sum((2, 3), keepdim=True) * g ** 3)
            alpha = torch.nan_to_num(alpha, nan=0.0, posinf=0.0, neginf=0.0)
            weights = (alpha * F.relu(g)).sum((2, 3), keepdim=True)
        else:
            weights = g.mean((2, 3), keepdim=True)
        cam = F.relu((weights * a).sum(1, keepdim=True))
        maps.append(F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False))
    return torch.stack(maps, -1)


def close(actual: Tensor, expected: Tensor, tol: float = 1e-5) -> None:
    assert actual.shape == expected.shape
    error = (actual - expected).abs().max().item()
    assert error <= tol * expected.abs().max().item(), error


@pytest.mark.parametrize("plus_plus", [False, True])
def test_gradcam_of_a_small_cnn_equals_the_paper_formula(plus_plus):
    model = cnn()
    x = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    conv = ins.convert(model, input_dim=[3, 12, 12])
    res = ins.run_gradcam(conv, x, output_idx=TARGETS, plus_plus=plus_plus)
    # the default layer: the last feature map (6 x 6) before global pooling
    close(res.get_result("torch_tensor"), paper_cam(model, model[4], x, TARGETS, plus_plus))
    assert res.input_names[0][0] == ["Grad-CAM (4)"]
    named = ins.run_gradcam(conv, x, layer="1", output_idx=TARGETS, plus_plus=plus_plus)
    close(named.get_result("torch_tensor"), paper_cam(model, model[1], x, TARGETS, plus_plus))


def test_gradcam_of_predicted_targets_maps_each_samples_own_class():
    """``targets="predicted"``: one column, row ``i`` the map of sample ``i``'s top class;
    the layer given by its position in ``conv.model.layer_names``."""
    model = cnn()
    x = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    conv = ins.convert(model, input_dim=[3, 12, 12])
    res = ins.run_gradcam(conv, x, targets="predicted", layer=conv.model.layer_names.index("4"))
    top = model(x).argmax(1)
    expected = paper_cam(model, model[4], x, TARGETS)[torch.arange(len(x)), ..., top]
    close(res.get_result("torch_tensor"), expected.unsqueeze(-1))
    assert res.sample_nodes == [f"Y{int(t) + 1}" for t in top]


def test_gradcam_of_a_logit_difference_equals_the_paper_formula():
    """The same target as weights over the outputs and as a function of them."""
    model = cnn()
    x = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    conv = ins.convert(model, input_dim=[3, 12, 12])
    expected = paper_cam(model, model[4], x, [lambda out: out[:, 0] - out[:, 2]])
    weighted = ins.run_gradcam(conv, x, target_weights=[1.0, 0.0, -1.0])
    close(weighted.get_result("torch_tensor"), expected)
    fun = ins.run_gradcam(conv, x, target_fun=lambda outs: outs[0][:, 0] - outs[0][:, 2])
    close(fun.get_result("torch_tensor"), expected)


def test_gradcam_in_channels_last_layout():
    model = cnn()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    res = ins.run_gradcam(ins.convert(model, input_dim=[3, 12, 12]), x.permute(0, 2, 3, 1),
                          channels_first=False, output_idx=TARGETS)
    close(res.get_result("torch_tensor"),
          paper_cam(model, model[4], x, TARGETS).permute(0, 2, 3, 1, 4))


@pytest.mark.slow
def test_gradcam_of_resnet18_equals_the_paper_formula(zoo_model):
    """Default layer: the output of the last residual block (before global pooling)."""
    model = zoo_model("resnet18")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    res = ins.run_gradcam(ins.convert(model, input_dim=[3, 64, 64]), x, output_idx=[3, 500])
    close(res.get_result("torch_tensor"), paper_cam(model, model.layer4[1], x, [3, 500]))


def test_gradcam_of_a_vision_transformer_maps_its_patch_tokens(small_vit):
    """Tokens of the last block's first layer norm: the class token left out, 4 x 4 patches
    upsampled to the 32 x 32 input; the default layer gives a map of that size too."""
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    conv = ins.convert(small_vit, input_dim=[3, 32, 32])
    res = ins.run_gradcam(conv, x, layer="encoder.layers.encoder_layer_1.ln_1",
                          output_idx=TARGETS)
    expected = paper_cam(small_vit, small_vit.encoder.layers[1].ln_1, x, TARGETS, tokens=16)
    close(res.get_result("torch_tensor"), expected)
    default = ins.run_gradcam(conv, x, output_idx=TARGETS).get_result("torch_tensor")
    assert default.shape == (2, 1, 32, 32, 3)
    assert bool(default.isfinite().all()) and bool(default.gt(0).any())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_b0", "convnext_tiny", "vit_b_16"])
def test_gradcam_finds_a_layer_in_zoo_models(zoo_model, name):
    kwargs = {"image_size": 64} if name == "vit_b_16" else {}
    model = zoo_model(name, **kwargs)
    if name == "vit_b_16":  # torchvision starts the head at zero: no gradient at all
        torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    res = ins.run_gradcam(ins.convert(model, input_dim=[3, 64, 64]), x, output_idx=[1])
    maps = res.get_result("torch_tensor")
    assert maps.shape == (1, 1, 64, 64, 1)
    assert bool(maps.isfinite().all()) and bool(maps.gt(0).any())


def test_bad_layers_are_refused_by_name():
    model = cnn()
    conv = ins.convert(model, input_dim=[3, 12, 12])
    x = torch.randn(2, 3, 12, 12)
    with pytest.raises(ValueError, match="`layer` '7' has output shape \\(3,\\): no 2-d"):
        ins.run_gradcam(conv, x, layer="7")
    with pytest.raises(ValueError, match="`layer` 'conv9' is no layer of the model"):
        ins.run_gradcam(conv, x, layer="conv9")
    with pytest.raises(ValueError, match="GradCAM cannot attribute to a layer"):
        ins.run_gradcam(conv, x, attribute_to="1")
    with pytest.raises(TypeError, match="`plus_plus` must be"):
        ins.run_gradcam(conv, x, plus_plus="yes")
    mlp = ins.convert(nn.Sequential(nn.Linear(4, 3)).eval(), input_dim=[4])
    with pytest.raises(ValueError, match="Grad-CAM needs a model with one image input"):
        ins.run_gradcam(mlp, torch.randn(2, 4))
    flat = ins.convert(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)).eval(), input_dim=[3, 2, 2])
    with pytest.raises(ValueError, match="Grad-CAM needs a layer with a spatial output"):
        ins.run_gradcam(flat, torch.randn(2, 3, 2, 2))
