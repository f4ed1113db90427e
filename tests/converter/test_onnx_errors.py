"""ONNX models and files that are refused, each with a message naming the problem;
and the input shapes read from the graph (symbolic axes, fixed batch of one)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import innsight as ins

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnx2torch")
onnxruntime = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def export(model: nn.Module, shape: list[int], path: Path, dynamic_axes: dict | None = None) -> Path:
    if dynamic_axes is None:
        dynamic_axes = {"x": {0: "batch"}, "y": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.randn(2, *shape),), str(path), dynamo=False,
                          opset_version=17, input_names=["x"], output_names=["y"],
                          dynamic_axes=dynamic_axes or None)
    return path


def hand_made(op_type: str, tmp_path: Path, **attributes) -> Path:
    """``y = op(x @ W)`` for x of shape (batch, 4), built node by node."""
    weight = numpy_helper.from_array(np.ones((4, 3), dtype=np.float32), name="W")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="matmul"),
             helper.make_node(op_type, ["h"], ["y"], name="the_node", **attributes)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / f"{op_type}.onnx"
    onnx.save(model, str(path))
    return path


# ---- unsupported operations name the ONNX op type and node ------------------------------------------


def test_op_onnx2torch_cannot_read_is_named(tmp_path):
    path = hand_made("Hardmax", tmp_path)
    with pytest.raises(ins.ConversionError) as info:
        ins.convert(path)
    message = str(info.value)
    assert "Hardmax" in message and "the_node" in message and "torch_grad" in message


def test_op_without_layer_is_named(tmp_path):
    """onnx2torch reads Sin, but no layer computes it."""
    path = hand_made("Sin", tmp_path)
    with pytest.raises(ins.ConversionError) as info:
        ins.convert(path)
    message = str(info.value)
    assert "Sin" in message and "the_node" in message


def test_unsupported_argument_names_the_node(tmp_path):
    """Clip with only a lower bound other than 0 has no layer; the message names the
    op type, the node and the bounds."""

    class LowerClip(nn.Module):
        def forward(self, x):
            return torch.clamp(x, min=0.5)

    path = export(LowerClip(), [4], tmp_path / "clip.onnx")
    with pytest.raises(ins.ConversionError) as info:
        ins.convert(path)
    message = str(info.value)
    assert "op type Clip" in message and "/Clip" in message and "min=0.5" in message


def test_prelu_with_a_slope_per_channel_is_refused(tmp_path):
    model = nn.Sequential(nn.Conv1d(2, 3, 3), nn.PReLU(3), nn.Flatten(), nn.Linear(12, 2))
    path = export(model, [2, 6], tmp_path / "prelu.onnx")
    with pytest.raises(ins.ConversionError, match="op type PRelu.*3 slopes"):
        ins.convert(path)


# ---- files and model protos ------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist.onnx"):
        ins.convert(tmp_path / "does-not-exist.onnx")


def test_file_that_is_no_onnx_model(tmp_path):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"\x00\x01not a protobuf at all" * 10)
    with pytest.raises(ins.ConversionError, match="garbage.onnx"):
        ins.convert(path)


def test_invalid_model_is_refused_by_the_checker(tmp_path):
    model = onnx.load(str(hand_made("Relu", tmp_path)))
    model.graph.node[1].input[0] = "no_such_value"
    with pytest.raises(ins.ConversionError, match="onnx.checker"):
        ins.convert(model)


def test_other_paths_are_not_onnx():
    with pytest.raises(TypeError, match="'.onnx' file"):
        ins.convert("model.pt", input_dim=[2])


def test_missing_extra_names_the_install_command(tmp_path, monkeypatch):
    path = hand_made("Relu", tmp_path)
    monkeypatch.setitem(sys.modules, "onnx2torch", None)
    with pytest.raises(ImportError, match=r"pip install innsight\[onnx\]"):
        ins.convert(path)


def test_integer_input_is_refused(tmp_path):
    nodes = [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Relu", ["f"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ins.ConversionError, match="not a float tensor"):
        ins.convert(model)


# ---- input shapes ----------------------------------------------------------------------------------------


class GlobalPoolNet(nn.Module):
    """Any signal length: conv, global average pooling, dense."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 3)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool1d(torch.relu(self.conv(x)), 1).flatten(1))


