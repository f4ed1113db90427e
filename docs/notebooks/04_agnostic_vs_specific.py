# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Looking in or looking at: SHAP and LIME against model-specific methods
#
# SHAP and LIME never open the model: they switch parts of the input on and off and
# watch the prediction. DeepSHAP and IntegratedGradient go through the network's
# layers. On the digits CNN we ask all four the same question, over the same
# players (2x2 patches of pixels), and compare what they say, what they promise,
# and what they cost.

# %%
import time
from pathlib import Path

import numpy as np
import pandas as pd
import plotnine as p9
import torch
from sklearn.datasets import load_digits

import innsight as ins
from innsight import plotting
from innsight.demo.tasks import digits_cnn, train_torch

figures = Path("figures")
figures.mkdir(exist_ok=True)

# %% [markdown]
# ## The network and the players
#
# The same CNN as in the digits notebook. An 8x8 digit has 64 pixels; with one
# player per pixel a SHAP permutation costs 63 model evaluations, so we group the
# pixels into 16 patches of 2x2: `feature_groups` holds one id per pixel, and a
# patch's value is shared equally by its four pixels.

# %%
digits = load_digits()
images = (digits.images / 16).astype("float32")[:, None]
torch.manual_seed(0)
model = train_torch(digits_cnn(), images[:1400], digits.target[:1400], epochs=12)
conv = ins.convert(model, input_dim=[1, 8, 8], output_names=[[str(d) for d in range(10)]])

rows, cols = np.indices((8, 8)) // 2
patches = rows * 4 + cols                    # ids 0..15, broadcast over the channel
print(patches)

x = torch.from_numpy(images[1400:1406])      # six test digits
background = torch.from_numpy(images[:16])   # references: what "switched off" means
label = digits.target[1400:1406]
print("digits:", label)

# %% [markdown]
# ## Four methods, one question
#
# Each explains every digit's logit for its true class. The model-specific
# methods give pixel values; summing them over each patch puts them on the
# players of SHAP and LIME.

# %%
def by_patch(values: np.ndarray) -> np.ndarray:
    """Pixel values (n, 1, 8, 8, 10) summed over each patch: (n, 16, 10)."""
    return np.stack([values[:, 0][:, patches == p].sum(1) for p in range(16)], axis=1)


runs, seconds = {}, {}
calls = {
    "SHAP": lambda: ins.run_shap(conv, x, background, n=32, feature_groups=patches, seed=0),
    "LIME": lambda: ins.run_lime(conv, x, background, n=400, feature_groups=patches, seed=0),
    "DeepSHAP": lambda: ins.run_deepshap(conv, x, data_ref=background),
    "IntegratedGradient": lambda: ins.run_intgrad(conv, x, n=64),
}
for name, call in calls.items():
    start = time.perf_counter()
    runs[name] = call()
    seconds[name] = time.perf_counter() - start
own_class = {name: by_patch(r.get_result())[np.arange(6), :, label] for name, r in runs.items()}

# %% [markdown]
# ## What they promise
#
# SHAP's values of a digit add up to its logit minus the mean logit of the
# references (32 walks, two from each of the 16 references); DeepSHAP promises the
# same through the layers. IntegratedGradient's goal is the logit minus that of a
# black image. LIME promises nothing of the kind: its values are the weights of a
# linear model fitted to the predictions of random coalitions. We compute the goals
# with the torch network itself.

# %%
with torch.no_grad():
    logits = model[:-1]
    own = np.arange(6), label
    goal_refs = (logits(x) - logits(background).mean(0)).numpy()[own]
    goal_black = (logits(x) - logits(torch.zeros_like(x))).numpy()[own]
sums = pd.DataFrame({name: v.sum(1) for name, v in own_class.items()})
sums.insert(0, "f(x) - mean f(refs)", goal_refs)
sums.insert(1, "f(x) - f(black)", goal_black)
sums.round(3)

# %%
np.testing.assert_allclose(sums["SHAP"], goal_refs, rtol=1e-4, atol=1e-4)
np.testing.assert_allclose(sums["DeepSHAP"], goal_refs, rtol=1e-4, atol=1e-4)
np.testing.assert_allclose(sums["IntegratedGradient"], goal_black, rtol=0.05)

# %% [markdown]
# ## Do they agree?
#
# Rank correlation of the 16 patch values between each pair of methods, averaged
# over the six digits. SHAP and DeepSHAP answer the same question (Shapley values
# against the same references) by different routes, sampling against a rule per
# layer, and agree closely; LIME, fitted to the same kind of coalitions, follows
# them. IntegratedGradient agrees with none of them: it measures each digit against
# a black image, the others against real digits. The reference is part of the
# question.

# %%
def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of each row of a and b (ties get their first rank), averaged."""
    ranks = lambda v: v.argsort(1).argsort(1)
    return float(np.mean([np.corrcoef(r, s)[0, 1] for r, s in zip(ranks(a), ranks(b))]))


names = list(own_class)
agreement = pd.DataFrame([[rank_correlation(own_class[a], own_class[b]) for b in names]
                          for a in names], index=names, columns=names)
agreement.round(2)

# %% [markdown]
# ## What they cost
#
# SHAP ran `6 digits x 32 walks x 15` forward passes, LIME `6 x 400`; DeepSHAP one
# backward walk per reference for all ten classes at once, IntegratedGradient 64
# gradients per digit and class. With 16 players the model-agnostic methods are
# cheap; their cost grows with the players (a walk over 64 pixels costs 63 passes,
# over a 224x224 colour image 150527), the model-specific ones' does not. SHAP and
# LIME earn their keep on models nobody can convert
# (`ins.run_shap(any_model, x, background, pred_fun=...)`).

# %%
pd.Series(seconds, name="seconds").round(2)

# %% [markdown]
# ## The maps
#
# All four in logit units on one scale, for the first digit and its class. SHAP and
# LIME spread a patch's value over its four pixels; DeepSHAP and IntegratedGradient
# give each pixel its own.

# %%
figure = (plotting.plot(runs, data_idx=0, output_idx=[int(label[0])], same_scale=True)
          + p9.labs(title=f"A {label[0]}: four methods on one scale"))
figure.save(figures / "agnostic_vs_specific.png", width=12, height=3.5, dpi=80, verbose=False)
figure
