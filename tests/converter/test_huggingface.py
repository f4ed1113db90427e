"""Hugging Face ``transformers`` models built from tiny configs (random weights, no
download): ``ins.convert`` takes the ``PreTrainedModel`` itself.

Text models take token ids and an attention mask (explained per token through their
embedding output), or their input embeddings with ``text_input="embeddings"``; image
models their pixels. References: ``model(**inputs).logits`` of the original,
torch autograd on it, and DeepLift's summation to ``f(x) - f(0)``.
"""

from __future__ import annotations

import json

import pytest
import torch
import transformers as tf

import innsight as ins

_SIZES = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
              num_labels=3)
_TEXT = dict(vocab_size=50, max_position_embeddings=32, **_SIZES)
#: name -> (build the model, input_dim, whether it computes its norms in float32 even in a
#: float64 model, so that float64 references agree to float32 precision only).
MODELS = {
    "bert": (lambda: tf.BertForSequenceClassification(tf.BertConfig(**_TEXT)), [6], False),
    "distilbert": (lambda: tf.DistilBertForSequenceClassification(tf.DistilBertConfig(
        vocab_size=50, dim=16, n_layers=2, n_heads=2, hidden_dim=32, num_labels=3,
        max_position_embeddings=32)), [6], False),
    "roberta": (lambda: tf.RobertaForSequenceClassification(tf.RobertaConfig(
        pad_token_id=1, **_TEXT)), [6], False),
    "gpt2": (lambda: tf.GPT2ForSequenceClassification(tf.GPT2Config(
        vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=32, num_labels=3,
        pad_token_id=0)), [6], False),
    "llama": (lambda: tf.LlamaForSequenceClassification(tf.LlamaConfig(
        num_key_value_heads=1, pad_token_id=0, **_TEXT)), [6], True),
    "qwen2": (lambda: tf.Qwen2ForSequenceClassification(tf.Qwen2Config(
        num_key_value_heads=1, pad_token_id=0, **_TEXT)), [6], True),
    "gemma": (lambda: tf.GemmaForSequenceClassification(tf.GemmaConfig(
        num_key_value_heads=1, head_dim=8, pad_token_id=0, **_TEXT)), [6], True),
    "vit": (lambda: tf.ViTForImageClassification(tf.ViTConfig(
        image_size=16, patch_size=4, **_SIZES)), [3, 16, 16], False),
    "swin": (lambda: tf.SwinForImageClassification(tf.SwinConfig(
        image_size=32, patch_size=4, embed_dim=8, depths=[2, 2], num_heads=[2, 2],
        window_size=4, num_labels=3)), [3, 32, 32], False),
    "convnext": (lambda: tf.ConvNextForImageClassification(tf.ConvNextConfig(
        num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)), [3, 32, 32], False),
    "resnet": (lambda: tf.ResNetForImageClassification(tf.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)), [3, 32, 32],
        False),
}


def _build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return MODELS[name][0]().eval()


def _embeddings(model: torch.nn.Module) -> dict[str, str]:
    """``text_input="embeddings"`` for a text model: converted as a function of its input
    embeddings, like ``_logits``."""
    return {"text_input": "embeddings"} if model.main_input_name == "input_ids" else {}


def _logits(model: torch.nn.Module):
    """The original as a function of what the converted model takes."""
    key = "pixel_values" if model.main_input_name == "pixel_values" else "inputs_embeds"
    return lambda x: model(**{key: x}).logits


@pytest.mark.parametrize("name", list(MODELS))
def test_model_converts_and_is_explained_exactly(explained_exactly, outputs_match, name):
    model, input_dim = _build(name), MODELS[name][1]
    text = _embeddings(model)
    conv = ins.convert(model, input_dim=input_dim, **text)
    x = torch.randn(2, *conv.input_dim[0], generator=torch.Generator().manual_seed(1))
    if model.main_input_name == "input_ids":
        x = ins.embed_tokens(model, torch.randint(0, 50, (2, input_dim[0])))
    with torch.no_grad():
        outputs_match(conv.model(x), _logits(model)(x), 1e-5)
    model = model.double()
    explained_exactly(model, input_dim, forward=_logits(model),
                      rel_tol=1e-6 if MODELS[name][2] else 1e-9, **text)