@pytest.fixture
def symbolic_length(tmp_path) -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    model = GlobalPoolNet().eval()
    axes = {"x": {0: "batch", 2: "length"}, "y": {0: "batch"}}
    return model, export(model, [2, 12], tmp_path / "signal.onnx", dynamic_axes=axes)


def test_symbolic_sample_axis_needs_input_dim(symbolic_length):
    _, path = symbolic_length
    with pytest.raises(ValueError, match="`input_dim`"):
        ins.convert(path)


def test_input_dim_fills_symbolic_axes(symbolic_length):
    model, path = symbolic_length
    conv = ins.convert(path, input_dim=[2, 20])
    assert conv.input_dim == [(2, 20)]
    x = torch.randn(3, 2, 20)
    with torch.no_grad():
        torch.testing.assert_close(conv.model(x), model(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("input_dim", [[3, 20], [2], [[2, 20], [4]]],
                         ids=["wrong-channels", "wrong-rank", "two-inputs"])
def test_input_dim_must_fit_the_graph(symbolic_length, input_dim):
    _, path = symbolic_length
    with pytest.raises(ValueError, match="`input_dim`"):
        ins.convert(path, input_dim=input_dim)


def test_fixed_batch_of_one_is_accepted(tmp_path, cnn2d):
    """Exported without a symbolic batch axis: the original is run one sample at a time."""
    path = export(cnn2d, [3, 12, 12], tmp_path / "fixed.onnx", dynamic_axes={})
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    path = tmp_path / "fixed1.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(cnn2d, (torch.randn(1, 3, 12, 12),), str(path), dynamo=False,
                          opset_version=17, input_names=["x"], output_names=["y"])
    conv = ins.convert(path)
    x = torch.randn(4, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(conv.model(x), cnn2d(x), rtol=1e-4, atol=1e-5)


def test_fixed_batch_larger_than_one_is_refused(tmp_path, cnn2d):
    path = export(cnn2d, [3, 12, 12], tmp_path / "fixed.onnx", dynamic_axes={})
    with pytest.raises(ins.ConversionError, match="fixed batch size 2"):
        ins.convert(path)


def test_without_onnxruntime_the_dry_run_uses_onnx2torch(tmp_path, monkeypatch):
    """onnxruntime is part of the extra, but conversion does not depend on it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)).eval()
    path = export(model, [4], tmp_path / "mlp.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    conv = ins.convert(path)
    x = torch.randn(3, 4)
    with torch.no_grad():
        torch.testing.assert_close(conv.model(x), model(x), rtol=1e-5, atol=1e-6)


def test_fixed_batch_of_one_with_batch_in_a_reshape_is_refused(tmp_path):
    """``x.view(1, -1)`` bakes the batch size into the graph."""

    class Fixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(2, 3, 3)

        def forward(self, x):
            return self.conv(x).view(1, -1)

    path = tmp_path / "fixed_view.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Fixed().eval(), (torch.randn(1, 2, 6),), str(path), dynamo=False,
                          opset_version=17, input_names=["x"], output_names=["y"])
    with pytest.raises(ins.ConversionError, match="Reshape.*batch axis"):
        ins.convert(path)


def test_fixed_batch_of_one_that_fails_on_other_batches_is_refused(tmp_path):
    class Fixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(2, 3, 3)

        def forward(self, x):
            return self.conv(x).reshape(1, 12)

    path = tmp_path / "fixed_reshape.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Fixed().eval(), (torch.randn(1, 2, 6),), str(path), dynamo=False,
                          opset_version=17, input_names=["x"], output_names=["y"])
    with pytest.raises(ins.ConversionError, match="fixed batch size 1.*symbolic batch axis"):
        ins.convert(path)
