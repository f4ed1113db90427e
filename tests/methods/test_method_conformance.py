"""The method conformance suite: every registered method, and every direct torch
method, runs every check of :mod:`method_checks` on two small models.

Methods are taken from ``METHODS`` when the tests are collected, so a new method
joins by registering itself; its test arguments come from ``CASES`` (a default
``Case()`` where it has none), and a check that does not apply to it is declared
in ``NOT_APPLICABLE`` with the reason and left out of the parametrisation.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from method_checks import (
    BACKGROUND,
    CHECKS,
    CHUNKS,
    DTYPE,
    Case,
    Explainer,
    Problem,
    check_batch_mates,
    check_batch_size,
    method_explainer,
    torch_explainer,
    values,
)
from torch import Tensor, nn

import innsight as ins
from innsight._threads import one_thread
from innsight.methods.base import METHODS

#: The direct torch methods, explained on the original model.
TORCH_METHODS: dict[str, Callable[..., Any]] = {
    fn.__name__: fn for fn in (ins.torch_grad, ins.torch_smoothgrad, ins.torch_intgrad,
                               ins.torch_expgrad)
}

#: Test arguments per method: small ``n``, a fixed background for the methods that take
#: one (the data itself would make a sample's explanation depend on its batch mates),
#: and what it promises about random draws. Methods not listed run ``Case()``: their
#: default arguments, declared deterministic.
CASES: dict[str, Case] = {
    # noise drawn per chunk of noisy copies, in the computation's dtype
    "SmoothGrad": Case({"n": 128}, stochastic=True, redraws=frozenset({CHUNKS, DTYPE})),
    "IntegratedGradient": Case({"n": 6}),
    # references and interpolation points drawn per chunk, in the computation's dtype
    "ExpectedGradient": Case({"data_ref": BACKGROUND, "n": 128}, stochastic=True,
                             redraws=frozenset({CHUNKS, DTYPE})),
    # limit_ref below the background's 6 rows, so that DeepSHAP draws its references
    # (once, before any chunking)
    "DeepSHAP": Case({"data_ref": BACKGROUND, "limit_ref": 4}, stochastic=True,
                     linear_targets_only=True),
    # rule-based: linear targets only
    "LRP": Case(linear_targets_only=True),
    "DeepLift": Case(linear_targets_only=True),
    "ConnectionWeights": Case(linear_targets_only=True),
    # coalitions drawn per chunk of samples, always in float32
    "LIME": Case({"data_ref": BACKGROUND, "n": 100}, stochastic=True,
                 redraws=frozenset({CHUNKS})),
    # permutations and references drawn once, shared by every sample
    "SHAP": Case({"data_ref": BACKGROUND, "n": 2}, stochastic=True),
    "torch_smoothgrad": Case({"n": 128}, stochastic=True, redraws=frozenset({CHUNKS, DTYPE})),
    "torch_intgrad": Case({"n": 6}),
    "torch_expgrad": Case({"data_ref": BACKGROUND, "n": 128}, stochastic=True,
                          redraws=frozenset({CHUNKS, DTYPE})),
}

#: Checks that do not apply to a method, with the reason (left out of the suite).
NOT_APPLICABLE: dict[tuple[str, str], str] = {
    **{(name, "check_channels_last"): "direct torch methods take data in the module's own "
       "layout: they have no channels_first argument" for name in TORCH_METHODS},
    **{(name, "check_tunables"): "direct torch methods take the tunables of their method "
       "class, checked there" for name in TORCH_METHODS},
    ("GradCAM", "check_output_shapes"): "Grad-CAM gives one map per sample and output, "
    "(n_data, 1, H, W, n_selected), not a value per input channel (tested in test_gradcam)",
    **{("GradCAM", check): "a Grad-CAM map is the ReLU of a channel sum weighted by the "
       "target's gradients, so it is not linear in the target (weighted and function targets "
       "are tested against the paper's formula in test_gradcam)"
       for check in ("check_target_weights", "check_target_fun")},
}
#: Problems a method cannot explain at all, with the reason (left out of the suite).
NOT_APPLICABLE_PROBLEMS: dict[tuple[str, str], str] = {
    ("GradCAM", "two_in_two_out"): "Grad-CAM maps models with one image input",
}


# ---- models and problems -------------------------------------------------------------


class ResidualCNN(nn.Module):
    """Input (2, 4, 4): convolution, batch norm and relu, a residual block (convolution,
    batch norm, identity shortcut, relu), average pooling, dense logits (3), softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4, momentum=None)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(4, momentum=None)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(4 * 2 * 2, 3)

    def heads(self, x: Tensor) -> Tensor:
        """The logits, before the final softmax."""
        h = F.relu(self.bn1(self.stem(x)))
        h = F.relu(h + self.bn2(self.conv(h)))
        return self.fc(torch.flatten(self.pool(h), 1))

    def forward(self, x: Tensor) -> Tensor:
        return F.softmax(self.heads(x), dim=1)


