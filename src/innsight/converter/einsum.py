"""Einstein sums written out as layers, for any front-end (it hands in an ``Emit``).

Letters name the sample axes of the operands (the caller takes the batch letter out).

- A tensor computed from the inputs and a constant (``"whc,hkc->whk"``, timm's relative
  position terms) is a linear map: the tensor's axes are permuted into the letters it
  keeps, the letters it shares with the constant and keeps, and the letters it sums;
  one Dense layer maps (shared, summed) to (shared, the constant's own letters) with a
  weight that is block-diagonal in the shared letters; reshapes and a permutation give
  the result's order. Every LRP rule applies to it as to any dense layer.
- Two computed tensors (``"hqd,hkd->hqk"``, attention written as einsum) are a batched
  matrix product: each operand permuted and reshaped to ``(common..., rows, summed)`` and
  ``(common..., summed, columns)``, one MatMul, and the result's order restored.
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from innsight.converter.attention import Emit

#: Most entries the block-diagonal weight of a linear einsum may have.
MAX_WEIGHT_ENTRIES = 2**26


@dataclass(frozen=True)
class Equation:
    """``inputs[i]`` are the letters of operand ``i``, ``output`` those of the result."""

    inputs: tuple[str, ...]
    output: str


def parse_equation(equation: str, n_operands: int) -> Equation:
    """The letters of an einsum ``equation`` (``"bij,bjk->bik"``; without ``->`` the
    result holds the letters seen once, in alphabetical order, as torch has it)."""
    equation = equation.replace(" ", "")
    if "." in equation:
        raise ValueError(f"einsum {equation!r}: ellipses ('...') are not supported; "
                         "name every axis.")
    lhs, arrow, output = equation.partition("->")
    inputs = tuple(lhs.split(","))
    letters = "".join(inputs)
    if not arrow:
        output = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    if len(inputs) != n_operands:
        raise ValueError(f"einsum {equation!r} names {len(inputs)} operand(s), "
                         f"got {n_operands}.")
    for spec in (*inputs, output):
        if len(set(spec)) != len(spec) or not spec.isalpha():
            raise ValueError(f"einsum {equation!r}: a letter repeated within one operand "
                             "(a diagonal) is not supported.")
    if set(output) - set(letters):
        raise ValueError(f"einsum {equation!r}: the result names letters no operand has.")
    return Equation(inputs, output)


def emit_linear_einsum(emit: Emit, source: object, spec: str, constant: Tensor,
                       constant_spec: str, output: str, sizes: dict[str, int]) -> int:
    """``einsum(spec + "," + constant_spec + "->" + output)`` of ``source`` (a computed
    tensor; ``sizes`` of its letters) and a ``constant``, as one Dense layer between
    reshapes (see the module docs)."""
    sizes = {**sizes, **dict(zip(constant_spec, constant.shape))}
    kept = [c for c in spec if c in output and c not in constant_spec]
    shared = [c for c in spec if c in output and c in constant_spec]
    summed = [c for c in spec if c not in output]
    own = [c for c in constant_spec if c not in spec and c in output]
    if set(output) - set(spec) - set(constant_spec):
        raise ValueError("the result names letters no operand has.")
    weight = _block_weight(constant, constant_spec, shared, summed, own, output, sizes)
    rows = [sizes[c] for c in kept]
    arranged = _arrange(emit, source, spec, kept + shared + summed,
                        rows + [weight.shape[1]], sizes, "in")
    chain = _Chain(emit, arranged)
    chain.add("Dense", "dense", weight=weight, bias=None)
    return _restore(chain, rows + [weight.shape[0]], kept + shared + own, output, sizes)


def emit_einsum_product(emit: Emit, a: object, b: object, spec_a: str, spec_b: str,
                        output: str, sizes: dict[str, int], lrp_constant: int | None) -> int:
    """``einsum(spec_a + "," + spec_b + "->" + output)`` of two computed tensors as one
    MatMul between reshapes (see the module docs); ``lrp_constant`` as for MatMul."""
    common = [c for c in spec_a if c in spec_b and c in output]
    summed = [c for c in spec_a if c in spec_b and c not in output]
    rows = [c for c in spec_a if c not in spec_b]
    columns = [c for c in spec_b if c not in spec_a]
    alone = [c for c in rows + columns if c not in output]
    if alone:
        raise ValueError(f"the letters {alone} are summed within one operand; sum that "
                         "operand first.")
    lead = [sizes[c] for c in common]
    inner = math.prod(sizes[c] for c in summed)
    left = _arrange(emit, a, spec_a, common + rows + summed,
                    lead + [math.prod(sizes[c] for c in rows), inner], sizes, "a")
    right = _arrange(emit, b, spec_b, common + summed + columns,
                     lead + [inner, math.prod(sizes[c] for c in columns)], sizes, "b")
    chain = _Chain(emit, left)
    chain.add("MatMul", "matmul", extra_reads=[right], lrp_constant=lrp_constant)
    shape = lead + [math.prod(sizes[c] for c in rows), math.prod(sizes[c] for c in columns)]
    return _restore(chain, shape, common + rows + columns, output, sizes)


def _block_weight(constant: Tensor, constant_spec: str, shared: list[str],
                  summed: list[str], own: list[str], output: str,
                  sizes: dict[str, int]) -> Tensor:
    """The Dense weight ``(shared * own, shared * summed)`` of a linear einsum: the
    constant, summed over its letters that neither the tensor nor the result has, on the
    diagonal of the shared letters, repeated along summed letters it lacks."""
    primed: dict[str, str] = {}
    for c in shared:
        taken = constant_spec + output + "".join(summed) + "".join(primed.values())
        primed[c] = unused_letter(taken)
    operands = [constant]
    specs = ["".join(primed.get(c, c) for c in constant_spec)]
    for c in shared:  # the diagonal: output letter c equals input letter c'
        operands.append(torch.eye(sizes[c], dtype=constant.dtype))
        specs.append(c + primed[c])
    for c in summed:
        if c not in constant_spec:  # the constant does not vary along it: ones
            operands.append(torch.ones(sizes[c], dtype=constant.dtype))
            specs.append(c)
    result = "".join(shared + own + [primed[c] for c in shared] + summed)
    n_rows = math.prod(sizes[c] for c in shared + own)
    n_columns = math.prod(sizes[c] for c in shared + summed)
    if n_rows * n_columns > MAX_WEIGHT_ENTRIES:
        raise ValueError(f"its dense form would need a {n_rows} x {n_columns} weight.")
    weight = torch.einsum(",".join(specs) + "->" + result, *operands)
    return weight.reshape(n_rows, n_columns)


def unused_letter(taken: str) -> str:
    """A letter for an einsum axis that ``taken`` does not use."""
    return next(c for c in string.ascii_letters if c not in taken)


def _arrange(emit: Emit, source: object, spec: str, order: Sequence[str],
             shape: Sequence[int], sizes: dict[str, int], part: str) -> object:
    """``source`` (letters ``spec``) permuted to ``order`` and reshaped to ``shape``;
    ``source`` itself where neither changes anything."""
    chain = _Chain(emit, source)
    perm = [spec.index(c) for c in order]
    if perm != list(range(len(perm))):
        chain.add("Permute", f"{part}_perm", perm=perm)
    if list(shape) != [sizes[c] for c in order]:
        chain.add("Reshape", f"{part}_reshape", shape=list(shape))
    return chain.close(part if chain.pending else None)


def _restore(chain: _Chain, shape: list[int], letters: list[str], output: str,
             sizes: dict[str, int]) -> int:
    """Reshape the chain's result (of ``shape``) to one axis per letter and permute it to
    ``output``."""
    if shape != [sizes[c] for c in letters]:
        chain.add("Reshape", "reshape", shape=[sizes[c] for c in letters])
    perm = [letters.index(c) for c in output]
    if perm != list(range(len(perm))):
        chain.add("Permute", "perm", perm=perm)
    return chain.close("")


class _Chain:
    """Layers applied one after another; the last one gets the name it closes with."""

    def __init__(self, emit: Emit, source: object) -> None:
        self.emit, self.current = emit, source
        self.pending: tuple | None = None

    def add(self, type_name: str, part: str, extra_reads: Sequence[object] = (),
            **params: object) -> None:
        self._flush(None)
        self.pending = (type_name, part, list(extra_reads), params)

    def close(self, part: str | None) -> object:
        """The chain's result; its last layer named by ``part`` (``None``: its own)."""
        self._flush(part)
        return self.current

    def _flush(self, part: str | None) -> None:
        if self.pending is None:
            return
        type_name, own_part, extra, params = self.pending
        self.current = self.emit(type_name, [self.current, *extra],
                                 own_part if part is None else part, **params)
        self.pending = None
