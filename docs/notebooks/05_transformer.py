# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # A transformer reads digits: explaining attention
#
# Vision transformers cut an image into patches, turn each patch into a token, and
# let the tokens look at each other through attention. Can the methods we used on a
# convolutional network explain such a model too? We train a tiny vision transformer
# on scikit-learn's 8x8 digits in a few seconds, let innsight convert it, explain it
# with Gradient, IntegratedGradient, LRP and DeepLift, and check with arithmetic what
# the methods promise.

# %%
import copy
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.datasets import load_digits
from torch import nn

import innsight as ins

torch.set_num_threads(1)   # a tiny model trains faster on one thread than on several
figures = Path("figures")
figures.mkdir(exist_ok=True)

# %% [markdown]
# ## A vision transformer small enough for a lesson
#
# Each 2x2 patch of a digit becomes a token of width 16 (a convolution with stride 2
# is the patch embedding), plus a learned position embedding: 16 tokens. Two
# transformer blocks follow, each a layer norm, multi-head self-attention (two
# heads) and a small MLP, both with a residual connection. The tokens are averaged
# and a dense layer gives the ten class scores. There is no softmax in the model;
# the loss adds it.

# %%
class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, tokens):
        h = self.norm1(tokens)
        tokens = tokens + self.attention(h, h, h, need_weights=False)[0]
        return tokens + self.mlp(self.norm2(tokens))