def test_text_model_takes_its_embeddings_and_names_outputs_by_label():
    model = _build("bert")
    model.config.id2label = {0: "negative", 1: "neutral", 2: "positive"}
    conv = ins.convert(model, input_dim=[6], text_input="embeddings")
    assert conv.input_dim == [(6, 16)]
    assert conv.output_names == [[["negative", "neutral", "positive"]]]
    ids = torch.randint(0, 50, (3, 6), generator=torch.Generator().manual_seed(2))
    embeddings = ins.embed_tokens(model, ids)
    torch.testing.assert_close(embeddings, model.bert.embeddings.word_embeddings(ids))
    with torch.no_grad():
        torch.testing.assert_close(conv.model(embeddings), model(input_ids=ids).logits)
    result = ins.run_intgrad(conv, embeddings, output_label=["positive"], verbose=False)
    assert result.get_result("torch_tensor").shape == (3, 6, 16, 1)


@pytest.mark.parametrize("input_dim", [None, [6, 8], [[6], [6]], [2, 6, 16]])
def test_text_model_with_a_bad_input_dim_is_refused_by_name(input_dim):
    with pytest.raises(ValueError, match=r"`input_dim` of the text model "
                       r"BertForSequenceClassification must be \[tokens\] or \[tokens, 16\]"):
        ins.convert(_build("bert"), input_dim=input_dim, text_input="embeddings")


# ---- token ids: the default for text models ------------------------------------------

TEXT_MODELS = [name for name in MODELS if MODELS[name][1] == [6]]


