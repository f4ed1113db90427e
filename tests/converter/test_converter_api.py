"""The public attributes of ``Converter``: shapes, names, printing, the dict
round trip, several inputs and outputs, and what conversion leaves untouched
(the user's model, its train/eval flags and the global RNG)."""

from __future__ import annotations

import copy
import json
import warnings

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor

import innsight as ins

pytestmark = pytest.mark.usefixtures("torch_seed")

FLOAT_TOL = 1e-5


def labels(letter, n):
    return [f"{letter}{i}" for i in range(1, n + 1)]


# ---- shapes and names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "input_dim", "input_dims", "output_dims"),
    [
        ("mlp", [5], [(5,)], [(3,)]),
        ("cnn1d", [2, 20], [(2, 20)], [(2,)]),
        ("cnn2d", (3, 12, 12), [(3, 12, 12)], [(4,)]),
        ("cnn2d", torch.Size([3, 12, 12]), [(3, 12, 12)], [(4,)]),
        ("two_input_net", [[3, 10, 10], [4]], [(3, 10, 10), (4,)], [(2,)]),
        ("two_output_net", [[6]], [(6,)], [(3,), (1,)]),
    ],
    ids=["mlp", "cnn1d", "cnn2d-tuple", "cnn2d-size", "two-inputs", "two-outputs"],
)
def test_input_and_output_dim(request, fixture, input_dim, input_dims, output_dims):
    model = request.getfixturevalue(fixture)
    conv = ins.convert(model, input_dim=input_dim)
    assert conv.input_dim == input_dims
    assert conv.output_dim == output_dims
    assert all(type(d) is tuple and all(type(n) is int for n in d)
               for d in conv.input_dim + conv.output_dim)
    # the shapes the original model produces
    xs = [torch.randn(2, *d) for d in input_dims]
    with torch.no_grad():
        outputs = model(*xs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    assert [tuple(y.shape[1:]) for y in outputs] == output_dims


def test_default_names_tabular(mlp):
    conv = ins.convert(mlp, input_dim=[5])
    assert conv.input_names == [[labels("X", 5)]]
    assert conv.output_names == [[labels("Y", 3)]]


def test_default_names_signal(cnn1d):
    conv = ins.convert(cnn1d, input_dim=[2, 20])
    assert conv.input_names == [[labels("C", 2), labels("L", 20)]]
    assert conv.output_names == [[labels("Y", 2)]]


def test_default_names_image(cnn2d):
    conv = ins.convert(cnn2d, input_dim=[3, 12, 12])
    assert conv.input_names == [[labels("C", 3), labels("H", 12), labels("W", 12)]]
    assert conv.output_names == [[labels("Y", 4)]]


def test_default_names_several_layers(two_input_net, two_output_net):
    conv = ins.convert(two_input_net, input_dim=[[3, 10, 10], [4]])
    assert conv.input_names == [[labels("C", 3), labels("H", 10), labels("W", 10)],
                                [labels("X", 4)]]
    conv = ins.convert(two_output_net, input_dim=[6])
    assert conv.output_names == [[labels("Y", 3)], [labels("Y", 1)]]


def test_user_names_tabular(mlp):
    features = ["age", "income", "height", "weight", "bmi"]
    conv = ins.convert(mlp, input_dim=[5], input_names=features,
                       output_names=[["low", "mid", "high"]])
    assert conv.input_names == [[features]]
    assert conv.output_names == [[["low", "mid", "high"]]]


def test_user_names_from_pandas_and_tuples(mlp):
    features = pd.Index(["a", "b", "c", "d", "e"])
    conv = ins.convert(mlp, input_dim=[5], input_names=features, output_names=("u", "v", "w"))
    assert conv.input_names == [[["a", "b", "c", "d", "e"]]]
    assert conv.output_names == [[["u", "v", "w"]]]


def test_user_names_image(cnn2d):
    names = [["red", "green", "blue"], labels("row", 12), labels("col", 12)]
    conv = ins.convert(cnn2d, input_dim=[3, 12, 12], input_names=names)
    assert conv.input_names == [names]
    assert conv.output_names == [[labels("Y", 4)]]  # still the default


def test_user_names_several_layers(two_input_net, two_output_net):
    image = [["r", "g", "b"], labels("h", 10), labels("w", 10)]
    tabular = [["t1", "t2", "t3", "t4"]]
    conv = ins.convert(two_input_net, input_dim=[[3, 10, 10], [4]],
                       input_names=[image, tabular])
    assert conv.input_names == [image, tabular]
    conv = ins.convert(two_output_net, input_dim=[6],
                       output_names=[["cat", "dog", "bird"], ["size"]])
    assert conv.output_names == [[["cat", "dog", "bird"]], [["size"]]]


# ---- the converter object ---------------------------------------------------------------------------


def test_convert_is_converter(cnn2d):
    conv = ins.convert(cnn2d, input_dim=[3, 12, 12])
    same = ins.Converter(cnn2d, input_dim=[3, 12, 12])
    assert isinstance(conv, ins.Converter)
    assert isinstance(conv.model, ins.ConvertedModel)
    assert isinstance(conv.model, nn.Module)
    x = torch.randn(4, 3, 12, 12)
    assert torch.equal(conv.model(x), same.model(x))


@pytest.mark.parametrize("batch", [1, 2, 7])
def test_any_batch_size(cnn2d, outputs_match, batch):
    conv = ins.convert(cnn2d, input_dim=[3, 12, 12])
    x = torch.randn(batch, 3, 12, 12)
    with torch.no_grad():
        outputs_match(conv.model(x), cnn2d(x), FLOAT_TOL)


def test_dtype_of_converted_model(cnn2d):
    assert ins.convert(cnn2d, input_dim=[3, 12, 12]).model.dtype == torch.float32
    conv = ins.convert(cnn2d, input_dim=[3, 12, 12], dtype="double")
    assert conv.model.dtype == torch.float64
    assert all(p.dtype == torch.float64 for p in conv.model.parameters())
    assert conv.model(torch.randn(2, 3, 12, 12, dtype=torch.float64)).dtype == torch.float64


def test_several_inputs_and_outputs_as_lists(outputs_match, torch_seed):
    class TwoInTwoOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(2, 3, 3)
            self.fc = nn.Linear(3 * 6 + 4, 3)

        def forward(self, signal, tabular):
            h = torch.cat([F.relu(self.conv(signal)).flatten(1), tabular], dim=1)
            return torch.sigmoid(self.fc(h)), tabular * 2

    model = TwoInTwoOut().eval()
    conv = ins.convert(model, input_dim=[[2, 8], [4]])
    assert conv.input_dim == [(2, 8), (4,)]
    assert conv.output_dim == [(3,), (4,)]
    signal, tabular = torch.randn(5, 2, 8), torch.randn(5, 4)
    with torch.no_grad():
        expected = model(signal, tabular)
    for xs in ([signal, tabular], (signal, tabular)):
        outputs = conv.model(xs)
        assert isinstance(outputs, list) and len(outputs) == 2
        outputs_match(outputs, expected, FLOAT_TOL)


def test_single_output_is_a_tensor(two_input_net):
    conv = ins.convert(two_input_net, input_dim=[[3, 10, 10], [4]])
    output = conv.model([torch.randn(2, 3, 10, 10), torch.randn(2, 4)])
    assert isinstance(output, torch.Tensor)
    assert output.shape == (2, 2)


# ---- printing ------------------------------------------------------------------------------------------


def module_output_shapes(model, x):
    """Output shape (without batch axis) of every named leaf module, from hooks."""
    shapes, handles = {}, []
    for name, module in model.named_modules():
        if name and not list(module.children()):
            handles.append(module.register_forward_hook(
                lambda mod, inp, out, name=name: shapes.__setitem__(name, list(out.shape[1:]))))
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return shapes


@pytest.mark.parametrize(("fixture", "input_dim"),
                         [("cnn2d", [3, 12, 12]), ("residual_net", [3, 16, 16])])
def test_repr_lists_every_layer_with_its_shape(request, fixture, input_dim):
    model = request.getfixturevalue(fixture)
    conv = ins.convert(model, input_dim=input_dim)
    text = repr(conv)
    assert str(conv) == text
    lines = text.splitlines()
    # one row per layer, with the layer's name and its output shape
    for layer, name in zip(conv.model.layers, conv.model.layer_names):
        shape = str(list(layer.output_dim))
        assert any(name in line.split() and line.rstrip().endswith(shape) for line in lines), (
            f"no row for layer {name!r} with shape {shape} in\n{text}")
    assert len(lines) >= len(conv.model.layers) + 1
    # the shapes the original modules produce, for the layers named after them
    shapes = module_output_shapes(model, torch.randn(2, *input_dim))
    checked = [name for name in shapes if name in conv.model.layer_names]
    assert len(checked) >= 5, (checked, conv.model.layer_names)
    for name in checked:
        assert any(name in line.split() and line.rstrip().endswith(str(shapes[name]))
                   for line in lines), f"module {name!r}: {shapes[name]} not in\n{text}"


class SharedBlock(nn.Module):
    """One linear layer and one ReLU, each called twice."""

    def __init__(self):
        super().__init__()
        self.fc, self.act = nn.Linear(4, 4), nn.ReLU()

    def forward(self, x):
        return self.act(self.fc(self.act(self.fc(x))))


def test_a_module_called_twice_gives_layers_of_distinct_names():
    model = SharedBlock().eval()
    conv = ins.convert(model, input_dim=[4])
    names = conv.model.layer_names
    assert names[1:] == ["fc", "act", "fc_1", "act_1"], names
    x = torch.randn(3, 4)
    # Gradient explains the logits (the second call of fc): towards the first call's
    # ReLU output that is fc's weight, towards the logits themselves the identity
    first = ins.run_grad(conv, x, attribute_to="act").get_result("torch_tensor")
    second = ins.run_grad(conv, x, attribute_to="fc_1").get_result("torch_tensor")
    assert torch.allclose(first, model.fc.weight.detach().T.expand(3, 4, 4), atol=1e-6)
    assert torch.equal(second, torch.eye(4).expand(3, 4, 4))


def test_print_shows_inputs_and_outputs(two_input_net, capsys):
    conv = ins.convert(two_input_net, input_dim=[[3, 10, 10], [4]])
    print(conv)
    out = capsys.readouterr().out
    assert "[3, 10, 10]" in out and "[4]" in out
    assert "[2]" in out


# ---- dict round trip ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "input_dim"),
    [("cnn2d", [3, 12, 12]), ("residual_net", [3, 16, 16]), ("cnn1d", [2, 20]),
     ("two_input_net", [[3, 10, 10], [4]]), ("two_output_net", [6])],
)
@pytest.mark.parametrize("dtype", ["float", "double"])
def test_to_dict_survives_json_and_converts_back(request, outputs_match, fixture, input_dim,
                                                 dtype):
    model = request.getfixturevalue(fixture)
    conv = ins.convert(model, input_dim=input_dim, dtype=dtype)
    text = json.dumps(conv.to_dict())
    again = ins.convert(json.loads(text), dtype=dtype)

    assert again.input_dim == conv.input_dim
    assert again.output_dim == conv.output_dim
    assert again.input_names == conv.input_names
    assert again.output_names == conv.output_names
    assert again.to_dict() == json.loads(text)

    torch_dtype = torch.float32 if dtype == "float" else torch.float64
    xs = [torch.randn(3, *d, dtype=torch_dtype) for d in conv.input_dim]
    xs = xs[0] if len(xs) == 1 else xs
    first, second = conv.model(xs), again.model(xs)
    for a, b in zip(first if isinstance(first, list) else [first],
                    second if isinstance(second, list) else [second]):
        assert torch.equal(a, b)
    reference = copy.deepcopy(model).to(torch_dtype)
    with torch.no_grad():
        expected = reference(*(xs if isinstance(xs, list) else [xs]))
    outputs_match(second, expected, FLOAT_TOL if dtype == "float" else 1e-10)


