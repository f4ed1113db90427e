"""Rule-based methods through layer normalisation.

LRP uses the LN-rule (Ali et al. 2022): the standard deviation of each sample is held
fixed, which makes the layer the linear map ``y = gamma * (x - mean(x)) / sigma + beta``.
References: that rule written out by hand, a dense layer holding the same matrix
(whose rules are tested against Zennit), and conservation without biases. DeepLift
follows the layer's primitive operations: its contributions sum exactly to
``f(x) - f(x_ref)``, and as ``x_ref`` approaches ``x`` they approach autograd's
gradient times ``x - x_ref``. ConnectionWeights refuses the layer by name.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import innsight as ins

#: Every LRP rule with a parameter (z_box: bounds of the normalised values).
RULES = [("simple", None), ("epsilon", 0.05), ("alpha_beta", 2.0), ("z_plus", None),
         ("gamma", 0.25), ("w_square", None), ("flat", None), ("z_box", (-3.0, 3.0))]


def _random_affine(norm: nn.LayerNorm, seed: int) -> nn.LayerNorm:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        norm.weight.copy_(0.5 + torch.rand(norm.weight.shape, generator=generator))
        norm.bias.copy_(torch.randn(norm.bias.shape, generator=generator))
    return norm


def _lrp(model: Any, x: Tensor, rule: str, param: Any, output_idx: list[int]) -> Tensor:
    conv = model if isinstance(model, ins.Converter) else ins.convert(
        model, input_dim=list(x.shape[1:]), dtype="double")
    result = ins.run_lrp(conv, x, rule_name=rule, rule_param=param, output_idx=output_idx,
                         dtype="double")
    return result.get_result("torch_tensor")


def test_lrp_epsilon_equals_the_ln_rule_written_out(seeded, close, make_data):
    model = seeded(lambda: nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.Linear(5, 3)),
                   seed=3).double()
    _random_affine(model[1], seed=4)
    x, eps = make_data(6, 4, seed=5), 0.05
    w1, b1 = model[0].weight.detach(), model[0].bias.detach()
    gamma, beta = model[1].weight.detach(), model[1].bias.detach()
    w2, b2 = model[2].weight.detach(), model[2].bias.detach()

    def stabilised(z: Tensor) -> Tensor:
        return torch.where(z >= 0, z + eps, z - eps)

    h = x @ w1.T + b1
    sigma = torch.sqrt(((h - h.mean(1, keepdim=True)) ** 2).mean(1) + model[1].eps)
    centring = torch.eye(5, dtype=x.dtype) - 1 / 5
    matrix = (gamma[None, :, None] / sigma[:, None, None]) * centring  # (sample, out i, in j)
    y = torch.einsum("bij,bj->bi", matrix, h) + beta
    out = y @ w2.T + b2
    expected = []
    for k in range(3):
        r_y = y * w2[k] / stabilised(out[:, [k]]) * out[:, [k]]
        r_h = h * torch.einsum("bij,bi->bj", matrix, r_y / stabilised(y))
        expected.append(x * ((r_h / stabilised(h)) @ w1))
    close(_lrp(model, x, "epsilon", eps, [0, 1, 2]), torch.stack(expected, -1), 1e-12,
          "LRP epsilon through LayerNorm")


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize(("rule", "param"), RULES, ids=[r for r, _ in RULES])
def test_every_lrp_rule_equals_a_dense_layer_holding_the_frozen_matrix(rule, param, affine,
                                                                       close, make_data):
    """Per sample, LN is the dense layer ``W = diag(gamma / sigma) (I - 1/n)`` with bias
    ``beta`` (``gamma = 1``, ``beta = 0`` without affine parameters); every rule gives
    what it gives for that dense layer."""
    norm = nn.LayerNorm(5, eps=1e-3, elementwise_affine=affine).double().eval()
    if affine:
        _random_affine(norm, seed=1)
    x = make_data(3, 5, seed=2)
    gamma, beta = (norm.weight, norm.bias) if affine else (torch.ones_like(x[0]),
                                                           torch.zeros_like(x[0]))
    got = _lrp(norm, x, rule, param, [0, 2, 4])
    for b in range(len(x)):
        sigma = torch.sqrt(x[b].var(unbiased=False) + norm.eps)
        dense = nn.Linear(5, 5).double().eval()
        with torch.no_grad():
            dense.weight.copy_(gamma[:, None] / sigma * (torch.eye(5, dtype=x.dtype) - 1 / 5))
            dense.bias.copy_(beta)
        close(got[b:b + 1], _lrp(dense, x[b:b + 1], rule, param, [0, 2, 4]), 1e-12,
              f"LRP {rule} through LayerNorm, sample {b}")


def _channels_norm(axes_first: bool) -> dict[str, Any]:
    """Layer norm over the channels of (3, 2, 4): directly (axes [0]) or between
    permutations to channels last and back (axes [2])."""
    rng = np.random.default_rng(7)
    params = {"weight": rng.uniform(0.5, 1.5, 3), "bias": rng.standard_normal(3), "eps": 1e-4}
    if axes_first:
        layers = [{"type": "LayerNorm", "axes": [0], **params}]
    else:
        layers = [{"type": "Permute", "perm": [1, 2, 0]},
                  {"type": "LayerNorm", "axes": [2], **params},
                  {"type": "Permute", "perm": [2, 0, 1]}]
    return {"input_dim": [[3, 2, 4]], "layers": layers}


@pytest.mark.parametrize(("rule", "param"), RULES + [("pass", None)],
                         ids=[r for r, _ in RULES] + ["pass"])
def test_normalising_the_channel_axis_equals_permuting_it_last(rule, param, close, make_data):
    x = make_data(2, 3, 2, 4, seed=8)
    direct, permuted = (ins.convert(_channels_norm(first), dtype="double") for first in (True, False))
    close(_lrp(direct, x, rule, param, [0, 5, 23]), _lrp(permuted, x, rule, param, [0, 5, 23]),
          1e-12, f"LRP {rule} through LayerNorm over the channels")


class ConvNeXtBlock(nn.Module):
    """Input (4, 5, 5) without biases: a depthwise convolution, layer norm over the
    channels (moved last), dense, GELU, dense, a layer scale and a residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
        self.norm = nn.LayerNorm(4, eps=1e-6)
        self.fc1 = nn.Linear(4, 8, bias=False)
        self.fc2 = nn.Linear(8, 4, bias=False)
        self.scale = nn.Parameter(torch.rand(4, 1, 1) + 0.5)
        self.head = nn.Linear(4, 3, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc2(F.gelu(self.fc1(self.norm(self.dw(x).permute(0, 2, 3, 1)))))
        x = x + self.scale * h.permute(0, 3, 1, 2)
        return self.head(x.mean((2, 3)))


@pytest.mark.parametrize("rule", ["simple", "epsilon"])
def test_lrp_without_biases_conserves_relevance(rule, seeded, close, make_data):
    model = seeded(ConvNeXtBlock, seed=9).double()
    _random_affine(model.norm, seed=10)
    with torch.no_grad():
        model.norm.bias.zero_()
    conv = ins.convert(model, input_dim=[4, 5, 5], dtype="double")
    result = ins.run_lrp(conv, make_data(3, 4, 5, 5, seed=11), rule_name=rule,
                         rule_param=1e-12 if rule == "epsilon" else None, output_idx=[0, 1, 2],
                         dtype="double")
    close(result.decomp_sum[0], result.decomp_goal[0], 1e-10, f"LRP {rule} conservation")


def _ln_mlp(seeded: Any) -> nn.Module:
    model = seeded(lambda: nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Tanh(),
                                         nn.Linear(6, 3)), seed=12).double()
    _random_affine(model[1], seed=13)
    return model


