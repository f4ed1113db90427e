"""Model-agnostic methods: SHAP (permutation sampling) and LIME (a local linear surrogate).

Both only evaluate the model, never differentiate it. Their players are the
entries of every input layer, ``p`` in all, flattened channels first, or groups
of them (``feature_groups``, e.g. image patches); a player is *present* with the
sample's values or *absent* with reference values taken from a row of
``data_ref`` (the background). A group's value is shared equally by its
entries, so that sums over entries stay sums over players. Rows (sample x
coalition) are stacked into chunks of at most ``batch_size``.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from innsight._validation import describe, is_number
from innsight.converter import Converter
from innsight.methods.base import (
    Explanation,
    InterpretingMethod,
    runner,
    Setup,
    check_positive_int,
    resolve_device,
)
from innsight.methods.data import prepare_like, to_channels_first, user_dim
from innsight.methods.engine import evaluate, joined, row_chunks, target_values
from innsight.methods.opaque_model import OpaqueModel, PredFun


def as_features(inputs: list[Tensor]) -> Tensor:
    """Input layers ``(n, *dim_k)`` as one feature matrix ``(n, p)`` (a view of a single
    contiguous input layer, no copy)."""
    return joined([x.flatten(1) for x in inputs], dim=1)


def from_features(features: Tensor, like: list[Tensor]) -> list[Tensor]:
    """``(rows, p, *rest)`` back into one tensor ``(rows, *dim_k, *rest)`` per input layer."""
    sizes = [math.prod(x.shape[1:]) for x in like]
    rest = features.shape[2:]
    return [part.reshape(part.shape[0], *x.shape[1:], *rest)
            for part, x in zip(features.split(sizes, dim=1), like)]


def _outputs(setup: Setup, rows: Tensor, sample: Tensor) -> Tensor:
    """The explained quantities ``(rows, n_targets)`` at feature rows ``(rows, p)`` made
    from the data samples ``sample`` ``(rows,)``."""
    return setup.outputs_at(from_features(rows, setup.data), sample)


def _background(setup: Setup, data_ref: Any) -> Tensor:
    """The background ``data_ref`` as features ``(n_ref, p)``; it is required."""
    if data_ref is None:
        raise ValueError("`data_ref` must hold reference samples (the background that replaces "
                         "absent features), in the layout of `data`; got None.")
    return as_features(prepare_like(data_ref, setup.data, setup.channels_first, "data_ref"))


@dataclass(frozen=True)
class Players:
    """Groups of input entries that are present or absent together."""

    group: Tensor  # (p,) the group of each flat input entry, 0..count-1
    size: Tensor  # (count,) entries per group

    @property
    def count(self) -> int:
        return self.size.shape[0]

    def spread(self, per_group: Tensor) -> Tensor:
        """Values ``(n, count, n_targets)`` shared equally by each group's entries:
        ``(n, p, n_targets)``."""
        return per_group[:, self.group] / self.size[self.group, None].to(per_group.dtype)


def feature_players(setup: Setup, feature_groups: Any) -> Players:
    """``feature_groups``: ``None`` (every input entry alone), or integer group ids
    broadcastable to a sample of the input layer, in the layout of ``data`` (a list
    with one per input layer for several); equal ids across layers form one group."""
    device = setup.data[0].device
    if feature_groups is None:
        p = sum(math.prod(x.shape[1:]) for x in setup.data)
        return Players(torch.arange(p, device=device), torch.ones(p, dtype=torch.long, device=device))
    several = len(setup.data) > 1
    if several and (not isinstance(feature_groups, (list, tuple)) or len(feature_groups) != len(setup.data)):
        raise ValueError(f"`feature_groups` must hold one array per input layer ({len(setup.data)}), "
                         f"got {describe(feature_groups)}.")
    ids = []
    for k, (groups, x) in enumerate(zip(feature_groups if several else [feature_groups], setup.data)):
        where = f"`feature_groups[{k}]`" if several else "`feature_groups`"
        array = np.asarray(groups.cpu() if isinstance(groups, Tensor) else groups)
        if not np.issubdtype(array.dtype, np.integer):
            raise TypeError(f"{where} must hold integer group ids, got {describe(groups)}.")
        shape = user_dim(tuple(x.shape[1:]), setup.channels_first)
        try:
            array = np.broadcast_to(array, shape)
        except ValueError as err:
            raise ValueError(f"{where} of shape {array.shape} does not broadcast to a sample of "
                             f"shape {shape} (the layout of `data`).") from err
        sample = torch.as_tensor(array.copy(), device=device)[None]
        ids.append((sample if setup.channels_first else to_channels_first(sample)).flatten())
    _, group = torch.unique(torch.cat(ids), return_inverse=True)
    return Players(group, torch.bincount(group))


#: More players than this make the agnostic methods slow and their values noisy ...
MANY_PLAYERS = 256
#: ... when samples x ``n`` x players reaches this (SHAP evaluates the model that many
#: times; LIME fits a regression with as many coefficients per sample).
SLOW_WORK = 10_000


def warn_if_slow(method: str, players: Players, n_data: int, n: int, grouped: bool) -> None:
    """Warn before the work starts when there are many players and much work, saying to
    group the input entries with ``feature_groups``."""
    g = players.count
    if g <= MANY_PLAYERS or n_data * n * g < SLOW_WORK:
        return
    what = "feature groups" if grouped else "input entries (every one a player)"
    evaluations = n_data * n * (g - 1) if method == "SHAP" else n_data * n
    warnings.warn(
        f"{method} of {n_data} sample(s) with n={n} and {g} players ({what}) is slow: about "
        f"{evaluations:,} model evaluations{'' if method == 'SHAP' else f' and a regression on {g} coefficients per sample'}, "
        "and its values are noisy. Group the entries into fewer players with `feature_groups`, "
        "e.g. 8x8 patches of an (H, W) image: rows, cols = np.indices((H, W)) // 8; "
        "feature_groups = rows * (W // 8 + 1) + cols.", UserWarning, stacklevel=_user_level())


def _user_level() -> int:
    """The ``stacklevel`` that makes a warning from the caller point to the first frame
    outside innsight (the user's call, however deep the method's frames are)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def explain_shap(setup: Setup, background: Tensor, n: int, players: Players) -> Explanation:
    """Shapley values by permutation sampling, ``(n_data, *dim, n_targets)`` per input
    layer, and their goal ``f(x) - mean f(ref)`` over the references used.

    Permutation ``k`` walks from reference ``ref(k)`` to the sample, switching
    players to the sample's values in its order; each step's output change is
    that player's contribution, so every walk sums to ``f(x) - f(ref(k))``.
    Odd permutations reverse the one before (antithetic pairs, which cancel
    much of the noise); a pair shares its reference. References cycle through
    a shuffled background, so ``n`` a multiple of twice its size uses every
    reference equally often. The walks' ends, ``f(ref)`` and ``f(x)``, are
    evaluated once, so a walk costs ``g - 1`` model evaluations.
    """
    x = as_features(setup.data)
    n_data, g = x.shape[0], players.count
    device, generator = x.device, setup.generator
    # ranks[k, j]: the step of player j in walk k; uniform random permutations (the
    # argsort of uniform draws), each odd one the reverse of the one before
    pairs = torch.rand(-(-n // 2), g, generator=generator, device=generator.device)
    forward = pairs.to(device).argsort(dim=1).argsort(dim=1)
    ranks = torch.stack([forward, g - 1 - forward], dim=1).flatten(0, 1)[:n]
    order = ranks.argsort(dim=1)  # order[k, s]: the player switched at step s + 1
    shuffled = torch.randperm(background.shape[0], generator=generator,
                              device=generator.device).to(device)
    ref_of = shuffled[(torch.arange(n, device=device) // 2) % background.shape[0]]
    # the explained outputs at each walk's reference; the targets of a sample pick from them
    at_refs = evaluate(setup.model_fn, from_features(background[ref_of], setup.data),
                       setup.batch_size)
    at_data = setup.outputs_at_data()

    inner = g - 1  # steps strictly between the reference and the sample
    n_walks = n_data * n
    per_chunk = max(1, setup.batch_size // max(inner, 1))
    phi = x.new_zeros(n_data, g, len(setup.targets))
    for rows in row_chunks(n_walks, per_chunk, setup.verbose, "SHAP"):
        walks = torch.arange(rows.start, rows.stop, device=device)
        sample, walk = walks // n, walks % n
        f_ref = target_values([out[walk] for out in at_refs], setup.targets, sample)
        path = torch.cat([f_ref[:, None], _walk_outputs(setup, x, background, players, ranks,
                                                        ref_of, sample, walk, inner),
                          at_data.explained[sample, None]], dim=1)  # (walks, g + 1, n_targets)
        phi.index_put_((sample[:, None].expand(-1, g), order[walk]), path.diff(dim=1),
                       accumulate=True)
    goal = at_data.explained - setup.targets.mean_values(at_refs, n_data)
    return Explanation(from_features(players.spread(phi / n), setup.data), goal, at_data)


def _walk_outputs(setup: Setup, x: Tensor, background: Tensor, players: Players, ranks: Tensor,
                  ref_of: Tensor, sample: Tensor, walk: Tensor, inner: int) -> Tensor:
    """The outputs ``(walks, inner, n_targets)`` at the inner steps ``1..inner`` of the
    given walks, built and evaluated ``batch_size`` rows at a time."""
    n_rows = len(walk) * inner
    out = x.new_empty(len(walk), inner, len(setup.targets))
    for rows in row_chunks(n_rows, setup.batch_size):
        row = torch.arange(rows.start, rows.stop, device=x.device)
        w, step = row // inner, row % inner + 1
        present = ranks[walk[w]][:, players.group] < step[:, None]  # (rows, p)
        inputs = torch.where(present, x[sample[w]], background[ref_of[walk[w]]])
        out.view(n_rows, -1)[rows] = _outputs(setup, inputs, sample[w])
    return out


def explain_lime(setup: Setup, background: Tensor, n: int, kernel_width: float,
                 alpha: float, players: Players) -> list[Tensor]:
    """LIME weights ``(n_data, *dim, n_targets)`` per input layer.

    Per sample, ``n`` coalitions: the first has every player present, the others
    each player present with probability 1/2; absent players take the values
    of one background row drawn per coalition. A linear model with intercept is
    fitted to the outputs on the presence indicators by ridge regression
    (penalty ``alpha``, intercept free), each coalition weighted by
    ``exp(-d^2 / kernel_width^2)`` with ``d^2`` its number of absent players.
    """
    x = as_features(setup.data)
    n_data, p, g = x.shape[0], x.shape[1], players.count
    device, generator = x.device, setup.generator
    per_chunk = max(1, setup.batch_size // n)  # samples whose coalitions run together
    weights_out = []
    penalty = math.sqrt(alpha) * torch.eye(g + 1, dtype=x.dtype, device=device)[1:]
    for samples in row_chunks(n_data, per_chunk, setup.verbose, "LIME"):
        rows = samples.stop - samples.start
        present = torch.rand(rows, n, g, generator=generator, device=generator.device).to(device) < 0.5
        present[:, 0] = True
        draw = torch.randint(background.shape[0], (rows, n), generator=generator,
                             device=generator.device).to(device)
        inputs = torch.where(present[..., players.group], x[samples, None], background[draw])
        sample = torch.arange(samples.start, samples.stop, device=device).repeat_interleave(n)
        out = _outputs(setup, inputs.reshape(rows * n, p), sample).reshape(rows, n, -1)
        absent = (~present).sum(dim=2, dtype=x.dtype)  # (rows, n)
        root_w = torch.exp(-absent / kernel_width**2).sqrt()[..., None]
        design = torch.cat([torch.ones_like(absent)[..., None], present.to(x.dtype)], dim=2)
        # weighted least squares with ridge rows appended: [sqrt(w) A; sqrt(alpha) I'] b = [sqrt(w) y; 0]
        lhs = torch.cat([root_w * design, penalty.expand(rows, g, g + 1)], dim=1)
        rhs = torch.cat([root_w * out, out.new_zeros(rows, g, out.shape[2])], dim=1)
        solution = torch.linalg.lstsq(lhs.cpu(), rhs.cpu()).solution.to(device)
        weights_out.append(solution[:, 1:])  # drop the intercept: (rows, g, n_targets)
    return from_features(players.spread(torch.cat(weights_out)), setup.data)


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

    Notes
    -----
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

    def _model(self, converter: Any, data: Any, channels_first: bool, dtype: torch.dtype,
               device: Any) -> Any:
        if isinstance(converter, Converter):
            return super()._model(converter, data, channels_first, dtype, device)
        param = next(converter.parameters(), None) if isinstance(converter, torch.nn.Module) else None
        default = param.device if param is not None else torch.device("cpu")
        return OpaqueModel(converter, self._pred_fun, data, channels_first, dtype,
                           resolve_device(device, default), self._output_names)


class SHAP(AgnosticMethod):
    """Shapley values by permutation sampling (Štrumbelj and Kononenko 2014).

    Parameters
    ----------
    data_ref
        The background, in the layout of ``data``: absent players take the
        values of one of its rows.
    n : int
        Permutations per sample; each costs ``g + 1`` model evaluations for ``g``
        players. Pairs of a permutation and its reverse share a reference.
    feature_groups : optional
        Integer group ids broadcastable to one sample of ``data`` (its layout;
        a list with one per input layer for several): entries with the same id
        are one player, e.g. the patches of an image. Default: every input
        entry is a player. A group's value is shared equally by its entries.

    Notes
    -----
    The values of a sample sum exactly to ``f(x) - mean f(ref)`` over the
    references used (all of ``data_ref`` equally often when ``n`` is a multiple
    of twice its size). ``model``, ``pred_fun``, ``output_names``: see
    :class:`AgnosticMethod`; further parameters: see :class:`InterpretingMethod`.
    """

    method_name = "SHAP"
    value_name = "Shapley value"
    tunables = {"n": (int, 10, 500)}

    def __init__(self, model: Any, data: Any, data_ref: Any, *, n: int = 50,
                 feature_groups: Any = None, **shared: Any) -> None:
        super().__init__(model, data, data_ref=data_ref, n=n, feature_groups=feature_groups,
                         **shared)

    def _explain(self, setup: Setup, data_ref: Any, n: Any, feature_groups: Any) -> Explanation:
        n = check_positive_int(n, "n")
        background, players = _background(setup, data_ref), feature_players(setup, feature_groups)
        warn_if_slow("SHAP", players, setup.data[0].shape[0], n, feature_groups is not None)
        return explain_shap(setup, background, n, players)


class LIME(AgnosticMethod):
    """Local linear surrogates (Ribeiro et al. 2016) on presence indicators of the input entries.

    Parameters
    ----------
    data_ref
        The background, in the layout of ``data``: absent players take the
        values of one of its rows, drawn per coalition.
    n : int
        Coalitions (model evaluations) per sample; the first is the sample itself.
        Use more than the number of players.
    kernel_width : float
        Width of the proximity kernel ``exp(-d^2 / kernel_width^2)``, ``d^2`` the
        number of absent players; default ``0.75 * sqrt(g)`` for ``g`` players.
    alpha : float
        Ridge penalty of the surrogate's coefficients (not of its intercept).
    feature_groups : optional
        Players made of several input entries, as for :class:`SHAP`.

    Notes
    -----
    The values are the surrogate's coefficients: how much the output changes when
    a player takes the sample's values instead of the background's. For a linear
    model and one background row they are exactly ``w * (x - ref)``. LIME has no
    decomposition goal. ``model``, ``pred_fun``, ``output_names``: see
    :class:`AgnosticMethod`; further parameters: see :class:`InterpretingMethod`.
    """

    method_name = "LIME"
    value_name = "LIME weight"
    tunables = {"n": (int, 100, 5000), "kernel_width": (float, 0.1, 10.0),
                 "alpha": (float, 0.0, 1.0)}

    def __init__(self, model: Any, data: Any, data_ref: Any, *, n: int = 1000,
                 kernel_width: float | None = None, alpha: float = 1e-6,
                 feature_groups: Any = None, **shared: Any) -> None:
        super().__init__(model, data, data_ref=data_ref, n=n, kernel_width=kernel_width,
                         alpha=alpha, feature_groups=feature_groups, **shared)

    def _explain(self, setup: Setup, data_ref: Any, n: Any, kernel_width: Any,
                 alpha: Any, feature_groups: Any) -> Explanation:
        n = check_positive_int(n, "n")
        players = feature_players(setup, feature_groups)
        if kernel_width is None:
            kernel_width = 0.75 * math.sqrt(players.count)
        if not is_number(kernel_width) or not kernel_width > 0:
            raise ValueError(f"`kernel_width` must be a positive number or None, got {describe(kernel_width)}.")
        if not is_number(alpha) or not alpha >= 0:
            raise ValueError(f"`alpha` must be a number >= 0, got {describe(alpha)}.")
        background = _background(setup, data_ref)
        warn_if_slow("LIME", players, setup.data[0].shape[0], n, feature_groups is not None)
        return Explanation(explain_lime(setup, background, n, float(kernel_width), float(alpha),
                                        players))


run_shap = runner(SHAP, "run_shap")
run_lime = runner(LIME, "run_lime")
