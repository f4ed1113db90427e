"""The per-layer report (``keep_layers=True``) against closed forms of the LRP rules on a
two-layer MLP, and DeepLift's conservation layer by layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import innsight as ins

TARGETS = [0, 2]


def mlp(bias: bool) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8, bias=bias), nn.ReLU(), nn.Linear(8, 3, bias=bias)).eval()


def data(n: int = 4) -> Tensor:
    return torch.randn(n, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def by_layer(report, layer: str, column: str) -> np.ndarray:
    """``(n_data, n_targets)`` of one column for one layer."""
    rows = report[report["layer"] == layer]
    return rows.pivot(index="data", columns="output_node", values=column).to_numpy()


def closed_form_absorbed(model: nn.Sequential, x: Tensor, eps: float) -> dict[str, np.ndarray]:
    """What each dense layer absorbs under the z-rule with stabiliser ``eps`` (0: simple)
    for each target: ``sum_k R_k (b_k + eps s_k) / (z_k + eps s_k)``, ``s = sign(z)``."""
    first, second = model[0], model[2]
    z1 = first(x).detach()
    a1 = z1.clamp(min=0)
    z2 = second(a1).detach()
    b1 = first.bias.detach() if first.bias is not None else torch.zeros(8, dtype=x.dtype)
    b2 = second.bias.detach() if second.bias is not None else torch.zeros(3, dtype=x.dtype)
    top, low = [], []
    for t in TARGETS:
        d2 = z2[:, t] + eps * torch.sign(z2[:, t])
        top.append(z2[:, t] * (b2[t] + eps * torch.sign(z2[:, t])) / d2)
        r1 = a1 * second.weight.detach()[t] * (z2[:, t] / d2).unsqueeze(1)  # relevance at hidden
        d1 = z1 + eps * torch.sign(z1)
        low.append((r1 * (b1 + eps * torch.sign(z1)) / d1).sum(1))
    return {"2": torch.stack(top, 1).numpy(), "0": torch.stack(low, 1).numpy()}


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize(("rule", "eps"), [("simple", 0.0), ("epsilon", 0.01), ("epsilon", 0.5)])
def test_lrp_report_absorbed_matches_the_closed_form(bias, rule, eps):
    model = mlp(bias).double()
    x = data()
    conv = ins.convert(model, input_dim=[5])
    res = ins.run_lrp(conv, x, output_idx=TARGETS, rule_name=rule, keep_layers=True,
                      dtype="double", **({"rule_param": eps} if rule == "epsilon" else {}))
    report = res.layer_report()
    expected = closed_form_absorbed(model, x, eps)
    for layer, absorbed in expected.items():
        np.testing.assert_allclose(by_layer(report, layer, "absorbed"), absorbed, atol=1e-12)
        assert set(report.loc[report["layer"] == layer, "rule"]) == {rule}
    # the relu passes relevance on unchanged
    np.testing.assert_allclose(by_layer(report, "1", "absorbed"), 0.0, atol=1e-12)
    # what comes into the top layer is the explained output; what leaves the first, the sum
    out = model(x).detach().numpy()[:, TARGETS]
    np.testing.assert_allclose(by_layer(report, "2", "value_in"), out, rtol=1e-12)
    np.testing.assert_allclose(by_layer(report, "0", "value_out"), res.decomp_sum[0].numpy(),
                               rtol=1e-10)
    if not bias and rule == "simple":  # conservation, layer by layer
        np.testing.assert_allclose(report["value_in"], report["value_out"], rtol=1e-10)


def test_deeplift_report_conserves_every_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 2 * 2, 3)).eval()
    x = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    x_ref = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(2))
    for rule_name in ("rescale", "reveal_cancel"):
        res = ins.run_deeplift(ins.convert(model, input_dim=[2, 8, 8]), x, x_ref=x_ref,
                               output_idx=TARGETS, rule_name=rule_name, keep_layers=True)
        report = res.layer_report()
        scale = report["value_in"].abs().max()
        assert (report["absorbed"].abs() <= 1e-5 * scale).all()
        goal = (model(x) - model(x_ref)).detach().numpy()[:, TARGETS]
        np.testing.assert_allclose(by_layer(report, "6", "value_in"), goal, rtol=1e-5, atol=1e-6)
        assert set(report["rule"]) == {rule_name}


def test_deepshap_report_averages_over_references():
    model = mlp(True)
    x, refs = data().float(), torch.randn(6, 5, generator=torch.Generator().manual_seed(3))
    res = ins.run_deepshap(ins.convert(model, input_dim=[5]), x, data_ref=refs,
                           output_idx=TARGETS, keep_layers=True)
    goal = (model(x) - model(refs).mean(0)).detach().numpy()[:, TARGETS]
    np.testing.assert_allclose(by_layer(res.layer_report(), "2", "value_in"), goal, rtol=1e-5)


def test_report_plot_and_refusals():
    import plotnine as p9

    conv = ins.convert(mlp(True), input_dim=[5])
    x = data().float()
    res = ins.run_lrp(conv, x, output_idx=TARGETS, keep_layers=True)
    assert isinstance(res.plot_layer_report(), p9.ggplot)
    assert isinstance(res.plot_layer_report(data_idx=[0, 2]), p9.ggplot)
    with pytest.raises(ValueError, match="`data_idx` \\[7\\] out of range"):
        res.plot_layer_report(data_idx=7)
    with pytest.raises(TypeError, match="`data_idx` must be an int"):
        res.plot_layer_report(data_idx="first")
    plain = ins.run_lrp(conv, x, output_idx=TARGETS)
    assert plain.layer_records is None  # nothing kept by default
    with pytest.raises(ValueError, match="rerun it with keep_layers=True"):
        plain.layer_report()
    with pytest.raises(TypeError, match="`keep_layers` must be"):
        ins.run_lrp(conv, x, keep_layers="yes")
