"""Rule-based methods through attention and other products of two activations (MatMul).

LRP follows the AH-rule (Ali et al. 2022): the attention weights (the softmax output)
are held fixed, so relevance flows through the values only, as through a linear map.
References: that rule written out by hand for one head, conservation without biases
(a vision transformer, a plain product of two activations), and for DeepLift and
DeepSHAP the axiom that contributions sum to ``f(x) - f(x_ref)`` of the original model
(a plain product, one head, a whole vision transformer).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import innsight as ins


class OneHead(nn.Module):
    """Input 3 tokens of width 4: single-head self-attention, then a dense head (2)."""

    def __init__(self, bias: bool = True) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(4, 1, bias=bias, batch_first=True)
        self.head = nn.Linear(12, 2, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.attention(x, x, x, need_weights=False)[0].flatten(1))


class Product(nn.Module):
    """Input 3 tokens of width 4: ``a @ b^T`` of two dense maps of the tokens (no softmax
    and no layer norm), a tanh and a dense head (2)."""

    def __init__(self, bias: bool = True) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 5, bias=bias), nn.Linear(4, 5, bias=bias)
        self.head = nn.Linear(9, 2, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.tanh(self.a(x) @ self.b(x).transpose(1, 2)).flatten(1))


def _convert(model: nn.Module, input_dim: list[int]) -> ins.Converter:
    return ins.convert(model.double(), input_dim=input_dim, dtype="double")


def test_lrp_epsilon_equals_the_ah_rule_written_out(seeded, close, make_data):
    model = seeded(OneHead, seed=1).double()
    x, eps = make_data(4, 3, 4, seed=2), 0.05
    w_q, w_k, w_v = model.attention.in_proj_weight.detach().chunk(3)
    b_q, b_k, b_v = model.attention.in_proj_bias.detach().chunk(3)
    w_o, b_o = model.attention.out_proj.weight.detach(), model.attention.out_proj.bias.detach()
    w_h, b_h = model.head.weight.detach(), model.head.bias.detach()

    def stabilised(z: Tensor) -> Tensor:
        return torch.where(z >= 0, z + eps, z - eps)

    q, k, v = x @ w_q.T + b_q, x @ w_k.T + b_k, x @ w_v.T + b_v
    weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(4), -1)  # (sample, i, j)
    h = weights @ v
    o = h @ w_o.T + b_o
    out = o.flatten(1) @ w_h.T + b_h
    expected = []
    for t in range(2):
        r_o = o * (w_h[t] * out[:, [t]] / stabilised(out[:, [t]])).view(-1, 3, 4)
        r_h = h * ((r_o / stabilised(o)) @ w_o)
        # AH-rule: h_ie = sum_j A_ij v_je with A fixed; nothing flows to q and k.
        r_v = v * (weights.transpose(1, 2) @ (r_h / stabilised(h)))
        expected.append(x * ((r_v / stabilised(v)) @ w_v))
    result = ins.run_lrp(_convert(model, [3, 4]), x, rule_name="epsilon", rule_param=eps,
                         output_idx=[0, 1], dtype="double")
    close(result.get_result("torch_tensor"), torch.stack(expected, -1), 1e-12,
          "LRP epsilon through attention (AH-rule)")


def test_attention_written_out_is_held_fixed_as_nn_multihead_attention(seeded, module_from,
                                                                      close, make_data):
    """``softmax(q @ k^T / 2) @ v`` in plain torch converts with the weights fixed under
    LRP, as the module does: same relevance for every rule."""
    model = seeded(OneHead, seed=3).double()
    attention = model.attention
    params = {f"{name}_{p}": nn.Parameter(value.detach())
              for p, values in (("w", attention.in_proj_weight.chunk(3)),
                                ("b", attention.in_proj_bias.chunk(3)))
              for name, value in zip("qkv", values)}

    def written_out(m: nn.Module, x: Tensor) -> Tensor:
        q, k, v = (F.linear(x, getattr(m, f"{n}_w"), getattr(m, f"{n}_b")) for n in "qkv")
        a = F.softmax(q @ k.transpose(-2, -1) / 2, dim=-1)
        return m.head(m.out(a @ v).flatten(1))

    plain = module_from(written_out, out=attention.out_proj, head=model.head, **params)
    x = make_data(3, 3, 4, seed=4)
    for rule, param in [("epsilon", 0.01), ("alpha_beta", 2.0), ("gamma", 0.25)]:
        got, want = (ins.run_lrp(_convert(m, [3, 4]), x, rule_name=rule, rule_param=param,
                                 output_idx=[0, 1], dtype="double").get_result("torch_tensor")
                     for m in (plain, model))
        close(got, want, 1e-12, f"LRP {rule} through attention written out")


@pytest.mark.parametrize("rule", ["simple", "epsilon"])
def test_lrp_through_a_vision_transformer_without_biases_conserves_relevance(
        rule, small_vit, close, make_data):
    """Without biases, class token and positional embedding (constants that would
    absorb relevance as biases do), the relevance of each output sums to its value."""
    with torch.no_grad():
        for name, param in small_vit.named_parameters():
            if name.endswith("bias") or name in ("class_token", "encoder.pos_embedding"):
                param.zero_()
    result = ins.run_lrp(_convert(small_vit, [3, 32, 32]), make_data(2, 3, 32, 32, seed=5),
                         rule_name=rule, rule_param=1e-12 if rule == "epsilon" else None,
                         output_idx=[0, 3], dtype="double")
    close(result.decomp_sum[0], result.decomp_goal[0], 1e-10, f"LRP {rule} conservation")


@pytest.mark.parametrize("rule", ["simple", "gamma"])
def test_lrp_through_a_plain_product_without_biases_conserves_relevance(rule, seeded, close,
                                                                        make_data):
    """Without a softmax operand each factor of ``a @ b`` gets half of the relevance."""
    model = seeded(lambda: Product(bias=False), seed=6)
    conv = _convert(model, [3, 4])
    assert conv.model.layers[4].lrp_constant is None
    result = ins.run_lrp(conv, make_data(3, 3, 4, seed=7), rule_name=rule,
                         output_idx=[0, 1], dtype="double")
    close(result.decomp_sum[0], result.decomp_goal[0], 1e-10, f"LRP {rule} conservation")


@pytest.mark.parametrize("rule", ["rescale", "reveal_cancel"])
@pytest.mark.parametrize("factory", [Product, OneHead], ids=["product", "attention"])
def test_deeplift_through_a_product_of_activations_sums_to_the_difference(
        factory, rule, seeded, close, make_data):
    model = seeded(factory, seed=8).double()
    x, x_ref = make_data(4, 3, 4, seed=9), make_data(1, 3, 4, seed=10)
    result = ins.run_deeplift(_convert(model, [3, 4]), x, x_ref=x_ref, rule_name=rule,
                              output_idx=[0, 1], dtype="double")
    sums = result.get_result("torch_tensor").sum((1, 2))
    with torch.no_grad():
        goal = model(x) - model(x_ref)
    close(sums, goal, 1e-10, f"DeepLift {rule} completeness")


@pytest.mark.parametrize("rule", ["rescale", "reveal_cancel"])
def test_deeplift_and_deepshap_through_a_vision_transformer_sum_to_the_difference(
        rule, small_vit, close, make_data):
    """Layer norms, attention, gelu and the class token: contributions sum exactly to the
    difference of the original model's outputs."""
    model = small_vit.double()
    conv = _convert(model, [3, 32, 32])
    x, refs = make_data(2, 3, 32, 32, seed=11), make_data(3, 3, 32, 32, seed=12)
    deeplift = ins.run_deeplift(conv, x, x_ref=refs[:1], rule_name=rule, output_idx=[0, 4],
                                dtype="double")
    deepshap = ins.run_deepshap(conv, x, data_ref=refs, rule_name=rule, output_idx=[0, 4],
                                dtype="double")
    with torch.no_grad():
        f_x, f_refs = model(x)[:, [0, 4]], model(refs)[:, [0, 4]]
    close(deeplift.get_result("torch_tensor").flatten(1, -2).sum(1), f_x - f_refs[:1], 1e-10,
          f"DeepLift {rule} through a vision transformer")
    close(deepshap.get_result("torch_tensor").flatten(1, -2).sum(1), f_x - f_refs.mean(0), 1e-10,
          f"DeepSHAP {rule} through a vision transformer")


def test_connection_weights_refuse_a_product_of_activations(seeded):
    conv = ins.convert(seeded(Product), input_dim=[3, 4])
    with pytest.raises(ValueError) as info:
        ins.run_cw(conv)
    message = str(info.value)
    assert "ConnectionWeights cannot explain this model" in message
    assert ("layer type 'MatMul' has no ConnectionWeights rule (a product of two tensors has "
            "no weights to follow)") in message


def test_lrp_pass_is_refused_by_a_matrix_product(seeded, make_data):
    conv = ins.convert(seeded(Product), input_dim=[3, 4])
    with pytest.raises(ValueError, match="rule 'pass' only moves relevance through "
                                         "shape-preserving layers, not layer type 'MatMul'"):
        ins.run_lrp(conv, make_data(2, 3, 4, dtype=torch.float32), rule_name={"MatMul": "pass"})
