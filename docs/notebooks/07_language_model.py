# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # A language model copies a list: explaining it token by token
#
# A language model reads token ids and gives, after every position, a score (logit)
# for every word of its vocabulary that could come next. Which of the tokens it read
# made it choose its next word? We train a tiny Llama-style model (built from a
# `transformers` config: no download) on a task whose answer we know, explain its
# predictions with AttnLRP, CP-LRP and Gradient×Input, check the bookkeeping of the
# relevance with arithmetic, and look at the coloured-text plots.

# %%
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import transformers

import innsight as ins

torch.set_num_threads(1)   # a tiny model trains faster on one thread than on several
figures = Path("figures")
figures.mkdir(exist_ok=True)

# %% [markdown]
# ## A task with a known answer
#
# Explanations of a model with random weights are pictures of noise, and those of a
# real language model are hard to check. So we make up a small language: a list of
# five different words, a `=`, and the list again. The model has to continue the
# copy, and once it has seen `red cat ship fish blue = red cat ship` the only right
# next word is `fish`, the word five places back. A model that learned the task must
# therefore rely on that earlier token; an explanation that is any good must show it.
#
# Our vocabulary is 17 words, so the token strings are readable without a
# tokenizer: token id `i` is `words[i]`.

# %%
words = ["=", "red", "blue", "green", "cat", "dog", "fish", "bird", "sun", "moon",
         "star", "tree", "book", "lamp", "door", "ship", "key"]
VOCAB, N = len(words), 5
LENGTH = 2 * N          # w0 w1 w2 w3 w4 = w0 w1 w2 w3 -> next: w4


