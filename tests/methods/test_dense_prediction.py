"""Methods on a small U-Net: transposed convolution, bilinear up-sampling, group norm,
a skip connection and a segmentation map as output ``(classes, H, W)``.

References: the original module (forward), torch autograd (Gradient), the axiom that
DeepLift sums to ``f(x) - f(x_ref)``, and conservation of LRP relevance without biases.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import innsight as ins


class TinyUNet(nn.Module):
    def __init__(self, bias: bool) -> None:
        super().__init__()
        self.down = nn.Conv2d(3, 8, 3, padding=1, bias=bias)
        self.norm = nn.GroupNorm(2, 8, affine=bias)
        self.mid = nn.Conv2d(8, 8, 3, padding=1, bias=bias)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2, bias=bias)
        self.skip = nn.Conv2d(8, 4, 1, bias=bias)
        self.head = nn.Conv2d(4, 2, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.norm(self.down(x)))
        low = F.avg_pool2d(h, 2)
        u = self.up(torch.relu(self.mid(low))) + F.interpolate(
            self.skip(low), scale_factor=2, mode="bilinear", align_corners=False)
        return self.head(torch.relu(u))


def _net(bias: bool = True) -> nn.Module:
    torch.manual_seed(3)
    net = TinyUNet(bias).eval().double()
    if bias:
        with torch.no_grad():
            net.norm.weight.uniform_(0.5, 1.5)
            net.norm.bias.uniform_(-0.5, 0.5)
    return net


#: Output nodes of the (2, 8, 8) map: class 0 at (1, 2), class 1 at (6, 5).
NODES = [0 * 64 + 1 * 8 + 2, 1 * 64 + 6 * 8 + 5]


@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_the_map_names_and_the_gradient(tracer):
    net = _net()
    conv = ins.convert(net, input_dim=[3, 8, 8], dtype="double", tracer=tracer)
    assert conv.output_dim == [(2, 8, 8)]
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    res = ins.run_grad(conv, x, output_idx=NODES, dtype="double")
    assert res.output_labels == [["Y1_H2_W3", "Y2_H7_W6"]]
    xg = x.clone().requires_grad_(True)
    flat = net(xg).flatten(1)
    for k, node in enumerate(NODES):
        (expected,) = torch.autograd.grad(flat[:, node].sum(), xg, retain_graph=True)
        torch.testing.assert_close(res.get_result("torch_tensor")[..., k], expected,
                                   rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rule_name", ["rescale", "reveal_cancel"])
def test_deeplift_sums_to_the_difference_of_the_original_outputs(rule_name):
    net = _net()
    conv = ins.convert(net, input_dim=[3, 8, 8], dtype="double")
    x, x_ref = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.randn(1, 3, 8, 8,
                                                                          dtype=torch.float64)
    res = ins.run_deeplift(conv, x, x_ref=x_ref, output_idx=NODES, rule_name=rule_name,
                           dtype="double")
    with torch.no_grad():
        goal = (net(x) - net(x_ref)).flatten(1)[:, NODES]
    sums = res.get_result("torch_tensor").sum((1, 2, 3))
    torch.testing.assert_close(sums, goal, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize(("rule_name", "rule_param", "rel_tol"), [
    ("simple", None, 1e-10), ("epsilon", 1e-9, 1e-6)])
def test_lrp_conserves_relevance_without_biases(rule_name, rule_param, rel_tol):
    """No bias anywhere (group norm without affine parameters, under the LN-rule):
    the relevance reaching the input is the explained output value."""
    conv = ins.convert(_net(bias=False), input_dim=[3, 8, 8], dtype="double")
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    res = ins.run_lrp(conv, x, output_idx=NODES, rule_name=rule_name, rule_param=rule_param,
                      dtype="double")
    sums, goal = res.decomp_sum[0], res.decomp_goal[0]
    assert ((sums - goal).abs() <= rel_tol * goal.abs().max()).all()
