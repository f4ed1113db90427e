"""Recurrent layers unrolled over time as layers, for any front-end's :data:`Emit`.

A sequence ``(*lead, L, E)`` (one sample: time steps, features, after leading axes
of independent sequences, e.g. the rows of an image folded into the batch) is read one
step at a time (a slice), each cell is written out of dense layers, activations, sums
and elementwise products, and the hidden states are joined into the output sequence
``(*lead, L, H)``. The gates multiply their signal in products that LRP treats by the
signal-take-all rule (Arras et al. 2017): the gate is held fixed
(``lrp_constant``), the signal gets all the relevance; DeepLift splits every
product exactly. The initial states are zeros (a dense layer with zero weights
reading the first step), as the frameworks start by default, or given as layers
holding ``(*lead, H)`` (see :func:`emit_constant_state` for constant ones).

Gate order of the weights, as torch stores them: LSTM ``(i, f, g, o)``, GRU
``(r, z, n)``, each block of ``hidden`` rows of ``weight_ih (G * H, E)`` and
``weight_hh (G * H, H)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from innsight.converter.attention import Emit


def _full(shape: Sequence[int]) -> list[list[int]]:
    """Slice ranges keeping all of the leading axes ``shape`` (the ``lead`` of a sequence)."""
    return [[0, n, 1] for n in shape]


def _step_input(emit: Emit, source: Any, shape: Sequence[int], step: int, part: str) -> int:
    """Time step ``step`` of ``source (*lead, L, E)`` as ``(*lead, E)``."""
    *lead, _, width = shape
    sliced = emit("Slice", [source], f"{part}_x",
                  ranges=[*_full(lead), [step, step + 1, 1], [0, width, 1]])
    return emit("Reshape", [sliced], f"{part}_x_vector", shape=[*lead, width])


def _gates(emit: Emit, x: int, h: int, w_ih: Any, w_hh: Any, b_ih: Any, b_hh: Any,
           part: str) -> int:
    """``(w_ih x + b_ih) + (w_hh h + b_hh)`` for all gates at once, ``(*lead, G * H)`` (the
    two biases kept apart, as the frameworks add them)."""
    from_x = emit("Dense", [x], f"{part}_from_x", weight=w_ih, bias=b_ih)
    from_h = emit("Dense", [h], f"{part}_from_h", weight=w_hh, bias=b_hh)
    return emit("Add", [from_x, from_h], f"{part}_gates")


def _gate(emit: Emit, gates: int, lead: Sequence[int], k: int, hidden: int, act_name: str,
          part: str, name: str) -> int:
    """Block ``k`` of the stacked gates ``(*lead, G * H)`` through ``act_name``."""
    block = emit("Slice", [gates], f"{part}_{name}_in",
                 ranges=[*_full(lead), [k * hidden, (k + 1) * hidden, 1]])
    return emit("Activation", [block], f"{part}_{name}", act_name=act_name)


def _product(emit: Emit, gate: int, signal: int, part: str) -> int:
    """``gate * signal`` with the gate held fixed under LRP (signal-take-all)."""
    return emit("Multiply", [gate, signal], part, lrp_constant=0)


def emit_constant_state(emit: Emit, source: Any, shape: Sequence[int], hidden: int,
                        value: Any, part: str) -> int:
    """The constant state ``value (H,)`` (``None``: zeros) for every sequence of ``source
    (*lead, L, E)``, ``(*lead, H)``: a dense layer with zero weights (no relevance, no
    gradient) and bias ``value`` reading the first step."""
    x = _step_input(emit, source, shape, 0, f"{part}_zero")
    return emit("Dense", [x], part, weight=np.zeros((hidden, shape[-1])), bias=value)


def _initial(emit: Emit, source: Any, shape: Sequence[int], hidden: int, given: int | None,
             part: str) -> int:
    """The layer ``given`` holding an initial state, or zeros ``(*lead, H)``."""
    if given is None:
        return emit_constant_state(emit, source, shape, hidden, None, part)
    return given


def stack_states(emit: Emit, states: list[int], lead: Sequence[int], hidden: int,
                 part: str) -> int:
    """States ``(*lead, H)`` (hidden states in time order) stacked as ``(*lead, L, H)``."""
    rows = [emit("Reshape", [h], f"{part}_row{t}", shape=[*lead, 1, hidden])
            for t, h in enumerate(states)]
    return rows[0] if len(rows) == 1 else emit("Concatenate", rows, part, axis=len(lead))


def _steps(shape: Sequence[int], reverse: bool) -> range:
    """The time steps of ``shape (*lead, L, E)`` in the order a direction reads them."""
    return range(shape[-2] - 1, -1, -1) if reverse else range(shape[-2])


def emit_rnn(emit: Emit, source: Any, shape: Sequence[int], w_ih: Any, w_hh: Any, b_ih: Any,
             b_hh: Any, act_name: str, reverse: bool, part: str, h0: int | None = None) -> int:
    """One direction of an Elman RNN over ``source (*lead, L, E)``: ``h' = act(W_ih x +
    b_ih + W_hh h + b_hh)`` from ``h0`` (a layer, default zeros); the hidden states
    ``(*lead, L, H)`` in time order."""
    hidden = w_hh.shape[1]
    h = _initial(emit, source, shape, hidden, h0, f"{part}_state0")
    states: dict[int, int] = {}
    for t in _steps(shape, reverse):
        p = f"{part}_t{t}"
        gates = _gates(emit, _step_input(emit, source, shape, t, p), h, w_ih, w_hh, b_ih, b_hh,
                       p)
        h = states[t] = emit("Activation", [gates], f"{p}_h", act_name=act_name)
    return stack_states(emit, [states[t] for t in sorted(states)], shape[:-2], hidden, part)


def emit_lstm(emit: Emit, source: Any, shape: Sequence[int], w_ih: Any, w_hh: Any, b_ih: Any,
              b_hh: Any, reverse: bool, part: str, h0: int | None = None,
              c0: int | None = None) -> tuple[int, int]:
    """One LSTM direction over ``source (*lead, L, E)`` from ``h0``, ``c0`` (layers, default
    zeros): ``c' = f c + i g``, ``h' = o tanh(c')``; the hidden states ``(*lead, L, H)`` in
    time order (``reverse`` reads the sequence backwards) and the last cell state
    ``(*lead, H)``."""
    hidden, lead = w_hh.shape[1], shape[:-2]
    h = _initial(emit, source, shape, hidden, h0, f"{part}_state0")
    c = h if c0 is None and h0 is None else _initial(emit, source, shape, hidden, c0,
                                                     f"{part}_cell0")
    states: dict[int, int] = {}
    for t in _steps(shape, reverse):
        p = f"{part}_t{t}"
        gates = _gates(emit, _step_input(emit, source, shape, t, p), h, w_ih, w_hh, b_ih, b_hh,
                       p)
        i, f, g, o = (_gate(emit, gates, lead, k, hidden, act, p, name) for k, (name, act) in
                      enumerate((("i", "sigmoid"), ("f", "sigmoid"), ("g", "tanh"),
                                 ("o", "sigmoid"))))
        c = emit("Add", [_product(emit, f, c, f"{p}_fc"), _product(emit, i, g, f"{p}_ig")],
                 f"{p}_c")
        h = states[t] = _product(emit, o, emit("Activation", [c], f"{p}_tanh_c",
                                               act_name="tanh"), f"{p}_h")
    return stack_states(emit, [states[t] for t in sorted(states)], lead, hidden, part), c


def emit_gru(emit: Emit, source: Any, shape: Sequence[int], w_ih: Any, w_hh: Any,
             b_ih: Any, b_hh: Any, reverse: bool, part: str, h0: int | None = None) -> int:
    """One GRU direction over ``source (*lead, L, E)`` from ``h0`` (a layer, default zeros):
    ``n = tanh(W_in x + b_in + r (W_hn h + b_hn))``, ``h' = (1 - z) n + z h``; the hidden
    states ``(*lead, L, H)`` in time order."""
    hidden, lead = w_hh.shape[1], shape[:-2]
    rz = slice(0, 2 * hidden)
    h = _initial(emit, source, shape, hidden, h0, f"{part}_state0")
    states: dict[int, int] = {}
    for t in _steps(shape, reverse):
        p = f"{part}_t{t}"
        x = _step_input(emit, source, shape, t, p)
        gates = _gates(emit, x, h, w_ih[rz], w_hh[rz], None if b_ih is None else b_ih[rz],
                       None if b_hh is None else b_hh[rz], p)
        r, z = (_gate(emit, gates, lead, k, hidden, "sigmoid", p, name)
                for k, name in enumerate(("r", "z")))
        n_x = emit("Dense", [x], f"{p}_n_from_x", weight=w_ih[2 * hidden:],
                   bias=None if b_ih is None else b_ih[2 * hidden:])
        n_h = emit("Dense", [h], f"{p}_n_from_h", weight=w_hh[2 * hidden:],
                   bias=None if b_hh is None else b_hh[2 * hidden:])
        n = emit("Activation", [emit("Add", [n_x, _product(emit, r, n_h, f"{p}_rn")],
                                     f"{p}_n_in")], f"{p}_n", act_name="tanh")
        keep_new = emit("Affine", [z], f"{p}_one_minus_z", scale=-1.0, shift=1.0)
        h = states[t] = emit("Add", [_product(emit, keep_new, n, f"{p}_new"),
                                     _product(emit, z, h, f"{p}_kept")], f"{p}_h")
    return stack_states(emit, [states[t] for t in sorted(states)], lead, hidden, part)
