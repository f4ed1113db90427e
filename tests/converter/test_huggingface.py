"""Hugging Face ``transformers`` models built from tiny configs (random weights, no
download): ``ins.convert`` takes the ``PreTrainedModel`` itself.

Text models are explained with respect to their input embeddings, image models
with respect to their pixels. References: ``model(**inputs).logits`` of the original,
torch autograd on it, and DeepLift's summation to ``f(x) - f(0)``.
"""

from __future__ import annotations

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


def _logits(model: torch.nn.Module):
    """The original as a function of what the converted model takes."""
    key = "pixel_values" if model.main_input_name == "pixel_values" else "inputs_embeds"
    return lambda x: model(**{key: x}).logits


@pytest.mark.parametrize("name", list(MODELS))
def test_model_converts_and_is_explained_exactly(explained_exactly, outputs_match, name):
    model, input_dim = _build(name), MODELS[name][1]
    conv = ins.convert(model, input_dim=input_dim)
    x = torch.randn(2, *conv.input_dim[0], generator=torch.Generator().manual_seed(1))
    if model.main_input_name == "input_ids":
        x = ins.embed_tokens(model, torch.randint(0, 50, (2, input_dim[0])))
    with torch.no_grad():
        outputs_match(conv.model(x), _logits(model)(x), 1e-5)
    model = model.double()
    explained_exactly(model, input_dim, forward=_logits(model),
                      rel_tol=1e-6 if MODELS[name][2] else 1e-9)


def test_text_model_takes_its_embeddings_and_names_outputs_by_label():
    model = _build("bert")
    model.config.id2label = {0: "negative", 1: "neutral", 2: "positive"}
    conv = ins.convert(model, input_dim=[6])
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
        ins.convert(_build("bert"), input_dim=input_dim)


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
    conv = ins.convert(model, input_dim=input_dim, dtype="double")
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
