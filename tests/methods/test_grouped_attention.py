"""Grouped-query attention (fewer key and value heads than query heads) converted without
copies of the key and value heads, in float64.

The converter undoes Hugging Face's ``repeat_kv`` before ``scaled_dot_product_attention``
and reads ``enable_gqa=True`` as it is (:mod:`innsight.converter.torch_gqa`). References:
the same model converted with the repetition kept (each key and value head copied per
query head, as before; :func:`group_key_value_heads` switched off), which every method
must match to 1e-10; the original model's output and torch autograd on it; LXT's AttnLRP
on a Hugging Face Llama.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import transformers as tf
from lxt_reference import lxt_relevance
from torch import Tensor, nn

import innsight as ins
from innsight.converter import torch_fx

TOKENS, WIDTH, HEADS, KV_HEADS, HEAD_DIM = 5, 8, 4, 2, 3
TOL = {"rtol": 1e-10, "atol": 1e-10}
#: Against the original Llama, which computes its norms in float32 even in float64.
CLOSE = {"rtol": 1e-6, "atol": 1e-7}


def _repeat_kv(x: Tensor, group: int) -> Tensor:
    """Hugging Face's ``repeat_kv``: ``(b, kv, s, d)`` -> ``(b, kv * group, s, d)``."""
    b, kv, s, d = x.shape
    return x[:, :, None, :, :].expand(b, kv, group, s, d).reshape(b, kv * group, s, d)


