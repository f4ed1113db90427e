"""ONNX models exported with ``torch.onnx.export`` (opset 17, symbolic batch axis).

References: onnxruntime running the exported file (forward; tolerance 1e-5
relative to the output scale for small models, 1e-4 for the model zoo), and
``torch.autograd`` on the original torch model (Gradient).
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import innsight as ins

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnx2torch")
onnxruntime = pytest.importorskip("onnxruntime")

FLOAT_TOL = 1e-5
ZOO_TOL = 1e-4
GRAD_TOL = 1e-4


def export(model: nn.Module, dims: Sequence[Sequence[int]], path: Path,
           dynamic_batch: bool = True, **kwargs: Any) -> Path:
    """``torch.onnx.export`` with opset 17, inputs ``x0, x1, ..``, outputs ``y0, ..``."""
    examples = tuple(torch.randn(2, *d) for d in dims)
    with torch.no_grad():
        out = model(*examples)
    n_out = len(out) if isinstance(out, (tuple, list)) else 1
    inputs, outputs = [f"x{k}" for k in range(len(dims))], [f"y{k}" for k in range(n_out)]
    axes = {name: {0: "batch"} for name in inputs + outputs} if dynamic_batch else None
    kwargs.setdefault("opset_version", 17)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), examples, str(path), dynamo=False,
                          input_names=inputs, output_names=outputs,
                          dynamic_axes=kwargs.pop("dynamic_axes", axes), **kwargs)
    return path


def run_onnxruntime(path: Path, xs: Sequence[Tensor]) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {n: x.numpy() for n, x in zip(names, xs)})


def assert_close(actual: Any, expected: Any, rel_tol: float) -> float:
    """Max abs difference at most ``rel_tol`` times the largest expected magnitude."""
    actual = np.asarray(actual.detach() if isinstance(actual, Tensor) else actual, dtype=np.float64)
    expected = np.asarray(expected.detach() if isinstance(expected, Tensor) else expected,
                          dtype=np.float64)
    assert actual.shape == expected.shape
    scale = np.abs(expected).max()
    assert scale > 0, "degenerate reference: all zeros"
    error = np.abs(actual - expected).max() / scale
    assert error <= rel_tol, f"relative deviation {error:.3g} exceeds {rel_tol:g}"
    return error


def check_against_onnxruntime(path: Path, dims: Sequence[Sequence[int]], rel_tol: float = FLOAT_TOL,
                              batch: int = 4, all_sources: bool = False,
                              **convert_kwargs: Any) -> ins.Converter:
    """Convert the file's ModelProto (and, with ``all_sources``, its path as Path and
    str); each conversion reproduces onnxruntime."""
    generator = torch.Generator().manual_seed(7)
    xs = [torch.randn(batch, *d, generator=generator) for d in dims]
    expected = run_onnxruntime(path, xs)
    conv = None
    sources = [path, str(path)] if all_sources else []
    for source in [*sources, onnx.load(str(path))]:
        conv = ins.convert(source, **convert_kwargs)
        actual = conv.model(xs if len(xs) > 1 else xs[0])
        actual = actual if isinstance(actual, list) else [actual]
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert_close(a, e, rel_tol)
    return conv


def autograd_gradient(model: nn.Module, x: Tensor, output_idx: list[int]) -> np.ndarray:
    """``d model(x)[:, j] / dx`` for each j: ``(n, *input_dim, len(output_idx))``."""
    x = x.clone().requires_grad_(True)
    out = model(x)
    grads = [torch.autograd.grad(out[:, j].sum(), x, retain_graph=True)[0] for j in output_idx]
    return torch.stack(grads, dim=-1).numpy()


# ---- models of the acceptance criteria ------------------------------------------------------------------


class OnnxMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 8), nn.Tanh(),
                                  nn.Linear(8, 3))

    def forward(self, x: Tensor) -> Tensor:
        return F.softmax(self.body(x), dim=1)


def test_mlp_matches_onnxruntime_and_autograd(tmp_path):
    torch.manual_seed(0)
    model = OnnxMLP().eval()
    path = export(model, [[5]], tmp_path / "mlp.onnx")
    conv = check_against_onnxruntime(path, [[5]], all_sources=True)
    assert conv.input_dim == [(5,)] and conv.output_dim == [(3,)]
    assert conv.model.layer_names[0] == "x0" and conv.model.layer_names[-1] == "y0"
    assert "/body/body.0/Gemm" in conv.model.layer_names  # the ONNX node names
    again = ins.convert(json.loads(json.dumps(conv.to_dict())))
    x = torch.randn(3, 5)
    assert_close(again.model(x), conv.model(x), 1e-7)
    x = torch.randn(6, 5)
    res = ins.run_grad(conv, x, output_idx=[0, 1, 2], ignore_last_act=False)
    assert_close(res.get_result(), autograd_gradient(model, x, [0, 1, 2]), GRAD_TOL)
    # ignore_last_act explains the logits before the softmax
    res = ins.run_grad(conv, x, output_idx=[0, 2])
    assert_close(res.get_result(), autograd_gradient(model.body, x, [0, 2]), GRAD_TOL)


def test_mlp_in_double_precision_matches_torch_in_double(tmp_path):
    """The float32 weights are kept exactly; in float64 the converted ONNX model equals
    the original torch model run in float64."""
    torch.manual_seed(0)
    model = OnnxMLP().eval()
    path = export(model, [[5]], tmp_path / "mlp.onnx")
    conv = ins.convert(path, dtype="double")
    x = torch.randn(5, 5, dtype=torch.float64)
    with torch.no_grad():
        expected = copy.deepcopy(model).double()(x)
    assert conv.model(x).dtype == torch.float64
    assert_close(conv.model(x), expected, 1e-12)


def test_conv1d_net_matches_onnxruntime_and_autograd(tmp_path, cnn1d):
    path = export(cnn1d, [[2, 20]], tmp_path / "cnn1d.onnx")
    conv = check_against_onnxruntime(path, [[2, 20]])
    assert conv.input_dim == [(2, 20)]
    x = torch.randn(3, 2, 20)
    res = ins.run_grad(conv, x, output_idx=[0, 1])
    assert_close(res.get_result(), autograd_gradient(cnn1d, x, [0, 1]), GRAD_TOL)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_zoo_model_matches_onnxruntime_and_autograd(tmp_path, zoo_model, name):
    """The exporter folds batch norm into the convolutions (float32 rounding of the
    weights), which can flip a ReLU or a max-pooling winner for inputs near a tie:
    the folded file's gradient is checked against autograd on onnx2torch's module of
    that file, and the gradient of a file exported without folding against autograd
    on the original torch model."""
    import onnx2torch

    model = zoo_model(name, num_classes=10)
    path = export(model, [[3, 64, 64]], tmp_path / f"{name}.onnx")
    conv = check_against_onnxruntime(path, [[3, 64, 64]], rel_tol=ZOO_TOL, batch=2)
    assert conv.output_dim == [(10,)]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(11))
    res = ins.run_grad(conv, x, output_idx=[0, 3])
    same_weights = onnx2torch.convert(str(path)).eval()
    assert_close(res.get_result(), autograd_gradient(same_weights, x, [0, 3]), GRAD_TOL)

    unfolded = export(model, [[3, 64, 64]], tmp_path / f"{name}_bn.onnx", do_constant_folding=False)
    conv = ins.convert(unfolded)
    assert any(layer.type_name == "BatchNorm" for layer in conv.model.layers)
    res = ins.run_grad(conv, x, output_idx=[0, 3])
    assert_close(res.get_result(), autograd_gradient(model, x, [0, 3]), GRAD_TOL)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["densenet121", "efficientnet_b0", "shufflenet_v2_x0_5",
                                  "mobilenet_v3_small", "squeezenet1_1", "regnet_y_400mf"])
def test_more_zoo_models_match_onnxruntime(tmp_path, zoo_model, name):
    path = export(zoo_model(name, num_classes=10), [[3, 64, 64]], tmp_path / f"{name}.onnx")
    check_against_onnxruntime(path, [[3, 64, 64]], rel_tol=ZOO_TOL, batch=2)


# ---- graphs, layouts and operations -----------------------------------------------------------------


def test_group_norm_matches_onnxruntime_and_the_torch_conversion(tmp_path):
    """ONNX writes group norm as a reshape, InstanceNormalization, a reshape back, Mul and
    Add; they fuse into the group norm's layers, so that every LRP rule gives what it
    gives for the torch model (unfused, the epsilon stabiliser of five layers differs)."""
    torch.manual_seed(0)
    norm = nn.GroupNorm(2, 4)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    model = nn.Sequential(nn.Conv1d(2, 4, 3), norm, nn.Flatten(), nn.Linear(16, 2)).eval()
    conv = check_against_onnxruntime(export(model, [[2, 6]], tmp_path / "gn.onnx"), [[2, 6]])
    direct = ins.convert(model, input_dim=[2, 6])
    assert [layer.type_name for layer in conv.model.layers] == [
        layer.type_name for layer in direct.model.layers]
    conv = ins.convert(str(tmp_path / "gn.onnx"), dtype="double")
    direct = ins.convert(model, input_dim=[2, 6], dtype="double")
    x = torch.randn(3, 2, 6, dtype=torch.float64)
    for rule_name, rule_param in (("epsilon", 0.01), ("alpha_beta", 2.0)):
        cmp = ins.compare_models({"torch": direct, "onnx": conv}, x, "LRP", dtype="double",
                                 rule_name=rule_name, rule_param=rule_param)
        assert (cmp.differences()["max_rel_diff"] < 1e-10).all()


class Decoder(nn.Module):
    """Transposed convolution, nearest and bilinear resizing, instance norm."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1)
        self.norm = nn.InstanceNorm2d(4, affine=True)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.norm(self.up(x)))
        h = h + F.interpolate(x[:, :1], scale_factor=2, mode="nearest")
        return self.head(F.interpolate(h, scale_factor=0.5, mode="bilinear",
                                       align_corners=False))


