"""ONNX ``RNN``, ``LSTM`` and ``GRU``, which onnx2torch does not read: a converter for
onnx2torch that makes an :class:`OnnxRecurrent` module, and the handler that unrolls it
over time with :mod:`innsight.converter.recurrent`, as the torch front-end unrolls
``nn.RNN``/``nn.LSTM``/``nn.GRU``.

The ONNX weights are per direction ``W (D, G * H, E)``, ``R (D, G * H, H)`` and
``B (D, 2 * G * H)`` (input biases, then recurrent biases), the gate blocks in ONNX's
order: LSTM ``(i, o, f, c)``, GRU ``(z, r, h)``; they are reordered into torch's
(``(i, f, g, o)``, ``(r, z, n)``). The time axis comes first (``layout=0``, what
exporters write and all that onnxruntime runs): ``X (L, B, E)``, ``Y (L, D, B, H)``,
``Y_h (D, B, H)``; the batch axis follows the tensors wherever it is (the ONNX
front-end finds it), and the layers hold each sample as ``(L, E)``, ``(L, D, H)`` and
``(D, H)``.

Converted: the default activations (an RNN's may be ``Tanh``, ``Relu`` or ``Sigmoid``),
a GRU with ``linear_before_reset=1`` (as torch and Keras compute it), zero initial
states, no peepholes and no ``sequence_lens``. The final cell state ``Y_c`` of an LSTM
is not converted (only ``Y`` and ``Y_h``). Everything else is refused by name.
"""

from __future__ import annotations

from typing import Any

import torch
from onnx2torch.node_converters.registry import add_converter
from onnx2torch.utils.common import (
    OnnxToTorchModule,
    OperationConverterResult,
    onnx_mapping_from_node,
)
from torch import Tensor, fx, nn

from innsight.converter.recurrent import emit_gru, emit_lstm, emit_rnn
from innsight.converter.torch_ops import (
    BATCH_AXIS_HANDLERS,
    MODULES,
    Outputs,
    _emitter,
    arg,
)

#: Per op type: gate count, ONNX gate blocks in torch's order, default activations.
_CELLS = {
    "RNN": (1, [0], ["Tanh"]),
    "LSTM": (4, [0, 2, 3, 1], ["Sigmoid", "Tanh", "Tanh"]),
    "GRU": (3, [1, 0, 2], ["Sigmoid", "Tanh"]),
}
#: ONNX activation names of an RNN, as torch's activation names.
_RNN_ACTIVATIONS = {"Tanh": "tanh", "Relu": "relu", "Sigmoid": "sigmoid"}
#: ONNX input positions of the optional inputs that are refused when given.
_REFUSED_INPUTS = {4: "sequence_lens", 7: "P"}


class OnnxRecurrent(nn.Module, OnnxToTorchModule):
    """An ONNX ``RNN``/``LSTM``/``GRU`` node, computed step by step as ONNX defines it
    (the subset that :func:`_convert` accepts); returns ``(Y, Y_h)`` or, for an LSTM,
    ``(Y, Y_h, Y_c)``."""

    def __init__(self, op_type: str, hidden_size: int, directions: list[bool],
                 act_name: str) -> None:
        super().__init__()
        self.op_type, self.hidden_size = op_type, hidden_size
        self.directions, self.act_name = directions, act_name  # reverse flag per direction

    def forward(self, x: Tensor, w: Tensor, r: Tensor, b: Tensor | None = None,
                sequence_lens: Tensor | None = None, initial_h: Tensor | None = None,
                initial_c: Tensor | None = None) -> tuple[Tensor, ...]:
        steps, batch, _ = x.shape
        hidden = self.hidden_size
        ys, last_h, last_c = [], [], []
        for d, reverse in enumerate(self.directions):
            w_ih, w_hh = torch_weights(self.op_type, w[d]), torch_weights(self.op_type, r[d])
            b_ih, b_hh = (None, None) if b is None else (
                torch_weights(self.op_type, part) for part in b[d].chunk(2))
            h, c = (x.new_zeros(batch, hidden) if state is None
                    else state[d].expand(batch, hidden) for state in (initial_h, initial_c))
            states: list[Tensor] = [x] * steps
            for t in (reversed(range(steps)) if reverse else range(steps)):
                h, c = self._step(x[t], h, c, w_ih, w_hh, b_ih, b_hh)
                states[t] = h
            ys.append(torch.stack(states))
            last_h.append(h)
            last_c.append(c)
        y, y_h, y_c = torch.stack(ys, 1), torch.stack(last_h), torch.stack(last_c)
        return (y, y_h, y_c) if self.op_type == "LSTM" else (y, y_h)

    def _step(self, x: Tensor, h: Tensor, c: Tensor, *weights: Tensor | None
              ) -> tuple[Tensor, Tensor]:
        """One step of torch's cell: the new hidden and cell state ``(B, H)``."""
        if self.op_type == "LSTM":
            return torch.lstm_cell(x, (h, c), *weights)
        if self.op_type == "GRU":
            return torch.gru_cell(x, h, *weights), c
        w_ih, w_hh, b_ih, b_hh = weights
        return getattr(torch, self.act_name)(nn.functional.linear(x, w_ih, b_ih)
                                             + nn.functional.linear(h, w_hh, b_hh)), c


