"""Recurrent layers (``nn.RNN``, ``nn.LSTM``, ``nn.GRU``) through ``torch.export``.

Their ATen operations (``aten.lstm.input``, ``aten.gru.input``, ``aten.rnn_tanh.input``,
``aten.rnn_relu.input``) are unrolled over time like the modules of a ``torch.fx``
graph (``tests/methods/test_recurrent.py``); ``torch.export`` also follows time-first
inputs, final states, initial states and sequences folded into the batch axis.
References: the original module's forward (float64), torch autograd (Gradient), the
axiom that DeepLift sums to ``f(x) - f(x_ref)``, and the ``torch.fx`` conversion.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import innsight as ins


def _last_states(states: Any) -> Tensor:
    """``h_n`` (``(h_n, c_n)`` of an LSTM concatenated) batch-first, flat per sample."""
    states = torch.cat(states, -1) if isinstance(states, tuple) else states
    return states.transpose(0, 1).flatten(1)


class Reads(nn.Module):
    """``cell(4, 5, **options)`` over (6 steps, 4 features); ``reads`` what the model
    returns: ``"sequence"``, ``"last"`` (the last step of the sequence) or ``"states"``
    (the final states); ``batch_first=False`` transposes the input to time first."""

    def __init__(self, cell: type[nn.Module], reads: str, **options: Any) -> None:
        super().__init__()
        self.rnn = cell(4, 5, **options)
        self.reads, self.batch_first = reads, options.get("batch_first", False)

    def forward(self, x: Tensor) -> Tensor:
        out, states = self.rnn(x if self.batch_first else x.transpose(0, 1))
        out = out if self.batch_first else out.transpose(0, 1)
        return {"sequence": out, "last": out[:, -1], "states": _last_states(states)}[self.reads]


class FoldedRows(nn.Module):
    """A bidirectional LSTM along each of 3 rows of (6 steps, 4 features), the rows
    folded into the batch axis (as timm's Sequencer reads an image)."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(4, 5, batch_first=True, bidirectional=True)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(x.reshape(-1, 6, 4))
        return out.reshape(x.shape[0], 3, 6, 10)


class InitialStates(nn.Module):
    """A two-layer LSTM whose initial states are computed from a second input (4,)."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(4, 5, num_layers=2, batch_first=True)
        self.to_h, self.to_c = nn.Linear(4, 10), nn.Linear(4, 10)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        h0, c0 = (f(z).reshape(-1, 2, 5).transpose(0, 1).contiguous()
                  for f in (self.to_h, self.to_c))
        out, _ = self.rnn(x, (h0, c0))
        return out[:, -1]


class LearnedState(nn.Module):
    """A bidirectional GRU starting from a learned state, expanded to the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(4, 5, batch_first=True, bidirectional=True)
        self.h0 = nn.Parameter(torch.randn(2, 1, 5))

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(x, self.h0.expand(-1, x.shape[0], -1).contiguous())
        return out[:, 0]


#: Models by name: a factory and the input shape(s) of one sample.
MODELS: dict[str, tuple[Any, Any]] = {
    "lstm-time-first-last": (lambda: Reads(nn.LSTM, "last"), [6, 4]),
    "lstm-2-layers-bi-states": (lambda: Reads(nn.LSTM, "states", num_layers=2,
                                              bidirectional=True, batch_first=True), [6, 4]),
    "gru-2-layers-bi-no-bias-states": (lambda: Reads(
        nn.GRU, "states", num_layers=2, bidirectional=True, bias=False), [6, 4]),
    "rnn-relu-bi-sequence": (lambda: Reads(nn.RNN, "sequence", nonlinearity="relu",
                                           bidirectional=True, batch_first=True), [6, 4]),
    "rnn-tanh-2-layers-no-bias-last": (lambda: Reads(nn.RNN, "last", num_layers=2, bias=False),
                                       [6, 4]),
    "lstm-folded-rows": (FoldedRows, [3, 6, 4]),
    "lstm-initial-states": (InitialStates, [[6, 4], [4]]),
    "gru-learned-state": (LearnedState, [6, 4]),
}


@cache
def _converted(name: str) -> tuple[nn.Module, ins.Converter, list[Tensor]]:
    """The float64 model ``name``, its float64 conversion by ``torch.export`` and inputs."""
    make, input_dim = MODELS[name]
    torch.manual_seed(5)
    model = make().double().eval()
    conv = ins.convert(model, input_dim=input_dim, tracer="export", dtype="double")
    dims = input_dim if isinstance(input_dim[0], list) else [input_dim]
    return model, conv, [torch.randn(3, *d, dtype=torch.float64) for d in dims]


def _model_input(xs: list[Tensor]) -> Any:
    return xs[0] if len(xs) == 1 else xs


@pytest.mark.parametrize("name", MODELS)
def test_export_reproduces_the_original(name):
    model, conv, xs = _converted(name)
    with torch.no_grad():
        torch.testing.assert_close(conv.model(_model_input(xs)), model(*xs),
                                   rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", MODELS)
def test_gradient_matches_autograd(name):
    model, conv, xs = _converted(name)
    res = ins.run_grad(conv, _model_input(xs), output_idx=[0, 3], dtype="double")
    grads = res.get_result("torch_tensor")
    grads = grads if isinstance(grads, list) else [[grads]]
    leaves = [x.clone().requires_grad_(True) for x in xs]
    out = model(*leaves).flatten(1)
    for k, node in enumerate((0, 3)):
        expected = torch.autograd.grad(out[:, node].sum(), leaves, retain_graph=True)
        for ours, theirs in zip(grads[0], expected):
            torch.testing.assert_close(ours[..., k], theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["lstm-2-layers-bi-states", "gru-2-layers-bi-no-bias-states",
                                  "rnn-relu-bi-sequence", "lstm-folded-rows"])
def test_deeplift_sums_to_the_difference_of_the_original_outputs(name):
    model, conv, (x,) = _converted(name)
    x_ref = torch.randn(1, *x.shape[1:], dtype=torch.float64)
    res = ins.run_deeplift(conv, x, x_ref=x_ref, output_idx=[0, 7], dtype="double")
    with torch.no_grad():
        goal = (model(x) - model(x_ref)).flatten(1)[:, [0, 7]]
    sums = res.get_result("torch_tensor").flatten(1, -2).sum(1)
    torch.testing.assert_close(sums, goal, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", ["lstm", "bi-gru-2-layers", "rnn-relu-2-layers"])
def test_export_and_fx_convert_to_the_same_model(name, recurrent_classifier):
    model = recurrent_classifier(name).double()
    x = torch.randn(4, 6, 4, dtype=torch.float64)
    outputs = []
    for tracer in ("fx", "export"):
        conv = ins.convert(model, input_dim=[6, 4], tracer=tracer, dtype="double")
        with torch.no_grad():
            outputs.append(conv.model(x))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-12, atol=1e-12)


class GivenStates(nn.Module):
    """An LSTM given its initial states: zeros of the batch's size, or ``fill``."""

    def __init__(self, fill: float = 0.0) -> None:
        super().__init__()
        self.rnn, self.fill = nn.LSTM(4, 5, batch_first=True), fill

    def forward(self, x: Tensor) -> Tensor:
        state = torch.full((1, x.shape[0], 5), self.fill, dtype=x.dtype)
        return self.rnn(x, (state, state))[0][:, -1]


@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_zero_initial_states_given_convert_with_both_tracers(tracer, assert_converts):
    assert_converts(GivenStates().eval(), [6, 4], tracer=tracer)


def test_fx_refuses_other_constant_initial_states_by_name():
    """Their batch axis is second, which ``torch.fx`` graphs cannot follow (export does:
    :class:`LearnedState`)."""
    with pytest.raises(ins.ConversionError, match="node 'rnn'.*neither zero, a constant "
                       "expanded to the batch nor a tensor computed from the inputs"):
        ins.convert(GivenStates(0.5).eval(), input_dim=[6, 4], tracer="fx")


class Dropout(nn.Module):
    """``torch.lstm`` called with dropout between its layers in training."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(4, 5, num_layers=2, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        zeros = x.new_zeros(2, x.shape[0], 5)
        return torch.lstm(x, (zeros, zeros), self.rnn._flat_weights, True, 2, 0.5, True,
                          False, True)[0]


class RowStates(nn.Module):
    """:class:`FoldedRows` starting from a learned state per row."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(4, 5, batch_first=True)
        self.h0 = nn.Parameter(torch.randn(1, 1, 3, 5))

    def forward(self, x: Tensor) -> Tensor:
        h0 = self.h0.expand(-1, x.shape[0], -1, -1).reshape(1, -1, 5)
        out, _ = self.rnn(x.reshape(-1, 6, 4), (h0, torch.zeros_like(h0)))
        return out.reshape(x.shape[0], 3, 6, 5)


@pytest.mark.parametrize(("model", "input_dim", "what"), [
    (Reads(nn.LSTM, "sequence", batch_first=True, proj_size=2), [6, 4],
     "aten.lstm.input with proj_size"),
    (Dropout(), [6, 4], "aten.lstm.input with dropout in training"),
    (RowStates(), [3, 6, 4], "a constant initial state that differs between sequences"),
], ids=["projection", "dropout", "state-per-folded-row"])
def test_unsupported_uses_are_refused_by_name(model, input_dim, what):
    """(A time axis that is the batch axis is refused by ``torch.export`` itself.)"""
    with pytest.raises(ins.ConversionError, match=f"node 'lstm' in module '.*'.*{what}"):
        ins.convert(model.eval(), input_dim=input_dim, tracer="export")
