"""Method conformance checks: what every explanation method promises, written once.

Each ``check_*`` function takes an :class:`Explainer` (one method bound to its test
arguments) and a :class:`Problem` (a model, its converter and data) and raises
``AssertionError`` where the method breaks a promise. The checks know nothing of
any particular method: they only read what its :class:`Case` declares about its
random draws, in the manner of scikit-learn's estimator checks.
``test_method_conformance.py`` runs every check on every registered method and on
the direct torch methods.

Numbers are compared with the same method under other settings (a subset of
outputs, another layout, batch size, dtype or batch), and predictions with the
original torch model; the expected values are never copied from our own output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

#: What can change which random numbers a sample draws (not their distribution): how
#: the stacked rows are cut into chunks (decided by the batch mates and ``batch_size``) ...
CHUNKS = "chunks"
#: ... and the computation's dtype (torch draws other numbers in float64).
DTYPE = "dtype"

#: Largest max-abs difference, relative to the largest magnitude, between two runs that
#: only sum in another order (chunks, layouts, output subsets) or float against double.
FLOAT_TOL = 1e-5
#: Two Monte Carlo estimates that draw other numbers may differ by at most this many
#: times the difference between two seeds (in the Euclidean norm over all values).
SPREAD_FACTOR = 3.0
SEED = 0


@dataclass(frozen=True)
class Problem:
    """A model to explain: the original torch model, its converter and data.

    ``data`` and ``background`` hold one channels-first tensor ``(n, *dim)`` per
    input layer; ``outputs`` selects nodes per output layer (all of them) and
    ``subset`` a part of each, in any order.
    """

    name: str
    model: nn.Module  # forward(*inputs) -> a tensor or a tuple, one per output layer
    converter: Any
    data: list[Tensor]
    background: list[Tensor]
    outputs: list[list[int]]
    subset: list[list[int]]


@dataclass(frozen=True)
class Background:
    """Placeholder in a method's test arguments for the problem's background, passed
    in the layout of the data (``data_ref`` of LIME, SHAP, ExpectedGradient, ...)."""


BACKGROUND = Background()


@dataclass(frozen=True)
class Case:
    """A method's test arguments and what it promises about random draws.

    ``args`` are its own arguments (``BACKGROUND`` where the problem's background
    goes). A ``stochastic`` method draws random numbers from ``seed``; ``redraws``
    lists the settings (:data:`CHUNKS`, :data:`DTYPE`) under which a sample draws
    other numbers from the same distribution, so that its values there agree in
    distribution only. Every other setting must leave its values unchanged. A method
    with ``linear_targets_only`` (the rule-based ones) refuses ``target_fun`` and takes
    ``target_weights`` instead.
    """

    args: dict[str, Any] = field(default_factory=dict)
    stochastic: bool = False
    redraws: frozenset[str] = frozenset()
    linear_targets_only: bool = False

    def __post_init__(self) -> None:
        if self.redraws and not self.stochastic:
            raise ValueError("a method without random draws cannot redraw them")
        if not self.redraws <= {CHUNKS, DTYPE}:
            raise ValueError(f"unknown redraws {set(self.redraws) - {CHUNKS, DTYPE}}")


def to_layout(xs: list[Tensor], channels_first: bool) -> list[Tensor]:
    """Channels-first tensors ``(n, C, *spatial)`` in the user's layout; tabular ones stay."""
    return [x if channels_first or x.ndim <= 2 else x.movedim(1, -1) for x in xs]


def _one_or_list(xs: list[Tensor]) -> Tensor | list[Tensor]:
    return xs[0] if len(xs) == 1 else xs