def torch_weights(op_type: str, weight: Tensor) -> Tensor:
    """The gate blocks of one direction's ONNX weight ``(G * H, ...)`` (or bias) in
    torch's order."""
    gates, order, _ = _CELLS[op_type]
    blocks = weight.chunk(gates)
    return torch.cat([blocks[k] for k in order])


def _convert(node: Any, graph: Any) -> OperationConverterResult:
    """onnx2torch's converter of an ``RNN``/``LSTM``/``GRU`` node; attributes that the
    unrolled layers do not compute raise ``NotImplementedError`` naming them."""
    op_type, attributes = node.operation_type, node.attributes
    _, _, defaults = _CELLS[op_type]
    direction = attributes.get("direction", "forward")
    directions = {"forward": [False], "reverse": [True],
                  "bidirectional": [False, True]}.get(direction)
    n_directions = len(directions or [False])
    activations = list(attributes.get("activations", defaults * n_directions))
    first = activations[:len(defaults)]
    known = first[0] in _RNN_ACTIVATIONS if op_type == "RNN" else first == defaults
    refused = [
        (f"direction={direction!r}", directions is None),
        ("layout=1 (batch-first; onnxruntime does not run it either)",
         attributes.get("layout", 0)),
        (f"clip={attributes.get('clip')}", "clip" in attributes),
        ("input_forget=1", attributes.get("input_forget", 0)),
        (("linear_before_reset=0 (the reset gate applied before the recurrent weights; "
          "torch and Keras' reset_after=True apply it after)"),
         op_type == "GRU" and not attributes.get("linear_before_reset", 0)),
        (f"activations {activations}", not known or activations != first * n_directions),
    ]
    refused += [(f"the input {name}", len(node.input_values) > k and node.input_values[k])
                for k, name in _REFUSED_INPUTS.items()]
    for what, is_refused in refused:
        if is_refused:
            raise NotImplementedError(f"innsight does not convert {op_type} with {what}")
    module = OnnxRecurrent(op_type, int(attributes["hidden_size"]), directions,
                           _RNN_ACTIVATIONS.get(first[0], ""))
    return OperationConverterResult(torch_module=module,
                                    onnx_mapping=onnx_mapping_from_node(node=node))


for _op_type in _CELLS:
    for _version in (7, 14, 22):  # the opsets that changed these ops
        try:
            add_converter(operation_type=_op_type, version=_version)(_convert)
        except ValueError:  # registered already (a second import of this module)
            pass


#: Per op type: one direction unrolled, ``(emit, source, shape, w_ih, w_hh, b_ih, b_hh,
#: act_name, reverse, part) -> hidden states (L, H)``.
_UNROLL = {
    "RNN": emit_rnn,
    "LSTM": lambda *args: emit_lstm(*args[:7], *args[8:])[0],
    "GRU": lambda *args: emit_gru(*args[:7], *args[8:]),
}


def _handler(t: Any, node: fx.Node) -> Outputs:
    """The node unrolled over time; ``Y`` as ``(L, D, H)`` and ``Y_h`` as ``(D, H)``
    per sample, ``Y_c`` not converted."""
    m: OnnxRecurrent = t.module(node)
    for position, name in ((5, "initial_h"), (6, "initial_c")):
        value = arg(node, position, name, None)
        state = None if value is None else t.constant(value)
        if value is not None and (not isinstance(state, Tensor) or bool(state.any())):
            raise t.unsupported(node, f"{m.op_type} with a non-zero {name}",
                                "Initial states must be zero (absent). ")
    given = [v for v in (node.args[1], node.args[2], arg(node, 3, "b", None)) if v is not None]
    constants = [t.constant(v) for v in given]
    if any(not isinstance(c, Tensor) for c in constants):
        raise t.unsupported(node, f"{m.op_type} with weights computed from the model input")
    weights, bias = constants[:2], constants[2] if len(constants) > 2 else None
    source, shape = node.args[0], t.shape(node.args[0])
    emit = _emitter(t, node)
    hidden = m.hidden_size
    sequences, last = [], []
    for d, reverse in enumerate(m.directions):
        w_ih, w_hh = (torch_weights(m.op_type, w[d]) for w in weights)
        b_ih, b_hh = (None, None) if bias is None else (
            torch_weights(m.op_type, part) for part in bias[d].chunk(2))
        part = f"d{d}"
        seq = _UNROLL[m.op_type](emit, source, shape, w_ih, w_hh, b_ih, b_hh, m.act_name,
                                 reverse, part)
        end = 0 if reverse else shape[0] - 1
        sequences.append(emit("Reshape", [seq], f"{part}_y", shape=[shape[0], 1, hidden]))
        last.append(emit("Slice", [seq], f"{part}_y_h", ranges=[[end, end + 1, 1],
                                                                [0, hidden, 1]]))
    y, y_h = (parts[0] if len(parts) == 1 else emit("Concatenate", parts, name, axis=axis)
              for parts, name, axis in ((sequences, "y", 1), (last, "y_h", 0)))
    return Outputs((y, y_h, None))


MODULES[OnnxRecurrent] = _handler
BATCH_AXIS_HANDLERS[_handler] = "any"  # X, Y and Y_h have the batch axis second or third
