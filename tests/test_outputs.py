"""The one output selection (``innsight.outputs``) behind ``run_*``, ``torch_*`` and plots."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from innsight.outputs import OutputSelection, Target

#: A model with two output layers: 4 nodes (Y1..Y4) and 3 nodes (Z1..Z3).
MODEL = OutputSelection([[0, 1, 2, 3], [0, 1, 2]], [["Y1", "Y2", "Y3", "Y4"], ["Z1", "Z2", "Z3"]])


def test_whole_model_labels_every_flat_node():
    names = [[["Y1", "Y2"]], [["C1", "C2"], ["L1", "L2", "L3"]]]
    whole = OutputSelection.whole_model(names)
    assert [list(layer) for layer in whole.indices] == [[0, 1], list(range(6))]
    expected = ["C1_L1", "C1_L2", "C1_L3", "C2_L1", "C2_L2", "C2_L3"]
    assert list(whole.labels[1]) == expected  # made when asked for, one by one or all
    assert [whole.labels[1][i] for i in range(-6, 6)] == expected * 2
    assert whole.labels[1][2:4] == expected[2:4] and whole.labels[1].index("C2_L1") == 3
    with pytest.raises(IndexError, match="label index 6 out of range for 6 nodes"):
        whole.labels[1][6]
    assert OutputSelection.whole_model([[]]).labels == [["Y1"]]  # an output without axes


@pytest.mark.parametrize(("kwargs", "indices", "labels"), [
    ({}, [[0, 1], []], [["Y1", "Y2"], []]),  # default 2: the first nodes of the first layer
    ({"output_idx": 3}, [[3], []], [["Y4"], []]),
    ({"output_idx": [2, 0]}, [[2, 0], []], [["Y3", "Y1"], []]),  # in the order asked
    ({"output_idx": np.array([1, 2])}, [[1, 2], []], [["Y2", "Y3"], []]),
    ({"output_idx": [None, [2]]}, [[], [2]], [[], ["Z3"]]),
    ({"output_idx": [[0], 1]}, [[0], [1]], [["Y1"], ["Z2"]]),
    ({"output_label": "Y2"}, [[1], []], [["Y2"], []]),
    ({"output_label": ["Y4", "Y1"]}, [[3, 0], []], [["Y4", "Y1"], []]),
    ({"output_label": [None, ["Z1", "Z3"]]}, [[], [0, 2]], [[], ["Z1", "Z3"]]),
])
def test_choose(kwargs, indices, labels):
    chosen = MODEL.choose(default=2, **kwargs)
    assert (chosen.indices, chosen.labels) == (indices, labels)
    assert chosen.targets == [Target(o, j) for o, layer in enumerate(indices) for j in layer]


def test_a_flat_list_means_the_first_output_layer():
    """The one meaning: labels of the second layer are not searched for a flat list."""
    with pytest.raises(ValueError, match=r"`output_label` \['Z1'\] not found in output layer 0: "
                                         r"its labels are \['Y1', 'Y2', 'Y3', 'Y4'\]"):
        MODEL.choose(output_label=["Z1"])


def test_split_and_positions():
    chosen = MODEL.choose(output_idx=[[3, 1], [2]])
    blocks = chosen.split(torch.arange(6.0).view(2, 3))
    assert torch.equal(blocks[0], torch.tensor([[0.0, 1.0], [3.0, 4.0]]))
    assert torch.equal(blocks[1], torch.tensor([[2.0], [5.0]]))
    assert MODEL.choose(output_idx=[None, [1]]).split(torch.zeros(2, 1))[0] is None
    # a plot selects among what a result computed
    computed = OutputSelection(chosen.indices, chosen.labels, computed=True)
    assert computed.positions_in(computed.choose(output_idx=[[1], []])) == [[1], []]
    assert computed.positions_in(computed.choose()) == [[0, 1], [0]]


@pytest.mark.parametrize(("selection", "kwargs", "error", "match"), [
    (MODEL, {"output_idx": 4}, ValueError,
     r"`output_idx` \[4\] not found in output layer 0: it has 4 nodes \(valid: 0..3\)"),
    (MODEL, {"output_idx": [-1]}, ValueError, r"`output_idx` \[-1\] not found"),
    (MODEL, {"output_idx": [1, 1]}, ValueError,
     r"`output_idx` has repeated output nodes in output layer 0: \[1, 1\]"),
    (MODEL, {"output_label": ["Y1", "Y1"]}, ValueError, "`output_label` has repeated output"),
    (MODEL, {"output_idx": [[0], [0], [0]]}, ValueError,
     "`output_idx` has 3 entries per output layer but the model has 2"),
    (MODEL, {"output_idx": 0, "output_label": "Y1"}, ValueError,
     "Give either `output_idx` or `output_label`, not both"),
    (MODEL, {"output_idx": [None, None]}, ValueError, "`output_idx` selects no output node"),
    (MODEL, {"output_idx": "Y1"}, TypeError, "`output_idx` must be an int, a list of them"),
    (MODEL, {"output_idx": [True]}, TypeError, "`output_idx` must be an int"),
    (MODEL, {"output_idx": []}, TypeError, "`output_idx` must be an int"),
    (MODEL, {"output_label": 1}, TypeError, "`output_label` must be a label"),
    (MODEL, {"output_label": 7}, TypeError,  # labels are strings, and some are listed
     r"got 7\. Labels are strings: in output layer 0 its labels are \['Y1', 'Y2', 'Y3', 'Y4'\]; "
     r"`output_idx` selects by position"),
    (OutputSelection([[0, 2]], [["Y1", "Y3"]], computed=True), {"output_idx": 1}, ValueError,
     r"`output_idx` \[1\] not found in output layer 0: only \[0, 2\] were computed; rerun"),
])
def test_bad_selections_are_refused_by_name(selection, kwargs, error, match):
    with pytest.raises(error, match=match):
        selection.choose(**kwargs)
