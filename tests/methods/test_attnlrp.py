"""AttnLRP (``rule_name="attnlrp"``, Achtibat et al. 2024) on Hugging Face transformers
built from tiny configs (random weights, no download), in float64.

References:

- LXT's efficient AttnLRP (``lxt.efficient``, the authors' code): the relevance of a
  token is its input embedding times the gradient under LXT's patches, summed over the
  hidden dimension. ``lxt`` 2.1 does not import with ``transformers`` 5.x; the helper
  :mod:`lxt_reference` applies LXT's own patch functions as its fixed upstream main does
  (its docstring says how) and restores the patched classes afterwards.
- Accounting: the token relevances plus what each layer reports as absorbed
  (``keep_layers=True``) equal the explained logit.
- Each new rule against its matrix form written here: ``linearise`` against autograd's
  Jacobian, ``uniform`` against the explicit sum over the product's terms.
"""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest
import torch
import transformers as tf
from lxt_reference import lxt_relevance

import innsight as ins
from innsight.layers import LAYER_TYPES
from innsight.layers.lrp_rules import LRP_RULES

TOKENS, VOCAB, TOKEN = 6, 50, 7
_TEXT = {"vocab_size": VOCAB, "max_position_embeddings": 32, "hidden_size": 16, "num_hidden_layers": 2,
             "num_attention_heads": 2, "intermediate_size": 32}
#: name -> (build the model, index of the explained output node, that node of the logits).
MODELS = {
    "llama": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(num_key_value_heads=1, **_TEXT)),
    "qwen2": lambda: tf.Qwen2ForCausalLM(tf.Qwen2Config(num_key_value_heads=1, **_TEXT)),
    "gpt2": lambda: tf.GPT2LMHeadModel(tf.GPT2Config(
        vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, n_positions=32, bos_token_id=0,
        eos_token_id=0)),
    "bert": lambda: tf.BertForSequenceClassification(tf.BertConfig(num_labels=3, **_TEXT)),
}


def _target(name: str) -> tuple[int, object]:
    """The explained node: the logit of token ``TOKEN`` after the last position (causal
    LMs, output ``(tokens, vocab)``), class 1 (BERT); its index among the flattened output
    nodes and a function picking it from the original's logits."""
    if name == "bert":
        return 1, lambda logits: logits[:, 1]
    return (TOKENS - 1) * VOCAB + TOKEN, lambda logits: logits[:, -1, TOKEN]


@functools.cache
def _converted(name: str) -> tuple[torch.nn.Module, ins.Converter, torch.Tensor]:
    """The float64 model, its conversion and the input embeddings of 2 random sequences."""
    torch.manual_seed(0)
    model = MODELS[name]().eval().double()
    conv = ins.convert(model, input_dim=[TOKENS], dtype="double", text_input="embeddings")
    ids = torch.randint(0, VOCAB, (2, TOKENS), generator=torch.Generator().manual_seed(1))
    return model, conv, ins.embed_tokens(model, ids)


def _per_token(result: ins.LRP) -> torch.Tensor:
    """``(n_data, tokens)``: the relevance of each embedding summed over the hidden axis."""
    return result.get_result("torch_tensor")[..., 0].sum(-1)


