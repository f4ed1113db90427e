"""ConnectionWeights (Olden et al. 2004): global importance from the weights alone.

The importance of input ``i`` for output ``j`` is the sum over all paths from
``i`` to ``j`` of the products of the weights along the path, i.e. the
Jacobian of the network with every activation replaced by the identity and
every bias by zero. A reverse walk computes it for every selected output at
once. It is defined for graphs of layers with weights (dense, convolution,
batch norm, average pooling, means), activations, sums, concatenations and
shape-only layers; max pooling, elementwise products and layer normalisation
(whose weights depend on each sample) are refused.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from innsight._validation import check_bool
from innsight.methods.base import Explanation, InterpretingMethod, Setup, runner
from innsight.methods.heads import sparse_heads, walk_starts
from innsight.methods.reverse_walk import check_rules, reverse_walk
from innsight.methods.targets import NodeTargets, PerSampleTargets
from innsight.outputs import Target


def explain_connection_weights(setup: Setup, times_input: bool) -> list[Tensor]:
    """Per input layer ``(1, *dim, n_targets)``, or ``(n_data, *dim, n_targets)`` with
    ``times_input`` (the weights times each sample) or per-sample targets (each sample
    gets the weights of its node)."""
    model, explained, targets = setup.model, setup.explained, setup.targets
    check_rules(model, explained, "cw", lambda i: None)
    like = setup.data[0]
    per_sample = isinstance(targets, PerSampleTargets)
    if per_sample:  # one walk for the distinct nodes, then each sample's node
        nodes, of_sample = targets.nodes.unique(return_inverse=True)
        targets = NodeTargets(tuple(Target(targets.layer, int(j)) for j in nodes))
    sample = torch.zeros(1, dtype=torch.long, device=like.device)
    heads = sparse_heads(model, explained, targets, sample)
    ones = walk_starts(model, explained, targets, heads, sample, like, lambda o: 1.0)
    paths = reverse_walk(model, explained, ones,
                         lambda i, m: heads.layer(model, i).weight_paths(m))
    values = []
    for x, w in zip(setup.data, paths):
        w = x.new_zeros(len(targets), 1, *x.shape[1:]) if w is None else w
        if per_sample:
            w = w[of_sample].movedim(0, 1)  # (1, n_data, *dim)
        values.append((w * x if times_input else w).movedim(0, -1))
    return values


class ConnectionWeights(InterpretingMethod):
    """Global importance: sums over all paths of the products of weights (Olden et al. 2004).

    ``data`` is optional: without it (``data=None``) the result holds one row,
    the global importance, and NaN predictions.

    Parameters
    ----------
    times_input : bool
        Multiply the importance by each sample (a local variant), which needs data.

    Notes
    -----
    Further parameters: see :class:`InterpretingMethod`.
    """

    method_name = "ConnectionWeights"
    value_name = "importance"
    needs_graph = True
    tunables = {"times_input": [False, True]}
    data_optional = True

    def __init__(self, converter: Any, data: Any = None, *, times_input: bool = False,
                 **shared: Any) -> None:
        check_bool(times_input, "times_input")
        if times_input and data is None:
            raise ValueError(
                "`times_input=True` multiplies by the data: `data` is required, got None."
            )
        super().__init__(converter, data, times_input=times_input, **shared)

    def _explain(self, setup: Setup, times_input: bool) -> Explanation:
        values = explain_connection_weights(setup, times_input)
        if not times_input:
            values = [v.expand(setup.data[0].shape[0], *v.shape[1:]) for v in values]
        return Explanation(values)


run_cw = runner(ConnectionWeights, "run_cw")