def test_to_dict_keeps_user_names(mlp):
    conv = ins.convert(mlp, input_dim=[5], input_names=list("abcde"),
                       output_names=["p", "q", "r"])
    description = json.loads(json.dumps(conv.to_dict()))
    assert set(description) >= {"input_dim", "input_nodes", "input_names", "output_nodes",
                                "output_names", "layers"}
    again = ins.convert(description)
    assert again.input_names == [[list("abcde")]]
    assert again.output_names == [[["p", "q", "r"]]]


def test_dict_input_dim_is_checked(cnn2d):
    description = ins.convert(cnn2d, input_dim=[3, 12, 12]).to_dict()
    assert ins.convert(description, input_dim=[3, 12, 12]).input_dim == [(3, 12, 12)]
    with pytest.raises(ValueError, match="input_dim"):
        ins.convert(description, input_dim=[3, 10, 10])


# ---- what conversion leaves untouched ---------------------------------------------------------------


class TrainableNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(4 * 6 * 6, 3))

    def forward(self, x):
        return self.head(self.drop(F.relu(self.bn(self.conv(x)))))


def test_train_mode_converts_with_eval_semantics_and_warns(outputs_match):
    model = TrainableNet()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 1.5)
    model.train()
    model.head.eval()  # a mixed state, which must come back as it was
    flags = {name: module.training for name, module in model.named_modules()}
    state = copy.deepcopy(model.state_dict())

    with pytest.warns(UserWarning, match="training mode"):
        conv = ins.convert(model, input_dim=[3, 8, 8])

    assert {name: module.training for name, module in model.named_modules()} == flags
    assert model.training and model.bn.training and model.drop.training
    assert not model.head.training and not model.head[1].training
    for key, value in model.state_dict().items():  # running statistics not updated
        assert torch.equal(value, state[key]), key

    x = torch.randn(4, 3, 8, 8)
    reference = copy.deepcopy(model).eval()
    with torch.no_grad():
        expected = reference(x)
    outputs_match(conv.model(x), expected, FLOAT_TOL)
    assert torch.equal(conv.model(x), conv.model(x))  # no dropout left