@pytest.mark.parametrize("name", list(MODELS))
def test_attnlrp_equals_lxt_per_token(name):
    model, conv, embeddings = _converted(name)
    node, pick = _target(name)
    ours = _per_token(ins.run_lrp(conv, embeddings, rule_name="attnlrp", output_idx=[node],
                                  dtype="double", verbose=False))
    reference = lxt_relevance(model, embeddings, pick)
    error = (ours - reference).abs().max()
    assert error <= 1e-4 * reference.abs().max()
    # The rule that holds attention fixed (CP-LRP) is much further from the reference:
    # the comparison tells the two apart.
    cp = _per_token(ins.run_lrp(conv, embeddings, output_idx=[node], dtype="double",
                                rule_name="epsilon", rule_param=1e-9, verbose=False))
    assert (cp - reference).abs().max() > 100 * error


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_token_relevances_and_what_layers_absorb_sum_to_the_logit(name):
    model, conv, embeddings = _converted(name)
    node, pick = _target(name)
    result = ins.run_lrp(conv, embeddings, rule_name="attnlrp", output_idx=[node],
                         dtype="double", keep_layers=True, verbose=False)
    report = result.layer_report()
    absorbed = torch.tensor(report.groupby("data")["absorbed"].sum().to_numpy())
    with torch.no_grad():
        logit = pick(model(inputs_embeds=embeddings).logits)
    total = _per_token(result).sum(1) + absorbed
    assert (total - logit).abs().max() <= 1e-6 * logit.abs().max()
    # The softmax linearisation absorbs relevance, as the paper says: the attention
    # layers (their softmax is the part "weights") absorb more than the stabilisers do.
    attention = report[report["type"] == "ScaledDotProductAttention"]
    assert (attention["rule"] == "uniform, weights: linearise").all()
    assert len(attention) == 2 * 2  # layers x data
    assert attention["absorbed"].abs().max() > 1e-6 * logit.abs().max()


def test_rules_are_chosen_per_layer_type_and_the_preset_spells_them_out():
    _model, conv, embeddings = _converted("llama")
    node, _ = _target("llama")
    names = {"*": "epsilon", "MatMul": "uniform", "Softmax": "linearise"}
    run = functools.partial(ins.run_lrp, conv, embeddings, output_idx=[node], dtype="double",
                            verbose=False, keep_layers=True)
    preset, spelled = run(rule_name="attnlrp"), run(rule_name=names, rule_param=1e-9)
    torch.testing.assert_close(preset.get_result("torch_tensor"),
                               spelled.get_result("torch_tensor"), rtol=0, atol=0)
    rules = preset.layer_report().drop_duplicates("layer").set_index("layer")["rule"]
    assert rules["scaled_dot_product_attention"] == "uniform, weights: linearise"
    assert rules["silu"] == "pass" and rules["linear"] == "epsilon"
    # The softmax inside an attention layer is chosen by the name <layer>_weights too,
    # and changes the result.
    one_softmax = run(rule_name={**names, "scaled_dot_product_attention_weights": "pass"},
                      rule_param=1e-9)
    rules = one_softmax.layer_report().drop_duplicates("layer").set_index("layer")["rule"]
    assert rules["scaled_dot_product_attention"] == "uniform, weights: pass"
    assert rules["scaled_dot_product_attention_1"] == "uniform, weights: linearise"
    assert not torch.equal(one_softmax.get_result("torch_tensor"),
                           preset.get_result("torch_tensor"))
    # A rule for every layer it fits ("*" or one name) leaves activations at "pass".
    one_name = run(rule_name="epsilon", rule_param=1e-9).layer_report()
    assert set(one_name[one_name["type"] == "Activation"]["rule"]) == {"pass"}
    assert set(one_name[one_name["type"] == "ScaledDotProductAttention"]["rule"]) == {
        "epsilon, weights: pass"}


# ---- the rules against their matrix forms -----------------------------------------------


def _layer(type_name: str, params: dict, input_dim: list[tuple[int, ...]]):
    layer = LAYER_TYPES[type_name].from_params(type_name, params, "here").double()
    layer.input_dim = input_dim
    return layer


@pytest.mark.parametrize(("act", "params"), [("softmax", {"axis": 1}), ("tanh", {}),
                                             ("gelu", {})])
def test_linearise_is_the_input_times_the_jacobian_transpose_of_r_over_y(act, params):
    layer = _layer("Activation", {"act_name": act, **params}, [(3, 4)])
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 4, dtype=torch.float64, generator=gen)
    r = torch.randn(5, 2, 3, 4, dtype=torch.float64, generator=gen)
    y = layer(x)
    (actual,) = layer.relevance(r, [x], y, LRP_RULES["linearise"]())
    jac = torch.autograd.functional.jacobian(layer, x)  # (2, 3, 4, 2, 3, 4)
    expected = x * torch.einsum("bijckl,tbij->tckl", jac, r / y)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)


