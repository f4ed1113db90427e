"""Recurrent layers (``nn.RNN``, ``nn.LSTM``, ``nn.GRU``) unrolled over time.

References: the original module (forward, float and double), torch autograd
(Gradient), the axiom that DeepLift sums to ``f(x) - f(x_ref)``, and conservation
of LRP relevance without biases under the signal-take-all rule for the gates.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import innsight as ins
from innsight.layers import LAYER_TYPES
from innsight.layers.lrp_rules import LRP_RULES

#: Classifiers of ``tests/conftest.py``: one direction and two, one layer and two.
CELLS = ["lstm", "gru", "bi-lstm", "gru-2-layers", "rnn-tanh", "bi-rnn-relu"]


@pytest.mark.parametrize("name", CELLS)
def test_conversion_reproduces_the_original_and_its_gradient(name, assert_converts,
                                                             recurrent_classifier):
    model = recurrent_classifier(name)
    assert_converts(model, [6, 4])
    conv = ins.convert(model, input_dim=[6, 4], dtype="double")
    x = torch.randn(3, 6, 4, dtype=torch.float64)
    grad = ins.run_grad(conv, x, output_idx=[0, 2], dtype="double").get_result("torch_tensor")
    reference = model.double()
    xg = x.clone().requires_grad_(True)
    out = reference(xg)
    for k, node in enumerate((0, 2)):
        (expected,) = torch.autograd.grad(out[:, node].sum(), xg, retain_graph=True)
        torch.testing.assert_close(grad[..., k], expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rule_name", ["rescale", "reveal_cancel"])
@pytest.mark.parametrize("name", ["lstm", "gru", "bi-rnn-relu"])
def test_deeplift_sums_to_the_difference_of_the_original_outputs(name, rule_name,
                                                                 recurrent_classifier):
    model = recurrent_classifier(name).double()
    conv = ins.convert(model, input_dim=[6, 4], dtype="double")
    x, x_ref = torch.randn(3, 6, 4, dtype=torch.float64), torch.randn(1, 6, 4,
                                                                      dtype=torch.float64)
    res = ins.run_deeplift(conv, x, x_ref=x_ref, rule_name=rule_name, dtype="double")
    with torch.no_grad():
        goal = model(x) - model(x_ref)
    torch.testing.assert_close(res.get_result("torch_tensor").sum((1, 2)), goal,
                               rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize(("rule_name", "rule_param", "rel_tol"),
                         [("simple", None, 1e-10), ("epsilon", 1e-9, 1e-6)])
@pytest.mark.parametrize("name", ["lstm", "gru", "bi-lstm"])
def test_lrp_conserves_relevance_without_biases(name, rule_name, rule_param, rel_tol,
                                                recurrent_classifier):
    """Gates get no relevance (signal-take-all); all of it flows through the signals."""
    conv = ins.convert(recurrent_classifier(name, bias=False), input_dim=[6, 4],
                       dtype="double")
    x = torch.randn(2, 6, 4, dtype=torch.float64)
    res = ins.run_lrp(conv, x, rule_name=rule_name, rule_param=rule_param, dtype="double")
    sums, goal = res.decomp_sum[0], res.decomp_goal[0]
    assert ((sums - goal).abs() <= rel_tol * goal.abs().max()).all()


def test_a_gate_held_fixed_gets_no_relevance():
    """Multiply(lrp_constant=0): ``gate * signal`` passes the relevance to the signal."""
    layer = LAYER_TYPES["Multiply"].from_params("Multiply", {"lrp_constant": 0}, "gate")
    layer.input_dim, layer.output_dim = [(4,), (4,)], (4,)
    gate, signal = torch.rand(2, 4), torch.randn(2, 4)
    r = torch.randn(3, 2, 4)
    to_gate, to_signal = layer.relevance(r, [gate, signal], gate * signal, LRP_RULES["simple"]())
    assert to_gate is None and torch.equal(to_signal, r)  # None: the walk passes nothing


@pytest.mark.parametrize(("rnn", "forward", "what"), [
    (nn.LSTM(4, 5), lambda m, x: m.rnn(x)[0], "batch_first=False"),
    (nn.GRU(4, 5, batch_first=True), lambda m, x: m.rnn(x)[1][-1],
     "element 1 of the output of node 'rnn'"),
    (nn.LSTM(4, 5, batch_first=True, proj_size=2), lambda m, x: m.rnn(x)[0], "proj_size"),
], ids=["time-first", "final-state", "projection"])
def test_unsupported_uses_are_refused_by_name(module_from, rnn, forward, what):
    model = module_from(forward, rnn=rnn)
    with pytest.raises(ins.ConversionError, match=what):
        ins.convert(model, input_dim=[6, 4], tracer="fx")