def test_eval_mode_converts_without_warning(cnn2d):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ins.convert(cnn2d, input_dim=[3, 12, 12])


@pytest.mark.parametrize("convert", [ins.convert, ins.Converter], ids=["convert", "Converter"])
def test_train_mode_warning_points_at_the_caller(convert):
    model = TrainableNet().train()
    with pytest.warns(UserWarning, match="training mode") as record:
        convert(model, input_dim=[3, 8, 8])
    assert record[0].filename == __file__


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("dtype", ["float", "double"])
def test_global_rng_is_not_consumed(train, dtype):
    model = TrainableNet().train(train)
    before = torch.get_rng_state()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the train-mode warning
        ins.convert(model, input_dim=[3, 8, 8], dtype=dtype)
    assert torch.equal(torch.get_rng_state(), before)


def test_user_model_is_unchanged_and_independent(cnn2d, outputs_match):
    state = copy.deepcopy(cnn2d.state_dict())
    conv = ins.convert(cnn2d, input_dim=[3, 12, 12])
    for key, value in cnn2d.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert all(p.grad is None for p in cnn2d.parameters())

    x = torch.randn(3, 3, 12, 12)
    with torch.no_grad():
        expected = cnn2d(x)
        for p in cnn2d.parameters():  # the user keeps training their model
            p.add_(1.0)
    outputs_match(conv.model(x), expected, FLOAT_TOL)


