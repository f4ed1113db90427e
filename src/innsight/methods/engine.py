"""Augment, differentiate, reduce: the one loop behind every gradient-based method.

Each of ``n_data`` samples gets ``n`` stacked copies (noisy inputs, path
points, reference interpolations). The ``n_data * n`` rows are processed in
chunks of at most ``batch_size`` rows: an *augmenter* makes a chunk's model
inputs and per-row multipliers, one forward pass gives every selected output,
one backward pass per output (graph retained) gives the gradients, and the
products are summed into one result row per sample. Memory is bounded by
``batch_size``, whatever ``n`` is.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from innsight.methods.targets import Targets

#: ``model_fn(inputs, sample) -> outputs``: one tensor ``(rows, *dim)`` per input layer
#: and the data sample ``(rows,)`` each row was made from in, one tensor
#: ``(rows, *out_dim)`` per output layer out.
ModelFn = Callable[[list[Tensor], Tensor | None], list[Tensor]]
#: ``columns_fn(inputs, sample) -> (rows, n_targets)``: the explained quantities at
#: ``inputs`` (one tensor ``(rows, *dim)`` per input layer) made from the data samples
#: ``sample`` ``(rows,)``, differentiable.
ColumnsFn = Callable[[list[Tensor], Tensor], Tensor]


#: Memory one chunk may take by default (inputs, gradients, activations). Larger chunks
#: ran faster on the CPU too (CPU time against a quarter of it, 2**27: resnet18 Gradient
#: on 16 images of 224x224 0.67, a small CNN's SmoothGrad and IntegratedGradient 0.65).
CHUNK_BYTES = 2**30
#: Activation entries a network keeps per input entry, as an allowance (conv nets keep many).
ACTIVATION_ALLOWANCE = 64


def default_batch_size(dims: Sequence[tuple[int, ...]], n_targets: int, itemsize: int) -> int:
    """Rows per chunk so that one chunk stays within :data:`CHUNK_BYTES`."""
    per_row = sum(math.prod(d) for d in dims) * itemsize * (ACTIVATION_ALLOWANCE + n_targets)
    return max(1, CHUNK_BYTES // per_row)


@dataclass(frozen=True)
class Chunk:
    """Rows ``start..stop`` of the stacked batch: which sample and which copy each row is."""

    sample: Tensor  # (rows,) index of the data sample
    copy: Tensor  # (rows,) index of the copy, 0..n-1
    inputs: list[Tensor]  # per input layer, (rows, *dim): the sample of each row
    generator: torch.Generator


#: ``augment(chunk) -> (model inputs, multipliers)``: per input layer ``(rows, *dim)``;
#: multipliers ``None`` keeps the plain gradient.
Augmenter = Callable[[Chunk], tuple[list[Tensor], list[Tensor] | None]]


#: Fewest chunks that get a progress bar: shorter work is done before a bar says anything.
MIN_CHUNKS_FOR_BAR = 4


def in_notebook() -> bool:
    """Whether the code runs in a Jupyter kernel (an IPython shell over ZMQ)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None  # type: ignore[attr-defined]
    return type(shell).__name__ == "ZMQInteractiveShell"


def progress(steps: Iterable[Any], total: int, verbose: bool, desc: str) -> Iterable[Any]:
    """``steps`` behind a tqdm bar when ``verbose`` and there are at least
    :data:`MIN_CHUNKS_FOR_BAR` of them; in a notebook with ipywidgets the widget bar,
    elsewhere the text bar on stderr. tqdm is imported only when a bar is drawn."""
    if not verbose or total < MIN_CHUNKS_FOR_BAR:
        return steps
    if in_notebook() and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm(steps, total=total, desc=desc, leave=False)


def row_chunks(n_rows: int, size: int, verbose: bool = False,
               desc: str = "batches") -> Iterator[slice]:
    """Rows ``0..n_rows`` in consecutive slices of at most ``size``, behind a progress
    bar when ``verbose`` and the slices are many (see :func:`progress`)."""
    starts = range(0, n_rows, size)
    for start in progress(starts, len(starts), verbose, desc):
        yield slice(start, min(start + size, n_rows))


