"""One method on several converted models, side by side: ``compare_models``.

The use: the same architecture trained or exported in different frameworks
(torch, Keras, ONNX, scikit-learn), or two versions of one model. Every model
gets the same data, the same method arguments and the same random seed, so
stochastic methods draw the same noise; the result holds each model's
:class:`~innsight.methods.result.Result`, a long data frame with a ``model``
column, the pairwise largest differences, and plots that draw the models'
explanations next to each other (:mod:`innsight.plotting` draws a dict of named
results side by side).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from innsight._validation import describe
from innsight.converter import Converter
from innsight.methods.base import METHODS, InterpretingMethod
from innsight.methods.result import RESULT_TYPES, Result

#: The seed every model gets unless the caller passes one (same noise for all).
DEFAULT_SEED = 0


def compare_models(
    converters: Mapping[str, Converter] | Sequence[Converter],
    data: Any,
    method: str | type[InterpretingMethod] = "Gradient",
    **method_args: Any,
) -> Comparison:
    """Run one method with the same data and arguments on several converted models.

    Parameters
    ----------
    converters : dict of str to Converter, or list of Converter
        The models, e.g. ``{"torch": ins.convert(net, input_dim=[4]), "keras":
        ins.convert(keras_net), "onnx": ins.convert("net.onnx")}``; a list is
        named ``model_1``, ``model_2``, ... All must have the same input and
        output shapes.
    data
        As for every method (see :class:`InterpretingMethod`); the same data for
        every model. With ``channels_first=False`` it is channels last for all.
    method : str or InterpretingMethod subclass
        A method class (``ins.Gradient``, ``ins.LRP``, ...) or its name
        (``"Gradient"``, ``"IntegratedGradient"``, ``"LRP"``, ...; case does not
        matter). Any subclass of :class:`InterpretingMethod` that sets its own
        ``method_name`` works (it is registered in ``METHODS``).
    **method_args
        The method's own and shared arguments (``output_idx``, ``n``,
        ``rule_name``, ``dtype``, ...), passed to every model alike. ``seed``
        defaults to 0 here, so that stochastic methods use the same noise and
        reference draws for every model.

    Returns
    -------
    Comparison
        ``results`` (per model), ``get_result()`` (per model, or one long data
        frame with a ``model`` column), ``differences()`` (pairwise largest
        differences of values and predictions), ``plot()`` and
        ``plot_global()`` (models side by side).

    Examples
    --------
    >>> cmp = ins.compare_models({"torch": conv_torch, "onnx": conv_onnx}, x,
    ...                          method="IntegratedGradient", n=20)
    >>> cmp.differences()             # doctest: +SKIP
    >>> cmp.plot(data_idx=0)          # doctest: +SKIP
    """
    named = _named_converters(converters)
    method_cls = resolve_method(method)
    _check_same_shapes(named)
    method_args.setdefault("seed", DEFAULT_SEED)
    results = {name: method_cls(conv, data, **method_args) for name, conv in named.items()}
    return Comparison(method_cls.method_name, results)


def resolve_method(method: Any) -> type[InterpretingMethod]:
    """A registered method class (see :data:`~innsight.methods.base.METHODS`), given as
    the class or by its class or method name (case does not matter)."""
    if isinstance(method, type) and method in METHODS.values():
        return method
    known = {name.lower(): cls for cls in METHODS.values()
             for name in (cls.__name__, cls.method_name)}
    if isinstance(method, str) and method.lower() in known:
        return known[method.lower()]
    names = sorted(cls.__name__ for cls in METHODS.values())
    raise ValueError(
        f"`method` must be an interpretation method class or the name of one of {names}, "
        f"got {describe(method)}."
    )


def _named_converters(converters: Any) -> dict[str, Converter]:
    if isinstance(converters, Mapping):
        named = dict(converters)
        bad_names = [n for n in named if not isinstance(n, str)]
        if bad_names:
            raise TypeError(
                f"`converters` must be keyed by model names (str), got keys {bad_names!r}.")
    elif isinstance(converters, Sequence) and not isinstance(converters, str):
        named = {f"model_{i + 1}": conv for i, conv in enumerate(converters)}
    else:
        raise TypeError(
            "`converters` must be a dict of names to Converters or a list of Converters, "
            f"got {describe(converters)}."
        )
    if len(named) < 2:
        raise ValueError(
            f"`converters` must hold at least two models to compare, got {len(named)}.")
    wrong = {name: describe(c) for name, c in named.items() if not isinstance(c, Converter)}
    if wrong:
        raise TypeError(
            "`converters` must hold innsight Converters (from ins.convert(model, ...)), "
            f"got {wrong}."
        )
    return named


def _check_same_shapes(named: dict[str, Converter]) -> None:
    shapes = {name: ([list(d) for d in c.input_dim], [list(d) for d in c.output_dim])
              for name, c in named.items()}
    first = next(iter(shapes.values()))
    if any(s != first for s in shapes.values()):
        listing = "; ".join(f"{name}: inputs {i}, outputs {o}" for name, (i, o) in shapes.items())
        raise ValueError(
            "`converters` must share their input and output shapes (channels first) to be "
            f"compared, got {listing}."
        )


@dataclass
class Comparison:
    """The results of one method on several models; see :func:`compare_models`.

    Attributes
    ----------
    method : str
        The method's name.
    results : dict of str to Result
        Each model's result, in the order the models were given.
    """

    method: str
    results: dict[str, Result]

    @property
    def models(self) -> list[str]:
        """The model names, in order."""
        return list(self.results)

    def get_result(self, type: str = "array") -> Any:
        """Each model's values: a dict of model name to what ``Result.get_result(type)``
        returns for ``"array"`` and ``"torch_tensor"``; for ``"data.frame"`` one long
        pandas frame, the models' frames stacked with a ``model`` column in front."""
        if type not in RESULT_TYPES:
            raise ValueError(f"`type` must be one of {list(RESULT_TYPES)}, got {type!r}.")
        if type != "data.frame":
            return {name: res.get_result(type) for name, res in self.results.items()}
        frames = [res.get_result("data.frame").assign(model=name)
                  for name, res in self.results.items()]
        frame = pd.concat(frames, ignore_index=True)
        frame["model"] = pd.Categorical(frame["model"], categories=self.models)
        return frame[["model", *[c for c in frame.columns if c != "model"]]]

    def differences(self) -> pd.DataFrame:
        """For each pair of models: the largest absolute difference of their values
        (``max_abs_diff``), that difference relative to the pair's largest magnitude
        (``max_rel_diff``) and the largest absolute difference of their predictions
        (``max_pred_diff``)."""
        rows = []
        for a, b in itertools.combinations(self.models, 2):
            values_a = _ravel_nested(self.results[a].values)
            values_b = _ravel_nested(self.results[b].values)
            preds_a, preds_b = _ravel_nested(self.results[a].preds), _ravel_nested(self.results[b].preds)
            diff = float(np.abs(values_a - values_b).max(initial=0.0))
            scale = float(max(np.abs(values_a).max(initial=0.0), np.abs(values_b).max(initial=0.0)))
            rows.append({"model_a": a, "model_b": b, "max_abs_diff": diff,
                         "max_rel_diff": diff / scale if scale > 0 else 0.0,
                         "max_pred_diff": float(np.abs(preds_a - preds_b).max(initial=0.0))})
        return pd.DataFrame(rows, columns=["model_a", "model_b", "max_abs_diff", "max_rel_diff",
                                           "max_pred_diff"])

    def plot(self, data_idx: Any = 0, output_idx: Any = None, output_label: Any = None,
             aggr_channels: Any = "sum", as_plotly: bool = False, same_scale: bool = True,
             show_preds: bool = True, show_input: bool = False, normalize: bool = False,
             top_k: int | None = None, layout: str = "facets",
             sequence_axis: int | None = None) -> Any:
        """Each model's explanation of the samples ``data_idx``, side by side: one facet
        column per output node and model (``"Y1 (torch)"``, ``"Y1 (onnx)"``, ...).

        Arguments as in :meth:`Result.plot`; ``same_scale`` defaults to ``True`` so
        that the models' values are drawn on one scale (``normalize=True`` scales each
        facet to its own largest magnitude instead). Many output nodes wrap into rows
        that each hold all models of a node. Returns a plotnine object
        or, with ``as_plotly=True``, a plotly ``Figure``.
        """
        from innsight import plotting  # on first use: import innsight loads no plotting library

        return plotting.plot(self.results, data_idx=data_idx, output_idx=output_idx,
                             output_label=output_label, aggr_channels=aggr_channels,
                             as_plotly=as_plotly, same_scale=same_scale, show_preds=show_preds,
                             show_input=show_input, normalize=normalize, top_k=top_k,
                             layout=layout, sequence_axis=sequence_axis)

    def plot_global(self, output_idx: Any = None, output_label: Any = None,
                    data_idx: Any = "all", aggr_channels: Any = "sum",
                    preprocess_fun: Any = abs, as_plotly: bool = False,
                    normalize: bool = False, top_k: int | None = None,
                    ref_data_idx: int | None = None) -> Any:
        """Each model's explanations summarised over samples (as :meth:`Result.plot_global`),
        side by side: one facet column per output node and model."""
        from innsight import plotting  # on first use: import innsight loads no plotting library

        return plotting.plot_global(self.results, output_idx=output_idx,
                                    output_label=output_label, data_idx=data_idx,
                                    aggr_channels=aggr_channels, preprocess_fun=preprocess_fun,
                                    as_plotly=as_plotly, normalize=normalize, top_k=top_k,
                                    ref_data_idx=ref_data_idx)

    def __str__(self) -> str:
        lines = [f"{self.method} on {len(self.results)} models: {', '.join(self.models)}"]
        for row in self.differences().itertuples():
            lines.append(f"  {row.model_a} vs {row.model_b}: max |difference| of values "
                         f"{row.max_abs_diff:.3g} ({row.max_rel_diff:.3g} relative), "
                         f"of predictions {row.max_pred_diff:.3g}")
        return "\n".join(lines)

    __repr__ = __str__


def _ravel_nested(nested: Any) -> np.ndarray:
    """Every tensor in nested lists, raveled and concatenated into one float64 vector
    (``None`` entries skipped)."""
    if nested is None:
        return np.zeros(0)
    if isinstance(nested, torch.Tensor):
        return nested.detach().cpu().double().numpy().ravel()
    parts = [_ravel_nested(item) for item in nested]
    return np.concatenate(parts) if parts else np.zeros(0)