# ---- what conversion runs ---------------------------------------------------------------------


def real_forwards_of(module: nn.Module) -> list[int]:
    """A counter of the calls of ``module`` on real tensors (not meta or fake ones: the
    shape propagation's), as a list of one int."""
    count = [0]

    def hook(_module, inputs, _output):
        x = inputs[0]
        count[0] += not x.is_meta and not isinstance(x, FakeTensor)

    module.register_forward_hook(hook)
    return count


def test_only_the_dry_run_runs_the_original_on_data(cnn2d):
    """Shapes come from a pass on the meta device: the original runs on real data once,
    in the dry run (one sample)."""
    calls = real_forwards_of(cnn2d.bn1)
    ins.convert(cnn2d, input_dim=[3, 12, 12])
    assert calls == [1]


def test_check_false_runs_no_forward_and_skips_the_dry_run(cnn2d, module_from, outputs_match,
                                                       converts_wrongly):
    """``check=False``: the original never runs on data and the converted model has the
    shapes of a checked conversion and reproduces the original; a conversion the dry run
    refuses (a graph that computes something else than the model) goes through unnoticed."""
    calls = real_forwards_of(cnn2d.bn1)
    conv = ins.convert(cnn2d, input_dim=[3, 12, 12], check=False)
    assert calls == [0]
    checked = ins.convert(cnn2d, input_dim=[3, 12, 12]).model
    for layer, reference in zip(conv.model.layers, checked.layers, strict=True):
        assert (layer.input_dim, layer.output_dim) == (reference.input_dim, reference.output_dim)
    x = torch.randn(3, 3, 12, 12)
    with torch.no_grad():
        outputs_match(conv.model(x), cnn2d(x), FLOAT_TOL)

    wrong = module_from(lambda m, x: converts_wrongly(m.fc(x)), fc=nn.Linear(4, 4))
    with pytest.raises(ins.ConversionError, match="differs"):
        ins.convert(wrong, input_dim=[4], tracer="fx")
    ins.convert(wrong, input_dim=[4], tracer="fx", check=False)


def test_check_must_be_a_bool(cnn2d):
    with pytest.raises(TypeError, match="`check` must be True or False, got 'no'"):
        ins.convert(cnn2d, input_dim=[3, 12, 12], check="no")
