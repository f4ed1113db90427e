"""Gradient-based methods: Gradient, SmoothGrad, IntegratedGradient, ExpectedGradient.

They differ only in how they stack copies of each sample (a *recipe*'s
``augment``), what each copy's gradient is multiplied by, and what the
values should sum to (``goal``); :func:`explain_gradients` runs any recipe.
The direct torch methods run these classes on a raw module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor

from innsight._validation import check_bool, describe, is_number
from innsight.methods.base import (
    Explanation,
    InterpretingMethod,
    OutputsAtData,
    Setup,
    check_positive_int,
    runner,
)
from innsight.methods.engine import Chunk, mean_gradients


class GradientRecipe(Protocol):
    """How one gradient method stacks, weights and averages gradients; ``goal(setup,
    f_data)`` is what the values of each sample should sum to (``(n_data, n_targets)``)
    from the explained quantities ``f_data`` at the data, where ``has_goal``.
    ``rows_are_data``: the rows differentiated are the data samples themselves, so their
    forward passes give the explained quantities at the data."""

    n: int
    has_goal: ClassVar[bool]
    rows_are_data: ClassVar[bool]

    def augment(self, chunk: Chunk) -> tuple[list[Tensor], list[Tensor] | None]: ...

    def goal(self, setup: Setup, f_data: Tensor) -> Tensor | None: ...


def _per_row(values: Tensor, like: Tensor) -> Tensor:
    """``(rows,)`` values shaped to broadcast against ``(rows, *dim)``."""
    return values.view(-1, *[1] * (like.ndim - 1))


@dataclass(frozen=True)
class PlainGradient:
    """The gradient at each sample (times the sample with ``times_input``)."""

    has_goal: ClassVar[bool] = False
    rows_are_data: ClassVar[bool] = True

    times_input: bool
    n: int = 1

    def augment(self, chunk: Chunk) -> tuple[list[Tensor], list[Tensor] | None]:
        return chunk.inputs, chunk.inputs if self.times_input else None


@dataclass(frozen=True)
class NoisyCopies:
    """SmoothGrad: ``n`` copies ``x + e``, ``e ~ N(0, s^2)`` with ``s`` per sample and input layer."""

    has_goal: ClassVar[bool] = False
    rows_are_data: ClassVar[bool] = False

    n: int
    sigma: list[Tensor]  # per input layer, (n_data,)
    times_input: bool

    @classmethod
    def build(cls, data: list[Tensor], n: Any, noise_level: Any, times_input: Any) -> NoisyCopies:
        n = check_positive_int(n, "n")
        check_bool(times_input, "times_input")
        if not is_number(noise_level) or not (math.isfinite(noise_level) and noise_level >= 0):
            raise ValueError(f"`noise_level` must be a finite number >= 0, got {describe(noise_level)}.")
        noise_level = float(noise_level)
        sigma = []
        for x in data:
            flat = x.flatten(1)
            spread = flat.amax(1) - flat.amin(1)
            # A constant sample has no range: its noise scale is noise_level itself.
            sigma.append(noise_level * torch.where(spread > 0, spread, torch.ones_like(spread)))
        return cls(n, sigma, times_input)

    def augment(self, chunk: Chunk) -> tuple[list[Tensor], list[Tensor] | None]:
        noisy = []
        for x, sigma in zip(chunk.inputs, self.sigma):
            noise = torch.randn(x.shape, generator=chunk.generator, device=x.device, dtype=x.dtype)
            noisy.append(torch.addcmul(x, noise, _per_row(sigma[chunk.sample], x)))
        return noisy, noisy if self.times_input else None


@dataclass(frozen=True)
class PathPoints:
    """IntegratedGradient: right Riemann points ``x' + (k/n)(x - x')``, ``k = 1..n``."""

    has_goal: ClassVar[bool] = True
    rows_are_data: ClassVar[bool] = False

    n: int
    refs: list[Tensor]  # per input layer, (1 or n_data, *dim)
    times_input: bool

    @classmethod
    def build(cls, setup: Setup, x_ref: Any, n: Any, times_input: Any) -> PathPoints:
        n = check_positive_int(n, "n")
        check_bool(times_input, "times_input")
        return cls(n, reference_inputs(setup, x_ref), times_input)

    def augment(self, chunk: Chunk) -> tuple[list[Tensor], list[Tensor] | None]:
        inputs, diffs = [], []
        for x, ref in zip(chunk.inputs, self.refs):
            start = ref[chunk.sample % ref.shape[0]]  # one shared reference, or one per sample
            diff = x - start
            alpha = (chunk.copy + 1).to(x.dtype) / self.n
            inputs.append(torch.addcmul(start, _per_row(alpha, x), diff))
            diffs.append(diff)
        return inputs, diffs if self.times_input else None

    def goal(self, setup: Setup, f_data: Tensor) -> Tensor:
        sample = torch.arange(f_data.shape[0], device=f_data.device)
        return f_data - setup.columns_at([r[sample % r.shape[0]] for r in self.refs], sample)


@dataclass(frozen=True)
class ReferenceDraws:
    """ExpectedGradient: ``(x - r) * grad f(r + a(x - r))``, ``r`` from ``data_ref``, ``a ~ U(0,1)``."""

    has_goal: ClassVar[bool] = True
    rows_are_data: ClassVar[bool] = False

    n: int
    data_ref: list[Tensor]  # per input layer, (n_ref, *dim)

    @classmethod
    def build(cls, setup: Setup, data_ref: Any, n: Any) -> ReferenceDraws:
        n = check_positive_int(n, "n")
        if setup.layer is not None and setup.model.per_sample and not setup.layer.start:
            raise ValueError(
                f"ExpectedGradient cannot attribute to layer {setup.layer.name!r}: "  # type: ignore[union-attr]
                "a skip connection bypasses it, so the outputs at a reference depend on "
                "the sample too; attribute to a layer every path goes through, or use "
                "IntegratedGradient.")
        if data_ref is None:
            return cls(n, setup.data)
        return cls(n, setup.prepare_refs(data_ref, "data_ref"))

    def augment(self, chunk: Chunk) -> tuple[list[Tensor], list[Tensor]]:
        rows, device = chunk.sample.shape[0], chunk.sample.device
        draw = torch.randint(self.data_ref[0].shape[0], (rows,), generator=chunk.generator, device=device)
        dtype = chunk.inputs[0].dtype
        a = torch.rand(rows, generator=chunk.generator, device=device, dtype=dtype)
        inputs, diffs = [], []
        for x, refs in zip(chunk.inputs, self.data_ref):
            ref = refs[draw]
            diff = x - ref
            inputs.append(torch.addcmul(ref, _per_row(a, x), diff))
            diffs.append(diff)
        return inputs, diffs

    def goal(self, setup: Setup, f_data: Tensor) -> Tensor:
        return f_data - setup.mean_outputs_at(self.data_ref)


def reference_inputs(setup: Setup, x_ref: Any) -> list[Tensor]:
    """``x_ref``: zeros by default, one sample, or one per data sample (given like the
    data; the layer's activations at them where the values are attributed to a layer)."""
    data = setup.data
    if x_ref is None and (setup.layer is None or setup.layer.lift is None):
        return [x.new_zeros(1, *x.shape[1:]) for x in data]
    refs = setup.prepare_refs(x_ref, "x_ref")  # at a layer: zeros at the input by default
    n_data = data[0].shape[0]
    if refs[0].shape[0] not in (1, n_data):
        raise ValueError(
            f"`x_ref` must hold one sample or one per data sample ({n_data}), got {refs[0].shape[0]}."
        )
    return refs


def explain_gradients(recipe: GradientRecipe, setup: Setup) -> Explanation:
    """The mean gradients of ``recipe`` over the data of ``setup``, with their goal."""
    values, columns = mean_gradients(setup.target_columns, len(setup.targets), setup.data,
                                     recipe.augment, recipe.n, setup.batch_size,
                                     setup.generator, setup.verbose,
                                     keep_columns=recipe.rows_are_data)
    # The forward passes at the data give the predictions where they are the explained
    # quantities: no pass more for them (about a quarter of a plain gradient's time).
    at_data = (OutputsAtData(columns, columns)
               if columns is not None and setup.prediction_nodes == setup.explained else None)
    if not recipe.has_goal:
        return Explanation(values, at_data=at_data)
    at_data = at_data or setup.outputs_at_data()
    return Explanation(values, recipe.goal(setup, at_data.explained), at_data)


class Gradient(InterpretingMethod):
    """The gradient of each output node w.r.t. the input, ``d f(x) / d x``.

    Parameters
    ----------
    times_input : bool
        Gradient times input (Shrikumar et al. 2016) instead of the gradient.

    Notes
    -----
    Further parameters: see :class:`InterpretingMethod`.
    """

    method_name = "Gradient"
    layer_attribution = "cut"
    value_name = "gradient"
    tunables = {"times_input": [False, True]}

    def __init__(self, converter: Any, data: Any, *, times_input: bool = False, **shared: Any) -> None:
        super().__init__(converter, data, times_input=times_input, **shared)

    def _explain(self, setup: Setup, times_input: Any) -> Explanation:
        check_bool(times_input, "times_input")
        return explain_gradients(PlainGradient(times_input), setup)

    def token_reduction(self, own_args: dict[str, Any]) -> str:
        return "sum" if own_args["times_input"] else "norm"


class SmoothGrad(InterpretingMethod):
    """Mean gradient over ``n`` noisy copies ``x + e``, ``e ~ N(0, s^2)`` (Smilkov et al. 2017).

    Parameters
    ----------
    n : int
        Noisy copies per sample.
    noise_level : float
        ``s = noise_level * (max(x) - min(x))`` per sample (``noise_level`` where
        the range is 0).
    times_input : bool
        Multiply each gradient by its noisy input before averaging.

    Notes
    -----
    With ``attribute_to``, the noise is added to the layer's activations, ``s``
    from their range. Further parameters: see :class:`InterpretingMethod`.
    """

    method_name = "SmoothGrad"
    layer_attribution = "cut"
    value_name = "gradient"
    tunables = {"n": (int, 10, 100), "noise_level": (float, 0.05, 0.95),
                 "times_input": [False, True]}

    def __init__(self, converter: Any, data: Any, *, n: int = 50, noise_level: float = 0.1,
                 times_input: bool = False, **shared: Any) -> None:
        super().__init__(converter, data, n=n, noise_level=noise_level, times_input=times_input,
                         **shared)

    def _explain(self, setup: Setup, n: Any, noise_level: Any, times_input: Any) -> Explanation:
        return explain_gradients(NoisyCopies.build(setup.data, n, noise_level, times_input), setup)

    token_reduction = Gradient.token_reduction


class IntegratedGradient(InterpretingMethod):
    """``(x - x') * mean_{k=1..n} grad f(x' + (k/n)(x - x'))`` (Sundararajan et al. 2017).

    Parameters
    ----------
    x_ref : optional
        The reference ``x'``: zeros by default, one sample, or one per data sample.
    n : int
        Points on the straight path from ``x'`` to ``x`` (right Riemann sum).
    times_input : bool
        Multiply by ``x - x'`` (the attribution); ``False`` keeps the mean gradient.

    Notes
    -----
    The values of a sample sum to about ``f(x) - f(x')`` (the decomposition
    goal), closer as ``n`` grows. With ``attribute_to``, the path runs from the
    layer's activations at ``x'`` to those at ``x`` while whatever bypasses the
    layer sees ``x`` (Captum's ``LayerIntegratedGradients``; tested against it),
    and the goal is ``f(x)`` minus ``f`` with the layer at its activations at ``x'``.
    Further parameters: see :class:`InterpretingMethod`.
    """

    method_name = "IntegratedGradient"
    layer_attribution = "cut"
    value_name = "attribution"
    tunables = {"n": (int, 10, 200)}

    def __init__(self, converter: Any, data: Any, *, x_ref: Any = None, n: int = 50,
                 times_input: bool = True, **shared: Any) -> None:
        super().__init__(converter, data, x_ref=x_ref, n=n, times_input=times_input, **shared)

    def _explain(self, setup: Setup, x_ref: Any, n: Any, times_input: Any) -> Explanation:
        recipe = PathPoints.build(setup, x_ref, n, times_input)
        return explain_gradients(recipe, setup)

    token_reduction = Gradient.token_reduction


class ExpectedGradient(InterpretingMethod):
    """Mean over ``n`` draws of ``(x - r) * grad f(r + a(x - r))`` (Erion et al. 2021).

    Parameters
    ----------
    data_ref : optional
        The references ``r`` are drawn from (default: the data itself), in the
        layout of ``data``.
    n : int
        Draws of ``(r, a)`` per sample, ``a ~ U(0, 1)``.

    Notes
    -----
    The values sum to about ``f(x) - mean f(data_ref)``. With ``attribute_to``,
    ``x`` and ``r`` are the layer's activations at the sample and at the reference
    (only for layers that no skip connection bypasses). Further parameters:
    see :class:`InterpretingMethod`.
    """

    method_name = "ExpectedGradient"
    layer_attribution = "cut"
    value_name = "attribution"
    tunables = {"n": (int, 10, 200)}

    def __init__(self, converter: Any, data: Any, *, data_ref: Any = None, n: int = 50,
                 **shared: Any) -> None:
        super().__init__(converter, data, data_ref=data_ref, n=n, **shared)

    def _explain(self, setup: Setup, data_ref: Any, n: Any) -> Explanation:
        recipe = ReferenceDraws.build(setup, data_ref, n)
        return explain_gradients(recipe, setup)


run_grad = runner(Gradient, "run_grad")
run_smoothgrad = runner(SmoothGrad, "run_smoothgrad")
run_intgrad = runner(IntegratedGradient, "run_intgrad")
run_expgrad = runner(ExpectedGradient, "run_expgrad")