@dataclass(frozen=True)
class Explainer:
    """One method bound to its test arguments.

    ``call(problem, data, outputs, **args)`` runs the method on the problem's model
    and returns its result object: ``data`` in the user's layout (a tensor, or a list
    for several input layers), ``outputs`` per output layer (``None``: no
    ``output_idx``, for the target arguments), ``args`` its own and shared arguments.
    """

    name: str
    call: Callable[..., Any]
    case: Case
    #: The method's ``get_tunables()`` (``None`` where it has none to offer).
    tunables: dict[str, Any] | None = None

    def __call__(self, problem: Problem, data: list[Tensor] | None = None,
                 outputs: list[list[int]] | None = None, channels_first: bool = True,
                 **shared: Any) -> Any:
        """The result for ``data`` (default the problem's), channels first as given and
        passed in the layout ``channels_first`` asks for; ``outputs=[]`` gives no
        ``output_idx`` (for ``targets=`` and the other target arguments). Stochastic
        methods get ``seed=SEED`` unless the caller names a seed."""
        if self.case.stochastic:
            shared.setdefault("seed", SEED)
        if not channels_first:
            shared["channels_first"] = False
        data = problem.data if data is None else data
        background = _one_or_list(to_layout(problem.background, channels_first))
        args = {k: background if isinstance(v, Background) else v
                for k, v in self.case.args.items()}
        return self.call(problem, _one_or_list(to_layout(data, channels_first)),
                         problem.outputs if outputs is None else (outputs or None),
                         **{**args, **shared})


def method_explainer(cls: type, case: Case) -> Explainer:
    """An :class:`~innsight.methods.base.InterpretingMethod` subclass, run on the
    problem's converter."""

    def call(problem: Problem, data: Any, outputs: list[list[int]], **kwargs: Any) -> Any:
        return cls(problem.converter, data, output_idx=outputs, verbose=False, **kwargs)

    return Explainer(cls.method_name, call, case, cls.get_tunables())


def torch_explainer(fn: Callable[..., Any], case: Case) -> Explainer:
    """A direct torch method (``ins.torch_grad`` ...), run on the problem's original model."""

    def call(problem: Problem, data: Any, outputs: list[list[int]], **kwargs: Any) -> Any:
        return fn(problem.model, data, output_idx=outputs, return_object=True, **kwargs)

    return Explainer(fn.__name__, call, case)


# ---- reading and comparing results ---------------------------------------------------


def values(result: Any) -> list[list[np.ndarray] | None]:
    """``result.get_result("array")`` always nested: ``[output layer][input layer]``."""
    arrays = result.get_result("array")
    return [[arrays]] if isinstance(arrays, np.ndarray) else arrays


def _flat(nested: list[list[np.ndarray] | None]) -> np.ndarray:
    """Every value of nested arrays (see :func:`values`) in one float64 vector."""
    return np.concatenate([a.astype(np.float64).ravel() for layer in nested
                           if layer is not None for a in layer])


def assert_close(actual: Any, expected: Any, what: str) -> None:
    """Same shape; max abs difference at most :data:`FLOAT_TOL` times the expected
    largest magnitude. ``actual``/``expected``: arrays, tensors, or nested lists of
    them (``None`` where ``expected`` has ``None``)."""
    if isinstance(expected, (list, tuple)) or expected is None:
        assert (actual is None) == (expected is None), f"{what}: {actual!r}, expected {expected!r}"
        if expected is None:
            return
        assert len(actual) == len(expected), f"{what}: {len(actual)} parts, not {len(expected)}"
        for k, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, f"{what}[{k}]")
        return
    actual, expected = (np.asarray(torch.as_tensor(v).detach().cpu(), dtype=np.float64)
                        for v in (actual, expected))
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, not {expected.shape}"
    scale = float(np.abs(expected).max(initial=0.0))
    error = float(np.abs(actual - expected).max(initial=0.0))
    assert error <= FLOAT_TOL * max(scale, 1e-12), (
        f"{what}: max abs difference {error:.3g} at scale {scale:.3g} exceeds "
        f"{FLOAT_TOL:g} relative")


def assert_agree(explainer: Explainer, setting: str, actual: list[list[np.ndarray] | None],
                 expected: Any, rerun: Callable[[int], Any], what: str) -> None:
    """``actual`` (nested values) and the result ``expected`` differ in ``setting``
    (:data:`CHUNKS` or :data:`DTYPE`). Equal values, unless the method redraws under
    that setting: then they agree as Monte Carlo estimates do, ``|actual - expected|``
    at most :data:`SPREAD_FACTOR` times the difference between ``expected`` and
    ``rerun(seed)``, its settings under another seed (Euclidean norms)."""
    if setting not in explainer.case.redraws:
        assert_close(actual, values(expected), what)
        return
    spread = np.linalg.norm(_flat(values(expected)) - _flat(values(rerun(SEED + 1))))
    assert spread > 0, f"{what}: two seeds gave the same values; the method draws nothing"
    gap = np.linalg.norm(_flat(actual) - _flat(values(expected)))
    assert gap <= SPREAD_FACTOR * spread, (
        f"{what}: difference {gap:.3g} exceeds {SPREAD_FACTOR:g} times the seed-to-seed "
        f"difference {spread:.3g}")