def test_decoder_matches_onnxruntime(tmp_path):
    torch.manual_seed(0)
    check_against_onnxruntime(export(Decoder(), [[3, 5, 6]], tmp_path / "decoder.onnx"),
                              [[3, 5, 6]])


def test_residual_net_with_batch_norm(tmp_path, residual_net):
    path = export(residual_net, [[3, 16, 16]], tmp_path / "res.onnx")
    check_against_onnxruntime(path, [[3, 16, 16]])


def test_two_inputs_and_two_outputs(tmp_path, two_in_two_out):
    dims = [[2, 6, 6], [4]]
    path = export(two_in_two_out, dims, tmp_path / "two.onnx")
    conv = check_against_onnxruntime(path, dims)
    assert conv.input_dim == [(2, 6, 6), (4,)]
    assert conv.output_dim == [(3,), (2,)]
    names = conv.model.layer_names
    assert [names[i] for i in conv.model.input_nodes] == ["x0", "x1"]
    assert [names[i] for i in conv.model.output_nodes] == ["y0", "y1"]


class ManyOps(nn.Module):
    """Input (3, 8, 8): padding in three modes, chunk, slicing, permute, several
    activations, constant arithmetic, reductions, and a view with a computed batch size."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")
        self.pad = nn.ZeroPad2d((1, 0, 2, 1))
        self.conv2 = nn.Conv2d(4, 6, 3)
        self.bn = nn.BatchNorm1d(9)
        self.fc = nn.Linear(27, 5)
        self.scale = nn.Parameter(torch.rand(1, 6, 1, 1) + 0.5)

    def forward(self, x: Tensor) -> Tensor:
        x = F.hardswish(self.conv(x))
        x = F.pad(x, (0, 1, 1, 0), mode="replicate")
        x = F.elu(self.conv2(self.pad(x))) * self.scale - 0.25  # (6, 10, 8)
        a, b = x.chunk(2, dim=1)
        sliced = x[:, 1:4, 2:, ::2].mean((2, 3))
        x = torch.cat([torch.sigmoid(a) * b, F.hardsigmoid(b)], dim=1)
        x = torch.cat([x.permute(0, 2, 3, 1).mean((1, 2)), sliced], dim=1)  # (9,)
        x = torch.clamp(self.bn(x.unsqueeze(-1)).squeeze(-1), -1.5, 1.5) / 3.0
        x = torch.cat([x, -x, torch.tanh(x)], dim=1)
        y = F.leaky_relu(self.fc(x.view(x.size(0), -1)), 0.2)
        return y + x.sum(1, keepdim=True)


def test_many_operations(tmp_path):
    torch.manual_seed(3)
    model = ManyOps().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.2, 0.2)
        model.bn.running_var.uniform_(0.5, 1.5)
    path = export(model, [[3, 8, 8]], tmp_path / "ops.onnx")
    conv = check_against_onnxruntime(path, [[3, 8, 8]])
    x = torch.randn(3, 3, 8, 8)
    res = ins.run_grad(conv, x, output_idx=[0, 4], ignore_last_act=False)
    assert_close(res.get_result(), autograd_gradient(model, x, [0, 4]), GRAD_TOL)


class NormNet(nn.Module):
    """Input (3, 6, 6): layer norm over the channels after moving them last (as in
    torchvision's ConvNeXt), over a dense layer's outputs and over the two spatial axes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.channels = nn.LayerNorm(4, eps=1e-6)
        self.fc = nn.Linear(4, 5)
        self.last = nn.LayerNorm(5)
        self.spatial = nn.LayerNorm([4, 4], elementwise_affine=False)
        self.head = nn.Linear(5 * 4 * 4, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.last(self.fc(self.channels(self.conv(x).permute(0, 2, 3, 1))))
        return self.head(F.gelu(self.spatial(h.permute(0, 3, 1, 2))).flatten(1))


def test_layer_normalization_matches_onnxruntime_and_autograd(tmp_path):
    torch.manual_seed(0)
    model = NormNet().eval()
    with torch.no_grad():
        for norm in (model.channels, model.last):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_()
    path = export(model, [[3, 6, 6]], tmp_path / "norm.onnx")
    assert [n.op_type for n in onnx.load(str(path)).graph.node].count("LayerNormalization") == 3
    conv = check_against_onnxruntime(path, [[3, 6, 6]])
    assert sum(layer.type_name == "LayerNorm" for layer in conv.model.layers) == 3
    x = torch.randn(3, 3, 6, 6)
    res = ins.run_grad(conv, x, output_idx=[0, 2])
    assert_close(res.get_result(), autograd_gradient(model, x, [0, 2]), GRAD_TOL)


class AttentionNet(nn.Module):
    """Input 3 tokens of width 4: attention written out (MatMul of two activations,
    Softmax, MatMul) and a dense head (2)."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 3)
        self.head = nn.Linear(9, 2)

    def forward(self, x: Tensor) -> Tensor:
        weights = torch.softmax(self.q(x) @ self.k(x).transpose(1, 2) / 2, -1)
        return self.head((weights @ self.v(x)).flatten(1))


def test_attention_matches_onnxruntime_and_autograd(tmp_path):
    torch.manual_seed(0)
    model = AttentionNet().eval()
    path = export(model, [[3, 4]], tmp_path / "attention.onnx")
    conv = check_against_onnxruntime(path, [[3, 4]])
    products = [layer for layer in conv.model.layers if layer.type_name == "MatMul"]
    assert [layer.lrp_constant for layer in products] == [None, 0]  # AH-rule on the weights
    x = torch.randn(3, 3, 4)
    res = ins.run_grad(conv, x, output_idx=[0, 1])
    assert_close(res.get_result(), autograd_gradient(model, x, [0, 1]), GRAD_TOL)


class EinsumNet(nn.Module):
    """Input 3 tokens of width 4: attention scores as an einsum of two activations, a
    relative-position term as an einsum with a constant, and a dense head (2)."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k = nn.Linear(4, 4), nn.Linear(4, 4)
        self.rel = nn.Parameter(torch.randn(3, 5, 4))
        self.head = nn.Linear(9 + 15, 2)

    def forward(self, x: Tensor) -> Tensor:
        scores = torch.einsum("bqd,bkd->bqk", self.q(x), self.k(x)).softmax(-1)
        relative = torch.einsum("bqd,qrd->bqr", x, self.rel)
        return self.head(torch.cat([scores.flatten(1), relative.flatten(1)], 1))


def test_einsum_matches_onnxruntime_and_autograd(tmp_path):
    torch.manual_seed(0)
    model = EinsumNet().eval()
    path = export(model, [[3, 4]], tmp_path / "einsum.onnx")
    assert [n.op_type for n in onnx.load(str(path)).graph.node].count("Einsum") == 2
    conv = check_against_onnxruntime(path, [[3, 4]])
    x = torch.randn(3, 3, 4)
    res = ins.run_grad(conv, x, output_idx=[0, 1])
    assert_close(res.get_result(), autograd_gradient(model, x, [0, 1]), GRAD_TOL)


def test_layer_normalization_with_a_computed_scale(tmp_path):
    """A scale that is no initializer (here the output of an Identity): onnx2torch keeps
    the node as its own module, whose scale and bias the front-end folds."""
    rng = np.random.default_rng(0)
    scale = onnx.numpy_helper.from_array(rng.uniform(0.5, 1.5, (3, 4)).astype(np.float32), "S")
    bias = onnx.numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "B")
    make = onnx.helper
    nodes = [make.make_node("Identity", ["S"], ["scale"], name="copy"),
             make.make_node("LayerNormalization", ["x", "scale", "B"], ["y"], name="norm",
                            axis=-2, epsilon=1e-3)]
    value = [make.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["batch", 3, 4])
             for name in ("x", "y")]
    graph = make.make_graph(nodes, "g", value[:1], value[1:], [scale, bias])
    path = tmp_path / "norm.onnx"
    onnx.save(make.make_model(graph, opset_imports=[make.make_opsetid("", 17)]), str(path))
    conv = check_against_onnxruntime(path, [[3, 4]])
    (norm,) = [layer for layer in conv.model.layers if layer.type_name == "LayerNorm"]
    assert norm.axes == (0, 1) and norm.eps == pytest.approx(1e-3)


