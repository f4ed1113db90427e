# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # One network, three frameworks: torch, Keras and ONNX side by side
#
# The same digits CNN exists in torch, in Keras (the same weights, channels last)
# and as an ONNX file. innsight converts each into the same kind of graph, so an
# explanation must not depend on where the network came from. `compare_models`
# runs one method on all three and tells how far apart they are.
#
# **Import order.** On Linux, loading triton (torch's GPU compiler; torchvision and
# ONNX conversion load it) after TensorFlow crashes Python with a segmentation
# fault: both bring their own LLVM. `import innsight` prevents it for the rest of
# the session, whatever comes next. Without innsight, import torch and
# torchvision before Keras or TensorFlow.

# %%
import warnings
from pathlib import Path

import numpy as np
import onnxruntime
import torch

import innsight as ins                 # before Keras: see above
from innsight.demo.tasks import digits_task

figures = Path("figures")
figures.mkdir(exist_ok=True)

# %% [markdown]
# ## The network in three frameworks
#
# innsight's demo trains the CNN in torch on scikit-learn's digits (a few seconds)
# and copies its weights into a Keras `Sequential`: convolution kernels permuted
# from `(out, in, h, w)` to `(h, w, in, out)`, and the dense layer's rows reordered
# because Keras flattens `(h, w, c)` where torch flattens `(c, h, w)`. The torch
# model also goes to ONNX.

# %%
task = digits_task()
x = task.x_test[:64]                                   # (64, 1, 8, 8), channels first
# the TorchScript exporter (dynamo=False) needs no onnxscript; onnx2torch, which reads the
# file for innsight, knows AveragePool up to opset 17; it warns that it is deprecated
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    torch.onnx.export(task.torch_model, (torch.from_numpy(x[:1]),), "digits.onnx", dynamo=False,
                      opset_version=17, input_names=["digit"], output_names=["probabilities"],
                      dynamic_axes={"digit": {0: "batch"}, "probabilities": {0: "batch"}})

# %% [markdown]
# Before explaining anything, the three must predict the same. Each runs in its own
# framework here: torch, Keras on channels-last images, and onnxruntime.

# %%
with torch.no_grad():
    p_torch = task.torch_model(torch.from_numpy(x)).numpy()
p_keras = task.keras_model(task.keras_layout(x), training=False).numpy()
p_onnx = onnxruntime.InferenceSession("digits.onnx").run(None, {"digit": x})[0]
print("largest difference, Keras vs torch:", np.abs(p_keras - p_torch).max())
print("largest difference, ONNX vs torch: ", np.abs(p_onnx - p_torch).max())
np.testing.assert_allclose(p_keras, p_torch, atol=1e-5)
np.testing.assert_allclose(p_onnx, p_torch, atol=1e-5)

# %% [markdown]
# ## Convert all three
#
# A torch module needs `input_dim` (channels first); a Keras model and an ONNX file
# carry their shapes. Inside innsight all three are channels first, so the same
# data `x` goes to each. The Keras graph has one layer more: a permutation before
# the flatten, because Keras flattens channels last.

# %%
names = {"output_names": [task.class_names], "dtype": "double"}   # outputs "0".."9"
converted = {
    "torch": ins.convert(task.torch_model, input_dim=[1, 8, 8], **names),
    "keras": ins.convert(task.keras_model, **names),
    "onnx": ins.convert("digits.onnx", **names),
}
for name, conv in converted.items():
    print(f"{name:5s}", [type(layer).__name__ for layer in conv.model.layers])

# %% [markdown]
# ## One method, three models
#
# In double precision the three explanations agree to rounding error: the
# conversions yield the same graph. (In single precision they differ by about
# 1e-6, the order in which each framework sums.)

# %%
comparisons = {method: ins.compare_models(converted, x, method=method, dtype="double", **args)
               for method, args in [("IntegratedGradient", {"n": 50}),
                                    ("LRP", {"rule_name": "epsilon"}), ("DeepLift", {})]}
for method, cmp in comparisons.items():
    print(method)
    print(cmp.differences().round(16).to_string(index=False))

# %%
for cmp in comparisons.values():
    assert cmp.differences()["max_abs_diff"].max() < 1e-10

# %% [markdown]
# The figure draws one digit's IntegratedGradient map for its class in each
# framework, on one colour scale.

# %%
label = int(task.y_test[0])
figure = comparisons["IntegratedGradient"].plot(data_idx=0, output_idx=[label])
figure.save(figures / "frameworks.png", width=9, height=3.5, dpi=80, verbose=False)
figure

# %% [markdown]
# The long data frame of a comparison has a `model` column, ready for any summary:
# here the mean |value| per model, equal in all three.

# %%
frame = comparisons["DeepLift"].get_result("data.frame")
frame.assign(magnitude=frame["value"].abs()).groupby("model")["magnitude"].mean()