def _outputs_of(problem: Problem, data: list[Tensor]) -> list[Tensor]:
    with torch.no_grad():
        out = problem.model(*data)
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _rows(result: Any, rows: slice) -> list[list[np.ndarray] | None]:
    return [None if layer is None else [a[rows] for a in layer] for layer in values(result)]


def _stack(results: list[Any]) -> list[list[np.ndarray] | None]:
    """The values of one-sample results stacked along the batch axis."""
    nested = [values(r) for r in results]
    return [None if layer is None else
            [np.concatenate([n[o][k] for n in nested]) for k in range(len(layer))]
            for o, layer in enumerate(nested[0])]


# ---- the checks ----------------------------------------------------------------------


def check_output_shapes(explainer: Explainer, problem: Problem) -> None:
    """Values ``(n_data, *input_dim, n_selected)`` per output and input layer, finite and
    in the computation's dtype; predictions ``(n_data, n_selected)`` equal the original
    model's outputs; the decomposition goal (where there is one) matches the sum's shape."""
    selection = problem.subset
    result = explainer(problem, outputs=problem.subset)
    got = values(result)
    assert len(got) == len(selection), f"{len(got)} output layers, expected {len(selection)}"
    n_data = problem.data[0].shape[0]
    model_out = _outputs_of(problem, problem.data)
    for o, idx in enumerate(selection):
        shapes = [(n_data, *x.shape[1:], len(idx)) for x in problem.data]
        assert [a.shape for a in got[o]] == shapes, f"output layer {o}"
        assert all(a.dtype == np.float32 and np.isfinite(a).all() for a in got[o]), (
            f"output layer {o}: values must be finite float32")
        assert_close(result.preds[o], model_out[o][:, idx], f"preds of output layer {o}")
        assert tuple(result.decomp_sum[o].shape) == (n_data, len(idx))
        if result.decomp_goal is not None:
            assert tuple(result.decomp_goal[o].shape) == (n_data, len(idx))


def check_batch_mates(explainer: Explainer, problem: Problem) -> None:
    """A sample's explanation does not depend on the other samples of the batch.

    Exactly, with the same seed, when the batch mates are replaced by other values
    (draws depend on shapes, not on values); and explained one by one against all
    together: equal, or equal in distribution where the method redraws with the
    :data:`CHUNKS` (a sample alone draws other numbers than in a batch)."""
    together = explainer(problem)
    changed = [torch.cat([x[:1], 3 * x[1:] + 1]) for x in problem.data]
    assert_close(_rows(explainer(problem, changed), slice(0, 1)), _rows(together, slice(0, 1)),
                 "sample 0 with other batch mates")
    alone = [explainer(problem, [x[i:i + 1] for x in problem.data])
             for i in range(problem.data[0].shape[0])]
    assert_agree(explainer, CHUNKS, _stack(alone), together,
                 lambda seed: explainer(problem, seed=seed), "one by one against together")


def check_batch_size(explainer: Explainer, problem: Problem) -> None:
    """``batch_size=1`` and ``3`` give the default's values: equal, or equal in
    distribution where the method redraws with the :data:`CHUNKS`."""
    default = explainer(problem)
    for batch_size in (1, 3):
        assert_agree(explainer, CHUNKS, values(explainer(problem, batch_size=batch_size)), default,
                     lambda seed: explainer(problem, seed=seed), f"batch_size={batch_size}")


def check_seed(explainer: Explainer, problem: Problem) -> None:
    """The same seed gives identical values; another seed other values for stochastic
    methods, identical ones for deterministic methods (they ignore it)."""
    first = _flat(values(explainer(problem, seed=SEED)))
    np.testing.assert_array_equal(_flat(values(explainer(problem, seed=SEED))), first,
                                  err_msg="the same seed twice")
    other = _flat(values(explainer(problem, seed=SEED + 1)))
    if explainer.case.stochastic:
        assert np.abs(other - first).max() > FLOAT_TOL * np.abs(first).max(), (
            f"{explainer.name} is declared stochastic but another seed gives the same values")
    else:
        np.testing.assert_array_equal(other, first, err_msg=(
            f"another seed changes the values of {explainer.name}: declare its draws"))