class ImageAndVector(nn.Module):
    """Inputs an image (2, 4, 4) and a vector (3,); outputs a softmax over 3 classes and
    a regression with 2 nodes, from a shared layer of 16."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.vector = nn.Linear(3, 4)
        self.classes = nn.Linear(16, 3)
        self.regression = nn.Linear(16, 2)

    def heads(self, image: Tensor, vector: Tensor) -> tuple[Tensor, Tensor]:
        """The class logits (before the final softmax) and the regression."""
        shared = torch.cat([torch.flatten(self.pool(F.elu(self.conv(image))), 1),
                            torch.tanh(self.vector(vector))], dim=1)
        return self.classes(shared), self.regression(shared)

    def forward(self, image: Tensor, vector: Tensor) -> tuple[Tensor, Tensor]:
        logits, regression = self.heads(image, vector)
        return F.softmax(logits, dim=1), regression


#: Per problem: the model, its input shapes, every output node per output layer, and a
#: subset of them (in another order where there are several).
PROBLEM_SPECS: dict[str, tuple[type[nn.Module], list[tuple[int, ...]], list[list[int]],
                               list[list[int]]]] = {
    "residual_cnn": (ResidualCNN, [(2, 4, 4)], [[0, 1, 2]], [[0, 2]]),
    "two_in_two_out": (ImageAndVector, [(2, 4, 4), (3,)], [[0, 1, 2], [0, 1]], [[2, 0], [1]]),
}
PROBLEMS = list(PROBLEM_SPECS)


def _problem(name: str) -> Problem:
    """Seeded weights; batch-norm statistics from one calibration batch (N(1, 2^2) data),
    so batch norm is no identity; 3 samples to explain and 6 background rows."""
    factory, dims, outputs, subset = PROBLEM_SPECS[name]
    generator = torch.Generator().manual_seed(0)

    def normal(*shape: int) -> Tensor:
        return torch.randn(shape, generator=generator)

    model = factory()
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(0.5 * normal(*param.shape))
        model.train()(*[1 + 2 * normal(16, *d) for d in dims])
    model.eval()
    converter = ins.convert(model, input_dim=[list(d) for d in dims])
    return Problem(name, model, converter, data=[normal(3, *d) for d in dims],
                   background=[normal(6, *d) for d in dims], outputs=outputs, subset=subset)


@pytest.fixture(scope="module", autouse=True)
def on_one_thread() -> Iterator[None]:
    """These models are tiny: torch's worker threads only cost (twentyfold on a shared
    2-core machine), so the module runs on one and restores the setting afterwards."""
    with one_thread():
        yield


@pytest.fixture(scope="module")
def problems() -> dict[str, Problem]:
    """Every problem of :data:`PROBLEM_SPECS`, by name."""
    return {name: _problem(name) for name in PROBLEMS}


# ---- the suite -----------------------------------------------------------------------


#: Every registered method class, then every direct torch method: (how to wrap it, it).
EXPLAINED = {**{name: (method_explainer, METHODS[name]) for name in sorted(METHODS)},
             **{name: (torch_explainer, fn) for name, fn in TORCH_METHODS.items()}}


def _applicable() -> list[Any]:
    """Every (method, check, problem) but those the two tables declare not applicable
    (they are left out, not skipped: the tables hold the reasons)."""
    return [pytest.param(name, check, problem, id=f"{name}-{check.__name__}-{problem}")
            for name in EXPLAINED for check in CHECKS for problem in PROBLEMS
            if (name, check.__name__) not in NOT_APPLICABLE
            and (name, problem) not in NOT_APPLICABLE_PROBLEMS]


@pytest.mark.parametrize(("name", "check", "problem_name"), _applicable())
def test_method_conforms(problems, name, check, problem_name):
    wrap, method = EXPLAINED[name]
    check(wrap(method, CASES.get(name, Case())), problems[problem_name])


# ---- the suite's own guarantees --------------------------------------------------------


def test_every_method_of_the_design_is_registered():
    assert {"Gradient", "SmoothGrad", "IntegratedGradient", "ExpectedGradient", "DeepLift",
            "DeepSHAP", "LRP", "ConnectionWeights", "LIME", "SHAP"} <= set(METHODS)


def test_tables_name_known_methods_and_checks():
    known = set(METHODS) | set(TORCH_METHODS)
    assert set(CASES) <= known, f"CASES for unknown methods: {set(CASES) - known}"
    checks = {check.__name__ for check in CHECKS}
    assert {name for name, _ in NOT_APPLICABLE} <= known
    assert {check for _, check in NOT_APPLICABLE} <= checks
    assert {name for name, _ in NOT_APPLICABLE_PROBLEMS} <= known
    assert {problem for _, problem in NOT_APPLICABLE_PROBLEMS} <= set(PROBLEMS)


@pytest.fixture
def restore_methods() -> Iterator[None]:
    """Methods defined in the test register themselves in ``METHODS``; they are removed
    afterwards, so that no other test sees them."""
    before = dict(METHODS)
    yield
    METHODS.clear()
    METHODS.update(before)


@pytest.mark.parametrize("problem_name", PROBLEMS)
def test_a_made_up_method_runs_through_the_suite(problems, restore_methods, grad_ref, close,
                                                 problem_name):
    """A new subclass registers itself by its ``method_name`` and, without an entry in
    ``CASES``, runs every check with its default arguments."""

    class InputTimesGradient(ins.Gradient):
        method_name = "InputTimesGradient"
        tunables = {}  # times_input is fixed: nothing left to tune

        def __init__(self, converter: Any, data: Any, **shared: Any) -> None:
            super().__init__(converter, data, times_input=True, **shared)

    assert METHODS["InputTimesGradient"] is InputTimesGradient
    assert "InputTimesGradient" not in CASES
    problem = problems[problem_name]
    explainer = method_explainer(METHODS["InputTimesGradient"], Case())
    for check in CHECKS:
        check(explainer, problem)
    # and it is what it says: the gradient of the logits times the input, by autograd
    got = values(explainer(problem, dtype="double"))
    model = copy.deepcopy(problem.model).double()
    xs = [x.double() for x in problem.data]
    for o, idx in enumerate(problem.outputs):
        expected = grad_ref(model.heads, xs, idx, output=o)
        for k, x in enumerate(xs):
            close(got[o][k], expected[k] * x.unsqueeze(-1), 1e-10,
                  f"output layer {o}, input layer {k}")


def test_the_suite_catches_a_method_that_depends_on_batch_mates(problems, restore_methods):
    """A method that scales each batch by its largest value fails the batch-mate check."""

    class BatchScaledGradient(ins.Gradient):
        method_name = "BatchScaledGradient"

        def __init__(self, converter: Any, data: Any, **shared: Any) -> None:
            super().__init__(converter, data / data.abs().max(), **shared)

    problem = problems["residual_cnn"]
    with pytest.raises(AssertionError, match="batch mates"):
        check_batch_mates(method_explainer(BatchScaledGradient, Case()), problem)


def test_the_suite_catches_a_stochastic_method_that_depends_on_batch_size(problems,
                                                                         restore_methods):
    """Comparing in distribution still has teeth: a SmoothGrad whose noise grows when
    ``batch_size`` is given fails the batch_size check."""

    class DriftingSmoothGrad(ins.SmoothGrad):
        method_name = "DriftingSmoothGrad"

        def __init__(self, converter: Any, data: Any, *, batch_size: Any = None,
                     **shared: Any) -> None:
            super().__init__(converter, data, noise_level=0.1 if batch_size is None else 0.3,
                             batch_size=batch_size, **shared)

    problem = problems["residual_cnn"]
    explainer = method_explainer(DriftingSmoothGrad, CASES["SmoothGrad"])
    with pytest.raises(AssertionError, match="batch_size=1: difference"):
        check_batch_size(explainer, problem)