@pytest.mark.parametrize("opset", [11, 13])
def test_older_opsets(tmp_path, opset):
    """Squeeze/Unsqueeze with axes as attributes, Softmax over flattened axes, Pad with
    pads as attributes, Split with split sizes as attributes (opset 11)."""
    torch.manual_seed(3)
    model = ManyOps().eval()
    path = export(model, [[3, 8, 8]], tmp_path / "ops.onnx", opset_version=opset)
    check_against_onnxruntime(path, [[3, 8, 8]])
    path = export(OnnxMLP().eval(), [[5]], tmp_path / "mlp.onnx", opset_version=opset)
    check_against_onnxruntime(path, [[5]])


def test_prelu_with_one_slope_is_a_leaky_relu(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.PReLU(init=0.3), nn.Linear(5, 2)).eval()
    path = export(model, [[4]], tmp_path / "prelu.onnx")
    conv = check_against_onnxruntime(path, [[4]])
    assert any(getattr(layer, "act_name", None) == "leaky_relu" for layer in conv.model.layers)


def test_gather_with_constant_indices(tmp_path):
    """``x[:, 1]`` and ``x[:, :, [0, 2, 4]]`` export as Gather with constant indices."""

    class Picks(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(3, 4, 3)
            self.register_buffer("cols", torch.tensor([0, 2, 4]))

        def forward(self, x):
            h = torch.relu(self.conv(x))  # (4, 6)
            return torch.cat([h[:, 1], h[:, :, -1], h.index_select(2, self.cols).flatten(1)], 1)

    torch.manual_seed(0)
    model = Picks().eval()
    path = export(model, [[3, 8]], tmp_path / "gather.onnx")
    conv = check_against_onnxruntime(path, [[3, 8]])
    x = torch.randn(2, 3, 8)
    res = ins.run_grad(conv, x, output_idx=[0, 7, 12])
    assert_close(res.get_result(), autograd_gradient(model, x, [0, 7, 12]), GRAD_TOL)


def test_spelled_out_gelu_and_silu_become_activations(tmp_path):
    """Before opset 20, ONNX writes GELU as Div/Erf/Add/Mul/Mul and SiLU as Sigmoid/Mul;
    they become the same activation layers as in a torch model's conversion, so that
    rule-based methods give the same results."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 5), nn.SiLU(),
                          nn.Linear(5, 3)).eval()
    path = export(model, [[4]], tmp_path / "acts.onnx")
    conv = check_against_onnxruntime(path, [[4]])
    acts = [layer.act_name for layer in conv.model.layers if layer.type_name == "Activation"]
    assert acts == ["gelu", "silu"]
    x = torch.randn(5, 4, dtype=torch.float64)
    res = ins.run_grad(conv, x, output_idx=[0, 2], dtype="double")
    assert_close(res.get_result(), autograd_gradient(model.double(), x, [0, 2]), 1e-7)
    direct = ins.convert(model, input_dim=[4], dtype="double")
    for name in ("LRP", "DeepLift"):
        cmp = ins.compare_models({"torch": direct, "onnx": conv}, x, name, dtype="double")
        assert (cmp.differences()["max_rel_diff"] < 1e-7).all()


# ---- recurrent nodes (RNN, LSTM, GRU) and Trilu, which onnx2torch does not read ------------------


#: Classifiers of ``tests/conftest.py``: both directions, two layers, the three cells.
RECURRENT = ["lstm", "gru", "bi-lstm", "rnn-relu-2-layers", "bi-gru-2-layers"]


@pytest.mark.parametrize("name", RECURRENT)
def test_recurrent_nodes_match_onnxruntime_torch_and_autograd(tmp_path, name,
                                                              recurrent_classifier):
    """torch.onnx.export writes time-first RNN/LSTM/GRU nodes between transposes: the
    batch axis is followed through them, and the unrolled layers reproduce onnxruntime
    (float) and the torch model (double), with its gradient."""
    model = recurrent_classifier(name)
    path = export(model, [[6, 4]], tmp_path / f"{name}.onnx")
    check_against_onnxruntime(path, [[6, 4]])
    conv = ins.convert(str(path), dtype="double")
    x = torch.randn(3, 6, 4, dtype=torch.float64)
    with torch.no_grad():
        assert_close(conv.model(x), model.double()(x), 1e-12)
    res = ins.run_grad(conv, x, output_idx=[0, 2], dtype="double")
    assert_close(res.get_result(), autograd_gradient(model, x, [0, 2]), 1e-10)


@pytest.mark.parametrize("name", ["lstm", "gru", "bi-lstm"])
def test_recurrent_nodes_deeplift_sums_and_lrp_conserves(tmp_path, name,
                                                         recurrent_classifier):
    """DeepLift sums to ``f(x) - f(x_ref)`` of the torch model; LRP epsilon without
    biases conserves relevance (the gates, held fixed, get none)."""
    model = recurrent_classifier(name, bias=False)
    conv = ins.convert(str(export(model, [[6, 4]], tmp_path / "m.onnx")), dtype="double")
    model = model.double()
    x, x_ref = torch.randn(3, 6, 4, dtype=torch.float64), torch.randn(1, 6, 4,
                                                                      dtype=torch.float64)
    res = ins.run_deeplift(conv, x, x_ref=x_ref, dtype="double")
    with torch.no_grad():
        goal = model(x) - model(x_ref)
    assert_close(res.get_result("torch_tensor").sum((1, 2)), goal, 1e-9)
    res = ins.run_lrp(conv, x, rule_name="epsilon", rule_param=1e-9, dtype="double")
    assert_close(res.decomp_sum[0], res.decomp_goal[0], 1e-6)


def recurrent_node(path: Path, op_type: str, hidden: int, steps: int, features: int,
                   outputs: Sequence[str], inputs: Sequence[str] = (),
                   initializers: Sequence[Any] = (), **attributes: Any) -> Path:
    """A graph of one ``op_type`` node on ``x`` (batch-first, transposed to time-first) with
    random weights, returning the node's ``outputs`` (``Y``, ``Y_h``, ``Y_c``) batch-first."""
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[op_type]
    directions = 2 if attributes.get("direction") == "bidirectional" else 1
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=shape).astype(np.float32) * 0.5 for shape in (
        (directions, gates * hidden, features), (directions, gates * hidden, hidden),
        (directions, 2 * gates * hidden))]
    nodes = [helper.make_node("Transpose", ["x"], ["x_t"], perm=[1, 0, 2])]
    nodes.append(helper.make_node(op_type, ["x_t", "W", "R", "B", *inputs],
                                  ["Y", "Y_h", "Y_c"] if op_type == "LSTM" else ["Y", "Y_h"],
                                  hidden_size=hidden, **attributes))
    final_outputs = []
    for name in outputs:
        rank = 4 if name == "Y" else 3
        perm = [2, 0, 1, 3] if rank == 4 else [1, 0, 2]
        nodes.append(helper.make_node("Transpose", [name], [f"{name}_out"], perm=perm))
        final_outputs.append(helper.make_tensor_value_info(
            f"{name}_out", onnx.TensorProto.FLOAT, ["b", *(f"{name}_{k}" for k in range(1, rank))]))
    graph = helper.make_graph(
        nodes, "recurrent",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["b", steps, features])],
        final_outputs,
        [numpy_helper.from_array(w, n) for w, n in zip(weights, "WRB")] + list(initializers))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), str(path))
    return path


