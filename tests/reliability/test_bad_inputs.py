"""The bad-input catalogue: every entry is refused with a ``ValueError``/``TypeError``
(or ``ConversionError`` for models, ``UsageError`` for the command line's files) whose
message names the argument or layer; never a raw torch error, never a silent result.

``docs/reliability.md`` lists the same entries (a test keeps them in sync).
"""

from __future__ import annotations

import copy
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse
import torch
from torch import nn

import innsight as ins
from innsight.cli import UsageError, load_model

DOC = Path(__file__).parents[2] / "docs" / "reliability.md"


@dataclass(frozen=True)
class Ctx:
    """What the cases run on: converted models (tabular ``mlp`` (5,) -> (3,); ``cnn``
    (2, 6, 6) -> (3,); ``two`` with inputs (2, 6, 6) and (4,)), matching data, the dict of
    the MLP, and a folder for files."""

    mlp: ins.Converter
    cnn: ins.Converter
    two: ins.Converter
    torch_mlp: nn.Module
    x: np.ndarray
    image: np.ndarray
    tmp: Path

    def dict_model(self, edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """The MLP's model dict after ``edit`` (in place on a copy)."""
        d = copy.deepcopy(self.mlp.to_dict())
        edit(d)
        return d

    def file(self, name: str, content: bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(content)
        return path


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Ctx:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)).eval()
    cnn = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(12, 3)).eval()

    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(2, 1, 3), nn.Linear(16 + 4, 2)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.cat([self.conv(a).flatten(1), b], 1))

    rng = np.random.default_rng(0)
    return Ctx(ins.convert(mlp, input_dim=[5]), ins.convert(cnn, input_dim=[2, 6, 6]),
               ins.convert(Two().eval(), input_dim=[[2, 6, 6], [4]]), mlp,
               rng.normal(size=(3, 5)), rng.normal(size=(3, 2, 6, 6)),
               tmp_path_factory.mktemp("files"))


def _with(x: np.ndarray, index: tuple[int, ...], value: Any) -> np.ndarray:
    x = x.astype(type(value) if isinstance(value, complex) else x.dtype, copy=True)
    x[index] = value
    return x


@dataclass(frozen=True)
class Case:
    """One bad input: ``call(ctx)`` must raise ``error`` with ``names`` in its message."""

    id: str
    group: str
    call: Callable[[Ctx], Any]
    error: type[Exception] | tuple[type[Exception], ...]
    names: str


def grad(**kwargs: Any) -> Callable[[Ctx], Any]:
    return lambda c: ins.run_grad(c.mlp, kwargs.pop("data", c.x), verbose=False, **kwargs)


def on_mlp(run: Callable[..., Any], **kwargs: Any) -> Callable[[Ctx], Any]:
    return lambda c: run(c.mlp, c.x, verbose=False, **kwargs)


