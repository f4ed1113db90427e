# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Which explanation to trust? Metrics and a recommender on handwritten digits
#
# Six methods explain the same network and give six different pictures. Which one
# describes what the network does? Nobody can look inside and check, but we can
# test what an explanation *claims*: if it says a pixel matters, removing that pixel
# should move the output; if it says the network looks at strokes, it should change
# when the network's weights are scrambled. `ins.evaluate` runs such tests batched
# through the converted model, and `ins.recommend` runs the methods, tests them and
# ranks them. (Run from `docs/`, this notebook also draws the figures of
# `docs/metrics.md` into `docs/figures/`.)

# %%
import copy
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits

import innsight as ins
from innsight.demo.tasks import digits_cnn, train_torch

figures = Path("figures")
figures.mkdir(exist_ok=True)
torch.set_num_threads(1)  # 8x8 images: tensors too small to gain from a second thread

# %% [markdown]
# ## The network and six explanations
#
# The small CNN of the digits notebook (conv, average pool, conv, dense, softmax),
# trained for a few seconds on 1400 of scikit-learn's 8x8 digits. We explain eight
# test digits that it reads as 3, for the output "3" (its logit, before the softmax).

# %%
digits = load_digits()
images = (digits.images / 16).astype("float32")[:, None]   # (n, 1, 8, 8)
labels = digits.target
torch.manual_seed(0)
model = train_torch(digits_cnn(), images[:1400], labels[:1400], epochs=12)
test_x, test_y = images[1400:], labels[1400:]
with torch.no_grad():
    predicted = model(torch.from_numpy(test_x)).argmax(1).numpy()
print(f"test accuracy: {(predicted == test_y).mean():.3f}")

conv = ins.convert(model, input_dim=[1, 8, 8], output_names=[[str(d) for d in range(10)]])
threes = np.flatnonzero((test_y == 3) & (predicted == 3))[:8]
x = torch.from_numpy(test_x[threes])
args = {"output_idx": [3], "seed": 0}
results = {
    "Gradient": ins.run_grad(conv, x, **args),
    "Gradient x input": ins.run_grad(conv, x, times_input=True, **args),
    "SmoothGrad": ins.run_smoothgrad(conv, x, **args),
    "IntegratedGradient": ins.run_intgrad(conv, x, **args),
    "DeepLift": ins.run_deeplift(conv, x, **args),
    "LRP alpha-beta": ins.run_lrp(conv, x, rule_name="alpha_beta", **args),
}

# %% [markdown]
# ## Deletion, insertion and ROAD curves
#
# **Deletion** sets pixels to black (the baseline 0) from the most relevant down and
# records the logit after each step: a faithful explanation makes it fall fast, so
# *lower* area under the curve is better. **Insertion** starts from the black image
# and restores pixels, most relevant first: the logit should rise fast, *higher* is
# better. Deletion has a catch: black pixels are a signal of their own, and a
# network may react to the *shape* of the deleted region rather than to the lost
# evidence. **ROAD** (remove and debias) fills each removed pixel from its neighbours
# instead (noisy linear imputation), so the mask leaks less. Two pixels per step,
# 32 steps per curve, every step of every digit and method in one batched stream.

# %%
metrics = [ins.metrics.Deletion(features_in_step=2), ins.metrics.Insertion(features_in_step=2),
           ins.metrics.ROAD(features_in_step=2), "faithfulness_correlation", "completeness",
           "sparseness", "complexity", "randomization"]
scores = ins.evaluate(results, metrics, seed=0)
figure = ins.metrics.plot_curves(scores, ["deletion", "insertion", "road"])
figure.save(figures / "which_method_curves.png", dpi=90, verbose=False)
figure

# %% [markdown]
# The curves are model outputs, so we can check them against the trained network
# itself: every deletion curve starts at the digit's logit and ends at the logit of
# the black image, whatever the method.

# %%
logits = copy.deepcopy(model[:-1])    # the network without its softmax
with torch.no_grad():
    at_data = logits(x)[:, 3].numpy()
    at_black = logits(torch.zeros(1, 1, 8, 8))[0, 3].item()
