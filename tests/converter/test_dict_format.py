"""The model-as-dict front-end: ``ins.convert(model_dict)`` and ``conv.to_dict()``.

Expected outputs come from hand-written torch modules holding the same
weights; expected names and messages come from the design (section 4) and
from the checks' own wording.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import innsight as ins
from innsight.converter.dict_format import build_model

FLOAT_TOL = {"rtol": 1e-5, "atol": 1e-6}
DOUBLE_TOL = {"rtol": 1e-12, "atol": 1e-12}

_RNG = np.random.default_rng(7)


def _randn(*shape: int) -> np.ndarray:
    return 0.5 * _RNG.standard_normal(shape)


def _inputs(*shapes: tuple[int, ...], dtype: torch.dtype = torch.float32, seed: int = 0,
            batch: int = 4) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, *s, generator=generator, dtype=torch.float64).to(dtype)
            for s in shapes]


def _set_linear(layer: nn.Linear, weight: np.ndarray, bias: np.ndarray | None) -> nn.Linear:
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight))
        if bias is not None:
            layer.bias.copy_(torch.from_numpy(bias))
    return layer


# ---- a plain chain (the shortcut without graph keys) ----------------------------------

MLP_W1, MLP_B1 = _randn(8, 4), _randn(8)
MLP_W2, MLP_B2 = _randn(3, 8), _randn(3)


def mlp_dict() -> dict[str, Any]:
    """An MLP as a plain chain: no input layer, no graph keys, numpy weights."""
    return {
        "input_dim": [4],
        "layers": [
            {"type": "Dense", "name": "fc1", "weight": MLP_W1, "bias": MLP_B1},
            {"type": "Activation", "act_name": "relu"},
            {"type": "Dense", "name": "fc2", "weight": MLP_W2, "bias": MLP_B2},
            {"type": "Activation", "name": "out", "act_name": "softmax"},
        ],
    }


def mlp_torch(dtype: torch.dtype = torch.float32) -> nn.Module:
    return nn.Sequential(
        _set_linear(nn.Linear(4, 8, dtype=dtype), MLP_W1, MLP_B1), nn.ReLU(),
        _set_linear(nn.Linear(8, 3, dtype=dtype), MLP_W2, MLP_B2), nn.Softmax(dim=1),
    ).eval()


def test_plain_chain_matches_torch_sequential() -> None:
    conv = ins.convert(mlp_dict())
    x = _inputs((4,))[0]
    with torch.no_grad():
        actual = conv.model(x)
        expected = mlp_torch()(x)
    assert actual.dtype == torch.float32
    torch.testing.assert_close(actual, expected, **FLOAT_TOL)
    assert conv.input_dim == [(4,)]
    assert conv.output_dim == [(3,)]


def test_plain_chain_prepends_an_input_layer_and_chains_the_layers() -> None:
    model = ins.convert(mlp_dict()).model
    assert [layer.type_name for layer in model.layers] == [
        "Input", "Dense", "Activation", "Dense", "Activation"]
    assert model.input_layers == [(), (0,), (1,), (2,), (3,)]
    assert model.input_nodes == [0]
    assert model.output_nodes == [4]
    assert model.layer_names[1] == "fc1"
    assert model.layer_names[3] == "fc2"
    assert model.layer_names[4] == "out"


def test_plain_chain_in_double_matches_torch_in_double() -> None:
    conv = ins.convert(mlp_dict(), dtype="double")
    x = _inputs((4,), dtype=torch.float64)[0]
    with torch.no_grad():
        actual = conv.model(x)
        expected = mlp_torch(torch.float64)(x)
    assert actual.dtype == torch.float64
    torch.testing.assert_close(actual, expected, **DOUBLE_TOL)


def test_plain_chain_does_not_change_the_given_dict() -> None:
    description = mlp_dict()
    before = copy.deepcopy(description)
    ins.convert(description)
    assert description.keys() == before.keys()
    for entry, original in zip(description["layers"], before["layers"]):
        assert entry.keys() == original.keys()


# ---- a branched graph: two inputs, a concatenation, fan-out, two outputs --------------

BR = {
    "w1": _randn(5, 4), "b1": _randn(5),
    "w2": _randn(2, 3),
    "w3": _randn(3, 7), "b3": _randn(3),
    "w4": _randn(3, 3), "b4": _randn(3),
    "w5": _randn(2, 7), "b5": _randn(2),
}


def branched_dict(with_output_layers: bool = True) -> dict[str, Any]:
    """x1 (4,) -> fc1, x2 (3,) -> fc2 (no bias); concat; relu -> h;
    z = fc3(h); y1 = z + fc4(tanh(z)); y2 = fc5(h)."""
    layers = [
        {"type": "Input", "name": "x1", "input_layers": [], "output_layers": [2]},
        {"type": "Input", "name": "x2", "input_layers": [], "output_layers": [3]},
        {"type": "Dense", "name": "fc1", "weight": BR["w1"], "bias": BR["b1"],
         "input_layers": [0], "output_layers": [4]},
        {"type": "Dense", "name": "fc2", "weight": BR["w2"], "input_layers": [1],
         "output_layers": [4]},
        {"type": "Concatenate", "axis": 0, "input_layers": [2, 3], "output_layers": [5]},
        {"type": "Activation", "act_name": "relu", "input_layers": [4], "output_layers": [6, 10]},
        {"type": "Dense", "name": "fc3", "weight": BR["w3"], "bias": BR["b3"],
         "input_layers": [5], "output_layers": [7, 9]},
        {"type": "Activation", "act_name": "tanh", "input_layers": [6], "output_layers": [8]},
        {"type": "Dense", "name": "fc4", "weight": BR["w4"], "bias": BR["b4"],
         "input_layers": [7], "output_layers": [9]},
        {"type": "Add", "input_layers": [6, 8], "output_layers": []},
        {"type": "Dense", "name": "fc5", "weight": BR["w5"], "bias": BR["b5"],
         "input_layers": [5], "output_layers": []},
    ]
    if not with_output_layers:
        for entry in layers:
            del entry["output_layers"]
    return {"input_dim": [[4], [3]], "input_nodes": [0, 1], "output_nodes": [9, 10],
            "layers": layers}


class BranchedTorch(nn.Module):
    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.fc1 = _set_linear(nn.Linear(4, 5, dtype=dtype), BR["w1"], BR["b1"])
        self.fc2 = _set_linear(nn.Linear(3, 2, bias=False, dtype=dtype), BR["w2"], None)
        self.fc3 = _set_linear(nn.Linear(7, 3, dtype=dtype), BR["w3"], BR["b3"])
        self.fc4 = _set_linear(nn.Linear(3, 3, dtype=dtype), BR["w4"], BR["b4"])
        self.fc5 = _set_linear(nn.Linear(7, 2, dtype=dtype), BR["w5"], BR["b5"])

    def forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = F.relu(torch.cat([self.fc1(x1), self.fc2(x2)], dim=1))
        z = self.fc3(h)
        return z + self.fc4(torch.tanh(z)), self.fc5(h), z


@pytest.mark.parametrize("with_output_layers", [True, False], ids=["output_layers", "without"])
def test_branched_dict_matches_hand_written_module(with_output_layers: bool) -> None:
    conv = ins.convert(branched_dict(with_output_layers))
    x1, x2 = _inputs((4,), (3,))
    with torch.no_grad():
        actual = conv.model([x1, x2])
        y1, y2, _ = BranchedTorch()(x1, x2)
    assert isinstance(actual, list) and len(actual) == 2
    torch.testing.assert_close(actual[0], y1, **FLOAT_TOL)
    torch.testing.assert_close(actual[1], y2, **FLOAT_TOL)
    assert conv.input_dim == [(4,), (3,)]
    assert conv.output_dim == [(3,), (2,)]


def test_branched_dict_in_double_matches_exactly_enough() -> None:
    conv = ins.convert(branched_dict(), dtype="double")
    x1, x2 = _inputs((4,), (3,), dtype=torch.float64)
    with torch.no_grad():
        actual = conv.model([x1, x2])
        y1, y2, _ = BranchedTorch(torch.float64)(x1, x2)
    torch.testing.assert_close(actual[0], y1, **DOUBLE_TOL)
    torch.testing.assert_close(actual[1], y2, **DOUBLE_TOL)


def test_output_node_that_later_layers_read_is_kept() -> None:
    description = branched_dict()
    description["output_nodes"] = [6, 9]  # z is both an output and read by layers 7 and 9
    description["layers"][10]["output_layers"] = []
    conv = ins.convert(description, dtype="double")
    x1, x2 = _inputs((4,), (3,), dtype=torch.float64)
    with torch.no_grad():
        z_out, y1_out = conv.model([x1, x2])
        y1, _, z = BranchedTorch(torch.float64)(x1, x2)
    torch.testing.assert_close(z_out, z, **DOUBLE_TOL)
    torch.testing.assert_close(y1_out, y1, **DOUBLE_TOL)


def test_input_nodes_order_decides_which_input_goes_where() -> None:
    description = branched_dict()
    description["input_dim"] = [[3], [4]]
    description["input_nodes"] = [1, 0]  # model input 0 is x2 (3,), input 1 is x1 (4,)
    conv = ins.convert(description)
    assert conv.input_dim == [(3,), (4,)]
    x1, x2 = _inputs((4,), (3,))
    with torch.no_grad():
        actual = conv.model([x2, x1])
        y1, y2, _ = BranchedTorch()(x1, x2)
    torch.testing.assert_close(actual[0], y1, **FLOAT_TOL)
    torch.testing.assert_close(actual[1], y2, **FLOAT_TOL)


def test_single_output_returns_a_tensor_and_several_a_list() -> None:
    description = branched_dict()
    description["output_nodes"] = [10]
    conv = ins.convert(description)
    out = conv.model(_inputs((4,), (3,)))
    assert isinstance(out, Tensor) and out.shape == (4, 2)


# ---- to_dict round trip --------------------------------------------------------------


@pytest.mark.parametrize("make", [mlp_dict, branched_dict], ids=["chain", "branched"])
@pytest.mark.parametrize("dtype", ["float", "double"])
def test_to_dict_round_trip_is_exact_through_json(make: Callable[[], dict], dtype: str) -> None:
    conv = ins.convert(make(), dtype=dtype)
    described = conv.to_dict()
    text = json.dumps(described)
    loaded = json.loads(text)
    assert loaded == described, "to_dict() must hold only JSON-plain values"

    again = ins.convert(loaded, dtype=dtype)
    assert again.to_dict() == described
    xs = _inputs(*conv.input_dim, dtype=torch.float64, seed=5)
    model_input = xs[0] if len(xs) == 1 else xs
    with torch.no_grad():
        first, second = conv.model(model_input), again.model(model_input)
    for a, b in zip(first if isinstance(first, list) else [first],
                    second if isinstance(second, list) else [second]):
        assert torch.equal(a, b)


def test_to_dict_holds_the_given_weights_exactly() -> None:
    in_double = ins.convert(mlp_dict(), dtype="double").to_dict()
    assert in_double["layers"][1]["weight"] == MLP_W1.tolist()
    assert in_double["layers"][3]["bias"] == MLP_B2.tolist()
    in_float = ins.convert(mlp_dict()).to_dict()
    assert in_float["layers"][1]["weight"] == MLP_W1.astype(np.float32).tolist()


def test_to_dict_describes_the_graph() -> None:
    described = ins.convert(branched_dict(with_output_layers=False)).to_dict()
    full = branched_dict()
    assert described["input_dim"] == [[4], [3]]
    assert described["input_nodes"] == [0, 1]
    assert described["output_nodes"] == [9, 10]
    for entry, given in zip(described["layers"], full["layers"]):
        assert entry["type"] == given["type"]
        assert entry["input_layers"] == given["input_layers"]
        assert entry["output_layers"] == given["output_layers"]
        if "name" in given:
            assert entry["name"] == given["name"]
    assert described["layers"][3]["bias"] is None


def test_to_dict_of_the_plain_chain_gives_the_graph_keys() -> None:
    described = ins.convert(mlp_dict()).to_dict()
    assert described["input_nodes"] == [0]
    assert described["output_nodes"] == [4]
    assert described["layers"][0]["type"] == "Input"
    assert [e["input_layers"] for e in described["layers"]] == [[], [0], [1], [2], [3]]
    assert [e["output_layers"] for e in described["layers"]] == [[1], [2], [3], [4], []]


# ---- the input_dim argument ----------------------------------------------------------


@pytest.mark.parametrize("input_dim", [[4], [[4]], (4,), torch.Size([4])],
                         ids=["list", "nested", "tuple", "size"])
def test_input_dim_argument_consistent_with_the_dict(input_dim: Any) -> None:
    conv = ins.convert(mlp_dict(), input_dim=input_dim)
    assert conv.input_dim == [(4,)]


def test_input_dim_argument_consistent_for_several_inputs() -> None:
    conv = ins.convert(branched_dict(), input_dim=[[4], [3]])
    assert conv.input_dim == [(4,), (3,)]


@pytest.mark.parametrize(
    ("make", "input_dim", "given", "described"),
    [
        (mlp_dict, [5], "[[5]]", "[[4]]"),
        (mlp_dict, [[4], [4]], "[[4], [4]]", "[[4]]"),
        (branched_dict, [[3], [4]], "[[3], [4]]", "[[4], [3]]"),
    ],
    ids=["other_size", "extra_input", "swapped"],
)
def test_input_dim_argument_inconsistent_with_the_dict(
    make: Callable[[], dict], input_dim: Any, given: str, described: str
) -> None:
    message = f"`input_dim` {given} differs from the model dict's input_dim {described}"
    with pytest.raises(ValueError, match=re.escape(message)):
        ins.convert(make(), input_dim=input_dim)


@pytest.mark.parametrize("input_dim", [[0], [4, -1], "4", [], [2.5]],
                         ids=["zero", "negative", "str", "empty", "float"])
def test_invalid_input_dim_argument(input_dim: Any) -> None:
    with pytest.raises(ValueError, match=r"`input_dim` must be a shape without the batch axis"):
        ins.convert(mlp_dict(), input_dim=input_dim)


# ---- names ---------------------------------------------------------------------------


def _identity_dict(*shapes: tuple[int, ...]) -> dict[str, Any]:
    """Input layers whose values are the outputs."""
    n = len(shapes)
    return {"input_dim": [list(s) for s in shapes], "input_nodes": list(range(n)),
            "output_nodes": list(range(n)),
            "layers": [{"type": "Input", "input_layers": []} for _ in shapes]}


def _labels(letter: str, n: int) -> list[str]:
    return [f"{letter}{i}" for i in range(1, n + 1)]


def test_default_names_tabular() -> None:
    conv = ins.convert(mlp_dict())
    assert conv.input_names == [[_labels("X", 4)]]
    assert conv.output_names == [[_labels("Y", 3)]]


def test_default_names_signal_and_image() -> None:
    conv = ins.convert(_identity_dict((2, 5), (3, 4, 6)))
    assert conv.input_names == [
        [_labels("C", 2), _labels("L", 5)],
        [_labels("C", 3), _labels("H", 4), _labels("W", 6)],
    ]
    # Outputs: the first axis is labelled Y1.., every axis has one label per entry.
    for names, dim in zip(conv.output_names, [(2, 5), (3, 4, 6)]):
        assert names[0] == _labels("Y", dim[0])
        assert [len(axis) for axis in names] == list(dim)


def test_default_names_several_layers() -> None:
    conv = ins.convert(branched_dict())
    assert conv.input_names == [[_labels("X", 4)], [_labels("X", 3)]]
    assert conv.output_names == [[_labels("Y", 3)], [_labels("Y", 2)]]


@pytest.mark.parametrize(
    ("shapes", "names", "expected"),
    [
        ([(4,)], ["a", "b", "c", "d"], [[["a", "b", "c", "d"]]]),
        ([(4,)], [["a", "b", "c", "d"]], [[["a", "b", "c", "d"]]]),
        ([(4,)], [[["a", "b", "c", "d"]]], [[["a", "b", "c", "d"]]]),
        ([(2, 3)], [["c1", "c2"], ["l1", "l2", "l3"]], [[["c1", "c2"], ["l1", "l2", "l3"]]]),
        ([(2, 3)], [[["c1", "c2"], ["l1", "l2", "l3"]]], [[["c1", "c2"], ["l1", "l2", "l3"]]]),
        ([(2,), (3,)], [["a", "b"], ["c", "d", "e"]], [[["a", "b"]], [["c", "d", "e"]]]),
        ([(2,), (1, 2)], [[["a", "b"]], [["c"], ["d", "e"]]], [[["a", "b"]], [["c"], ["d", "e"]]]),
        ([(3,)], np.array(["a", "b", "c"]), [[["a", "b", "c"]]]),
        ([(3,)], pd.Index(["a", "b", "c"]), [[["a", "b", "c"]]]),
        ([(3,)], ("a", "b", "c"), [[["a", "b", "c"]]]),
        ([(3,)], [1, 2, 3], [[["1", "2", "3"]]]),
        ([(2, 2)], [np.array(["c1", "c2"]), ("h1", "h2")], [[["c1", "c2"], ["h1", "h2"]]]),
    ],
    ids=["flat", "axes_one_layer", "full_one_layer", "axes_signal", "full_signal",
         "one_list_per_layer", "full_two_layers", "numpy", "pandas_index", "tuple", "ints",
         "mixed_containers"],
)
def test_user_names_in_every_accepted_nesting(shapes, names, expected) -> None:
    conv = ins.convert(_identity_dict(*shapes), input_names=names, output_names=names)
    assert conv.input_names == expected
    assert conv.output_names == expected


def test_names_in_the_dict_are_used_and_the_arguments_override_them() -> None:
    description = mlp_dict()
    description["input_names"] = ["a", "b", "c", "d"]
    description["output_names"] = ["low", "mid", "high"]
    conv = ins.convert(description)
    assert conv.input_names == [[["a", "b", "c", "d"]]]
    assert conv.output_names == [[["low", "mid", "high"]]]
    assert conv.to_dict()["output_names"] == [[["low", "mid", "high"]]]

    conv = ins.convert(description, input_names=["p", "q", "r", "s"], output_names=["u", "v", "w"])
    assert conv.input_names == [[["p", "q", "r", "s"]]]
    assert conv.output_names == [[["u", "v", "w"]]]


def test_names_survive_the_round_trip() -> None:
    conv = ins.convert(branched_dict(), input_names=[["a", "b", "c", "d"], ["e", "f", "g"]],
                       output_names=[["y1", "y2", "y3"], ["z1", "z2"]])
    again = ins.convert(json.loads(json.dumps(conv.to_dict())))
    assert again.input_names == [[["a", "b", "c", "d"]], [["e", "f", "g"]]]
    assert again.output_names == [[["y1", "y2", "y3"]], [["z1", "z2"]]]


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"input_names": ["a", "b", "c"]}, ValueError,
         r"`input_names` for layer 0 has label counts \[3\] per axis, but that layer's "
         r"shape is \[4\]"),
        ({"input_names": [["a", "b", "c", "d", "e"]]}, ValueError,
         r"`input_names` for layer 0 has label counts \[5\] per axis"),
        ({"output_names": ["y1", "y2"]}, ValueError,
         r"`output_names` for layer 0 has label counts \[2\] per axis, but that layer's "
         r"shape is \[3\]"),
        ({"input_names": [[["a", "b", "c", "d"]], [["e"]]]}, ValueError,
         r"`input_names` gives labels for 2 layer\(s\) but the model has 1: shapes \[\[4\]\]"),
        ({"input_names": [[[["a", "b", "c", "d"]]]]}, ValueError,
         r"`input_names` is nested 4 lists deep; expected at most 3"),
        ({"input_names": ["a", ["b"], "c", "d"]}, ValueError,
         r"`input_names` must be nested evenly"),
        ({"input_names": []}, TypeError,
         r"`input_names` must hold labels \(str\) in lists, got \[\]"),
        ({"output_names": ["a", None, "c"]}, TypeError,
         r"`output_names` must hold labels \(str\) in lists, got None"),
        ({"input_names": [True, False, True, True]}, TypeError,
         r"`input_names` must hold labels \(str\) in lists, got True"),
    ],
    ids=["too_few", "too_many", "output_too_few", "too_many_layers", "too_deep", "uneven",
         "empty", "none_label", "bool_label"],
)
def test_bad_names_are_refused(kwargs: dict[str, Any], error: type, pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        ins.convert(mlp_dict(), **kwargs)


def test_bad_names_for_several_layers_are_refused() -> None:
    with pytest.raises(ValueError, match=r"`input_names` for layer 1 has label counts \[2\]"):
        ins.convert(branched_dict(), input_names=[["a", "b", "c", "d"], ["e", "f"]])
    with pytest.raises(ValueError, match=r"`input_names` gives labels for 1 layer\(s\) but the "
                                         r"model has 2: shapes \[\[4\], \[3\]\]"):
        ins.convert(branched_dict(), input_names=["a", "b", "c", "d"])


def test_bad_names_in_the_dict_are_refused() -> None:
    description = mlp_dict()
    description["output_names"] = ["only", "two"]
    with pytest.raises(ValueError, match=r"`output_names` for layer 0 has label counts \[2\]"):
        ins.convert(description)


# ---- dtype ---------------------------------------------------------------------------


def test_double_dtype_gives_float64_everywhere() -> None:
    conv = ins.convert(branched_dict(), dtype="double")
    assert conv.model.dtype == torch.float64
    assert all(p.dtype == torch.float64 for p in conv.model.parameters())
    outputs = conv.model(_inputs((4,), (3,), dtype=torch.float32))  # inputs are cast
    assert all(out.dtype == torch.float64 for out in outputs)


def test_float_dtype_is_the_default() -> None:
    conv = ins.convert(mlp_dict())
    assert conv.model.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in conv.model.parameters())
    assert conv.model(_inputs((4,), dtype=torch.float64)[0]).dtype == torch.float32


@pytest.mark.parametrize("dtype", ["half", "float64", None, torch.float16])
def test_unknown_dtype_is_refused(dtype: Any) -> None:
    with pytest.raises(ValueError, match=r"`dtype` must be 'float' or 'double', got"):
        ins.convert(mlp_dict(), dtype=dtype)


# ---- errors of build_model -----------------------------------------------------------


def small_graph() -> dict[str, Any]:
    """Input (4,) -> Dense 'fc' (2, 4) -> Activation; every graph key given."""
    return {
        "input_dim": [[4]],
        "input_nodes": [0],
        "output_nodes": [2],
        "layers": [
            {"type": "Input", "input_layers": [], "output_layers": [1]},
            {"type": "Dense", "name": "fc", "weight": np.ones((2, 4)), "input_layers": [0],
             "output_layers": [2]},
            {"type": "Activation", "act_name": "relu", "input_layers": [1], "output_layers": []},
        ],
    }


def _edit(**changes: Any) -> Callable[[dict[str, Any]], None]:
    """Set top-level keys (``None`` deletes)."""

    def edit(d: dict[str, Any]) -> None:
        for key, value in changes.items():
            if value is None:
                del d[key]
            else:
                d[key] = value

    return edit


def _edit_layer(index: int, **changes: Any) -> Callable[[dict[str, Any]], None]:
    """Set keys of one layer entry (``None`` deletes)."""

    def edit(d: dict[str, Any]) -> None:
        for key, value in changes.items():
            if value is None:
                del d["layers"][index][key]
            else:
                d["layers"][index][key] = value

    return edit


def _add_layer(entry: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """Append a layer; ``output_layers`` (optional) are dropped so they need no update."""

    def edit(d: dict[str, Any]) -> None:
        for layer in d["layers"]:
            del layer["output_layers"]
        d["layers"].append(entry)

    return edit


def _drop_graph_keys(d: dict[str, Any]) -> None:
    for key in ("input_nodes", "output_nodes"):
        del d[key]
    for entry in d["layers"]:
        entry.pop("input_layers", None)
        entry.pop("output_layers", None)


BUILD_ERRORS = [
    # top-level keys
    ("unknown_top_key", _edit(outputs=[2]), ValueError,
     r"Model dict has unknown keys \['outputs'\]; allowed: \['input_dim', 'input_nodes'"),
    ("missing_input_dim", _edit(input_dim=None), ValueError,
     r"Model dict misses the key 'input_dim'"),
    ("missing_layers", _edit(layers=None), ValueError, r"Model dict misses the key 'layers'"),
    ("empty_layers", _edit(layers=[]), ValueError,
     r"Model dict 'layers' must be a non-empty list, got \[\]"),
    ("layers_not_a_list", _edit(layers={"type": "Dense"}), ValueError,
     r"Model dict 'layers' must be a non-empty list, got \{'type': 'Dense'\}"),
    ("bad_input_dim", _edit(input_dim=[[4, 0]]), ValueError,
     r"`input_dim\[0\]` must be a shape without the batch axis"),
    # layer entries
    ("unknown_layer_type", _edit_layer(1, type="Dens"), ValueError,
     r"layers\[1\] has unknown type 'Dens'; known types: \[.*'Dense'"),
    ("missing_layer_type", _edit_layer(2, type=None), ValueError,
     r"layers\[2\] has unknown type None"),
    ("layer_not_a_dict", lambda d: d["layers"].__setitem__(1, "Dense"), TypeError,
     r"layers\[1\] must be a dict, got 'Dense'"),
    # graph keys
    ("missing_input_nodes", _edit(input_nodes=None), ValueError,
     r"Model dict misses the key 'input_nodes' \(needed unless the layers form a plain chain\)"),
    ("missing_output_nodes", _edit(output_nodes=None), ValueError,
     r"Model dict misses the key 'output_nodes'"),
    ("chain_with_one_graph_key", lambda d: (_drop_graph_keys(d),
                                            d["layers"][2].update(output_layers=[]),
                                            d["layers"].pop(0)),
     ValueError, r"Model dict misses the key 'input_nodes'"),
    ("chain_with_input_layer", _drop_graph_keys, ValueError,
     r"Model dict misses the key 'input_nodes'"),
    ("chain_with_several_inputs", lambda d: (_drop_graph_keys(d), d["layers"].pop(0),
                                             d.update(input_dim=[[4], [4]])),
     ValueError, r"A model dict with several inputs must give 'input_nodes', 'output_nodes' "
     r"and each layer's 'input_layers'"),
    ("missing_input_layers", _edit_layer(2, input_layers=None), ValueError,
     r"layers\[2\] misses 'input_layers' \(the indices of the layers it reads\)"),
    ("reads_later_layer", _edit_layer(1, input_layers=[2]), ValueError,
     r"layers\[1\] reads layers \[2\], which do not come before it; list the layers in "
     r"topological order"),
    ("reads_itself", _edit_layer(2, input_layers=[1, 2]), ValueError,
     r"layers\[2\] reads layers \[2\], which do not come before it"),
    ("dense_reads_two", _edit_layer(1, input_layers=[0, 0]), ValueError,
     r"layers\[1\] of type 'Dense' reads 2 layer\(s\), expected 1"),
    ("dense_reads_none", _edit_layer(1, input_layers=[]), ValueError,
     r"layers\[1\] of type 'Dense' reads 0 layer\(s\), expected 1"),
    ("add_reads_one", _add_layer({"type": "Add", "input_layers": [2]}), ValueError,
     r"layers\[3\] of type 'Add' reads 1 layer\(s\), expected two or more"),
    ("multiply_reads_three", _add_layer({"type": "Multiply", "input_layers": [1, 2, 2]}),
     ValueError, r"layers\[3\] of type 'Multiply' reads 3 layer\(s\), expected 2"),
    ("input_reads_a_layer", _add_layer({"type": "Input", "input_layers": [0]}), ValueError,
     r"layers\[3\] of type 'Input' reads 1 layer\(s\), expected 0"),
    ("output_layers_inconsistent", _edit_layer(0, output_layers=[2]), ValueError,
     r"layers\[0\]\['output_layers'\] is \[2\], but the layers reading it are \[1\]"),
    ("output_layers_missing_reader", _edit_layer(1, output_layers=[]), ValueError,
     r"layers\[1\]\['output_layers'\] is \[\], but the layers reading it are \[2\]"),
    ("output_layers_out_of_range", _edit_layer(2, output_layers=[7]), ValueError,
     r"layers\[2\]\['output_layers'\] must be a list of layer indices in 0..2, got \[7\]"),
    # input and output nodes
    ("input_nodes_not_the_input_layer", _edit(input_nodes=[1]), ValueError,
     r"'input_nodes' \[1\] must list each of the Input layers \[0\] once, one per entry of "
     r"'input_dim' \(1\)"),
    ("input_nodes_repeated", _edit(input_nodes=[0, 0], input_dim=[[4], [4]]), ValueError,
     r"'input_nodes' \[0, 0\] must list each of the Input layers \[0\] once"),
    ("input_layer_not_listed",
     _add_layer({"type": "Input", "input_layers": []}), ValueError,
     r"'input_nodes' \[0\] must list each of the Input layers \[0, 3\] once"),
    ("input_dim_count", _edit(input_dim=[[4], [2]]), ValueError,
     r"'input_nodes' \[0\] must list each of the Input layers \[0\] once, one per entry of "
     r"'input_dim' \(2\)"),
    ("empty_output_nodes", _edit(output_nodes=[]), ValueError,
     r"'output_nodes' must name at least one layer"),
    # indices out of range or of the wrong kind
    ("input_layers_out_of_range", _edit_layer(2, input_layers=[5]), ValueError,
     r"layers\[2\]\['input_layers'\] must be a list of layer indices in 0..2, got \[5\]"),
    ("input_layers_negative", _edit_layer(2, input_layers=[-1]), ValueError,
     r"layers\[2\]\['input_layers'\] must be a list of layer indices in 0..2, got \[-1\]"),
    ("input_layers_bool", _edit_layer(1, input_layers=[False]), ValueError,
     r"layers\[1\]\['input_layers'\] must be a list of layer indices in 0..2, got \[False\]"),
    ("input_layers_str", _edit_layer(1, input_layers="0"), ValueError,
     r"layers\[1\]\['input_layers'\] must be a list of layer indices in 0..2, got '0'"),
    ("output_nodes_out_of_range", _edit(output_nodes=[3]), ValueError,
     r"output_nodes must be a list of layer indices in 0..2, got \[3\]"),
    ("input_nodes_out_of_range", _edit(input_nodes=[-1]), ValueError,
     r"input_nodes must be a list of layer indices in 0..2, got \[-1\]"),
    # shapes
    ("dense_wrong_in_size", _edit_layer(1, weight=np.ones((2, 5))), ValueError,
     r"layers\[1\] \('fc', type 'Dense'\) cannot take input shape\(s\) \[\[4\]\]"),
    ("later_layer_wrong_shape", _add_layer({"type": "Dense", "name": "head",
                                            "weight": np.ones((1, 3)), "input_layers": [2]}),
     ValueError, r"layers\[3\] \('head', type 'Dense'\) cannot take input shape\(s\) \[\[2\]\]"),
    ("drops_the_batch_axis", _edit_layer(1, type="Affine", weight=None, scale=np.ones((2, 4))),
     ValueError, r"layers\[1\] \('fc'\) does not keep the batch axis"),
    ("layer_param_error_names_the_layer", _edit_layer(1, bias=np.ones(3)), ValueError,
     r"layers\[1\] \('fc'\) of type 'Dense': `bias` must have shape \(2,\)"),
]


@pytest.mark.parametrize(
    ("edit", "error", "pattern"),
    [case[1:] for case in BUILD_ERRORS],
    ids=[case[0] for case in BUILD_ERRORS],
)
def test_build_errors(edit: Callable[[dict[str, Any]], Any], error: type, pattern: str) -> None:
    description = small_graph()
    edit(description)
    with pytest.raises(error, match=pattern):
        ins.convert(description)


def test_small_graph_is_valid() -> None:
    """The base of the error cases converts, so each error comes from its one edit."""
    conv = ins.convert(small_graph(), dtype="double")
    x = _inputs((4,), dtype=torch.float64)[0]
    torch.testing.assert_close(conv.model(x), F.relu(x @ torch.ones(4, 2, dtype=torch.float64)),
                               **DOUBLE_TOL)


@pytest.mark.parametrize("description", [[1, 2], "model", None, 3.0],
                         ids=["list", "str", "none", "float"])
def test_build_model_refuses_a_non_dict(description: Any) -> None:
    with pytest.raises(TypeError, match=r"A model description must be a dict, got"):
        build_model(description, torch.float32)


def test_convert_refuses_what_is_neither_a_module_nor_a_dict() -> None:
    with pytest.raises(TypeError, match=r"`model` must be a torch nn.Module, .*or a model "
                                        r"dict, got 'model' of type str"):
        ins.convert("model")


# ---- the converted model's checks of its input ---------------------------------------


@pytest.mark.parametrize(
    ("make_x", "error", "pattern"),
    [
        (lambda: _inputs((4,))[0], ValueError,
         r"`x` must hold 2 tensor\(s\), one per input layer, got 1"),
        (lambda: _inputs((4,), (4,)), ValueError,
         r"`x` for input 1 has shape \(4, 4\), expected \(batch, 3\)"),
        (lambda: [_inputs((4,))[0], np.zeros((4, 3))], TypeError,
         r"`x` must hold torch tensors, got an array of shape \(4, 3\) for input 1"),
        (lambda: [_inputs((4,))[0], _inputs((3,), batch=2)[0]], ValueError,
         r"`x` tensors must share the batch size; input 0 has 4, input 1 has 2"),
        (lambda: [torch.zeros(4), torch.zeros(2, 3)], ValueError,
         r"`x` for input 0 has shape \(4,\), expected \(batch, 4\)"),
    ],
    ids=["too_few", "wrong_shape", "numpy", "batch_mismatch", "no_batch_axis"],
)
def test_converted_model_checks_its_input(make_x: Callable[[], Any], error: type,
                                          pattern: str) -> None:
    model = ins.convert(branched_dict()).model
    with pytest.raises(error, match=pattern):
        model(make_x())


# ---- edge cases found while writing this suite -------------------------------------


def test_output_without_sample_axes_converts_or_is_refused_by_name() -> None:
    description = {"input_dim": [[4]], "input_nodes": [0], "output_nodes": [1],
                   "layers": [{"type": "Input", "input_layers": []},
                              {"type": "Mean", "axes": [0], "input_layers": [0]}]}
    try:
        conv = ins.convert(description, dtype="double")
    except ValueError as err:  # refusing it, by name, is acceptable
        assert "output" in str(err)
        return
    x = _inputs((4,), dtype=torch.float64)[0]
    torch.testing.assert_close(conv.model(x), x.sum(1) / 4, **DOUBLE_TOL)


def test_plain_chain_errors_name_the_users_layer_index() -> None:
    description = {"input_dim": [4], "layers": [{"type": "Dense", "weight": np.ones((2, 5))}]}
    with pytest.raises(ValueError, match=r"^layers\[0\]"):
        ins.convert(description)


def test_a_bare_string_is_refused_as_names() -> None:
    description = {"input_dim": [1], "layers": [{"type": "Flatten"}]}
    with pytest.raises((TypeError, ValueError), match=r"`input_names`"):
        ins.convert(description, input_names="a")


def test_unhashable_layer_type_is_refused_by_name() -> None:
    description = small_graph()
    description["layers"][1]["type"] = ["Dense"]
    with pytest.raises((TypeError, ValueError), match=r"layers\[1\]"):
        ins.convert(description)