V, T = ValueError, TypeError
CONV_ERROR = (ValueError, TypeError, ins.ConversionError)
CASES = [
    # ---- data and references: non-finite values
    Case("nan in data", "data", lambda c: ins.run_grad(c.mlp, _with(c.x, (0, 1), np.nan)), V,
         "`data`"),
    Case("inf in data", "data", lambda c: ins.run_smoothgrad(c.mlp, _with(c.x, (1, 2), np.inf)),
         V, "`data`"),
    Case("-inf in image data", "data",
         lambda c: ins.run_lrp(c.cnn, _with(c.image, (0, 0, 1, 1), -np.inf)), V, "`data`"),
    Case("nan in x_ref (IntegratedGradient)", "data",
         on_mlp(ins.run_intgrad, x_ref=np.full(5, np.nan)), V, "`x_ref`"),
    Case("inf in x_ref (DeepLift)", "data",
         on_mlp(ins.run_deeplift, x_ref=np.full((1, 5), np.inf)), V, "`x_ref`"),
    Case("nan in data_ref (ExpectedGradient)", "data",
         on_mlp(ins.run_expgrad, data_ref=np.full((4, 5), np.nan)), V, "`data_ref`"),
    Case("inf in data_ref (DeepSHAP)", "data",
         on_mlp(ins.run_deepshap, data_ref=np.full((4, 5), np.inf)), V, "`data_ref`"),
    Case("nan in data_ref (SHAP)", "data",
         lambda c: ins.run_shap(c.mlp, c.x, np.full((4, 5), np.nan), verbose=False), V,
         "`data_ref`"),
    # ---- data: shapes and counts
    Case("too few features", "shape", lambda c: ins.run_grad(c.mlp, c.x[:, :4]), V, "`data`"),
    Case("too many features", "shape", lambda c: ins.run_grad(c.mlp, np.zeros((3, 6))), V,
         "`data`"),
    Case("an extra axis", "shape", lambda c: ins.run_grad(c.mlp, c.x[..., None]), V, "`data`"),
    Case("an image without its channel axis", "shape",
         lambda c: ins.run_grad(c.cnn, c.image[:, 0]), V, "`data`"),
    Case("channels-last image as channels first", "shape",
         lambda c: ins.run_grad(c.cnn, c.image.transpose(0, 2, 3, 1)), V, "channels_first"),
    Case("channels-first image as channels last", "shape",
         lambda c: ins.run_grad(c.cnn, c.image, channels_first=False), V, "channels_first"),
    Case("empty batch", "shape", lambda c: ins.run_grad(c.mlp, np.zeros((0, 5))), V, "`data`"),
    Case("empty batch of images", "shape",
         lambda c: ins.run_deeplift(c.cnn, np.zeros((0, 2, 6, 6))), V, "`data`"),
    Case("two arrays for one input layer", "shape", lambda c: ins.run_grad(c.mlp, [c.x, c.x]),
         V, "`data`"),
    Case("one array for two input layers", "shape",
         lambda c: ins.run_grad(c.two, c.image), V, "`data`"),
    Case("three arrays for two input layers", "shape",
         lambda c: ins.run_grad(c.two, [c.image, c.x[:, :4], c.x]), V, "`data`"),
    Case("input layers with different sample counts", "shape",
         lambda c: ins.run_grad(c.two, [c.image, c.x[:2, :4]]), V, "`data`"),
    Case("x_ref with the wrong feature count", "shape",
         on_mlp(ins.run_intgrad, x_ref=np.zeros((1, 4))), V, "`x_ref`"),
    Case("x_ref with another sample count", "shape",
         on_mlp(ins.run_deeplift, x_ref=np.zeros((2, 5))), V, "`x_ref`"),
    Case("data_ref with the wrong feature count", "shape",
         on_mlp(ins.run_expgrad, data_ref=np.zeros((4, 6))), V, "`data_ref`"),
    Case("empty data_ref", "shape", on_mlp(ins.run_deepshap, data_ref=np.zeros((0, 5))), V,
         "`data_ref`"),
    # ---- data: types
    Case("strings", "dtype", lambda c: ins.run_grad(c.mlp, c.x.astype(str)), T, "`data`"),
    Case("object array", "dtype",
         lambda c: ins.run_grad(c.mlp, np.array([[1, "a", None, 2.0, 3]], dtype=object)), T,
         "`data`"),
    Case("complex numbers", "dtype", lambda c: ins.run_grad(c.mlp, _with(c.x, (0, 0), 1j)), T,
         "`data`"),
    Case("complex tensor", "dtype",
         lambda c: ins.run_grad(c.mlp, torch.zeros(2, 5, dtype=torch.complex64)), T, "`data`"),
    Case("booleans", "dtype", lambda c: ins.run_grad(c.mlp, c.x > 0), T, "`data`"),
    Case("sparse tensor", "dtype", lambda c: ins.run_grad(c.mlp, torch.eye(5).to_sparse()), T,
         "`data`"),
    Case("scipy sparse matrix", "dtype",
         lambda c: ins.run_grad(c.mlp, scipy.sparse.csr_matrix(c.x)), T, "`data`"),
    Case("a string", "dtype", lambda c: ins.run_grad(c.mlp, "data.csv"), T, "`data`"),
    Case("None", "dtype", lambda c: ins.run_grad(c.mlp, None), T, "`data`"),
    Case("a dict", "dtype", lambda c: ins.run_grad(c.mlp, {"x": c.x}), T, "`data`"),
    Case("complex x_ref", "dtype", on_mlp(ins.run_intgrad, x_ref=np.zeros(5, dtype=complex)),
         T, "`x_ref`"),
    # ---- output selection
    Case("output_idx out of range", "outputs", grad(output_idx=3), V, "`output_idx`"),
    Case("negative output_idx", "outputs", grad(output_idx=-1), V, "`output_idx`"),
    Case("float output_idx", "outputs", grad(output_idx=1.0), T, "`output_idx`"),
    Case("string output_idx", "outputs", grad(output_idx="Y1"), T, "`output_idx`"),
    Case("empty output_idx", "outputs", grad(output_idx=[]), (V, T), "`output_idx`"),
    Case("repeated output_idx", "outputs", grad(output_idx=[1, 1]), V, "`output_idx`"),
    Case("output_idx for more output layers than the model has", "outputs",
         grad(output_idx=[[0], [1]]), V, "`output_idx`"),
    Case("unknown output_label", "outputs", grad(output_label="Y9"), V, "`output_label`"),
    Case("int output_label", "outputs", grad(output_label=1), T, "`output_label`"),
    Case("output_idx and output_label together", "outputs",
         grad(output_idx=0, output_label="Y1"), V, "output_label"),
    # ---- method arguments
    Case("n = 0 (SmoothGrad)", "arguments", on_mlp(ins.run_smoothgrad, n=0), V, "`n`"),
    Case("n < 0 (IntegratedGradient)", "arguments", on_mlp(ins.run_intgrad, n=-5), V, "`n`"),
    Case("n a float (ExpectedGradient)", "arguments", on_mlp(ins.run_expgrad, n=2.5), V, "`n`"),
    Case("n a string (SHAP)", "arguments",
         lambda c: ins.run_shap(c.mlp, c.x, c.x, n="10", verbose=False), (V, T), "`n`"),
    Case("negative noise_level", "arguments", on_mlp(ins.run_smoothgrad, noise_level=-0.1), V,
         "`noise_level`"),
    Case("infinite noise_level", "arguments",
         on_mlp(ins.run_smoothgrad, noise_level=float("inf")), V, "`noise_level`"),
    Case("batch_size 0", "arguments", grad(batch_size=0), V, "`batch_size`"),
    Case("batch_size a float", "arguments", on_mlp(ins.run_intgrad, batch_size=8.0), V,
         "`batch_size`"),
    Case("unknown LRP rule", "arguments", on_mlp(ins.run_lrp, rule_name="epsilonn"), V,
         "epsilon"),
    Case("unknown DeepLift rule", "arguments", on_mlp(ins.run_deeplift, rule_name="lrp"), V,
         "`rule_name`"),
    Case("rule_name not a string", "arguments", on_mlp(ins.run_lrp, rule_name=3), T,
         "`rule_name`"),
    Case("rule dict with an unknown layer key", "arguments",
         on_mlp(ins.run_lrp, rule_name={"Conv9D": "epsilon"}), V, "`rule_name`"),
    Case("negative epsilon", "arguments",
         on_mlp(ins.run_lrp, rule_name="epsilon", rule_param=-1.0), V, "`rule_param`"),
    Case("nan epsilon", "arguments",
         on_mlp(ins.run_lrp, rule_name="epsilon", rule_param=float("nan")), V, "`rule_param`"),
    Case("alpha below 1 (alpha_beta)", "arguments",
         on_mlp(ins.run_lrp, rule_name="alpha_beta", rule_param=0.5), V, "`rule_param`"),
    Case("rule_param for a rule without one", "arguments",
         on_mlp(ins.run_lrp, rule_name="simple", rule_param=0.1), V, "`rule_param`"),
    Case("limit_ref 0 (DeepSHAP)", "arguments", on_mlp(ins.run_deepshap, limit_ref=0), V,
         "`limit_ref`"),
    Case("winner_takes_all not a bool", "arguments",
         on_mlp(ins.run_lrp, winner_takes_all="yes"), T, "`winner_takes_all`"),
    Case("times_input not a bool", "arguments", on_mlp(ins.run_grad, times_input=1), T,
         "`times_input`"),
    Case("dtype half", "arguments", grad(dtype="half"), V, "`dtype`"),
    Case("dtype bfloat16", "arguments", grad(dtype="bfloat16"), V, "`dtype`"),
    Case("torch_grad dtype torch.float16", "arguments",
         lambda c: ins.torch_grad(c.torch_mlp, c.x, dtype=torch.float16), V, "`dtype`"),
    Case("seed a string", "arguments", on_mlp(ins.run_smoothgrad, seed="1"), T, "`seed`"),
    Case("unknown device", "arguments", grad(device="tpu:7"), V, "`device`"),
    Case("unknown keyword", "arguments", grad(n_steps=5), T, "n_steps"),
    Case("LIME kernel_width <= 0", "arguments",
         lambda c: ins.run_lime(c.mlp, c.x, c.x, kernel_width=0.0, verbose=False), V,
         "`kernel_width`"),
    Case("LIME negative alpha", "arguments",
         lambda c: ins.run_lime(c.mlp, c.x, c.x, alpha=-1.0, verbose=False), V, "`alpha`"),
    Case("feature_groups of the wrong shape", "arguments",
         lambda c: ins.run_shap(c.mlp, c.x, c.x, feature_groups=np.zeros(4, int),
                                verbose=False), V, "`feature_groups`"),
    Case("not a converter", "arguments", lambda c: ins.run_lrp(c.torch_mlp, c.x), T,
         "`converter`"),
    # ---- convert()
    Case("torch model without input_dim", "convert", lambda c: ins.convert(c.torch_mlp), V,
         "`input_dim`"),
    Case("input_dim of the wrong size", "convert",
         lambda c: ins.convert(c.torch_mlp, input_dim=[4]), CONV_ERROR, "input_dim"),
    Case("negative input_dim", "convert", lambda c: ins.convert(c.torch_mlp, input_dim=[-5]),
         V, "`input_dim`"),
    Case("convert dtype half", "convert",
         lambda c: ins.convert(c.torch_mlp, input_dim=[5], dtype="half"), V, "`dtype`"),
    Case("convert dtype torch.bfloat16", "convert",
         lambda c: ins.convert(c.torch_mlp, input_dim=[5], dtype=torch.bfloat16), V, "`dtype`"),
    Case("unknown tracer", "convert",
         lambda c: ins.convert(c.torch_mlp, input_dim=[5], tracer="jit"), V, "`tracer`"),
    Case("input_names of the wrong length", "convert",
         lambda c: ins.convert(c.torch_mlp, input_dim=[5], input_names=["a", "b"]), V,
         "input_names"),
    Case("output_names of the wrong length", "convert",
         lambda c: ins.convert(c.torch_mlp, input_dim=[5], output_names=[["a"]]), V,
         "output_names"),
    Case("a model of no known kind", "convert", lambda c: ins.convert([1, 2, 3]), T, "`model`"),
    # ---- model files
    Case("missing ONNX file", "files", lambda c: ins.convert(c.tmp / "none.onnx"),
         FileNotFoundError, "`model`"),
    Case("ONNX file of random bytes", "files",
         lambda c: ins.convert(c.file("noise.onnx", bytes(range(256)) * 4)), ins.ConversionError,
         "`model`"),
    Case("truncated ONNX file", "files",
         lambda c: ins.convert(c.file("cut.onnx", _onnx_bytes(c)[:150])), ins.ConversionError,
         "`model`"),
    Case(".keras file of random bytes", "files",
         lambda c: ins.convert(c.file("noise.keras", b"PK\x03\x04garbage")), ins.ConversionError,
         "Keras"),
    Case(".keras zip without a model", "files",
         lambda c: ins.convert(_zip(c.tmp / "empty.keras", {"readme.txt": "no model"})),
         ins.ConversionError, "Keras"),
    Case(".pt2 file of random bytes (CLI)", "files",
         lambda c: load_model(str(c.file("noise.pt2", b"\x00" * 64))), UsageError, "MODEL"),
    Case("pickled torch module (.pt, CLI)", "files",
         lambda c: load_model(str(_saved(c.torch_mlp, c.tmp / "model.pt"))), UsageError, "MODEL"),
    Case("pickled torch module path (convert)", "files",
         lambda c: ins.convert(str(_saved(c.torch_mlp, c.tmp / "model.pt"))), T, "`model`"),
    # ---- model dicts
    Case("dict without layers", "dict",
         lambda c: ins.convert(c.dict_model(lambda d: d.pop("layers"))), V, "'layers'"),
    Case("dict without input_dim", "dict",
         lambda c: ins.convert(c.dict_model(lambda d: d.pop("input_dim"))), V, "'input_dim'"),
    Case("dict with an unknown top-level key", "dict",
         lambda c: ins.convert(c.dict_model(lambda d: d.update(weights=[]))), V, "weights"),
    Case("dict layer of unknown type", "dict",
         lambda c: ins.convert(c.dict_model(lambda d: d["layers"][1].update(type="Dense3"))), V,
         "layers[1]"),
    Case("dict layer missing its weight", "dict",
         lambda c: ins.convert(c.dict_model(lambda d: d["layers"][1].pop("weight"))), V,
         "layers[1]"),
    Case("dict weight of the wrong shape", "dict",
         lambda c: ins.convert(c.dict_model(
             lambda d: d["layers"][1].update(weight=np.zeros((4, 6)).tolist()))), V, "layers[1]"),
    Case("dict bias of the wrong shape", "dict",
         lambda c: ins.convert(c.dict_model(lambda d: d["layers"][1].update(bias=[0.0]))), V,
         "layers[1]"),
    Case("dict weight with NaN", "dict",
         lambda c: ins.convert(c.dict_model(lambda d: d["layers"][1]["weight"][0].__setitem__(
             0, float("nan")))), V, "layers[1]"),
    Case("dict weight of strings", "dict",
         lambda c: ins.convert(c.dict_model(
             lambda d: d["layers"][1].update(weight=[["a"] * 5] * 4))), V, "layers[1]"),
    Case("dict with a cycle", "dict",
         lambda c: ins.convert(c.dict_model(lambda d: d["layers"][1].update(input_layers=[3]))),
         V, "layers[1]"),
    Case("dict with a dangling reference", "dict",
         lambda c: ins.convert(c.dict_model(lambda d: d["layers"][2].update(input_layers=[9]))),
         V, "layers[2]"),
    Case("dict with inconsistent output_layers", "dict",
         lambda c: ins.convert(c.dict_model(lambda d: d["layers"][1].update(output_layers=[3]))),
         V, "layers[1]"),
    Case("dict output_nodes out of range", "dict",
         lambda c: ins.convert(c.dict_model(lambda d: d.update(output_nodes=[7]))), V,
         "output_nodes"),
    Case("dict without output nodes", "dict",
         lambda c: ins.convert(c.dict_model(lambda d: d.update(output_nodes=[]))), V,
         "output_nodes"),
    Case("dict input_nodes not the Input layer", "dict",
         lambda c: ins.convert(c.dict_model(lambda d: d.update(input_nodes=[1]))), V,
         "input_nodes"),
    Case("dict layers not a list", "dict",
         lambda c: ins.convert(c.dict_model(lambda d: d.update(layers={"0": {}}))), V, "layers"),
    Case("dict Add reading one layer", "dict",
         lambda c: ins.convert(c.dict_model(lambda d: d["layers"][2].update(type="Add"))), V,
         "layers[2]"),
]