def _tunable_values(name: str, space: Any) -> Iterator[dict[str, Any]]:
    """Arguments at the ends of a range ``(type, low, high)``, each of a list of choices,
    or, for a dict of ranges keyed by rule, each rule at both ends of its range."""
    if isinstance(space, list):
        yield from ({name: choice} for choice in space)
    elif isinstance(space, tuple):
        kind, low, high = space
        yield from ({name: kind(end)} for end in (low, high))
    else:
        for rule, (kind, low, high) in space.items():
            yield from ({"rule_name": rule, name: kind(end)} for end in (low, high))


def check_tunables(explainer: Explainer, problem: Problem) -> None:
    """``get_tunables()`` describes every range as ``(type, low, high)`` with ``low <=
    high`` or as choices, and the method accepts the ends of every range and every choice
    (on one sample), giving finite values."""
    assert explainer.tunables is not None, f"{explainer.name} has no get_tunables()"
    one = [x[:1] for x in problem.data]
    for name, space in explainer.tunables.items():
        ranges = space.values() if isinstance(space, dict) else [space]
        assert all(isinstance(r, list) and r or isinstance(r, tuple) and len(r) == 3
                   and r[0] in (int, float) and r[1] <= r[2] for r in ranges), (name, space)
        for kwargs in _tunable_values(name, space):
            result = explainer(problem, data=one, **kwargs)
            assert np.isfinite(_flat(values(result))).all(), f"{explainer.name} {kwargs}"


def check_output_subset(explainer: Explainer, problem: Problem) -> None:
    """Explaining a subset of the output nodes gives those columns of explaining all:
    values, predictions and decomposition goals. Methods that redraw with the
    :data:`CHUNKS` get a fixed ``batch_size``: the default depends on the number of
    outputs."""
    fixed = {"batch_size": 5} if CHUNKS in explainer.case.redraws else {}
    every = explainer(problem, outputs=problem.outputs, **fixed)
    part = explainer(problem, outputs=problem.subset, **fixed)
    full = problem.outputs
    columns = [[full[o].index(j) for j in idx]
               for o, idx in enumerate(problem.subset)]
    for o, cols in enumerate(columns):
        assert_close(values(part)[o], [a[..., cols] for a in values(every)[o]],
                     f"values of output layer {o}")
        assert_close(part.preds[o], every.preds[o][:, cols], f"preds of output layer {o}")
        assert (part.decomp_goal is None) == (every.decomp_goal is None)
        if every.decomp_goal is not None:
            assert_close(part.decomp_goal[o], every.decomp_goal[o][:, cols],
                         f"decomposition goal of output layer {o}")


def check_channels_last(explainer: Explainer, problem: Problem) -> None:
    """Channels-last data (and background) gives the channels-last layout of the
    channels-first values, with the same numbers."""
    assert any(x.ndim > 2 for x in problem.data), f"{problem.name} has no input with channels"
    first = values(explainer(problem))
    last = values(explainer(problem, channels_first=False))
    moved = [None if layer is None else [a if a.ndim <= 3 else np.moveaxis(a, 1, -2) for a in layer]
             for layer in first]
    assert_close(last, moved, "channels-last values")


def check_dtype(explainer: Explainer, problem: Problem) -> None:
    """``dtype="double"`` gives float64 values that agree with float: within float
    tolerance, or in distribution where the method redraws with the :data:`DTYPE`."""
    double = explainer(problem, dtype="double")
    assert all(a.dtype == np.float64 for layer in values(double) if layer for a in layer)
    assert_agree(explainer, DTYPE, values(explainer(problem)), double,
                 lambda seed: explainer(problem, dtype="double", seed=seed), "float against double")


def _first_layer_values(result: Any) -> list[np.ndarray]:
    return values(result)[0]