@pytest.mark.parametrize("rule", ["rescale", "reveal_cancel"])
def test_deeplift_sums_to_the_difference_of_the_original_outputs(rule, seeded, close, make_data):
    model = _ln_mlp(seeded)
    x, x_ref = make_data(5, 4, seed=14), make_data(1, 4, seed=15)
    result = ins.run_deeplift(ins.convert(model, input_dim=[4], dtype="double"), x, x_ref=x_ref,
                              rule_name=rule, output_idx=[0, 1, 2], dtype="double")
    with torch.no_grad():
        goal = model(x) - model(x_ref)
    close(result.get_result("torch_tensor").sum(1), goal, 1e-12, f"DeepLift {rule} through LayerNorm")


@pytest.mark.parametrize("eps", [1e-12, 1e-5])
@pytest.mark.parametrize(("dtype", "rel_tol"), [("float", 1e-4), ("double", 1e-12)])
@pytest.mark.parametrize("rule", ["rescale", "reveal_cancel"])
def test_deeplift_stays_bounded_when_the_reference_has_no_variance(rule, dtype, rel_tol, eps,
                                                                   seeded, make_data):
    """A zero reference and no bias before the norm (a transformer's zero embedding
    baseline): the norm's input is constant at the reference, its inverse standard
    deviation there is 1/sqrt(eps). Contributions still sum to the goal and stay of the
    size of the outputs (the symmetric product split gave ~1e5 that cancelled)."""
    model = seeded(lambda: nn.Sequential(nn.Linear(4, 8, bias=False), nn.LayerNorm(8, eps=eps),
                                         nn.Linear(8, 2)), seed=21)
    x = make_data(6, 4, seed=22, dtype=torch.float32)
    conv = ins.convert(model, input_dim=[4])
    result = ins.run_deeplift(conv, x, rule_name=rule, dtype=dtype)
    values = result.get_result("torch_tensor").double()
    reference = model.double() if dtype == "double" else model
    with torch.no_grad():
        xr = x.to(next(reference.parameters()).dtype)
        goal = (reference(xr) - reference(torch.zeros_like(xr))).double()
    scale = goal.abs().max()
    assert values.abs().max() <= 10 * scale
    assert ((values.sum(1) - goal).abs() <= rel_tol * scale).all()


