"""Model-agnostic methods: SHAP (permutation sampling) and LIME (a local linear surrogate).

Both only evaluate the model, never differentiate it. Their features are the
entries of every input layer, ``p`` in all, flattened channels first; a feature
is *present* with the sample's value or *absent* with a reference value taken
from a row of ``data_ref`` (the background). Rows (sample x coalition) are
stacked into chunks of at most ``batch_size``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from innsight._validation import describe, is_number
from innsight.converter import Converter
from innsight.methods.base import InterpretingMethod, Setup, check_positive_int, resolve_device
from innsight.methods.data import prepare_like
from innsight.methods.engine import evaluate, target_values
from innsight.methods.opaque_model import OpaqueModel, PredFun


def _flat(inputs: list[Tensor]) -> Tensor:
    """Input layers ``(n, *dim_k)`` as one feature matrix ``(n, p)``."""
    return torch.cat([x.flatten(1) for x in inputs], dim=1)


def _unflat(features: Tensor, like: list[Tensor]) -> list[Tensor]:
    """``(rows, p, *rest)`` back into one tensor ``(rows, *dim_k, *rest)`` per input layer."""
    sizes = [math.prod(x.shape[1:]) for x in like]
    rest = features.shape[2:]
    return [part.reshape(part.shape[0], *x.shape[1:], *rest)
            for part, x in zip(features.split(sizes, dim=1), like)]


def _outputs(setup: Setup, rows: Tensor) -> Tensor:
    """The explained outputs ``(rows, n_targets)`` at feature rows ``(rows, p)``."""
    outputs = evaluate(setup.model_fn, _unflat(rows, setup.data), setup.batch_size)
    return target_values(outputs, setup.targets)


def _background(setup: Setup, data_ref: Any) -> Tensor:
    """The background ``data_ref`` as features ``(n_ref, p)``; it is required."""
    if data_ref is None:
        raise ValueError("`data_ref` must hold reference samples (the background that replaces "
                         "absent features), in the layout of `data`; got None.")
    return _flat(prepare_like(data_ref, setup.data, setup.channels_first, "data_ref"))


def explain_shap(setup: Setup, background: Tensor, n: int) -> tuple[list[Tensor], Tensor]:
    """Shapley values by permutation sampling, ``(n_data, *dim, n_targets)`` per input
    layer, and their goal ``f(x) - mean f(ref)`` over the references used.

    Permutation ``k`` walks from reference ``ref(k)`` to the sample, switching
    features to the sample's value in its order; each step's output change is
    that feature's contribution, so every walk sums to ``f(x) - f(ref(k))``.
    Odd permutations reverse the one before (antithetic pairs, which cancel
    much of the noise); a pair shares its reference. References cycle through
    a shuffled background, so ``n`` a multiple of twice its size uses every
    reference equally often.
    """
    x = _flat(setup.data)
    n_data, p = x.shape
    device, generator = x.device, setup.generator
    ranks = torch.empty(n, p, dtype=torch.long, device=device)  # ranks[k, j]: step of feature j
    for k in range(0, n, 2):
        ranks[k] = torch.randperm(p, generator=generator, device=generator.device).to(device)
        if k + 1 < n:
            ranks[k + 1] = p - 1 - ranks[k]
    order = ranks.argsort(dim=1)  # order[k, s]: the feature switched at step s + 1
    shuffled = torch.randperm(background.shape[0], generator=generator,
                              device=generator.device).to(device)
    ref_of = shuffled[(torch.arange(n, device=device) // 2) % background.shape[0]]

    steps = p + 1  # rows per walk: the reference, then one more feature at a time
    n_rows = n_data * n * steps
    chunk = setup.batch_size
    phi = x.new_zeros(n_data, p, len(setup.targets))
    previous = None  # the output of the row before the chunk
    for start in tqdm(range(0, n_rows, chunk), disable=not setup.verbose, desc="SHAP", leave=False):
        row = torch.arange(start, min(start + chunk, n_rows), device=device)
        sample, walk, step = row // (n * steps), (row // steps) % n, row % steps
        present = ranks[walk] < step[:, None]
        out = _outputs(setup, torch.where(present, x[sample], background[ref_of[walk]]))
        before = out.roll(1, dims=0)
        if previous is not None:
            before[0] = previous
        previous = out[-1]
        moved = step > 0
        feature = order[walk[moved], step[moved] - 1]
        phi.index_put_((sample[moved], feature), out[moved] - before[moved], accumulate=True)
    f_refs = _outputs(setup, background[ref_of])  # (n, n_targets)
    goal = setup.f_data - f_refs.mean(dim=0, keepdim=True)
    return _unflat(phi / n, setup.data), goal


def explain_lime(setup: Setup, background: Tensor, n: int, kernel_width: float,
                 alpha: float) -> list[Tensor]:
    """LIME weights ``(n_data, *dim, n_targets)`` per input layer.

    Per sample, ``n`` coalitions: the first has every feature present, the others
    each feature present with probability 1/2; absent features take the values
    of one background row drawn per coalition. A linear model with intercept is
    fitted to the outputs on the presence indicators by ridge regression
    (penalty ``alpha``, intercept free), each coalition weighted by
    ``exp(-d^2 / kernel_width^2)`` with ``d^2`` its number of absent features.
    """
    x = _flat(setup.data)
    n_data, p = x.shape
    device, generator = x.device, setup.generator
    per_chunk = max(1, setup.batch_size // n)  # samples whose coalitions run together
    weights_out = []
    penalty = math.sqrt(alpha) * torch.eye(p + 1, dtype=x.dtype, device=device)[1:]
    for start in tqdm(range(0, n_data, per_chunk), disable=not setup.verbose, desc="LIME",
                      leave=False):
        rows = min(per_chunk, n_data - start)
        present = torch.rand(rows, n, p, generator=generator, device=generator.device).to(device) < 0.5
        present[:, 0] = True
        draw = torch.randint(background.shape[0], (rows, n), generator=generator,
                             device=generator.device).to(device)
        inputs = torch.where(present, x[start:start + rows, None], background[draw])
        out = _outputs(setup, inputs.reshape(rows * n, p)).reshape(rows, n, -1)
        absent = (~present).sum(dim=2, dtype=x.dtype)  # (rows, n)
        root_w = torch.exp(-absent / kernel_width**2).sqrt()[..., None]
        design = torch.cat([torch.ones_like(absent)[..., None], present.to(x.dtype)], dim=2)
        # weighted least squares with ridge rows appended: [sqrt(w) A; sqrt(alpha) I'] b = [sqrt(w) y; 0]
        lhs = torch.cat([root_w * design, penalty.expand(rows, p, p + 1)], dim=1)
        rhs = torch.cat([root_w * out, out.new_zeros(rows, p, out.shape[2])], dim=1)
        solution = torch.linalg.lstsq(lhs.cpu(), rhs.cpu()).solution.to(device)
        weights_out.append(solution[:, 1:])  # drop the intercept: (rows, p, n_targets)
    return _unflat(torch.cat(weights_out), setup.data)


class AgnosticMethod(InterpretingMethod):
    """Base of LIME and SHAP: ``model`` is a Converter, or any model explained through
    ``pred_fun(model, x)`` (see :mod:`innsight.methods.opaque_model`).

    Parameters
    ----------
    model
        A :class:`~innsight.converter.Converter`, a torch ``nn.Module``, a Keras
        model, a scikit-learn estimator (``predict_proba``, else ``predict``), or
        any object together with ``pred_fun``.
    pred_fun : callable, optional
        ``pred_fun(model, x) -> (rows, n_out)`` predictions, ``x`` in the layout
        of ``data`` (a list for several inputs). Not used with a Converter.
    output_names : list of str, optional
        Labels of the predictions of a model that is no Converter (default ``Y1..``).

    A model that is no Converter is explained through its predictions as they
    are: ``ignore_last_act`` does not apply to it (write ``pred_fun`` to return
    logits where they are wanted), and its device is the CPU unless ``device``
    says otherwise (a torch module's own device for torch modules).
    """

    def __init__(self, model: Any, data: Any, *, pred_fun: PredFun | None = None,
                 output_names: Any = None, **args: Any) -> None:
        self._pred_fun, self._output_names = pred_fun, output_names
        if isinstance(model, Converter) and (pred_fun is not None or output_names is not None):
            raise ValueError("`pred_fun` and `output_names` are for models that are no Converter; "
                             "a Converter predicts with its graph and has its own output names.")
        super().__init__(model, data, **args)

    def _graph(self, converter: Any, data: Any, channels_first: bool, dtype: torch.dtype,
               device: Any) -> Any:
        if isinstance(converter, Converter):
            return super()._graph(converter, data, channels_first, dtype, device)
        param = next(converter.parameters(), None) if isinstance(converter, torch.nn.Module) else None
        default = param.device if param is not None else torch.device("cpu")
        return OpaqueModel(converter, self._pred_fun, data, channels_first, dtype,
                           resolve_device(device, default), self._output_names)


class SHAP(AgnosticMethod):
    """Shapley values by permutation sampling (Štrumbelj and Kononenko 2014).

    Parameters
    ----------
    data_ref
        The background, in the layout of ``data``: absent features take the
        values of one of its rows.
    n : int
        Permutations per sample; each costs ``p + 1`` model evaluations for ``p``
        input entries. Pairs of a permutation and its reverse share a reference.

    The values of a sample sum exactly to ``f(x) - mean f(ref)`` over the
    references used (all of ``data_ref`` equally often when ``n`` is a multiple
    of twice its size). ``model``, ``pred_fun``, ``output_names``: see
    :class:`AgnosticMethod`; further parameters: see :class:`InterpretingMethod`.
    """

    method_name = "SHAP"

    def __init__(self, model: Any, data: Any, data_ref: Any, *, n: int = 50,
                 **shared: Any) -> None:
        super().__init__(model, data, data_ref=data_ref, n=n, **shared)

    def _explain(self, setup: Setup, data_ref: Any, n: Any) -> tuple[list[Tensor], Tensor]:
        n = check_positive_int(n, "n")
        return explain_shap(setup, _background(setup, data_ref), n)


class LIME(AgnosticMethod):
    """Local linear surrogates (Ribeiro et al. 2016) on presence indicators of the input entries.

    Parameters
    ----------
    data_ref
        The background, in the layout of ``data``: absent features take the
        values of one of its rows, drawn per coalition.
    n : int
        Coalitions (model evaluations) per sample; the first is the sample itself.
        Use more than the number of input entries.
    kernel_width : float
        Width of the proximity kernel ``exp(-d^2 / kernel_width^2)``, ``d^2`` the
        number of absent features; default ``0.75 * sqrt(p)``.
    alpha : float
        Ridge penalty of the surrogate's coefficients (not of its intercept).

    The values are the surrogate's coefficients: how much the output changes when
    a feature takes the sample's value instead of the background's. For a linear
    model and one background row they are exactly ``w * (x - ref)``. LIME has no
    decomposition goal. ``model``, ``pred_fun``, ``output_names``: see
    :class:`AgnosticMethod`; further parameters: see :class:`InterpretingMethod`.
    """

    method_name = "LIME"

    def __init__(self, model: Any, data: Any, data_ref: Any, *, n: int = 1000,
                 kernel_width: float | None = None, alpha: float = 1e-6, **shared: Any) -> None:
        super().__init__(model, data, data_ref=data_ref, n=n, kernel_width=kernel_width,
                         alpha=alpha, **shared)

    def _explain(self, setup: Setup, data_ref: Any, n: Any, kernel_width: Any,
                 alpha: Any) -> tuple[list[Tensor], None]:
        n = check_positive_int(n, "n")
        p = sum(math.prod(x.shape[1:]) for x in setup.data)
        if kernel_width is None:
            kernel_width = 0.75 * math.sqrt(p)
        if not is_number(kernel_width) or not kernel_width > 0:
            raise ValueError(f"`kernel_width` must be a positive number or None, got {describe(kernel_width)}.")
        if not is_number(alpha) or not alpha >= 0:
            raise ValueError(f"`alpha` must be a number >= 0, got {describe(alpha)}.")
        return explain_lime(setup, _background(setup, data_ref), n, float(kernel_width),
                            float(alpha)), None


def run_shap(model: Any, data: Any, data_ref: Any, **args: Any) -> SHAP:
    """Run :class:`SHAP`; the same arguments."""
    return SHAP(model, data, data_ref, **args)


def run_lime(model: Any, data: Any, data_ref: Any, **args: Any) -> LIME:
    """Run :class:`LIME`; the same arguments."""
    return LIME(model, data, data_ref, **args)