def check_per_sample_targets(explainer: Explainer, problem: Problem) -> None:
    """``targets`` (one node of the first output layer per sample) gives, row by row,
    the single-output result of each sample's node: values, goal and prediction (the
    original model's output at that node); ``"predicted"`` picks each sample's arg-max
    of the original model's first output."""
    n_data = problem.data[0].shape[0]
    n_nodes = len(problem.outputs[0])
    nodes = [(i + 1) % n_nodes for i in range(n_data)]
    per_sample = explainer(problem, outputs=[], targets=np.array(nodes))
    singles = [explainer(problem, outputs=[[j]]) for j in nodes]
    for i, single in enumerate(singles):
        assert_close([a[i] for a in _first_layer_values(per_sample)],
                     [a[i] for a in _first_layer_values(single)], f"values of sample {i}")
        assert_close(per_sample.preds[0][i], single.preds[0][i], f"prediction of sample {i}")
        if single.decomp_goal is not None:
            assert_close(per_sample.decomp_goal[0][i], single.decomp_goal[0][i],
                         f"decomposition goal of sample {i}")
    expected_preds = _outputs_of(problem, problem.data)[0][torch.arange(n_data), nodes]
    assert_close(per_sample.preds[0][:, 0], expected_preds, "predictions at each sample's node")
    predicted = explainer(problem, outputs=[], targets="predicted")
    top = _outputs_of(problem, problem.data)[0].argmax(1).tolist()
    assert predicted.sample_nodes == [f"Y{j + 1}" for j in top], "predicted nodes"
    assert predicted.get_result("data.frame")["output_node"].unique().tolist() == \
        list(dict.fromkeys(f"Y{j + 1}" for j in top)), "each sample's node in the data frame"


def _weights(problem: Problem) -> np.ndarray:
    """Two linear targets over the first output layer: a difference and a weighted sum."""
    n_nodes = len(problem.outputs[0])
    w = np.zeros((2, n_nodes))
    w[0, 0], w[0, n_nodes - 1] = 1.0, -1.0
    w[1] = np.linspace(0.5, -1.5, n_nodes)
    return w


def check_target_weights(explainer: Explainer, problem: Problem) -> None:
    """``target_weights`` ``(k, n_nodes)`` gives the weighted sums of the single nodes'
    values and goals (every method is linear in what it explains, given the same draws:
    a fixed ``batch_size``)."""
    w = _weights(problem)
    fixed = {"batch_size": 5}
    weighted = explainer(problem, outputs=[], target_weights=w, **fixed)
    every = explainer(problem, outputs=[problem.outputs[0]], **fixed)
    assert weighted.output_labels[0] == ["target_weights_1", "target_weights_2"]
    assert_close(_first_layer_values(weighted), [a @ w.T for a in _first_layer_values(every)],
                 "values of the weighted targets")
    assert (weighted.decomp_goal is None) == (every.decomp_goal is None)
    if every.decomp_goal is not None:
        assert_close(weighted.decomp_goal[0], every.decomp_goal[0].double() @ torch.tensor(w).T,
                     "decomposition goal of the weighted targets")


def check_target_fun(explainer: Explainer, problem: Problem) -> None:
    """``target_fun`` returning the difference of two nodes (and a second column, a node's
    square) gives the difference of their values; the rule-based methods refuse it by
    name and point to ``target_weights``."""
    n_nodes = len(problem.outputs[0])

    def fun(outputs: list[Tensor]) -> Tensor:
        logits = outputs[0].flatten(1)
        return torch.stack([logits[:, 0] - logits[:, n_nodes - 1], logits[:, 1] ** 2], dim=1)

    fixed = {"batch_size": 5}
    if explainer.case.linear_targets_only:
        try:
            explainer(problem, outputs=[], target_fun=fun)
        except TypeError as err:
            assert "target_weights" in str(err), str(err)
            return
        raise AssertionError(f"{explainer.name} took a callable target_fun")
    result = explainer(problem, outputs=[], target_fun=fun, **fixed)
    every = explainer(problem, outputs=[[0, n_nodes - 1]], **fixed)
    assert result.output_labels[0] == ["target_fun_1", "target_fun_2"]
    assert_close([a[..., 0] for a in _first_layer_values(result)],
                 [a[..., 0] - a[..., 1] for a in _first_layer_values(every)],
                 "values of the difference")
    if every.decomp_goal is not None:
        assert_close(result.decomp_goal[0][:, 0],
                     every.decomp_goal[0][:, 0] - every.decomp_goal[0][:, 1],
                     "decomposition goal of the difference")


#: Every check, in the order they run; a new check joins the suite by being listed here.
CHECKS: list[Callable[[Explainer, Problem], None]] = [
    check_output_shapes,
    check_batch_mates,
    check_batch_size,
    check_seed,
    check_output_subset,
    check_channels_last,
    check_dtype,
    check_tunables,
    check_per_sample_targets,
    check_target_weights,
    check_target_fun,
]

