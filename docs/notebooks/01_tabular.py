# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # From a trained model to explanations: breast-cancer biopsies
#
# A small network decides from 30 measurements of a biopsy's cell nuclei whether
# a tumour is malignant or benign. We train it, convert it once, and ask four
# methods what drove one decision, and then which measurements matter over all
# patients. Along the way: what the numbers of each method *mean*, in units.

# %%
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.datasets import load_breast_cancer
from torch import nn

import innsight as ins

figures = Path("figures")
figures.mkdir(exist_ok=True)

# %% [markdown]
# ## Data and model
#
# 569 biopsies, 30 features (mean, spread and worst value of radius, texture,
# concavity, ...). Each feature is standardised with the training mean and
# standard deviation, so "one unit" of a feature is one standard deviation.

# %%
data = load_breast_cancer()
rng = np.random.default_rng(0)
order = rng.permutation(len(data.target))
train, test = order[:400], order[400:]
mean, std = data.data[train].mean(0), data.data[train].std(0)
x_all = ((data.data - mean) / std).astype("float32")
names = [name.replace(" ", "_") for name in data.feature_names]
classes = list(data.target_names)                         # ['malignant', 'benign']

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 2), nn.Softmax(dim=1))
optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
inputs, targets = torch.from_numpy(x_all[train]), torch.from_numpy(data.target[train])
for _ in range(100):
    loss = nn.functional.cross_entropy(model[:-1](inputs), targets)   # logits, full batch
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
model.eval()
with torch.no_grad():
    accuracy = (model(torch.from_numpy(x_all[test])).argmax(1).numpy() == data.target[test]).mean()
print(f"test accuracy: {accuracy:.3f}")

# %% [markdown]
# ## Convert once
#
# The converter reads the torch model into innsight's graph. The feature and class
# names travel with it and label every table and figure.

# %%
conv = ins.convert(model, input_dim=[30], input_names=[[names]], output_names=[[classes]])
x = torch.from_numpy(x_all[test])

# %% [markdown]
# ## Four methods on one patient
#
# All methods explain the *logit* of "malignant" (the score before the softmax:
# `ignore_last_act=True`, the default). What the numbers mean:
#
# | method | a feature's value is | unit |
# |---|---|---|
# | Gradient | how fast the logit changes when the feature grows | logit per standard deviation |
# | Gradient x Input | that rate times the feature's value | logit |
# | IntegratedGradient | the feature's share of `f(x) - f(x_ref)`, `x_ref` the average patient (0) | logit |
# | DeepLift | the same share, computed exactly by rules through the layers | logit |
# | SHAP | the feature's share of `f(x)` minus the mean `f` over reference patients | logit |

# %%
patient = x[:1]
reference = torch.zeros(1, 30)           # the average training patient
background = torch.from_numpy(x_all[train][:32])   # reference patients for SHAP
runs = {
    "Gradient": ins.run_grad(conv, patient, output_idx=[0]),
    "Gradient x Input": ins.run_grad(conv, patient, output_idx=[0], times_input=True),
    "IntegratedGradient": ins.run_intgrad(conv, patient, x_ref=reference, n=200, output_idx=[0]),
    "DeepLift": ins.run_deeplift(conv, patient, x_ref=reference, output_idx=[0]),
    # 64 permutations walk from the references, two from each (a permutation and its reverse)
    "SHAP": ins.run_shap(conv, patient, background, n=64, output_idx=[0], seed=0),
}
table = pd.DataFrame({name: r.get_result()[0, :, 0] for name, r in runs.items()}, index=names)
table.loc[table["DeepLift"].abs().sort_values(ascending=False).index].head(8).round(3)

# %% [markdown]
# The sums tell the methods apart. IntegratedGradient and DeepLift add up to the
# logit of this patient minus the logit of the average patient; SHAP adds up to the
# logit minus the mean logit over the 32 reference patients. We compute both goals
# with the torch model itself:

# %%
with torch.no_grad():
    logit = model[:-1]
    goal_reference = (logit(patient) - logit(reference))[0, 0].item()
    goal_background = (logit(patient) - logit(background).mean(0))[0, 0].item()
print(f"f(x) - f(average patient) = {goal_reference:.4f}")
print(f"f(x) - mean f(references) = {goal_background:.4f}")
table.sum().round(4)

# %%
np.testing.assert_allclose(table["DeepLift"].sum(), goal_reference, rtol=1e-5)
np.testing.assert_allclose(table["IntegratedGradient"].sum(), goal_reference, rtol=1e-2)
np.testing.assert_allclose(table["SHAP"].sum(), goal_background, rtol=1e-4)

# %% [markdown]
# The gradient itself needs no reference. For a network of dense layers and ReLUs
# it is, within one activation pattern, the product of the weight matrices of the
# active units, which we can write down:

# %%
first, second = model[0], model[2]
active = (first(patient) > 0).float()[0]
by_hand = (second.weight[0] * active) @ first.weight            # d logit_0 / d x
np.testing.assert_allclose(table["Gradient"], by_hand.detach().numpy(), rtol=1e-5, atol=1e-7)

# %% [markdown]
# ## The picture for one patient
#
# `plot()` draws one bar per feature; the box gives the prediction (a probability,
# after the softmax), the sum of the values and the goal they should add up to.

# %%
figure = runs["DeepLift"].plot(data_idx=0)
figure.save(figures / "tabular_one_patient.png", width=10, height=4, dpi=80, verbose=False)
figure

# %% [markdown]
# ## Global importance
#
# Explaining every test patient and summarising |value| per feature tells which
# measurements the model leans on overall. `plot_global()` draws the distribution
# of |DeepLift| over patients as box plots.

# %%
everyone = ins.run_deeplift(conv, x, x_ref=reference, output_idx=[0])
importance = pd.Series(np.abs(everyone.get_result()[..., 0]).mean(0), index=names)
print(importance.sort_values(ascending=False).head(8).round(3))
figure = everyone.plot_global()
figure.save(figures / "tabular_global.png", width=10, height=4, dpi=80, verbose=False)
figure