class GroupedAttention(nn.Module):
    """Input ``TOKENS`` tokens of width ``WIDTH``: causal self-attention with ``HEADS``
    query and ``KV_HEADS`` key/value heads, written with ``repeat_kv`` (``form=
    "repeat_kv"``, also read by a summand when ``"repeat_kv_reused"``) or ``enable_gqa``;
    a tanh of the output projection and a dense head (3)."""

    def __init__(self, form: str) -> None:
        super().__init__()
        self.form = form
        self.q = nn.Linear(WIDTH, HEADS * HEAD_DIM)
        self.k = nn.Linear(WIDTH, KV_HEADS * HEAD_DIM)
        self.v = nn.Linear(WIDTH, KV_HEADS * HEAD_DIM)
        self.o = nn.Linear(HEADS * HEAD_DIM, WIDTH)
        self.head = nn.Linear(TOKENS * WIDTH, 3)

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        q, k, v = (proj(x).view(b, n, -1, HEAD_DIM).transpose(1, 2)
                   for proj in (self.q, self.k, self.v))
        if self.form == "enable_gqa":
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            k, v = _repeat_kv(k, HEADS // KV_HEADS), _repeat_kv(v, HEADS // KV_HEADS)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            if self.form == "repeat_kv_reused":
                out = out + 0.5 * v
        out = self.o(out.transpose(1, 2).reshape(b, n, HEADS * HEAD_DIM))
        return self.head(torch.tanh(out).flatten(1))


def _model(form: str) -> nn.Module:
    torch.manual_seed(0)
    return GroupedAttention(form).double().eval()


def _copied(model: nn.Module, monkeypatch: pytest.MonkeyPatch, **kwargs) -> ins.Converter:
    """``model`` converted with each key and value head copied per query head."""
    with monkeypatch.context() as patch:
        patch.setattr(torch_fx, "group_key_value_heads", lambda graph: None)
        return ins.convert(model, dtype="double", **kwargs)


def _attention_heads(conv: ins.Converter) -> list[tuple[int, int, int]]:
    """Per attention layer, the heads of its query, key and value inputs."""
    model = conv.model
    return [tuple(model.layers[i].output_dim[-3] for i in model.input_layers[j][:3])
            for j, layer in enumerate(model.layers)
            if layer.type_name == "ScaledDotProductAttention"]


#: method -> its arguments beside the converter and the data.
METHODS = {
    "Gradient": (ins.run_grad, {}),
    "IntegratedGradient": (ins.run_intgrad, {"n": 4}),
    "DeepLift-rescale": (ins.run_deeplift, {}),
    "DeepLift-reveal_cancel": (ins.run_deeplift, {"rule_name": "reveal_cancel"}),
    "DeepSHAP": (ins.run_deepshap, {"limit_ref": 2, "seed": 0}),
    "LRP-epsilon": (ins.run_lrp, {"rule_name": "epsilon"}),
    "LRP-alpha_beta": (ins.run_lrp, {"rule_name": "alpha_beta", "rule_param": 2.0}),
    "LRP-attnlrp": (ins.run_lrp, {"rule_name": "attnlrp"}),
    "LRP-uniform": (ins.run_lrp, {"rule_name": {"*": "epsilon", "MatMul": "uniform"}}),
}


def _explain(conv: ins.Converter, method: str, x: Tensor) -> Tensor:
    run, kwargs = METHODS[method]
    return run(conv, x, output_idx=[0, 2], dtype="double", verbose=False,
               **kwargs).get_result("torch_tensor")


@pytest.mark.parametrize("tracer", ["fx", "export"])
@pytest.mark.parametrize("form", ["repeat_kv", "enable_gqa"])
def test_grouped_conversion_keeps_kv_heads_and_equals_the_copied_one(tracer, form,
                                                                      monkeypatch):
    model, reference = _model(form), _model("repeat_kv")
    conv = ins.convert(model, input_dim=[TOKENS, WIDTH], dtype="double", tracer=tracer)
    copied = _copied(reference, monkeypatch, input_dim=[TOKENS, WIDTH], tracer=tracer)
    assert _attention_heads(conv) == [(HEADS, KV_HEADS, KV_HEADS)]
    assert _attention_heads(copied) == [(HEADS, HEADS, HEADS)]
    assert len(conv.model.layers) < len(copied.model.layers)
    x = torch.randn(3, TOKENS, WIDTH, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(conv.model(x), model(x), **TOL)
    # Gradient against torch autograd on the original.
    xg = x.clone().requires_grad_(True)
    model(xg)[:, 2].sum().backward()
    torch.testing.assert_close(_explain(conv, "Gradient", x)[..., 1], xg.grad, **TOL)
    for method in METHODS:
        torch.testing.assert_close(_explain(conv, method, x), _explain(copied, method, x),
                                   **TOL, msg=lambda m, method=method: f"{method}: {m}")


def test_a_repetition_read_elsewhere_stays_for_that_reader(monkeypatch):
    model = _model("repeat_kv_reused")
    conv = ins.convert(model, input_dim=[TOKENS, WIDTH], dtype="double")
    assert _attention_heads(conv) == [(HEADS, KV_HEADS, KV_HEADS)]
    x = torch.randn(2, TOKENS, WIDTH, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(conv.model(x), model(x), **TOL)
    copied = _copied(model, monkeypatch, input_dim=[TOKENS, WIDTH])
    for method in ("DeepLift-rescale", "LRP-attnlrp"):
        torch.testing.assert_close(_explain(conv, method, x), _explain(copied, method, x),
                                   **TOL)


# ---- a Hugging Face Llama (torch.export) ------------------------------------------------

VOCAB = 50
_LLAMA = {"vocab_size": VOCAB, "max_position_embeddings": 32, "hidden_size": 16,
          "num_hidden_layers": 2, "num_attention_heads": HEADS,
          "num_key_value_heads": KV_HEADS, "intermediate_size": 32}


@pytest.fixture(scope="module")
def llama() -> tuple[nn.Module, Tensor]:
    """A float64 Llama with grouped heads and the input embeddings of 2 sequences."""
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(tf.LlamaConfig(**_LLAMA)).eval().double()
    ids = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(1))
    return model, ins.embed_tokens(model, ids)


def test_llama_converts_grouped_and_explains_as_copied_and_as_lxt(llama, monkeypatch):
    model, embeddings = llama
    conv = ins.convert(model, input_dim=[6], dtype="double", text_input="embeddings")
    copied = _copied(model, monkeypatch, input_dim=[6], text_input="embeddings")
    assert _attention_heads(conv) == [(HEADS, KV_HEADS, KV_HEADS)] * 2
    assert _attention_heads(copied) == [(HEADS, HEADS, HEADS)] * 2
    node = 5 * VOCAB + 7  # the logit of token 7 after the last position
    with torch.no_grad():
        logits = model(inputs_embeds=embeddings).logits
    torch.testing.assert_close(conv.model(embeddings), logits, **CLOSE)
    for method in ("Gradient", "DeepLift-rescale", "LRP-attnlrp", "LRP-epsilon"):
        run, kwargs = METHODS[method]
        ours, reference = (run(c, embeddings, output_idx=[node], dtype="double",
                               verbose=False, **kwargs).get_result("torch_tensor")
                           for c in (conv, copied))
        torch.testing.assert_close(ours, reference, **TOL, msg=lambda m, method=method:
                                   f"{method}: {m}")
        if method == "LRP-attnlrp":
            lxt = lxt_relevance(model, embeddings, lambda out: out[:, -1, 7])
            per_token = ours[..., 0].sum(-1)
            assert (per_token - lxt).abs().max() <= 1e-4 * lxt.abs().max()


def test_llama_token_ids_with_padding_convert_grouped(llama, monkeypatch):
    model, _ = llama
    conv = ins.convert(model, input_dim=[6], dtype="double")
    copied = _copied(model, monkeypatch, input_dim=[6])
    assert _attention_heads(conv) == [(HEADS, KV_HEADS, KV_HEADS)] * 2
    ids = torch.randint(1, VOCAB, (2, 6), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0  # the padding mask reaches the attention as an additive bias
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(conv.model([ids, mask]), logits, **CLOSE)
    for method in ("DeepLift-rescale", "LRP-attnlrp"):
        run, kwargs = METHODS[method]
        ours, reference = (run(c, ids, extra_args={"attention_mask": mask}, output_idx=[7],
                               dtype="double", verbose=False, **kwargs)
                           .get_result("torch_tensor") for c in (conv, copied))
        torch.testing.assert_close(ours, reference, **TOL)