@pytest.mark.parametrize(("op_type", "attributes"), [
    ("LSTM", {"direction": "reverse"}),
    ("LSTM", {"direction": "bidirectional"}),
    ("GRU", {"direction": "bidirectional", "linear_before_reset": 1}),
    ("RNN", {"activations": ["Relu"]}),
    ("RNN", {"direction": "bidirectional", "activations": ["Sigmoid", "Sigmoid"]}),
], ids=["lstm-reverse", "lstm-bidirectional", "gru-bidirectional", "rnn-relu",
        "rnn-sigmoid-bidirectional"])
def test_recurrent_node_outputs_match_onnxruntime(tmp_path, op_type, attributes):
    """Both outputs ``Y (L, D, H)`` and ``Y_h (D, H)`` per sample, read backwards and in
    both directions."""
    path = recurrent_node(tmp_path / "node.onnx", op_type, 3, 5, 2, ["Y", "Y_h"], **attributes)
    check_against_onnxruntime(path, [[5, 2]])


@pytest.mark.parametrize(("op_type", "outputs", "inputs", "attributes", "what"), [
    ("LSTM", ["Y"], [], {"clip": 3.0}, "LSTM with clip=3.0"),
    ("LSTM", ["Y"], [], {"input_forget": 1}, "LSTM with input_forget=1"),
    ("LSTM", ["Y"], [], {"layout": 1}, "LSTM with layout=1"),
    ("GRU", ["Y"], [], {}, "GRU with linear_before_reset=0"),
    ("LSTM", ["Y"], [], {"activations": ["Sigmoid", "Relu", "Tanh"]}, "LSTM with activations"),
    ("RNN", ["Y"], [], {"activations": ["Elu"]}, "RNN with activations"),
    ("LSTM", ["Y"], ["lens"], {}, "LSTM with the input sequence_lens"),
    ("LSTM", ["Y"], ["", "h0"], {}, "LSTM with a non-zero initial_h"),
    ("LSTM", ["Y_c"], [], {}, r"element 2 of the output .*elements \[0, 1\] convert"),
], ids=["clip", "input-forget", "batch-first", "reset-before", "lstm-activations", "rnn-activation",
        "sequence-lens", "initial-state", "cell-state-output"])