def sequences(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` token sequences ``(n, LENGTH)`` and their lists ``(n, N)``."""
    draws = torch.rand(n, VOCAB - 1, generator=torch.Generator().manual_seed(seed))
    lists = draws.argsort(1)[:, :N] + 1                 # five different words (not "=")
    equals = torch.zeros(n, 1, dtype=torch.long)
    return torch.cat([lists, equals, lists[:, :N - 1]], 1), lists


def as_words(ids: torch.Tensor) -> list[list[str]]:
    return [[words[i] for i in row] for row in ids.tolist()]


# %% [markdown]
# ## A tiny Llama, trained in a few seconds
#
# Two decoder layers of width 32 with two attention heads each, rotary position
# embeddings, RMSNorm and a gated SiLU MLP: the architecture of Llama, at a size that
# trains on a laptop CPU. After the `=` every position predicts the next list word;
# the loss counts those five predictions.

# %%
torch.manual_seed(0)
config = transformers.LlamaConfig(
    vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=LENGTH,
    bos_token_id=None, eos_token_id=None, pad_token_id=None)
lm = transformers.LlamaForCausalLM(config)
optimiser = torch.optim.AdamW(lm.parameters(), lr=1e-2)
for step in range(150):
    ids, lists = sequences(64, seed=step)
    logits = lm(input_ids=ids).logits[:, N:]            # positions N..2N-1 predict w0..w4
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), lists.reshape(-1))
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
lm = lm.eval().double()   # float64: the checks below hold to many digits

test_ids, test_lists = sequences(500, seed=10_000)
with torch.no_grad():
    predicted = lm(input_ids=test_ids).logits[:, -1].argmax(-1)
accuracy = (predicted == test_lists[:, -1]).double().mean().item()
print(f"last word right in {accuracy:.1%} of 500 new sequences")
assert accuracy > 0.95

# %% [markdown]
# ## Why the relevance sits at the embedding
#
# `ins.convert` takes a Hugging Face text model with token ids as its input (the
# default), together with the attention mask, which is an input that is not
# explained (it is filled with ones here; pass `extra_args={"attention_mask": mask}`
# for padded batches).
#
# A token id is an integer: nudging it by a little means nothing, and no rule can
# hand relevance to it. The first real numbers in the model are the rows the
# embedding layer looks up, one vector of width 32 per token. The methods therefore
# explain the embedding's output and add up each token's 32 values: one number per
# token. (`text_input="embeddings"` converts the model as a function of those vectors
# instead; the numbers are the same.)

# %%
conv = ins.convert(lm, input_dim=[LENGTH], dtype="double")
print(f"{len(conv.model.layers)} layers; inputs {conv.input_dim}, logits {conv.output_dim}")

# %% [markdown]
# ## The top-1 next word, explained with AttnLRP
#
# `ins.explain_tokens` chooses what to explain and runs the method once for all of
# it. `"top1"` explains the logit of each sequence's top-scoring word after its last
# position. Its default method is AttnLRP (Achtibat et al. 2024): LRP with rules made
# for attention (see [AttnLRP](../methods/attnlrp.md)). Red tokens speak for the
# word, blue ones against it.

# %%
ids, lists = sequences(4, seed=7)
tokens = as_words(ids)
top1 = ins.explain_tokens(conv, ids, "top1", tokens=tokens, dtype="double", verbose=False)
print("predicted:", [words[t] for t in top1.target_tokens[:, 0]])
figure = top1.plot(0, title=f"AttnLRP: why '{words[top1.target_tokens[0, 0]]}' comes next")
figure.save(figures / "lm_top1.png", dpi=100, verbose=False)
figure

# %% [markdown]
# The word five places back, the one to be copied, carries almost all of the
# relevance; the other tokens get little. That is what a model solving the task must do,
# and it holds for every sequence here:

# %%
pd.DataFrame(top1.relevance[:, 0].round(2), columns=range(LENGTH),
             index=[" ".join(row) for row in tokens])

# %%
assert (top1.relevance[:, 0].argmax(1) == N - 1).all()   # the copied word, every time

# %% [markdown]
# ## A next word of our choosing, and a span
#
# Any logit can be explained: `(position, token id)` pairs name the word whose logit
# after that position we want explained, each its own row. Here: the third list word
# after position 7, the copy of the second (the model's right answer there), and the
# first list word after the last position (a wrong answer). One walk back explains
# both.
# `ins.plot_tokens` draws any relevance over tokens; we give the rows readable names.

# %%
first = ids[:1]
pairs = ins.explain_tokens(conv, first, [(7, int(first[0, 2])), (-1, int(first[0, 0]))],
                           tokens=tokens[0], dtype="double", verbose=False)
names = [f"'{words[first[0, 2]]}' after position 7", f"'{words[first[0, 0]]}' at the end"]
figure = ins.plot_tokens(pairs.relevance[0], tokens[0], names)
figure.save(figures / "lm_pairs.png", dpi=100, verbose=False)
figure

# %% [markdown]
# The second list word after position 7 is explained by its first occurrence
# (position 2). The first list word at the end is a wrong answer: its logit is low,
# and so are its relevances.
#
# A span explains a stretch of the sequence at once: the sum of the logits of its
# tokens, each at the position before it, as for a generated continuation. The copy
# (positions 6 to 9) is explained by the list it copies, positions 0 to 3:

# %%
span = ins.explain_tokens(conv, first, "span", span=(N + 1, LENGTH), tokens=tokens[0],
                          dtype="double", verbose=False)
print(span.target_names, span.relevance[0, 0].round(2))
assert set(np.argsort(-span.relevance[0, 0])[:N - 1]) == set(range(N - 1))

# %% [markdown]
# ## Three methods, one prediction
#
# `method=` chooses how the logit is taken apart:
#
# - **AttnLRP** (`"attnlrp"`): the softmax of attention is linearised at its input and
#   products such as queries with keys share relevance half and half, so relevance
#   flows through the attention weights as well as through the values.
# - **CP-LRP** (`"lrp"`: LRP with its default rules, the AH-rule of Ali et al. 2022):
#   the attention weights are held fixed, so relevance flows only through the values.
# - **Gradient×Input** (`"grad_x_input"`): each embedding times the gradient of the
#   logit with respect to it.
#
# We draw each row on its own scale (`normalize=True`): the methods' values differ in
# size.

# %%
methods = {name: ins.explain_tokens(conv, first, "top1", method=name, dtype="double",
                                    verbose=False)
           for name in ["attnlrp", "lrp", "grad_x_input"]}
rows = np.stack([ex.relevance[0, 0] for ex in methods.values()])
figure = ins.plot_tokens(rows, tokens[0], list(methods), normalize=True)
figure.save(figures / "lm_methods.png", dpi=100, verbose=False)
figure

# %%
table = pd.DataFrame(rows.round(3), index=list(methods), columns=tokens[0])
table["sum"] = rows.sum(1).round(3)
table["logit"] = methods["attnlrp"].scores[0, 0].round(3)
table

# %% [markdown]
# Both LRP variants point at the copied word. CP-LRP hands it nearly the whole logit
# (its values add up to the logit, see below); AttnLRP about half of it, because its
# softmax rule keeps the rest (next section). Gradient×Input also marks the copied
# word, but its values are a few hundred times smaller than the logit, add up to
# almost nothing, and it puts more weight against the word on the last token than for
# it on the copied one. The trained model is sure of itself: its attention softmax is
# saturated, and a saturated softmax has almost no gradient, so the local slope says
# little about what the logit is made of. The LRP rules do not depend on that slope.
# That the two LRP variants agree here is a property of this task (the word is copied
# by the values); on real language models they differ, and the paper found AttnLRP the
# more faithful.
#
# The per-token numbers of AttnLRP are checked against LXT, the authors' own
# implementation (`lxt.efficient`), in the test suite (`tests/methods/test_attnlrp.py`):
# on Llama, Qwen2, GPT-2 and BERT configs they agree to 1e-4 relative in float64. LXT
# patches the modelling code of the families it knows; innsight applies the rules to
# the converted graph of any transformer.
#
# ## Where the logit goes: what "absorbed" means
#
# LRP hands the explained logit backwards layer by layer. A rule *conserves* when a
# layer passes on exactly what it received. AttnLRP's softmax rule does not: it is a
# Taylor expansion of the softmax at its input, and the part of the logit that sits in
# the expansion's constant term reaches no token. That part is *absorbed*, as the
# paper says. With `keep_layers=True` every layer reports what it received, what it
# passed on and what it absorbed, so nothing is lost from the books: token relevances
# plus everything absorbed equal the logit.

# %%
attn = ins.explain_tokens(conv, ids, "top1", dtype="double", keep_layers=True, verbose=False)
report = attn.result.layer_report()
absorbing = report[report["absorbed"].abs() > 1e-6]   # epsilon rules absorb ~1e-9 each
absorbing.groupby(["layer", "rule"])["absorbed"].mean().round(3).to_frame()

# %%
books = pd.DataFrame({
    "logit": attn.scores[:, 0],
    "sum over tokens": attn.relevance[:, 0].sum(1),
    "absorbed": report.groupby("data")["absorbed"].sum().to_numpy(),
})
books["tokens + absorbed"] = books["sum over tokens"] + books["absorbed"]
books.round(4)

# %%
np.testing.assert_allclose(books["tokens + absorbed"], books["logit"], rtol=1e-6)
assert set(absorbing["type"]) == {"ScaledDotProductAttention"}  # only attention absorbs

# %% [markdown]
# Only the attention layers absorb, through their softmax (its rule shows as
# `weights: linearise`; the Llama has no biases). CP-LRP, which gives the
# softmax nothing, conserves: with the epsilon rule at a tiny epsilon the token
# relevances alone add up to the logit.

# %%
cp = ins.explain_tokens(conv, ids, "top1", method="lrp", rule_name="epsilon", rule_param=1e-9,
                        dtype="double", verbose=False)
np.testing.assert_allclose(cp.relevance[:, 0].sum(1), cp.scores[:, 0], rtol=1e-6)
print("CP-LRP token sums:", cp.relevance[:, 0].sum(1).round(4))
print("logits:           ", cp.scores[:, 0].round(4))

# %% [markdown]
# ## Coloured text as HTML
#
# The plots above are plotnine figures (`.save("tokens.png")`). For a notebook or a
# web page, `html()` gives the same picture as plain HTML: the browser wraps long
# texts, and each token shows its position and value when the mouse rests on it.
# `plot(..., as_plotly=True)` gives an interactive plotly figure instead.

# %%
page = top1.html(0)
(figures / "lm_top1.html").write_text(page)
page

# %% [markdown]
# ## What to take away
#
# - `ins.explain_tokens(model_or_conversion, ids, targets)` explains the top-1 next
#   word, logits of given words after given positions, or a span, in one walk;
#   `method` is `"attnlrp"`, `"lrp"` (CP-LRP) or `"grad_x_input"`, and
#   `score="logprob"` explains log-probabilities with Gradient×Input.
# - The relevance lives at the token embeddings and is summed over their width: token
#   ids are integers and carry none themselves.
# - AttnLRP absorbs part of the logit in its softmax rule; `keep_layers=True` and
#   `layer_report()` show where, and tokens plus absorbed equal the logit.
# - A model trained on a task with a known answer is the place to see whether an
#   explanation shows what the model must use; here both LRP variants do, and the
#   saturated model leaves Gradient×Input with almost nothing.
