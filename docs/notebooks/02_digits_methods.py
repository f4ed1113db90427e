# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Which pixels made it a 3? Five methods on handwritten digits
#
# A small convolutional network reads scikit-learn's 8x8 digits. We ask it *why*
# it called a digit a 3, with five families of explanation: the plain gradient,
# SmoothGrad, IntegratedGradient, LRP (three rules) and DeepLift. They answer
# different questions, and two of them promise something we can check with
# arithmetic: their values add up to how far the network's score moved away from
# a reference image.

# %%
import copy
from pathlib import Path

import numpy as np
import pandas as pd
import plotnine as p9
import torch
from sklearn.datasets import load_digits

import innsight as ins
from innsight.demo.tasks import digits_cnn, train_torch

figures = Path("figures")
figures.mkdir(exist_ok=True)

# %% [markdown]
# ## The data and the network
#
# 1797 digits of 8x8 pixels with values 0..16, scaled to [0, 1]. The network (from
# innsight's demo) is conv 3x3 -> relu -> average pool -> conv 3x3 -> relu -> dense
# -> softmax; twelve epochs on 1400 digits take a few seconds.

# %%
digits = load_digits()
images = (digits.images / 16).astype("float32")[:, None]   # (n, 1, 8, 8): channels first
labels = digits.target
torch.manual_seed(0)
model = train_torch(digits_cnn(), images[:1400], labels[:1400], epochs=12)
test_x, test_y = images[1400:], labels[1400:]
with torch.no_grad():
    predicted = model(torch.from_numpy(test_x)).argmax(1).numpy()
print(f"test accuracy: {(predicted == test_y).mean():.3f}")

# %% [markdown]
# innsight converts the network once into its own graph of layers; every method
# then walks that graph.

# %%
conv = ins.convert(model, input_dim=[1, 8, 8], output_names=[[str(d) for d in range(10)]])
print(conv)

# %% [markdown]
# ## Five methods, one question
#
# We explain four test digits that the network reads as 3, for the output "3".
# By default (`ignore_last_act=True`) methods explain the score *before* the
# softmax, the logit: a softmax output saturates near 1 and its gradients vanish.

# %%
threes = np.flatnonzero((test_y == 3) & (predicted == 3))[:4]
x = torch.from_numpy(test_x[threes])
args = {"output_idx": [3], "dtype": "double"}
results = {
    "Gradient": ins.run_grad(conv, x, **args),
    "SmoothGrad": ins.run_smoothgrad(conv, x, n=50, noise_level=0.1, seed=0, **args),
    "IntegratedGradient": ins.run_intgrad(conv, x, n=100, **args),
    "LRP epsilon": ins.run_lrp(conv, x, rule_name="epsilon", **args),
    "LRP alpha-beta": ins.run_lrp(conv, x, rule_name="alpha_beta", rule_param=1, **args),
    "LRP composite": ins.run_lrp(conv, x, rule_name={"Conv2D": "z_plus", "Dense": "epsilon"},
                                 **args),
    "DeepLift": ins.run_deeplift(conv, x, **args),
}

# %% [markdown]
# The methods' values differ in scale by an order of magnitude (a gradient is a
# rate, the others are shares of the logit), so one colour scale would wash out
# all but the largest. The long data frame that every result returns lets us
# draw anything: here each method divided by its largest magnitude, one column per
# method, one row per digit, the digit itself on the left. Red pushes the "3"
# score up, blue pushes it down.
#
# - **Gradient**: how the logit would change if one pixel brightened a little. It
#   lights up where ink *could* go (the gap that would make a 3 an 8, say), not
#   only where ink is.
# - **SmoothGrad**: the gradient averaged over noisy copies of the digit; the same
#   question, less speckle.
# - **IntegratedGradient** and **DeepLift**: how much each pixel's actual value
#   contributed compared with a black image; zero where there is no ink.
# - **LRP**: the logit redistributed backwards layer by layer; `epsilon` stays close
#   to gradient x input, `alpha_beta` and `z_plus` keep positive evidence and give
#   sharper, stroke-shaped maps.

# %%
frames = [result.get_result("data.frame").assign(method=name) for name, result in results.items()]
pixels = x.numpy()[:, 0]                                      # (4, 8, 8)
sample, row, col = np.indices(pixels.shape).reshape(3, -1)
digit = pd.DataFrame({"data": sample, "feature": [f"H{r + 1}" for r in row],
                      "feature_2": [f"W{c + 1}" for c in col], "value": pixels.ravel(),
                      "method": "digit"})
frame = pd.concat([digit, *frames])
frame["value"] /= frame.groupby("method")["value"].transform(lambda v: v.abs().max())
frame["method"] = pd.Categorical(frame["method"], ["digit", *results])
figure = (
    p9.ggplot(frame, p9.aes("feature_2", "feature", fill="value"))
    + p9.geom_raster() + p9.facet_grid("data ~ method")
    + p9.scale_fill_gradient2(low="#2166ac", mid="white", high="#b2182b", limits=(-1, 1))
    + p9.scale_y_discrete(limits=[f"H{r}" for r in range(8, 0, -1)])
    + p9.coord_fixed() + p9.theme_void() + p9.theme(figure_size=(12, 7))
    + p9.labs(title='Why "3"? Each method scaled to its largest magnitude', fill="value / max")
)
figure.save(figures / "digits_methods.png", dpi=80, verbose=False)
figure

# %% [markdown]
# ## Completeness, checked with arithmetic
#
# IntegratedGradient and DeepLift promise that a digit's values add up to
# `f(x) - f(x_ref)`: its logit minus the logit of the reference, a black image. We
# compute that goal with the trained torch network itself, not with innsight, and
# compare. LRP's `epsilon` rule comes close, but biases and the epsilon absorb
# some relevance; `alpha_beta` does not aim at the logit at all. The gradient has no
# such goal.

# %%
logits = copy.deepcopy(model[:-1]).double()    # the network without its softmax, float64
with torch.no_grad():
    goal = (logits(x.double()) - logits(torch.zeros_like(x).double()))[:, 3].numpy()
table = pd.DataFrame({"goal f(x) - f(0)": goal})
for name, result in results.items():
    table[name] = result.get_result().sum(axis=(1, 2, 3))[:, 0]
table.round(3)

# %%
np.testing.assert_allclose(table["DeepLift"], goal, rtol=1e-9)
np.testing.assert_allclose(table["IntegratedGradient"], goal, rtol=0.05)

# %% [markdown]
# DeepLift is exact. IntegratedGradient approximates an integral with `n` points,
# so its gap shrinks as `n` grows:

# %%
for n in (5, 20, 100, 400):
    sums = ins.run_intgrad(conv, x, n=n, **args).get_result().sum(axis=(1, 2, 3))[:, 0]
    print(f"n = {n:3d}: largest gap |sum - goal| = {np.abs(sums - goal).max():.4f}")

# %% [markdown]
# ## One digit, every class
#
# The same digit explained for all ten outputs shows evidence *for* its class and
# *against* the others: the pixels that make this 3 a 3 count against an 8 or a 9.

# %%
one = ins.run_deeplift(conv, x[:1], output_idx=list(range(10)))
figure = one.plot(data_idx=0)
figure.save(figures / "digits_every_class.png", width=14, height=3, dpi=80, verbose=False)
figure