curves = scores.attrs["curves"]
deletion = curves[curves["metric"] == "deletion"]
first = deletion[deletion["step"] == 0].groupby("data")["value"]
last = deletion[deletion["step"] == deletion["step"].max()].groupby("data")["value"]
np.testing.assert_allclose(first.min(), at_data, rtol=1e-5)
np.testing.assert_allclose(first.max(), at_data, rtol=1e-5)
np.testing.assert_allclose(last.mean(), at_black, rtol=1e-5)

# %% [markdown]
# ## The sanity check: scramble the network, top layer first
#
# Adebayo et al. (2018) asked a blunt question: does the explanation change when the
# network does? The randomisation check replaces the weights of the dense layer by
# noise, then the second convolution too, then the first, re-runs each method after
# each step and compares the new explanation with the original (Spearman rank
# correlation of the absolute values). An explanation that stays similar does not
# depend on what the network learned: *lower* is better here.
#
# The plain gradient and SmoothGrad lose their similarity at once. The methods that
# multiply by the input keep most of it: their maps are zero wherever the digit is
# black, whatever the weights, so the ranks of most pixels survive any randomisation.
# That is the published pattern, and a reason not to read stroke-shaped maps as proof
# that a network looks at strokes.

# %%
figure = ins.metrics.plot_curves(scores, "randomization")
figure.save(figures / "which_method_randomisation.png", dpi=90, verbose=False)
figure

# %% [markdown]
# ## All metrics at once
#
# One tile per method and metric: the mean value as text, the colour its quality
# among the methods (darkest = best in that metric's direction). Completeness is
# only defined for methods whose values should add up to `f(x) - f(reference)`:
# IntegratedGradient (approximately) and DeepLift (exactly) here.

# %%
figure = ins.metrics.plot_table(scores)
figure.save(figures / "which_method_table.png", dpi=90, verbose=False)
figure

# %%
completeness = scores[scores["metric"] == "completeness"].groupby("method")["value"].max()
assert completeness["DeepLift"] < 1e-4   # exact up to float32 rounding
completeness.round(5)

# %% [markdown]
# ## Let innsight pick: `ins.recommend`
#
# `recommend` runs the candidate methods (by default the gradient family, DeepLift and
# LRP), scores every one with a mix of faithfulness (deletion, insertion, faithfulness
# correlation), robustness (max-sensitivity: how much the explanation moves under
# small input noise) and complexity (sparseness), and ranks them by their *mean rank*
# over the metrics: per metric the methods are ranked 1, 2, ... in that metric's
# direction, and the ranks, not the values, are averaged, so no metric's units win.
# Sensitivity re-runs every method on noisy copies of the digits, ten times by default;
# four draws keep this lesson quick.

# %%
chosen = ["deletion", "insertion", "faithfulness_correlation", ins.metrics.Sensitivity(n=4),
          "sparseness"]
ranking, best = ins.recommend(conv, x, metrics=chosen, output_idx=[3], seed=0)
ranking.round(3)

# %%
ranks = ranking.attrs["ranks"].set_index("method")
np.testing.assert_allclose(ranks.mean(axis=1).loc[ranking["method"]], ranking["mean_rank"])
assert best.method == ins.metrics.DEFAULT_METHODS[ranking["method"].iloc[0]][0].method_name
print(f"best: {ranking['method'].iloc[0]} ({best.method}, {ranking['params'].iloc[0]})")

# %% [markdown]
# With `tune=True` it also searches each method's own settings (the ranges of
# `get_tunables()`: the noise level of SmoothGrad, the rule of LRP, ...), a small grid
# or seeded random search, and reports the setting each method won with. Every tried
# setting stays in `attrs["trials"]`.

# %%
tuned, tuned_best = ins.recommend(conv, x, methods=["SmoothGrad", "LRP"],
                                  metrics=["deletion", "insertion", "sparseness"],
                                  tune=True, n_trials=4, output_idx=[3], seed=0)
tuned.attrs["trials"][["method", "trial", "params", "mean_rank"]]

# %% [markdown]
# The winner is a full result: plot it like any other.

# %%
figure = best.plot(data_idx=0)
figure.save(figures / "which_method_best.png", width=4, height=3, dpi=90, verbose=False)
figure