class TinyViT(nn.Module):
    def __init__(self, width: int = 16, heads: int = 2, depth: int = 2):
        super().__init__()
        self.patches = nn.Conv2d(1, width, kernel_size=2, stride=2)    # (1, 8, 8) -> (16, 4, 4)
        self.position = nn.Parameter(0.02 * torch.randn(1, 16, width))
        self.blocks = nn.Sequential(*[Block(width, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        tokens = self.patches(x).flatten(2).transpose(1, 2) + self.position   # (n, 16, width)
        return self.head(self.norm(self.blocks(tokens)).mean(1))


# %% [markdown]
# 1797 digits with values 0..16, scaled to [0, 1]; we train on 1400 and test on the
# rest. Thirty epochs of AdamW take a few seconds.

# %%
digits = load_digits()
images = (digits.images / 16).astype("float32")[:, None]   # (n, 1, 8, 8): channels first
labels = digits.target
train_x, train_y = torch.from_numpy(images[:1400]), torch.from_numpy(labels[:1400])
test_x, test_y = images[1400:], labels[1400:]

torch.manual_seed(0)
model = TinyViT()
optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)
for epoch in range(30):
    for batch in torch.randperm(1400).split(100):
        loss = nn.functional.cross_entropy(model(train_x[batch]), train_y[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
model.eval()
with torch.no_grad():
    predicted = model(torch.from_numpy(test_x)).argmax(1).numpy()
print(f"test accuracy: {(predicted == test_y).mean():.3f}")

# %% [markdown]
# ## What innsight sees
#
# `ins.convert` traces the model and writes attention out into layers it knows how
# to explain: dense projections for queries, keys and values, a reshape per head,
# a scaled matrix product, a softmax, and a second matrix product with the values.
# Read the listing from `blocks.0.norm1` to `blocks.0.attn_out`.

# %%
model64 = copy.deepcopy(model).double()   # float64: the checks below hold to many digits
conv = ins.convert(model64, input_dim=[1, 8, 8], output_names=[[str(d) for d in range(10)]],
                   dtype="double")
print(conv)

# %% [markdown]
# ## Four methods on three digits
#
# We take three test digits that the transformer reads correctly as a 3 and ask
# each method why it scored "3". Without a softmax in the model, the explained
# output is the logit itself. We converted a float64 copy of the model with
# `dtype="double"` and compute in float64, so that the checks below are exact to many
# digits.
#
# - **Gradient**: how the logit would change if one pixel brightened a little.
# - **IntegratedGradient**: the gradient averaged along the straight path from a
#   black image to the digit, times the pixel's value.
# - **LRP** (epsilon rule): the logit handed backwards layer by layer. Through
#   attention it follows the AH-rule (Ali et al. 2022): the attention weights are
#   held fixed, so relevance flows through the values, as through a linear map,
#   and none through the queries and keys. Through a layer norm each sample's
#   standard deviation is held fixed (the LN-rule).
# - **DeepLift**: differences from the black image, passed back with one exact rule
#   per operation, the product of attention weights and values included.

# %%
threes = np.flatnonzero((test_y == 3) & (predicted == 3))[:3]
x = torch.from_numpy(test_x[threes])
args = {"output_idx": [3], "dtype": "double"}
results = {
    "Gradient": ins.run_grad(conv, x, **args),
    "IntegratedGradient": ins.run_intgrad(conv, x, n=200, **args),
    "LRP": ins.run_lrp(conv, x, rule_name="epsilon", **args),
    "DeepLift": ins.run_deeplift(conv, x, **args),
}

# %% [markdown]
# `plot` takes a dict of results and draws them side by side. With
# `layout="side_by_side"` each digit comes first in its row, in greys, followed by
# its heatmaps; `show_input=True` draws the heatmaps over the digit as well (light
# strokes on dark grey, each value as opaque as its magnitude), and `normalize=True`
# scales every heatmap to its largest magnitude, because a gradient (a rate) and the
# others (shares of the logit) differ in scale. Red pushes the "3" up, blue pushes
# it down.

# %%
figure = ins.plotting.plot(results, data_idx=[0, 1, 2], layout="side_by_side", normalize=True,
                           show_preds=False, show_input=True)
figure.save(figures / "transformer_methods.png", dpi=80, verbose=False)
figure

# %% [markdown]
# IntegratedGradient, LRP and DeepLift colour only the strokes of the 3: a pixel
# without ink contributes nothing against a black image (LRP shares the logit out in
# proportion to what each pixel put in, which is nothing where there is no ink). The
# gradient also marks background pixels, where ink *would* change the score.
# IntegratedGradient and DeepLift look much alike: both measure the change from the
# black image, along a path or with exact rules. Neither is a picture of "where the
# network looks": within one stroke, pixels can push the score in opposite
# directions, which is what a model that mixes all patches through attention does.
#
# ## The plain gradient, checked against autograd
#
# innsight computes the gradient on its own graph; the original torch model must
# give the same numbers.

# %%
original = x.double().requires_grad_(True)
model64(original)[:, 3].sum().backward()
np.testing.assert_allclose(results["Gradient"].get_result()[..., 0], original.grad.numpy(),
                           rtol=1e-9, atol=1e-12)

# %% [markdown]
# ## Completeness, checked with arithmetic
#
# IntegratedGradient and DeepLift promise that a digit's values add up to
# `f(x) - f(0)`: the "3" logit of the digit minus that of a black image. We compute
# that goal with the trained torch model itself, not with innsight. LRP aims at the
# logit `f(x)` but does not reach it here: the biases of the dense layers and the
# shifts of the layer norms keep part of the relevance for themselves.

# %%
with torch.no_grad():
    logit = model64(x.double())[:, 3].numpy()
    black = model64(torch.zeros_like(x).double())[:, 3].numpy()
table = pd.DataFrame({"logit f(x)": logit, "goal f(x) - f(0)": logit - black})
for name, result in results.items():
    table[f"sum {name}"] = result.get_result().sum(axis=(1, 2, 3))[:, 0]
table.round(3)

# %%
np.testing.assert_allclose(table["sum DeepLift"], table["goal f(x) - f(0)"], rtol=1e-8)
np.testing.assert_allclose(table["sum IntegratedGradient"], table["goal f(x) - f(0)"], rtol=0.05)

# %% [markdown]
# DeepLift is exact through the whole transformer, attention and layer norms
# included. IntegratedGradient approximates an integral with 200 points and comes
# within a few percent. The same code explains Hugging Face models: `ins.convert`
# takes a `transformers` ViT or BERT (see the README), and text models are explained
# on their token embeddings.
