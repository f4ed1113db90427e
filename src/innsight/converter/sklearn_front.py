"""scikit-learn front-end: a fitted ``MLPClassifier`` or ``MLPRegressor`` as a model dict.

The network is a chain of ``Dense`` layers (``coefs_``, ``intercepts_``), each
hidden one followed by the estimator's ``activation`` (identity, logistic,
tanh, relu) and the last one by its ``out_activation_``:

- multi-class classifier: ``softmax`` over one output node per class; the
  output equals ``predict_proba``;
- binary classifier: one ``sigmoid`` node, the probability of the positive
  class ``classes_[1]``, and labelled so; it equals ``predict_proba(X)[:, 1]``
  (the other column is one minus it);
- multilabel classifier: one ``sigmoid`` node per label, equal to ``predict_proba``;
- regressor: no output activation; the output equals ``predict`` (as a column
  for one target).

Input names come from ``feature_names_in_`` (the estimator was fitted on a
pandas DataFrame), output names from ``classes_``; regressors keep ``Y1..``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from innsight._validation import as_dim_list

EXTRA_HINT = "pip install innsight[sklearn]"
ESTIMATORS = ("MLPClassifier", "MLPRegressor")

#: scikit-learn's activation names -> the layers' activation names.
ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu",
               "softmax": "softmax"}


def accepts_sklearn(model: Any) -> bool:
    """An ``MLPClassifier`` or ``MLPRegressor`` of scikit-learn (or a subclass)."""
    return any(cls.__name__ in ESTIMATORS and cls.__module__.startswith("sklearn.")
               for cls in type(model).__mro__)


def describe_sklearn(
    model: Any, input_dim: Any
) -> tuple[dict[str, Any], Callable[[list[Tensor]], list[Tensor]]]:
    """The model dict of a fitted MLP and a function running its ``predict_proba``
    (classifiers) or ``predict`` (regressors)."""
    try:
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted
    except ImportError as err:  # the estimator came from elsewhere (a pickle)
        raise ImportError(
            f"Converting scikit-learn models needs scikit-learn: {EXTRA_HINT} ({err}).") from err
    name = type(model).__name__
    try:
        check_is_fitted(model, "coefs_")
    except NotFittedError as err:
        raise ValueError(
            f"`model` ({name}) is not fitted; call model.fit(X, y) before converting.") from err
    n_features = int(model.n_features_in_)
    if input_dim is not None and as_dim_list(input_dim, "input_dim") != [(n_features,)]:
        raise ValueError(f"`input_dim` must be [{n_features}] for this {name} (its "
                         f"n_features_in_), got {input_dim!r}.")
    if model.activation not in ACTIVATIONS or model.out_activation_ not in ACTIVATIONS:
        raise ValueError(f"`model` ({name}) uses the activation {model.activation!r} / output "
                         f"activation {model.out_activation_!r}; supported: {sorted(ACTIVATIONS)}.")

    layers: list[dict[str, Any]] = []
    n_layers = len(model.coefs_)
    for i, (weight, bias) in enumerate(zip(model.coefs_, model.intercepts_), start=1):
        last = i == n_layers
        dense = "output" if last else f"hidden_{i}"
        layers.append({"type": "Dense", "name": dense, "weight": np.asarray(weight).T,
                       "bias": np.asarray(bias)})
        act = model.out_activation_ if last else model.activation
        if act != "identity" or not last:  # a regressor's output is its last dense layer
            params = {"axis": 0} if act == "softmax" else {}
            layers.append({"type": "Activation", "name": f"{dense}_{act}",
                           "act_name": ACTIVATIONS[act], **params})

    description: dict[str, Any] = {"input_dim": [[n_features]], "layers": layers}
    if hasattr(model, "feature_names_in_"):
        description["input_names"] = [[[str(f) for f in model.feature_names_in_]]]
    classes = getattr(model, "classes_", None)
    n_out = int(model.n_outputs_)
    binary = classes is not None and n_out == 1 and len(classes) == 2
    if classes is not None:
        labels = [str(c) for c in np.asarray(classes).tolist()]
        # binary: one node, the probability of the positive class classes_[1]
        description["output_names"] = [[labels[1:] if binary else labels]]

    def run_original(inputs: list[Tensor]) -> list[Tensor]:
        x = inputs[0].detach().cpu().double().numpy()
        if hasattr(model, "feature_names_in_"):
            import pandas as pd

            x = pd.DataFrame(x, columns=model.feature_names_in_)
        if classes is None:
            out = np.asarray(model.predict(x), dtype=np.float64).reshape(len(x), n_out)
        else:
            out = np.asarray(model.predict_proba(x), dtype=np.float64)
            out = out[:, 1:] if binary else out
        return [torch.from_numpy(out)]

    return description, run_original