def _onnx_bytes(c: Ctx) -> bytes:
    path = c.tmp / "mlp.onnx"
    torch.onnx.export(c.torch_mlp, (torch.zeros(1, 5),), str(path), dynamo=False)
    return path.read_bytes()


def _zip(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def _saved(model: nn.Module, path: Path) -> Path:
    torch.save(model, path)
    return path


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_refused_by_name(ctx: Ctx, case: Case) -> None:
    with pytest.raises(case.error) as info:
        case.call(ctx)
    message = str(info.value)
    assert case.names in message, f"the message does not name {case.names!r}: {message}"
    assert "Traceback" not in message and len(message) < 2000


@pytest.mark.parametrize("dtype", [np.int8, np.uint16, np.int32, np.uint64, np.float16])
def test_integer_and_half_data_of_any_width_are_explained_as_floats(ctx: Ctx, dtype) -> None:
    """Integer data was refused as "not numbers" unless its width was 16, 32 or 64 bits."""
    x = np.arange(10).reshape(2, 5).astype(dtype)
    values = ins.run_grad(ctx.mlp, x, output_idx=[1], verbose=False).get_result("torch_tensor")
    x_float = torch.as_tensor(x.astype(np.float32)).requires_grad_(True)
    (autograd,) = torch.autograd.grad(ctx.torch_mlp(x_float)[:, 1].sum(), x_float)
    torch.testing.assert_close(values[..., 0], autograd)


def test_the_catalogue_in_the_docs_lists_every_case() -> None:
    rows = re.findall(r"^\| (\d+) \| ([^|]+?) \|", DOC.read_text(), flags=re.M)
    assert [name for _, name in rows] == [case.id for case in CASES]
    assert f"{len(CASES)} cases" in DOC.read_text()