def test_uniform_splits_a_product_with_attention_weights_half_and_half():
    layer = _layer("MatMul", {"lrp_constant": 0}, [(2, 3, 4), (2, 4, 5)])
    gen = torch.Generator().manual_seed(4)
    a = torch.randn(2, 2, 3, 4, dtype=torch.float64, generator=gen)
    b = torch.randn(2, 2, 4, 5, dtype=torch.float64, generator=gen)
    r = torch.randn(3, 2, 2, 3, 5, dtype=torch.float64, generator=gen)
    eps = 0.1
    z = a @ b
    terms = torch.einsum("bhij,bhjp->bhijp", a, b)  # a_ij b_jp, the terms of z_ip
    share = r / (2 * torch.where(z >= 0, z + eps, z - eps))  # (T, B, h, i, p)
    expected_a = torch.einsum("bhijp,tbhip->tbhij", terms, share)
    expected_b = torch.einsum("bhijp,tbhip->tbhjp", terms, share)
    to_a, to_b = layer.relevance(r, [a, b], z, LRP_RULES["uniform"](eps))
    torch.testing.assert_close(to_a, expected_a, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(to_b, expected_b, rtol=1e-10, atol=1e-12)
    # The AH-rule (any other rule) holds the weights, operand 0, fixed.
    held_a, held_b = layer.relevance(r, [a, b], z, LRP_RULES["epsilon"](eps))
    assert held_a is None  # nothing passes to the held operand
    torch.testing.assert_close(held_b, 2 * expected_b, rtol=1e-10, atol=1e-12)


# ---- explain_tokens ------------------------------------------------------------------------


def _ids() -> torch.Tensor:
    ids = torch.randint(0, VOCAB, (2, TOKENS), generator=torch.Generator().manual_seed(1))
    ids[1, 3:] = ids[0, 3:]  # a span shared by both sequences
    return ids


def test_explain_tokens_top1_and_pairs_equal_lxt():
    model, conv, _ = _converted("llama")
    ids = _ids()
    embeddings = ins.embed_tokens(model, ids)
    top1 = ins.explain_tokens(model, ids, converter=conv, dtype="double", verbose=False)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    top = logits[:, -1].argmax(-1)
    assert top1.target_tokens[:, 0].tolist() == top.tolist()
    torch.testing.assert_close(torch.tensor(top1.scores[:, 0]), logits[:, -1].max(-1).values)
    reference = lxt_relevance(model, embeddings,
                              lambda lg: lg[:, -1].gather(1, top[:, None])[:, 0])
    assert abs(top1.relevance[:, 0] - reference.numpy()).max() <= 1e-4 * reference.abs().max()

    pairs = ins.explain_tokens(model, ids, [(-1, TOKEN), (2, 9)], converter=conv,
                               dtype="double", verbose=False)
    assert pairs.target_names == [f"{TOKENS - 1}->{TOKEN}", "2->9"]
    reference = lxt_relevance(model, embeddings, lambda lg: lg[:, 2, 9])
    assert abs(pairs.relevance[:, 1] - reference.numpy()).max() <= 1e-4 * reference.abs().max()
    # A span's relevance is the sum over its tokens' targets (each at the position before).
    span = ins.explain_tokens(model, ids, "span", span=(4, 6), converter=conv, dtype="double",
                              verbose=False)
    parts = ins.explain_tokens(model, ids, [(3, int(ids[0, 4])), (4, int(ids[0, 5]))],
                               converter=conv, dtype="double", verbose=False)
    np.testing.assert_allclose(span.relevance[:, 0], parts.relevance.sum(1), rtol=1e-10,
                               atol=1e-14)


def test_explain_tokens_log_probabilities_are_gradient_times_input():
    model, conv, _ = _converted("llama")
    ids = _ids()
    ex = ins.explain_tokens(model, ids, "span", span=(3, 6), score="logprob",
                            method="grad_x_input", converter=conv, dtype="double",
                            tokens=list("abcdef"), verbose=False)
    x = ins.embed_tokens(model, ids).requires_grad_(True)
    logp = torch.log_softmax(model(inputs_embeds=x).logits, -1)
    total = sum(logp[:, t - 1].gather(1, ids[:, t, None])[:, 0] for t in range(3, 6))
    (grad,) = torch.autograd.grad(total.sum(), x)
    expected = (x * grad).sum(-1).detach().numpy()
    np.testing.assert_allclose(ex.relevance[:, 0], expected, rtol=1e-6,
                               atol=1e-6 * abs(expected).max())
    np.testing.assert_allclose(ex.scores[:, 0], total.detach().numpy(), rtol=1e-6)
    frame = ex.frame()
    assert list(frame.columns) == ["data", "target", "target_token", "score", "position",
                                   "token", "relevance"]
    assert len(frame) == 2 * TOKENS and list(frame["token"][:TOKENS]) == list("abcdef")
    np.testing.assert_array_equal(frame["relevance"].to_numpy(), ex.relevance.ravel())
    assert "innsight-token" in ex.html(1)
    assert ex.plot(0).data["token"].tolist() == list("abcdef")


@pytest.mark.parametrize(("args", "error", "message"), [
    ({"model": "llama"}, TypeError, "`model` must be a causal language model taking token ids"),
    ({"converter": "conv"}, TypeError, "`converter` must be an innsight Converter, got 'conv'"),
    ({"method": "lime"}, ValueError, "`method` must be one of ['attnlrp', 'lrp', "),
    ({"score": "prob"}, ValueError, "`score` must be one of ['logit', 'logprob']"),
    ({"score": "logprob"}, ValueError, "`score='logprob'` is not linear in the logits"),
    ({"targets": [(1,)]}, TypeError, "`targets` must be 'top1', 'span' or a list of"),
    ({"targets": [(6, 1)]}, ValueError, "`targets` pair (6, 1) is out of range"),
    ({"targets": "span", "span": (0, 3)}, ValueError, "`span` must be (start, stop) with 1 <="),
    ({"targets": "span", "span": (1, 3)}, ValueError, "must be the same in every sample"),
    ({"span": (1, 3)}, ValueError, "`span` is for targets='span' only"),
    ({"tokens": ["a"]}, ValueError, "`tokens` must hold 6 strings"),
    ({"input_ids": np.zeros((2, 6))}, TypeError, "`input_ids` must be integer token ids"),
])
def test_explain_tokens_refuses_bad_arguments(args, error, message):
    model, conv, _ = _converted("llama")
    call = {"model": model, "input_ids": _ids(), "converter": conv, "dtype": "double", **args}
    with pytest.raises(error, match=re.escape(message)):
        ins.explain_tokens(call.pop("model"), call.pop("input_ids"), **call)


def test_explain_tokens_refuses_a_conversion_for_another_length_and_a_bad_sample():
    model, conv, _ = _converted("llama")
    with pytest.raises(ValueError, match=r"`converter` must be a conversion of `model` taking 5 "
                                         r"token ids .* inputs \[\(6, 16\)\]"):
        ins.explain_tokens(model, _ids()[:, :5], converter=conv)
    with pytest.raises(ValueError, match="`model` is a conversion already; give no `converter`"):
        ins.explain_tokens(_ids_converted(), _ids(), converter=conv)
    with pytest.raises(ValueError, match=r"`model`, a conversion, must take 6 token ids .* "
                                         r"inputs \[\(6, 16\)\]"):
        ins.explain_tokens(conv, _ids())
    bert, bert_conv, _ = _converted("bert")  # a classifier: no logits per token
    with pytest.raises(ValueError, match=r"must give logits \(tokens, vocab\) per sample, it "
                                         r"gives \[\(3,\)\]"):
        ins.explain_tokens(bert, _ids(), converter=bert_conv)
    ex = ins.explain_tokens(model, _ids(), converter=conv, dtype="double", verbose=False)
    with pytest.raises(ValueError, match=r"`data_idx` must be a sample index in 0..1, got 2"):
        ex.plot(2)


# ---- explain_tokens on a conversion with token ids -------------------------------------------


@functools.cache
def _ids_converted() -> ins.Converter:
    """The float64 Llama converted with token ids (``ins.convert``'s default)."""
    model, _, _ = _converted("llama")
    return ins.convert(model, input_dim=[TOKENS], dtype="double")


@pytest.mark.parametrize("method", ["attnlrp", "lrp", "grad_x_input"])
def test_explain_tokens_with_token_ids_equals_the_embeddings_path(method):
    model, conv, _ = _converted("llama")
    ids, by_ids = _ids(), _ids_converted()
    asked = [("top1", {}), ([(-1, TOKEN), (2, 9)], {}), ("span", {"span": (3, 6)})]
    for targets, span in asked:
        run = functools.partial(ins.explain_tokens, input_ids=ids, targets=targets,
                                method=method, dtype="double", verbose=False, **span)
        embedded = run(model, converter=conv)
        # The two graphs differ in where the causal mask is made, which moves float64
        # rounding (that AttnLRP's divisions by products amplify) by ~1e-11 of the largest.
        for ex in (run(model, converter=by_ids), run(by_ids)):
            np.testing.assert_allclose(ex.relevance, embedded.relevance, rtol=1e-7,
                                       atol=1e-10 * abs(embedded.relevance).max())
            np.testing.assert_allclose(ex.scores, embedded.scores, rtol=1e-10)
            assert ex.target_names == embedded.target_names


def test_explain_tokens_with_token_ids_equals_lxt_and_autograd():
    model, _, _ = _converted("llama")
    ids, by_ids = _ids(), _ids_converted()
    embeddings = ins.embed_tokens(model, ids)
    ex = ins.explain_tokens(model, ids, [(2, 9)], dtype="double", verbose=False)  # converts
    reference = lxt_relevance(model, embeddings, lambda lg: lg[:, 2, 9])
    assert abs(ex.relevance[:, 0] - reference.numpy()).max() <= 1e-4 * reference.abs().max()
    ex = ins.explain_tokens(by_ids, ids, [(2, 9)], method="grad_x_input", dtype="double",
                            verbose=False)
    x = embeddings.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(inputs_embeds=x).logits[:, 2, 9].sum(), x)
    expected = (x * grad).sum(-1).detach().numpy()
    # Llama's rotary angles are computed in float32 by the original (as in the test of
    # log-probabilities above): agreement to ~1e-6, not float64 rounding.
    np.testing.assert_allclose(ex.relevance[:, 0], expected, rtol=1e-5,
                               atol=1e-6 * abs(expected).max())