def _token_inputs(batch: int = 3):
    """Token ids without the pad ids 0 and 1, and a mask padding the end of sample 0."""
    ids = torch.randint(2, 50, (batch, 6), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(batch, 6, dtype=torch.long)
    mask[0, 4:] = 0
    return ids, mask


@pytest.mark.parametrize("dtype", ["float", "double"])
@pytest.mark.parametrize("name", TEXT_MODELS)
def test_text_model_takes_token_ids_and_is_explained_per_token(name, dtype):
    model = _build(name)
    if dtype == "double":
        model = model.double()
    conv = ins.convert(model, input_dim=[6], dtype=dtype)
    # the padding mask is made additive once and read by every attention layer
    made = [n for n in conv.model.layer_names if n.endswith("_mask_additive")]
    assert len(made) == 1, made
    ids, mask = _token_inputs()
    extras = [torch.zeros_like(ids)] if len(conv.input_dim) == 3 else []  # token types
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(conv.model([ids, mask, *extras]), expected,
                                   rtol=1e-5, atol=1e-6)
    # Gradient == autograd w.r.t. the input embeddings, per dimension and as a 2-norm
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    logits = model(inputs_embeds=embeds, attention_mask=mask).logits
    grads = torch.stack([torch.autograd.grad(logits[:, j].sum(), embeds, retain_graph=True)[0]
                         for j in range(3)], -1)
    tol = {"rtol": 1e-6 if MODELS[name][2] else 1e-9, "atol": 1e-7 if MODELS[name][2] else 1e-11}
    if dtype == "float":
        tol = {"rtol": 1e-4, "atol": 1e-6}
    args = {"extra_args": {"attention_mask": mask}, "dtype": dtype, "verbose": False}
    per_dim = ins.run_grad(conv, ids, keep_embedding_dim=True, **args)
    torch.testing.assert_close(per_dim.get_result("torch_tensor").to(grads.dtype), grads, **tol)
    norms = ins.run_grad(conv, ids, **args).get_result("torch_tensor")
    torch.testing.assert_close(norms.to(grads.dtype), grads.norm(dim=2), **tol)
    # DeepLift from zero embeddings sums to f(x) - f(0) of the original
    deeplift = ins.run_deeplift(conv, ids, **args)
    with torch.no_grad():
        at_zero = model(inputs_embeds=torch.zeros_like(embeds), attention_mask=mask).logits
    goal = expected - at_zero
    values = deeplift.get_result("torch_tensor")
    assert values.shape == (3, 6, 3)
    torch.testing.assert_close(values.sum(1).to(goal.dtype), goal, **tol)
    if dtype == "double":  # reveal-cancel too (the masks made from ids carry no parts)
        reveal = ins.run_deeplift(conv, ids, rule_name="reveal_cancel", **args)
        torch.testing.assert_close(reveal.get_result("torch_tensor").sum(1), goal, **tol)


def test_token_results_follow_the_aggregation_rules_and_references():
    model, (ids, mask) = _build("bert"), _token_inputs()
    conv = ins.convert(model, input_dim=[6], dtype="double")
    args = {"extra_args": {"attention_mask": mask}, "dtype": "double", "verbose": False}
    per_dim = ins.run_intgrad(conv, ids, keep_embedding_dim=True, x_ref=0, n=20, **args)
    summed = ins.run_intgrad(conv, ids, x_ref=0, n=20, **args)
    torch.testing.assert_close(summed.get_result("torch_tensor"),
                               per_dim.get_result("torch_tensor").sum(2))
    # the reference token id 0 (pad) in embedding space: the goal is f(x) - f(pad ids)
    with torch.no_grad():
        at_pad = model.double()(input_ids=torch.zeros_like(ids), attention_mask=mask).logits
        at_x = model(input_ids=ids, attention_mask=mask).logits
    deeplift = ins.run_deeplift(conv, ids, x_ref=0, output_idx=[0, 1, 2], **args)
    torch.testing.assert_close(deeplift.get_result("torch_tensor").sum(1), at_x - at_pad)
    lrp = ins.run_lrp(conv, ids, **args).get_result("torch_tensor")
    assert lrp.shape == (3, 6, 3) and torch.isfinite(lrp).all()
    times = ins.run_grad(conv, ids, times_input=True, keep_embedding_dim=True, **args)
    torch.testing.assert_close(ins.run_grad(conv, ids, times_input=True, **args)
                               .get_result("torch_tensor"), times.get_result("torch_tensor").sum(2))


@pytest.mark.parametrize(("data", "extra_args", "error", "match"), [
    (torch.rand(2, 6), None, TypeError, r"`data` must hold integers"),
    (torch.full((2, 6), 50), None, ValueError,
     r"`data` holds token ids from 50 to 50; the embedding's vocabulary is 0..49"),
    (torch.ones(2, 6, dtype=torch.long), {"attention_mask": torch.ones(2, 5)}, ValueError,
     r"`extra_args\['attention_mask'\]` has shape \(2, 5\), expected \(2, 6\)"),
    (torch.ones(2, 6, dtype=torch.long), {"mask": torch.ones(2, 6)}, ValueError,
     r"`extra_args` names \['mask'\], which are no non-explained inputs"),
    (torch.ones(2, 6, dtype=torch.long), {"attention_mask": torch.rand(2, 6)}, TypeError,
     r"`extra_args\['attention_mask'\]` must hold integers"),
])
def test_bad_token_inputs_are_refused_by_name(data, extra_args, error, match):
    conv = ins.convert(_build("distilbert"), input_dim=[6])
    with pytest.raises(error, match=match):
        ins.run_grad(conv, data, extra_args=extra_args, verbose=False)


def test_methods_without_a_token_reading_are_refused_by_name():
    conv = ins.convert(_build("distilbert"), input_dim=[6])
    ids, _ = _token_inputs()
    with pytest.raises(ValueError, match="ConnectionWeights cannot explain a model with token ids"):
        ins.run_cw(conv, ids, verbose=False)
    with pytest.raises(ValueError, match="`text_input` chooses what a Hugging Face text model"):
        ins.convert(_build("vit"), input_dim=[3, 16, 16], text_input="ids")


def test_token_model_round_trips_through_its_dict():
    conv = ins.convert(_build("roberta"), input_dim=[6], dtype="double")
    again = ins.convert(json.loads(json.dumps(conv.to_dict())), dtype="double")
    ids, mask = _token_inputs()
    with torch.no_grad():
        inputs = [ids, mask, torch.zeros_like(ids)]  # with its token type ids
        assert torch.equal(again.model(inputs), conv.model(inputs))


@pytest.mark.parametrize(("build", "rtol"), [
    # Llama's RMSNorm computes in float32 inside a float64 model
    (lambda: tf.LlamaForCausalLM(tf.LlamaConfig(
        num_key_value_heads=1, pad_token_id=0, tie_word_embeddings=True, **_TEXT)), 1e-4),
    (lambda: tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2,
                                              n_positions=32)), 1e-6),
], ids=["llama_tied", "gpt2_tied"])
def test_causal_lm_with_tied_embeddings_from_token_ids(build, rtol):
    torch.manual_seed(0)
    model = build().double().eval()
    assert model.lm_head.weight is model.get_input_embeddings().weight
    conv = ins.convert(model, input_dim=[6], dtype="double")
    ids, mask = _token_inputs(2)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(conv.model([ids, mask]).view(2, 6, 50), logits.view(2, 6, 50))
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    out = model(inputs_embeds=embeds, attention_mask=mask).logits
    (grad,) = torch.autograd.grad(out[:, -1, 7].sum(), embeds)
    res = ins.run_grad(conv, ids, extra_args={"attention_mask": mask}, output_idx=[5 * 50 + 7],
                       keep_embedding_dim=True, dtype="double", verbose=False)
    torch.testing.assert_close(res.get_result("torch_tensor")[..., 0], grad, rtol=rtol,
                               atol=rtol * float(grad.abs().max()))