def mean_gradients(
    columns_fn: ColumnsFn,
    n_targets: int,
    data: Sequence[Tensor],
    augment: Augmenter,
    n: int,
    batch_size: int,
    generator: torch.Generator,
    verbose: bool = False,
    keep_columns: bool = False,
) -> tuple[list[Tensor], Tensor | None]:
    """Mean over each sample's ``n`` rows of ``grad(target) * multiplier``.

    Returns one tensor ``(n_data, *dim, n_targets)`` per input layer, and with
    ``keep_columns`` the explained quantities at every row ``(n_data * n, n_targets)``
    from the same forward passes (else ``None``).
    """
    n_data = data[0].shape[0]
    single = n_data * n <= batch_size  # one chunk: its per-sample sums are the result
    # per input layer: target-major sums (n_targets, n_data, *dim), each target's rows
    # contiguous; with one copy per sample each row is written once, so no zero fill
    new = torch.Tensor.new_empty if n == 1 else torch.Tensor.new_zeros
    sums = [[] if single else new(x, n_targets, *x.shape) for x in data]
    kept_columns = []
    for chunk_rows in row_chunks(n_data * n, batch_size, verbose):
        rows = torch.arange(chunk_rows.start, chunk_rows.stop, device=data[0].device)
        sample = rows // n
        # with one copy per sample, a chunk's samples are a slice of the data: no gather
        own = [x[chunk_rows] if n == 1 else x[sample] for x in data]
        inputs, multipliers = augment(Chunk(sample, rows % n, own, generator))
        columns, per_target = gradients(columns_fn, n_targets, inputs, sample)
        if keep_columns:
            kept_columns.append(columns)
        for t, grads in enumerate(per_target):
            for k, grad in enumerate(grads):
                if grad is None:  # this input does not reach this output: its gradient is 0
                    grad = inputs[k].new_zeros(inputs[k].shape)
                elif multipliers is not None:
                    grad = grad * multipliers[k]
                block = sample_sums(grad, chunk_rows.start, n)
                if single:
                    sums[k].append(block.unsqueeze(0))
                    continue
                first = chunk_rows.start // n
                into = sums[k][t, first:first + block.shape[0]]
                if n == 1:
                    into.copy_(block)
                else:
                    into.add_(block)
    if single:
        sums = [joined(per_target, dim=0) for per_target in sums]
    values = [(s.div_(n) if n > 1 else s).movedim(0, -1) for s in sums]
    return values, joined(kept_columns, dim=0) if keep_columns else None


def sample_sums(grad: Tensor, start: int, n: int) -> Tensor:
    """Stacked rows ``start..start + rows`` (``grad`` ``(rows, *dim)``, ``n`` rows per
    sample) summed per sample they touch, ``(samples, *dim)``, the first and last sample
    possibly in part: one reshaped sum over the whole samples, no scatter."""
    rows = grad.shape[0]
    if n == 1:
        return grad
    first, last = start // n, (start + rows - 1) // n
    if first == last:
        return grad.sum(0, keepdim=True)
    head = (first + 1) * n - start  # rows of the first sample
    tail = start + rows - last * n  # rows of the last sample
    whole = grad[head:rows - tail].reshape(-1, n, *grad.shape[1:]).sum(1)
    return torch.cat([grad[:head].sum(0, keepdim=True), whole,
                      grad[rows - tail:].sum(0, keepdim=True)])


def joined(tensors: Sequence[Tensor], dim: int) -> Tensor:
    """``torch.cat`` without the copy of a single tensor."""
    return tensors[0] if len(tensors) == 1 else torch.cat(list(tensors), dim=dim)


def gradients(
    columns_fn: ColumnsFn, n_targets: int, inputs: Sequence[Tensor], sample: Tensor
) -> tuple[Tensor, Iterator[tuple[Tensor | None, ...]]]:
    """The explained quantities ``(rows, n_targets)`` (``columns_fn`` at ``inputs``, no
    longer differentiable) and, per target, its gradient w.r.t. every input ``(rows,
    *dim)``, from one forward pass (``sample``: the data sample of each row, which
    per-sample targets select by).

    Rows are independent samples, so the gradient of a target summed over rows
    gives each row's own gradient. ``None`` marks an input the target does not reach.
    """
    # Graphs are recorded even where the caller turned autograd off.
    with torch.inference_mode(False), torch.enable_grad():
        xs = [(x.clone() if x.is_inference() else x.detach()).requires_grad_(True) for x in inputs]
        columns = columns_fn(xs, sample)
        scalars = [columns[:, t].sum() for t in range(n_targets)]

    def per_target() -> Iterator[tuple[Tensor | None, ...]]:
        for t, scalar in enumerate(scalars):
            yield torch.autograd.grad(
                scalar, xs, retain_graph=t < n_targets - 1, allow_unused=True
            )
    return columns.detach(), per_target()


def evaluate(model_fn: ModelFn, data: Sequence[Tensor], batch_size: int,
             sample: Tensor | None = None) -> list[Tensor]:
    """``model_fn`` on ``data`` in chunks of ``batch_size`` rows, without gradients;
    ``sample`` ``(rows,)`` is the data sample of each row (default: row ``i`` is sample ``i``)."""
    n_rows = data[0].shape[0]
    if sample is None:
        sample = torch.arange(n_rows, device=data[0].device)
    with torch.no_grad():
        chunks = [model_fn([x[rows] for x in data], sample[rows])
                  for rows in row_chunks(n_rows, batch_size)]
    return [torch.cat(parts) for parts in zip(*chunks)]


def target_values(outputs: Sequence[Tensor], targets: Targets,
                  sample: Tensor | None = None) -> Tensor:
    """The explained quantities of ``outputs`` (one tensor per output layer) at rows made
    from the data samples ``sample``, ``(rows, n_targets)``."""
    return targets.values(outputs, sample)