class _TinyLM(torch.nn.Module):
    """Token ids -> logits ``(batch, tokens, vocab)``: an embedding, a causal running mean
    over the tokens (a dense layer along the token axis), tanh and a head; not a Hugging
    Face model."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, 8)
        self.mix = torch.nn.Linear(TOKENS, TOKENS, bias=False)
        with torch.no_grad():
            self.mix.weight.copy_(torch.tril(torch.ones(TOKENS, TOKENS)))
            self.mix.weight /= self.mix.weight.sum(1, keepdim=True)
        self.head = torch.nn.Linear(8, VOCAB)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.logits(self.embed(ids))

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.mix(h.transpose(1, 2)).transpose(1, 2)))


def test_explain_tokens_converts_a_torch_module_taking_token_ids():
    torch.manual_seed(0)
    lm, ids = _TinyLM().double().eval(), _ids()
    ex = ins.explain_tokens(lm, ids, [(-1, TOKEN), (1, 3)], method="grad_x_input",
                            dtype="double", verbose=False)
    x = lm.embed(ids).detach().requires_grad_(True)
    logits = lm.logits(x)
    for k, (p, t) in enumerate([(-1, TOKEN), (1, 3)]):
        (grad,) = torch.autograd.grad(logits[:, p, t].sum(), x, retain_graph=True)
        expected = (x * grad).sum(-1).detach().numpy()
        np.testing.assert_allclose(ex.relevance[:, k], expected, rtol=1e-9,
                                   atol=1e-12 * abs(expected).max())
        np.testing.assert_allclose(ex.scores[:, k], logits[:, p, t].detach().numpy(),
                                   rtol=1e-10)


@pytest.mark.parametrize("softmax_rule", ["linearise", "pass"])
def test_the_attention_layer_follows_its_rules_written_out(softmax_rule):
    """``softmax(scale q k^T + mask + bias) @ v`` under ``uniform``: the context product
    half and half (epsilon rule), the softmax by its part's rule, the scores' product
    half and half with mask and bias in its denominator, ``bias`` its share as a
    summand. With the softmax linearised, ``R_z = z * g`` (``g``: the gradient at the
    softmax input), so the scores' shares are ``x * g`` exactly."""
    mask = torch.tensor([[0.0, 0.0, -1e9, 0.0]] * 3, dtype=torch.float64)
    layer = _layer("ScaledDotProductAttention", {"scale": 0.7, "mask": mask},
                   [(2, 3, 4), (2, 4, 4), (2, 4, 5), (2, 3, 4)])
    gen = torch.Generator().manual_seed(5)
    q, k, b = (torch.randn(2, 2, n, 4, dtype=torch.float64, generator=gen) for n in (3, 4, 3))
    v = torch.randn(2, 2, 4, 5, dtype=torch.float64, generator=gen)
    r = torch.randn(3, 2, 2, 3, 5, dtype=torch.float64, generator=gen)
    eps = 0.1
    rule = LRP_RULES["uniform"](eps)
    rule.parts = {"weights": LRP_RULES[softmax_rule]()}

    def stabilised(t):
        return torch.where(t >= 0, t + eps, t - eps)

    z = 0.7 * q @ k.mT + mask + b
    w = torch.softmax(z, -1)
    y = w @ v
    s = r / (2 * stabilised(y))
    r_v = v * torch.einsum("bhij,tbhie->tbhje", w, s)
    r_w = w * torch.einsum("tbhie,bhje->tbhij", s, v)
    if softmax_rule == "linearise":
        r_z = z * (r_w - w * r_w.sum(-1, keepdim=True))
        s_z = r_z / z / 2
    else:
        r_z = r_w
        s_z = r_z / (2 * stabilised(z))
    r_q = 0.7 * q * torch.einsum("tbhij,bhje->tbhie", s_z, k)
    r_k = k * torch.einsum("tbhij,bhie->tbhje", s_z, 0.7 * q)
    r_b = b * r_z / z
    actual = layer.relevance(r, [q, k, v, b], layer(q, k, v, b), rule)
    for got, expected in zip(actual, (r_q, r_k, r_v, r_b)):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