def test_recurrent_nodes_refuse_what_does_not_convert(tmp_path, op_type, outputs, inputs,
                                                      attributes, what):
    initializers = [onnx.numpy_helper.from_array(np.full(4, 5, np.int32), "lens"),
                    onnx.numpy_helper.from_array(np.ones((1, 1, 3), np.float32), "h0")]
    path = recurrent_node(tmp_path / "node.onnx", op_type, 3, 5, 2, outputs, inputs=inputs,
                          initializers=[i for i in initializers if i.name in inputs],
                          **attributes)
    with pytest.raises(ins.ConversionError, match=what):
        ins.convert(str(path))


def trilu_graph(path: Path, body: list[Any], shape: Sequence[Any]) -> Path:
    """A graph from ``x`` of ``shape`` (batch first) to ``y`` through ``body``."""
    helper = onnx.helper
    graph = helper.make_graph(
        body, "trilu", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_trilu_of_a_constant_folds_and_of_the_data_is_a_mask(tmp_path):
    """A causal mask (the lower triangle of ones) multiplies the data; the upper triangle
    of the data above the diagonal is added: onnxruntime, autograd and DeepLift's sum."""
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    body = [
        helper.make_node("Constant", [], ["ones"], value=numpy_helper.from_array(
            np.ones((5, 5), np.float32))),
        helper.make_node("Trilu", ["ones"], ["causal"], upper=0),
        helper.make_node("Mul", ["x", "causal"], ["masked"]),
        helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(
            np.array(1, np.int64))),
        helper.make_node("Trilu", ["x", "k"], ["above"]),
        helper.make_node("Add", ["masked", "above"], ["sum"]),
        helper.make_node("Tanh", ["sum"], ["y"]),
    ]
    conv = check_against_onnxruntime(trilu_graph(tmp_path / "trilu.onnx", body, ["b", 3, 5, 5]),
                                     [[3, 5, 5]])
    assert [layer.type_name for layer in conv.model.layers] == [
        "Input", "Affine", "Affine", "Add", "Activation"]

    def reference(x: Tensor) -> Tensor:
        return torch.tanh(x * torch.ones(5, 5, dtype=x.dtype).tril() + x.triu(1)).flatten(1)

    conv = ins.convert(str(tmp_path / "trilu.onnx"), dtype="double")
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    res = ins.run_grad(conv, x, output_idx=[0, 6, 30, 74], ignore_last_act=False,
                       dtype="double")
    xg = x.clone().requires_grad_(True)
    out = reference(xg)
    expected = torch.stack([torch.autograd.grad(out[:, j].sum(), xg, retain_graph=True)[0]
                            for j in (0, 6, 30, 74)], -1)
    assert_close(res.get_result(), expected, 1e-12)
    res = ins.run_deeplift(conv, x, output_idx=[0, 6, 30, 74], ignore_last_act=False,
                           dtype="double")
    with torch.no_grad():
        goal = reference(x) - reference(torch.zeros_like(x))
    assert_close(res.get_result("torch_tensor").sum((1, 2, 3)), goal[:, [0, 6, 30, 74]], 1e-10)


def test_trilu_over_the_batch_axis_is_refused(tmp_path):
    body = [onnx.helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2]),
            onnx.helper.make_node("Trilu", ["t"], ["u"]),
            onnx.helper.make_node("Transpose", ["u"], ["y"], perm=[1, 0, 2])]
    with pytest.raises(ins.ConversionError, match="Trilu over the batch axis"):
        ins.convert(str(trilu_graph(tmp_path / "trilu.onnx", body, ["b", 4, 4])))