def test_deeplift_multipliers_approach_the_gradient_as_the_reference_approaches_x(
        seeded, close, make_data):
    model = _ln_mlp(seeded)
    x, step = make_data(4, 4, seed=16), 1e-7 * make_data(4, 4, seed=17)
    conv = ins.convert(model, input_dim=[4], dtype="double")
    contributions = ins.run_deeplift(conv, x, x_ref=x - step, output_idx=[0, 2],
                                     dtype="double").get_result("torch_tensor")
    xg = x.clone().requires_grad_(True)
    grads = [torch.autograd.grad(model(xg)[:, k].sum(), xg)[0] for k in (0, 2)]
    close(contributions / step[..., None], torch.stack(grads, -1), 1e-6,
          "DeepLift multipliers at x_ref -> x")


def test_deepshap_through_a_convnext_block_and_the_channel_axis(seeded, close, make_data):
    model = seeded(ConvNeXtBlock, seed=18).double()
    _random_affine(model.norm, seed=19)
    x, refs = make_data(3, 4, 5, 5, seed=20), make_data(4, 4, 5, 5, seed=21)
    result = ins.run_deepshap(ins.convert(model, input_dim=[4, 5, 5], dtype="double"), x,
                              data_ref=refs, output_idx=[0, 1, 2], dtype="double")
    with torch.no_grad():
        goal = model(x) - model(refs).mean(0)
    close(result.get_result("torch_tensor").flatten(1, -2).sum(1), goal, 1e-12,
          "DeepSHAP through a ConvNeXt block")
    y = make_data(2, 3, 2, 4, seed=22)
    direct, permuted = (ins.run_deeplift(ins.convert(_channels_norm(first), dtype="double"), y,
                                         output_idx=[0, 5, 23], dtype="double")
                        for first in (True, False))
    close(direct.get_result("torch_tensor"), permuted.get_result("torch_tensor"), 1e-12,
          "DeepLift through LayerNorm over the channels")


def test_connection_weights_refuse_layer_norm(seeded, make_data):
    model = seeded(lambda: nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.Linear(5, 3)))
    conv = ins.convert(model, input_dim=[4])
    with pytest.raises(ValueError) as info:
        ins.run_cw(conv)
    message = str(info.value)
    assert "ConnectionWeights cannot explain this model" in message
    assert ("layer type 'LayerNorm' has no ConnectionWeights rule (its weights depend on each "
            "sample's standard deviation") in message
    assert "'1'" in message  # the layer's name: the module path in the Sequential