#: Methods whose walk or gradient starts at a few logits of the LM head, and their args.
HEAD_METHODS = {
    "gradient": (ins.run_grad, {}),
    "epsilon": (ins.run_lrp, {"rule_name": "epsilon"}),
    "attnlrp": (ins.run_lrp, {"rule_name": "attnlrp", "keep_layers": True}),
    "alpha_beta": (ins.run_lrp, {"rule_name": "alpha_beta", "rule_param": 2}),
    "deeplift": (ins.run_deeplift, {"keep_layers": True}),
    "intgrad": (ins.run_intgrad, {"n": 4}),
}


@pytest.mark.parametrize("model_name", ["llama_tied", "gpt2"])
@pytest.mark.parametrize("method", list(HEAD_METHODS))
def test_sparse_starts_through_the_lm_head_equal_the_dense_start(model_name, method,
                                                                  monkeypatch):
    # Sparse targets go back through the LM head's picked weight rows only (a restricted
    # Dense layer); dense weights over all tokens x vocab logits take the whole head. Both
    # must agree to float64 rounding, with the head tied to the embedding (GPT-2 ties it
    # by default) and with per-sample and per-node targets too.
    from innsight.layers.dense import Dense

    restricted = []
    on_units = Dense.on_units
    monkeypatch.setattr(Dense, "on_units",
                        lambda self, units: restricted.append(len(units)) or on_units(self, units))
    torch.manual_seed(0)
    model = (tf.LlamaForCausalLM(tf.LlamaConfig(num_key_value_heads=1, tie_word_embeddings=True,
                                                **_TEXT)) if model_name == "llama_tied"
             else MODELS["gpt2"]()).eval().double()
    conv = ins.convert(model, input_dim=[TOKENS], dtype="double")
    ids = _ids()
    run, args = HEAD_METHODS[method]
    n = TOKENS * VOCAB
    nodes = [(TOKENS - 1) * VOCAB + TOKEN, 2 * VOCAB + 9, (TOKENS - 1) * VOCAB + 9]
    dense = torch.zeros(2, n, dtype=torch.float64)
    dense[0, nodes[0]], dense[1, nodes[1]], dense[1, nodes[2]] = 1.0, 2.0, -0.5
    asked = [({"target_weights": dense.numpy()}, {"target_weights": dense.to_sparse()}),
             ({"target_weights": np.eye(n)[nodes]}, {"output_idx": nodes}),
             ({"target_weights": np.eye(n)[nodes[:2]]}, {"targets": nodes[:2]})]
    for dense_args, sparse_args in asked:
        restricted.clear()
        expected = run(conv, ids, dtype="double", verbose=False, **args, **dense_args)
        assert not restricted
        result = run(conv, ids, dtype="double", verbose=False, **args, **sparse_args)
        assert restricted and max(restricted) <= 2
        want = expected.get_result("torch_tensor")
        if "targets" in sparse_args:  # sample i explains node i: the diagonal
            want = want[[0, 1], ..., [0, 1]].unsqueeze(-1)
        got = result.get_result("torch_tensor")
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10 * want.abs().max())
        if "targets" in sparse_args:
            continue
        torch.testing.assert_close(result.preds[0], expected.preds[0], rtol=1e-12, atol=0)
        if expected.decomp_goal is not None:
            torch.testing.assert_close(result.decomp_goal[0], expected.decomp_goal[0])
        if args.get("keep_layers"):  # every layer's totals, the head's included
            columns = ["value_in", "value_out"]
            report, wanted = result.layer_report(), expected.layer_report()
            np.testing.assert_allclose(report[columns], wanted[columns], rtol=0,
                                       atol=1e-10 * wanted[columns].abs().max().max())


def test_sparse_starts_attributed_to_the_lm_head_itself_take_the_whole_head():
    # Values for the head's own output: no restriction (the values have its full shape).
    conv = _ids_converted()
    head = conv.model.layer_names[conv.model.output_nodes[0]]
    sparse = torch.zeros(1, TOKENS * VOCAB, dtype=torch.float64)
    sparse[0, 2 * VOCAB + 9] = 1.0
    for run in (ins.run_grad, ins.run_lrp):
        result = run(conv, _ids(), target_weights=sparse.to_sparse(), attribute_to=head,
                     dtype="double", verbose=False)
        values = result.get_result("torch_tensor")
        assert values.shape == (2, TOKENS, VOCAB, 1)
        expected = torch.zeros_like(values)
        expected[:, 2, 9] = 1.0 if run is ins.run_grad else result.preds[0]
        torch.testing.assert_close(values, expected)