#: Parameters and buffers that add a constant to what the explained input feeds: biases,
#: position and token-type embeddings, class tokens, batch norm's running means.
_CONSTANT_TERMS = ("bias", "position_embeddings", "wpe.", "token_type_embeddings", "cls_token",
                   "running_mean")


def _without_biases(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if any(term in name for term in _CONSTANT_TERMS) and tensor.is_floating_point():
                tensor.zero_()
    return model


@pytest.mark.parametrize("name", list(MODELS))
def test_lrp_conserves_relevance_without_biases(name):
    """The default rules (the AH-rule for attention, the LN-rule for norms, the z-rule)
    absorb nothing when the model adds no constants: the values sum to the logit, and
    every layer passes on what it receives (``keep_layers``)."""
    model, input_dim = _without_biases(_build(name)).double(), MODELS[name][1]
    conv = ins.convert(model, input_dim=input_dim, dtype="double", **_embeddings(model))
    x = torch.randn(2, *conv.input_dim[0], dtype=torch.float64,
                    generator=torch.Generator().manual_seed(3))
    result = ins.run_lrp(conv, x, output_idx=[0, 1], dtype="double", keep_layers=True,
                         verbose=False)
    with torch.no_grad():
        logits = _logits(model)(x)[:, :2]
    sums = result.get_result("torch_tensor").flatten(1, -2).sum(1)
    scale = logits.abs().max()
    assert (sums - logits).abs().max() <= 1e-6 * scale
    assert result.layer_report()["absorbed"].abs().max() <= 1e-6 * scale


# ---- left padding: padded positions of a causal LM attend to no key --------------------

#: Causal LMs by name: build from the attention implementation, and the tolerance of
#: float64 logits (Llama's RMSNorm computes in float32 inside a float64 model).
_CAUSAL_LMS = {
    "llama": (lambda impl: tf.LlamaForCausalLM(tf.LlamaConfig(
        num_key_value_heads=1, pad_token_id=0, attn_implementation=impl, **_TEXT)), 1e-6),
    "gpt2": (lambda impl: tf.GPT2LMHeadModel(tf.GPT2Config(
        vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=32, pad_token_id=0,
        attn_implementation=impl)), 1e-10),
}
#: Attention implementations and dtypes; Llama's eager attention in float64 is left out:
#: its softmax casts the scores to float32, where the float64 minimum of its mask is
#: -inf, so that the original's logits of a left-padded sample are NaN.
_PADDED_CASES = [(name, impl, dtype) for name in _CAUSAL_LMS for impl in ("eager", "sdpa")
                 for dtype in ("float", "double")
                 if (name, impl, dtype) != ("llama", "eager", "double")]


def _left_padded() -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids with pad ids (0) before the first two tokens of sample 0 and the first
    of sample 1, and their mask: under the causal mask these positions attend to no key."""
    ids = torch.randint(2, 50, (3, 6), generator=torch.Generator().manual_seed(5))
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[0, :2] = mask[1, :1] = 0
    return ids.masked_fill(mask == 0, 0), mask


def _at(logits: torch.Tensor, targets: list[tuple[int, int]]) -> torch.Tensor:
    """``logits (batch, tokens, vocabulary)`` at the (position, token) ``targets``, as
    ``(batch, targets)``."""
    return torch.stack([logits[:, p, c] for p, c in targets], -1).detach()


@pytest.mark.parametrize(("name", "impl", "dtype"), _PADDED_CASES)
def test_left_padded_causal_lm_matches_at_every_position(name, impl, dtype):
    """At a padded position the original adds its mask's minimum to every score (eager:
    softmax of equal scores, uniform weights) or passes a boolean mask to torch's kernel
    (sdpa: no weights, a zero output); the converted model does the same. References:
    the original's logits, autograd on it, DeepLift's sum to f(x) - f(0) and, without
    biases, LRP's conservation."""
    torch.manual_seed(0)
    build, double_tol = _CAUSAL_LMS[name]
    model = build(impl).eval()
    assert model.config._attn_implementation == impl
    model = model.double() if dtype == "double" else model
    conv = ins.convert(model, input_dim=[6], dtype=dtype)
    ids, mask = _left_padded()
    tol = {"rtol": double_tol, "atol": double_tol} if dtype == "double" else {
        "rtol": 1e-5, "atol": 1e-5}
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(conv.model([ids, mask]).view(3, 6, 50), expected, **tol)
    # Gradient at a real position (5) and a padded one (0) == autograd on the original
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    logits = model(inputs_embeds=embeds, attention_mask=mask).logits
    targets = [(5, 7), (0, 3)]
    grads = torch.stack([torch.autograd.grad(logits[:, p, c].sum(), embeds, retain_graph=True)[0]
                         for p, c in targets], -1)
    args = {"extra_args": {"attention_mask": mask}, "dtype": dtype, "verbose": False,
            "output_idx": [p * 50 + c for p, c in targets]}
    grad = ins.run_grad(conv, ids, keep_embedding_dim=True, **args).get_result("torch_tensor")
    gtol = {"rtol": 1e-4, "atol": 1e-6} if dtype == "float" else tol
    torch.testing.assert_close(grad, grads, **gtol)
    # DeepLift from zero embeddings sums to f(x) - f(0) of the original
    with torch.no_grad():
        at_zero = model(inputs_embeds=torch.zeros_like(embeds), attention_mask=mask).logits
    deeplift = ins.run_deeplift(conv, ids, **args).get_result("torch_tensor")
    torch.testing.assert_close(deeplift.sum(1), _at(logits - at_zero, targets), **gtol)
    lrp = {rule_name: ins.run_lrp(conv, ids, rule_name=rule_name, **args)
           .get_result("torch_tensor") for rule_name in ("simple", "attnlrp")}
    assert all(torch.isfinite(values).all() for values in lrp.values())
    if not any(param.endswith("bias") for param, _ in model.named_parameters()):  # Llama
        # the AH-rule conserves: the values sum to the logits, padded positions included
        torch.testing.assert_close(lrp["simple"].sum(1), _at(logits, targets), **tol)
