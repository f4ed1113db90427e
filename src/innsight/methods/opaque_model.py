"""A model known only by its predictions, for the model-agnostic methods (LIME, SHAP).

Any model goes: a torch ``nn.Module``, a Keras model, a scikit-learn estimator,
or anything with a ``pred_fun(model, x)`` that returns predictions. It stands
in for a :class:`~innsight.converter.ConvertedModel` with one output layer, the
flattened predictions; its input shapes come from the data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import warnings

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from innsight._torch_modules import any_training, eval_mode
from innsight._validation import describe
from innsight.converter.names import Names, check_names, default_names
from innsight.methods.data import channels_first_dim, is_array_like, to_user_layout

PredFun = Callable[[Any, Any], Any]


def default_pred_fun(model: Any) -> PredFun:
    """How to predict with ``model``: call a torch module or Keras model, or
    ``predict_proba`` / ``predict`` of an estimator; a TypeError otherwise."""
    if isinstance(model, nn.Module):
        return _torch_predict
    if type(model).__module__.split(".")[0] in ("keras", "tensorflow", "tf_keras"):
        return lambda m, x: np.asarray(m(x, training=False))
    for name in ("predict_proba", "predict"):
        if callable(getattr(model, name, None)):
            return lambda m, x, name=name: getattr(m, name)(_with_feature_names(m, x))
    raise TypeError(
        f"`model` must be an innsight Converter, a torch nn.Module, a Keras model or an "
        f"estimator with predict_proba/predict; for {describe(model)} pass "
        "`pred_fun(model, x)` that returns the predictions."
    )


def _with_feature_names(estimator: Any, x: Any) -> Any:
    """A table ``x`` as a DataFrame with the columns an estimator was fitted on (its
    ``feature_names_in_``), so that scikit-learn does not warn about missing names."""
    columns = getattr(estimator, "feature_names_in_", None)
    if columns is None or np.ndim(x) != 2 or np.shape(x)[1] != len(columns):
        return x
    return pd.DataFrame(x, columns=columns)


def _torch_predict(model: nn.Module, x: Any) -> Tensor:
    """A torch module in eval mode on inputs in its parameters' dtype and device."""
    param = next(model.parameters(), None)
    inputs = x if isinstance(x, list) else [x]
    if param is not None:
        inputs = [t.to(dtype=param.dtype, device=param.device) for t in inputs]
    with eval_mode(model), torch.no_grad():
        return model(*inputs)


class OpaqueModel:
    """Predictions ``(rows, n_out)`` of ``model`` through ``pred_fun``, in the interface
    of a converted model with one output layer (node 0) that the methods use.

    ``pred_fun(model, x)`` receives ``x`` in the layout of the user's data
    (channels last when ``channels_first=False``): torch tensors for a torch
    module, numpy arrays otherwise; one array, or a list with one per input.
    """

    def __init__(self, model: Any, pred_fun: PredFun | None, data: Any, channels_first: bool,
                 dtype: torch.dtype, device: torch.device,
                 output_names: Any) -> None:
        if pred_fun is not None and not callable(pred_fun):
            raise TypeError(f"`pred_fun` must be a callable (model, x) -> predictions or None, "
                            f"got {describe(pred_fun)}.")
        self.model = model
        self.pred_fun = pred_fun or default_pred_fun(model)
        self.as_tensors = isinstance(model, nn.Module)
        if self.as_tensors and self.pred_fun is _torch_predict and any_training(model):
            warnings.warn(f"{type(model).__name__} is in training mode; it is explained in eval "
                          "mode (dropout off, batch norm with its running statistics).",
                          UserWarning, stacklevel=5)
        self.channels_first = channels_first
        self.dtype, self.device = dtype, device
        parts = list(data) if isinstance(data, (list, tuple)) else [data]
        if not all(is_array_like(p) for p in parts):
            raise TypeError(f"`data` must be an array, tensor or DataFrame, or a list of them, "
                            f"got {describe(data)}.")
        if any(len(np.shape(p)) < 2 for p in parts):
            raise ValueError("`data` for a model that is no Converter needs a batch axis (the "
                             "input shapes are read from it), got shapes "
                             f"{[tuple(np.shape(p)) for p in parts]}.")
        self.input_dim = [channels_first_dim(np.shape(p)[1:], channels_first) for p in parts]
        self.input_names: list[Names] = [default_names(d) for d in self.input_dim]
        # one sample, as the user gave it, tells the number of outputs
        first = [p[:1] if isinstance(p, Tensor) else torch.tensor(np.asarray(p)[:1]) for p in parts]
        n_out = self._predict([self._as_model_input(x.to(dtype=dtype, device=device)) for x in first]).shape[1]
        self.output_dim = [(n_out,)]
        self.output_names: list[Names] = (
            check_names(output_names, self.output_dim, "output_names")
            if output_names is not None else [default_names((n_out,), output=True)]
        )
        self.output_nodes = [0]

    def explained_nodes(self, ignore_last_act: bool) -> list[int]:
        """The one output layer: the predictions as ``pred_fun`` returns them."""
        return [0]

    #: Predictions depend on the inputs alone (``pred_fun`` may close over anything else).
    per_sample = False

    def layer_outputs(self, output_layer: Any) -> Any:
        raise ValueError(f"`output_layer` needs a Converter (or a torch module for the direct "
                         f"torch methods); a model known by its predictions has no layers to "
                         f"explain, got output_layer={describe(output_layer)}.")

    def run_nodes(self, inputs: list[Tensor], nodes: list[int],
                  sample: Tensor | None = None) -> list[Tensor]:
        """The predictions ``(rows, n_out)`` for channels-first ``inputs``, once per node
        asked (``sample``, the data sample of each row, is not needed)."""
        out = self._predict([self._as_model_input(to_user_layout(x, self.channels_first))
                             for x in inputs])
        return [out for _ in nodes]

    def _as_model_input(self, x: Tensor) -> Any:
        """Torch tensors for a torch module, numpy arrays for any other model."""
        return x if self.as_tensors else x.detach().cpu().numpy()

    def _predict(self, inputs: list[Any]) -> Tensor:
        out = self.pred_fun(self.model, inputs if len(inputs) > 1 else inputs[0])
        if isinstance(out, (list, tuple)):
            raise TypeError("`pred_fun` must return one array of predictions (rows, n_out), "
                            f"got a {type(out).__name__} of {len(out)}; pick one output in pred_fun.")
        try:
            out = out.detach() if isinstance(out, Tensor) else torch.from_numpy(np.array(out, dtype=float))
        except (TypeError, ValueError) as err:
            raise TypeError(f"`pred_fun` must return numeric predictions, got {describe(out)}: "
                            f"{err}") from err
        rows = inputs[0].shape[0]
        if out.ndim == 0 or out.shape[0] != rows:
            raise ValueError(f"`pred_fun` must return one row of predictions per input row "
                             f"({rows}), got shape {tuple(out.shape)}.")
        return out.reshape(rows, -1).to(dtype=self.dtype, device=self.device)

