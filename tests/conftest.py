"""Shared test helpers: small torch models and the check that a conversion
reproduces the original model's output.

Helpers are handed to tests as fixtures (not imported), so that other
``conftest.py`` files in sub-folders cannot shadow them.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import torchvision  # noqa: F401  (before any tensorflow import: the reverse order segfaults)
from hypothesis import HealthCheck, settings
from torch import Tensor, nn

import innsight as ins

if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    # Under pytest-xdist, share the cores between workers: with each worker's OpenMP
    # using every core, spinning threads slowed this suite down twentyfold on 2 cores.
    torch.set_num_threads(
        max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    )

#: Hypothesis profiles: derandomised (the same examples on every run and machine) by
#: default; ``pytest --slow`` draws twenty times as many with fresh seeds.
_HYPOTHESIS = {"derandomize": True, "deadline": None, "database": None, "print_blob": True,
               "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("innsight", max_examples=100, **_HYPOTHESIS)
settings.register_profile("innsight-slow", parent=settings.get_profile("innsight"),
                          max_examples=2000, derandomize=False)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", default=False,
                     help="run many more hypothesis examples, with fresh seeds")


def pytest_configure(config: pytest.Config) -> None:
    settings.load_profile("innsight-slow" if config.getoption("--slow") else "innsight")


#: Largest max-abs deviation from the original, relative to its output scale.
FLOAT_TOL = 1e-5
DOUBLE_TOL = 1e-10


# ---- models --------------------------------------------------------------------------


class TwoInTwoOut(nn.Module):
    """Inputs an image (2, 6, 6) and a vector (4,); outputs a softmax over 3 classes
    and a linear regression head with 2 nodes, as a tuple."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.tab = nn.Linear(4, 5)
        self.cls = nn.Linear(3 * 4 * 4 + 5, 3)
        self.reg = nn.Linear(3 * 4 * 4 + 5, 2)

    def heads(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The outputs before the final softmax: (logits, regression)."""
        h = torch.cat([torch.flatten(F.relu(self.conv(a)), 1), torch.tanh(self.tab(b))], 1)
        return self.cls(h), self.reg(h)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, reg = self.heads(a, b)
        return F.softmax(logits, dim=1), reg


@pytest.fixture
def two_in_two_out() -> TwoInTwoOut:
    """Inputs (2, 6, 6) and (4,); outputs softmax (3,) and regression (2,); eval mode."""
    torch.manual_seed(5)
    return TwoInTwoOut().eval()


def _zoo_model(name: str, **kwargs: Any) -> nn.Module:
    """A torchvision model with seeded random weights and random batch-norm statistics
    (so batch norm is no identity), in eval mode. ``kwargs`` go to the model builder."""
    torch.manual_seed(0)
    if name == "googlenet":
        kwargs.setdefault("init_weights", True)
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    return randomize_batch_norm(model, seed=1, spread=0.5).eval()


@pytest.fixture
def zoo_model() -> Callable[..., nn.Module]:
    """``zoo_model(name, **builder_kwargs)``: a torchvision model, seeded, random batch-norm
    statistics, eval mode."""
    return _zoo_model


@pytest.fixture
def small_vit() -> nn.Module:
    """torchvision's VisionTransformer on 3 x 32 x 32 images: 8 x 8 patches (17 tokens
    with the class token), 2 encoder blocks with 2 heads, width 16, 5 classes; every
    parameter (class token, positional embedding and the zero-initialised head
    included) drawn from N(0, 0.3^2); eval mode."""
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
        num_classes=5)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.3)
    return model.eval()


class Lambda(nn.Module):
    """A module whose forward is ``fn(self, x)``; keyword arguments become attributes.

    ``Lambda(lambda m, x: F.relu(m.fc(x)), fc=nn.Linear(3, 4))`` is traced by
    torch.fx exactly like a hand-written module with that forward.
    """

    def __init__(self, fn: Callable[..., Any], **attributes: Any) -> None:
        super().__init__()
        self.fn = fn
        for name, value in attributes.items():
            setattr(self, name, value)

    def forward(self, x: Tensor) -> Any:
        return self.fn(self, x)


class Lambda2(Lambda):
    """Like :class:`Lambda` with two inputs: ``forward(a, b) = fn(self, a, b)``."""

    def forward(self, a: Tensor, b: Tensor) -> Any:  # type: ignore[override]
        return self.fn(self, a, b)


class MLP(nn.Module):
    def __init__(self, n_in: int = 5, n_out: int = 3) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_in, 16)
        self.act1 = nn.ReLU()
        self.fc2 = nn.Linear(16, 8)
        self.act2 = nn.Tanh()
        self.fc3 = nn.Linear(8, n_out)
        self.out = nn.Softmax(dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.fc3(self.act2(self.fc2(self.act1(self.fc1(x))))))


class CNN1D(nn.Module):
    """Input (2, 20)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(2, 4, 5, stride=1, padding=2)
        self.act1 = nn.ReLU()
        self.pool1 = nn.AvgPool1d(2)
        self.conv2 = nn.Conv1d(4, 6, 3, dilation=2)
        self.act2 = nn.LeakyReLU(0.1)
        self.pool2 = nn.MaxPool1d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(6 * 3, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool1(self.act1(self.conv1(x)))
        x = self.pool2(self.act2(self.conv2(x)))
        return self.fc(self.flatten(x))


class CNN2D(nn.Module):
    """Input (3, 12, 12): conv, batch norm, relu, max pooling, dense."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.act1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2)
        self.bn2 = nn.BatchNorm2d(8)
        self.act2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool1(self.act1(self.bn1(self.conv1(x))))
        x = self.pool2(self.act2(self.bn2(self.conv2(x))))
        return self.fc(self.flatten(x))


class ResidualBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                               nn.BatchNorm2d(c_out))
        )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResidualNet(nn.Module):
    """Input (3, 16, 16): a stem and two residual blocks (identity and projection)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block1 = ResidualBlock(8, 8, 1)
        self.block2 = ResidualBlock(8, 12, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.block2(self.block1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class TwoInputNet(nn.Module):
    """Inputs: an image (3, 10, 10) and a tabular vector (4,); output (2,)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.pool = nn.MaxPool2d(2)
        self.tab = nn.Sequential(nn.Linear(4, 6), nn.ReLU())
        self.head = nn.Linear(4 * 4 * 4 + 6, 2)

    def forward(self, image: Tensor, tabular: Tensor) -> Tensor:
        a = torch.flatten(self.pool(F.relu(self.conv(image))), 1)
        b = self.tab(tabular)
        return self.head(torch.cat([a, b], dim=1))


class TwoOutputNet(nn.Module):
    """Input (6,); outputs (3,) (softmax) and (1,) (regression), as a tuple."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 10), nn.ReLU())
        self.cls = nn.Linear(10, 3)
        self.reg = nn.Linear(10, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(x)
        return F.softmax(self.cls(h), dim=1), self.reg(h)


def randomize_batch_norm(model: nn.Module, seed: int = 1, spread: float = 1.0) -> nn.Module:
    """Give every batch norm non-trivial running statistics and affine parameters,
    so that eval-mode batch norm is not close to the identity: means and biases with
    standard deviation ``0.2 * spread``, variances and weights uniform in
    ``1 +- spread / 2`` (deep zoo models keep their scale with ``spread=0.5``)."""
    generator = torch.Generator().manual_seed(seed)
    low = 1 - spread / 2
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
                n = module.num_features
                module.running_mean.copy_(0.2 * spread * torch.randn(n, generator=generator))
                module.running_var.copy_(low + spread * torch.rand(n, generator=generator))
                if module.affine:
                    module.weight.copy_(low + spread * torch.rand(n, generator=generator))
                    module.bias.copy_(0.2 * spread * torch.randn(n, generator=generator))
    return model


class RecurrentClassifier(nn.Module):
    """A recurrent layer over (6 steps, 4 features), its last output through a dense layer."""

    def __init__(self, cell: type[nn.Module], bias: bool = True, **options: Any) -> None:
        super().__init__()
        self.rnn = cell(4, 5, batch_first=True, bias=bias, **options)
        self.fc = nn.Linear(5 * (2 if options.get("bidirectional") else 1), 3, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


#: Recurrent classifiers by name: the torch module and its options.
RECURRENT_CELLS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "lstm": (nn.LSTM, {}),
    "gru": (nn.GRU, {}),
    "bi-lstm": (nn.LSTM, {"bidirectional": True}),
    "gru-2-layers": (nn.GRU, {"num_layers": 2}),
    "rnn-tanh": (nn.RNN, {}),
    "bi-rnn-relu": (nn.RNN, {"nonlinearity": "relu", "bidirectional": True}),
    "rnn-relu-2-layers": (nn.RNN, {"nonlinearity": "relu", "num_layers": 2}),
    "bi-gru-2-layers": (nn.GRU, {"bidirectional": True, "num_layers": 2}),
}


def _recurrent_classifier(name: str, bias: bool = True) -> nn.Module:
    torch.manual_seed(4)
    cell, options = RECURRENT_CELLS[name]
    return RecurrentClassifier(cell, bias=bias, **options).eval()


def build(factory: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    """``factory()`` with seeded weights and random batch-norm statistics, in eval mode."""
    torch.manual_seed(seed)
    return randomize_batch_norm(factory(), seed + 1).eval()


@pytest.fixture
def seeded() -> Callable[..., nn.Module]:
    """``seeded(factory, seed=0)``: :func:`build`, a model from ``factory()`` with seeded
    weights and random batch-norm statistics, in eval mode."""
    return build


# ---- comparisons ------------------------------------------------------------------------


def as_list(output: Any) -> list[Tensor]:
    return list(output) if isinstance(output, (list, tuple)) else [output]


def random_inputs(dims: Sequence[Sequence[int]], batch: int, dtype: torch.dtype,
                  seed: int = 123) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, *d, generator=generator, dtype=torch.float64).to(dtype)
            for d in dims]


def dim_list(input_dim: Any) -> list[list[int]]:
    """``[3, 8, 8]`` or ``[[3, 8, 8], [4]]`` as a list of shapes."""
    return [list(d) for d in input_dim] if isinstance(input_dim[0], (list, tuple)) else [
        list(input_dim)]


def assert_outputs_match(actual: Any, expected: Any, rel_tol: float) -> None:
    """Same number of outputs, same shapes and dtypes, and each output's max abs
    difference at most ``rel_tol`` times the expected output's largest magnitude."""
    actual, expected = as_list(actual), as_list(expected)
    assert len(actual) == len(expected), f"{len(actual)} outputs, expected {len(expected)}"
    for k, (a, e) in enumerate(zip(actual, expected)):
        assert isinstance(a, Tensor), f"output {k} is a {type(a).__name__}"
        assert a.shape == e.shape, f"output {k}: shape {tuple(a.shape)}, expected {tuple(e.shape)}"
        assert a.dtype == e.dtype, f"output {k}: dtype {a.dtype}, expected {e.dtype}"
        scale = e.abs().max().item()
        assert scale > 0, f"output {k} of the original is all zeros: a degenerate test"
        error = (a.detach() - e).abs().max().item()
        assert error <= rel_tol * scale, (
            f"output {k}: max abs difference {error:.3g} at output scale {scale:.3g} "
            f"exceeds {rel_tol:g} relative"
        )


@contextmanager
def float64_default() -> Iterator[None]:
    """Float64 as torch's default dtype for the duration: with ``model.double()``, the
    model in float64 throughout, the tensors its forward creates (``torch.arange(n) *
    0.1``, ``torch.tensor(0.5)``) too, as a conversion in double computes them."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(default)


def check_conversion(model: nn.Module, input_dim: Any, batch: int = 3,
                     **convert_kwargs: Any) -> ins.Converter:
    """Convert ``model`` in float and in double precision; both converted models
    must reproduce the original's forward (the double one against
    ``copy.deepcopy(model).double()`` on float64 inputs, run with float64 as the default
    dtype: see :func:`float64_default`). Returns the float converter."""
    dims = dim_list(input_dim)
    single = len(dims) == 1

    conv = ins.convert(model, input_dim=input_dim, **convert_kwargs)
    xs = random_inputs(dims, batch, torch.float32)
    with torch.no_grad():
        expected = model(*xs)
        actual = conv.model(xs[0] if single else xs)
    assert_outputs_match(actual, expected, FLOAT_TOL)

    conv64 = ins.convert(model, input_dim=input_dim, dtype="double", **convert_kwargs)
    assert conv64.model.dtype == torch.float64
    reference = copy.deepcopy(model).double()
    xs64 = random_inputs(dims, batch, torch.float64, seed=321)
    with torch.no_grad(), float64_default():
        expected = reference(*xs64)
    with torch.no_grad():
        actual = conv64.model(xs64[0] if single else xs64)
    assert_outputs_match(actual, expected, DOUBLE_TOL)
    return conv


def check_explained_exactly(model: nn.Module, input_dim: list[int], tracer: str = "auto",
                            outputs: tuple[int, ...] = (0, 1),
                            forward: Callable[[Tensor], Tensor] | None = None,
                            rel_tol: float = 1e-10, **convert_args: Any) -> None:
    """In float64 (``model.double()``), with the last activation kept: the Gradient
    equals autograd on the original, DeepLift (zero reference) sums to ``f(x) - f(0)``,
    and LRP epsilon gives finite relevances; ``forward(x)`` is the original's output
    (default ``model(x)``), and ``rel_tol`` the tolerance relative to the largest
    expected value (DeepLift: 10x); ``convert_args`` go to ``ins.convert``."""
    model = model.double()
    forward = forward or model
    conv = ins.convert(model, input_dim=input_dim, tracer=tracer, dtype="double", **convert_args)
    x = torch.randn(3, *conv.input_dim[0], dtype=torch.float64,
                    generator=torch.Generator().manual_seed(5))
    idx = list(outputs)
    gradient = ins.run_grad(conv, x, output_idx=idx, dtype="double", ignore_last_act=False,
                            verbose=False)
    x_grad = x.clone().requires_grad_(True)
    out = forward(x_grad)
    expected = torch.stack([torch.autograd.grad(out[:, j].sum(), x_grad, retain_graph=True)[0]
                            for j in idx], -1)
    actual = gradient.get_result("torch_tensor")
    assert (actual - expected).abs().max() <= rel_tol * expected.abs().max()

    deeplift = ins.run_deeplift(conv, x, output_idx=idx, dtype="double",
                                ignore_last_act=False, verbose=False)
    sums = deeplift.get_result("torch_tensor").reshape(3, -1, len(idx)).sum(1)
    with torch.no_grad():
        goal = (forward(x) - forward(torch.zeros_like(x)))[:, idx]
    assert (sums - goal).abs().max() <= 10 * rel_tol * goal.abs().max()

    lrp = ins.run_lrp(conv, x, output_idx=idx, rule_name="epsilon", dtype="double",
                      ignore_last_act=False, verbose=False)
    assert torch.isfinite(lrp.get_result("torch_tensor")).all()


# ---- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def explained_exactly() -> Callable[..., None]:
    """:func:`check_explained_exactly`."""
    return check_explained_exactly



@pytest.fixture
def torch_seed() -> None:
    """Seed torch's global RNG so that models built in a test are reproducible."""
    torch.manual_seed(0)


@pytest.fixture
def assert_converts() -> Callable[..., ins.Converter]:
    """:func:`check_conversion`: convert in float and double, compare with the original."""
    return check_conversion


@pytest.fixture
def default_float64() -> Callable[[], Any]:
    """:func:`float64_default`."""
    return float64_default


@pytest.fixture
def outputs_match() -> Callable[[Any, Any, float], None]:
    """:func:`assert_outputs_match`."""
    return assert_outputs_match


def traced_apart(h: Tensor) -> Tensor:
    """``h + relu(h)`` in a graph of ``torch.fx``, ``2 relu(h)`` when the model runs (and
    in a graph of ``torch.export``): a forward whose graph computes something else than
    the model (as ``h + h.relu_()`` was once converted), so its conversion with
    ``tracer="fx"`` is wrong and only the dry run can tell."""
    return h + h.relu() if isinstance(h, torch.fx.Proxy) else 2 * h.relu()


@pytest.fixture
def converts_wrongly() -> Callable[[Tensor], Tensor]:
    """:func:`traced_apart`."""
    return traced_apart


@pytest.fixture
def module_from() -> Callable[..., nn.Module]:
    """``module_from(fn, **attributes)``: a one-input module with forward ``fn(self, x)``
    (``module_from(fn, n_inputs=2, ...)`` for two inputs), in eval mode."""

    def make(fn: Callable[..., Any], n_inputs: int = 1, **attributes: Any) -> nn.Module:
        cls = Lambda2 if n_inputs == 2 else Lambda
        return randomize_batch_norm(cls(fn, **attributes)).eval()

    return make


@pytest.fixture
def mlp() -> nn.Module:
    """Input (5,), output (3,)."""
    return build(MLP)


@pytest.fixture
def recurrent_classifier() -> Callable[..., nn.Module]:
    """``recurrent_classifier(name, bias=True)``: a seeded :class:`RecurrentClassifier`
    (names in :data:`RECURRENT_CELLS`) in eval mode; input (6, 4), output (3,)."""
    return _recurrent_classifier


@pytest.fixture
def cnn1d() -> nn.Module:
    """Input (2, 20), output (2,)."""
    return build(CNN1D)


@pytest.fixture
def cnn2d() -> nn.Module:
    """Input (3, 12, 12), output (4,); convolution, batch norm, max pooling."""
    return build(CNN2D)


@pytest.fixture
def residual_net() -> nn.Module:
    """Input (3, 16, 16), output (5,)."""
    return build(ResidualNet)


@pytest.fixture
def two_input_net() -> nn.Module:
    """Inputs (3, 10, 10) and (4,), output (2,)."""
    return build(TwoInputNet)


@pytest.fixture
def two_output_net() -> nn.Module:
    """Input (6,), outputs (3,) and (1,)."""
    return build(TwoOutputNet)
