"""``innsight demo`` and the command line on the files the demo writes.

The demo runs once per test session (about 30 s). Its numbers are checked
against references that do not go through the converter: the iris MLP's logits
and gradients in closed form from the Keras file's weights, the digits CNN
rebuilt in torch from the ``.pt2`` program's weights (autograd), and the ONNX file
through onnxruntime.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from filelock import FileLock

pytest.importorskip("keras")
pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")
pytest.importorskip("plotly")

from innsight.cli import main  # noqa: E402
from innsight.demo import run_demo  # noqa: E402
from innsight.demo.tasks import DIGITS_SHOWN, digits_cnn  # noqa: E402

FRAMEWORKS = {"torch", "keras", "onnx"}
EVERY_METHOD = {"Gradient", "SmoothGrad", "IntegratedGradient", "ExpectedGradient", "DeepLift",
                "DeepSHAP", "LRP", "ConnectionWeights", "LIME", "SHAP"}


@pytest.fixture(scope="session")
def demo(tmp_path_factory, worker_id) -> Path:
    """The demo's folder. Under pytest-xdist the workers share one run: the first
    writes into the run's common temporary folder while the others wait on a lock."""
    if worker_id == "master":
        out = tmp_path_factory.mktemp("demo")
        run_demo(out, verbose=False)
        return out
    shared = tmp_path_factory.getbasetemp().parent
    out = shared / "innsight-demo"
    with FileLock(str(shared / "innsight-demo.lock")):
        if not (out / "summary.md").is_file():
            run_demo(out, verbose=False)
    return out


# ---- independent references ----------------------------------------------------------


def iris_logits_and_grads(demo: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The iris MLP's logits (n, 3) and their input gradients (n, 4, 3), in closed form
    from the Keras file's weights: z = relu(x W1 + b1) W2 + b2."""
    import keras

    w1, b1, w2, b2 = (np.float64(w) for w in keras.saving.load_model(
        demo / "models" / "iris.keras", safe_mode=True).get_weights())
    hidden = x @ w1 + b1
    active = (hidden > 0).astype(float)
    logits = np.maximum(hidden, 0) @ w2 + b2
    grads = np.einsum("ih,nh,ho->nio", w1, active, w2)
    return logits, grads


def digits_logit_model(demo: Path) -> torch.nn.Module:
    """The digits CNN without its softmax, rebuilt from the .pt2 program's weights."""
    program = torch.export.load(demo / "models" / "digits.pt2")
    model = digits_cnn().double()
    model.load_state_dict({k: v.double() for k, v in program.state_dict.items()})
    return model[:-1].eval()


def shown_digits(demo: Path) -> np.ndarray:
    labels = np.load(demo / "data" / "digits_test_labels.npy")
    return np.array([np.flatnonzero(labels == d)[0] for d in DIGITS_SHOWN])


def per_sample(frame: pd.DataFrame, n_features: int, n_outputs: int) -> np.ndarray:
    """Long-frame values as (n_data, n_features, n_outputs): the frame runs over data,
    then feature position (channels first, C order), then output node."""
    return frame["value"].to_numpy().reshape(-1, n_features, n_outputs)


# ---- the demo ---------------------------------------------------------------------------


def test_demo_writes_the_files_it_names(demo):
    summary = (demo / "summary.md").read_text()
    listed = re.findall(r"^- `(.+)`$", summary, flags=re.MULTILINE)
    assert len(listed) > 40
    for name in listed:
        assert (demo / name).is_file(), name
    for png in demo.glob("**/*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000, png
    html = (demo / "digits" / "LRP.html").read_text()
    assert '"../plotly.min.js"' in html and (demo / "plotly.min.js").stat().st_size > 1e6
    for section in ("## iris", "## digits", "## Time of each step", "## Files"):
        assert section in summary


@pytest.mark.parametrize("task", ["iris", "digits"])
def test_demo_frameworks_agree(demo, task):
    agreement = pd.read_csv(demo / f"{task}_agreement.csv")
    assert set(agreement["method"]) == EVERY_METHOD
    assert set(agreement["model_a"]) | set(agreement["model_b"]) == FRAMEWORKS
    assert len(agreement) == 3 * len(EVERY_METHOD)
    assert (agreement["max_rel_diff"] <= 1e-12).all(), agreement
    # the values compared are not all zero
    results = pd.read_csv(demo / f"{task}_results.csv")
    assert results.groupby("method")["value"].apply(lambda v: v.abs().max()).min() > 0


def test_demo_iris_values_match_closed_form(demo):
    x = np.load(demo / "data" / "iris_test.npy").astype(np.float64)
    logits, grads = iris_logits_and_grads(demo, x)
    results = pd.read_csv(demo / "iris_results.csv")
    for model in FRAMEWORKS:
        rows = results[results["model"] == model]
        gradient = per_sample(rows[rows["method"] == "Gradient"], 4, 3)
        np.testing.assert_allclose(gradient, grads, rtol=1e-5, atol=1e-6)
        deeplift = per_sample(rows[rows["method"] == "DeepLift"], 4, 3)
        # DeepLift: contributions sum to z(x) - z(0)
        goal = logits - iris_logits_and_grads(demo, np.zeros((1, 4)))[0]
        np.testing.assert_allclose(deeplift.sum(1), goal, rtol=1e-5, atol=1e-6)


def test_demo_digits_values_match_autograd(demo):
    model = digits_logit_model(demo)
    x = torch.from_numpy(np.load(demo / "data" / "digits_test.npy")[shown_digits(demo)]).double()
    x.requires_grad_(True)
    logits = model(x)[:, list(DIGITS_SHOWN)]
    grads = torch.stack([torch.autograd.grad(logits[:, k].sum(), x, retain_graph=True)[0]
                         for k in range(len(DIGITS_SHOWN))], -1).flatten(1, -2).numpy()
    goal = (logits - model(torch.zeros_like(x))[:, list(DIGITS_SHOWN)]).detach().numpy()
    results = pd.read_csv(demo / "digits_results.csv")
    for model_name in FRAMEWORKS:
        rows = results[results["model"] == model_name]
        gradient = per_sample(rows[rows["method"] == "Gradient"], 64, 4)
        np.testing.assert_allclose(gradient, grads, rtol=1e-5, atol=1e-6 * np.abs(grads).max())
        deeplift = per_sample(rows[rows["method"] == "DeepLift"], 64, 4)
        np.testing.assert_allclose(deeplift.sum(1), goal, rtol=1e-5, atol=1e-6)


def test_demo_onnx_file_reproduces_the_torch_model(demo):
    import onnxruntime

    x = np.load(demo / "data" / "digits_test.npy")
    session = onnxruntime.InferenceSession(str(demo / "models" / "digits.onnx"),
                                           providers=["CPUExecutionProvider"])
    expected = torch.softmax(digits_logit_model(demo)(torch.from_numpy(x).double()), 1)
    np.testing.assert_allclose(session.run(None, {"x": x})[0], expected.detach().numpy(),
                               atol=1e-5)
    labels = np.load(demo / "data" / "digits_test_labels.npy")
    assert (expected.argmax(1).numpy() == labels).mean() > 0.9  # it learned the digits


# ---- the command line on the demo's files ------------------------------------------------


def test_python_m_innsight_converts_an_onnx_file(demo):
    run = subprocess.run([sys.executable, "-m", "innsight", "convert",
                          str(demo / "models" / "digits.onnx")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert re.search(r"Conv2D .*\[8, 8, 8\]", run.stdout) and "Dense" in run.stdout


@pytest.mark.parametrize("name", ["iris.keras", "digits.pt2"])
def test_convert_prints_the_graph(demo, name, capsys):
    main(["convert", str(demo / "models" / name)])
    printed = capsys.readouterr().out
    assert printed.startswith("Converter:") and "Dense" in printed


def test_explain_pt2_gradient_matches_autograd(demo, tmp_path):
    main(["explain", str(demo / "models" / "digits.pt2"), "--data",
          str(demo / "data" / "digits_test.npy"), "--method", "gradient", "--output-idx", "3,7",
          "--out", str(tmp_path), "--format", "csv"])
    frame = pd.read_csv(tmp_path / "digits_Gradient.csv")
    x = torch.from_numpy(np.load(demo / "data" / "digits_test.npy")).double().requires_grad_(True)
    logits = digits_logit_model(demo)(x)
    expected = torch.stack([torch.autograd.grad(logits[:, k].sum(), x, retain_graph=True)[0]
                            for k in (3, 7)], -1).flatten(1, -2).numpy()
    np.testing.assert_allclose(per_sample(frame, 64, 2), expected, rtol=1e-4,
                               atol=1e-5 * np.abs(expected).max())


def test_explain_keras_csv_deeplift_meets_closed_form_and_writes_figures(demo, tmp_path):
    main(["explain", str(demo / "models" / "iris.keras"), "--data",
          str(demo / "data" / "iris_test.csv"), "--method", "DeepLift", "--out", str(tmp_path)])
    for suffix in ("png", "html", "csv"):
        assert (tmp_path / f"iris_DeepLift.{suffix}").stat().st_size > 1000
    x = pd.read_csv(demo / "data" / "iris_test.csv").to_numpy(np.float64)
    goal = iris_logits_and_grads(demo, x)[0] - iris_logits_and_grads(demo, np.zeros((1, 4)))[0]
    frame = pd.read_csv(tmp_path / "iris_DeepLift.csv")
    np.testing.assert_allclose(per_sample(frame, 4, 3).sum(1), goal, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("plotly_js", "script", "size"), [
    ("directory", 'src="plotly.min.js"', (1e3, 1e6)),
    ("cdn", 'src="https://cdn.plot.ly/plotly-', (1e3, 1e6)),
    ("inline", None, (3e6, 1e8)),
])
def test_explain_html_chooses_where_plotly_js_comes_from(demo, tmp_path, plotly_js, script, size):
    main(["explain", str(demo / "models" / "iris.onnx"), "--data",
          str(demo / "data" / "iris_test.npy"), "--method", "Gradient", "--out", str(tmp_path),
          "--format", "html", "--plotly-js", plotly_js])
    html = tmp_path / "iris_Gradient.html"
    assert size[0] < html.stat().st_size < size[1]
    if script is not None:
        assert script in html.read_text()
    assert (tmp_path / "plotly.min.js").exists() == (plotly_js == "directory")


def test_explain_onnx_shap_with_one_reference(demo, tmp_path, capsys):
    x = np.load(demo / "data" / "iris_test.npy")
    np.save(tmp_path / "reference.npy", x[:1])
    main(["explain", str(demo / "models" / "iris.onnx"), "--data",
          str(demo / "data" / "iris_test.npy"), "--method", "SHAP", "--data-ref",
          str(tmp_path / "reference.npy"), "--n", "5", "--seed", "1",
          "--batch-size", "64", "--out", str(tmp_path), "--format", "csv"])
    assert "SHAP result" in capsys.readouterr().out
    frame = pd.read_csv(tmp_path / "iris_SHAP.csv")
    # Shapley values of the logits sum to z(x) - z(reference)
    logits = iris_logits_and_grads(demo, x.astype(np.float64))[0]
    np.testing.assert_allclose(per_sample(frame, 4, 3).sum(1), logits - logits[:1],
                               rtol=1e-4, atol=1e-4)


def write_bad_files(folder: Path) -> dict[str, Path]:
    paths = {name: folder / name for name in
             ("corrupt.pt2", "corrupt.onnx", "corrupt.keras", "two.npz", "text.csv",
              "notes.txt")}
    paths["corrupt.pt2"].write_text("not a zip")
    paths["corrupt.keras"].write_text("not a zip")
    paths["corrupt.onnx"].write_bytes(b"\x00\x01garbage")
    np.savez(paths["two.npz"], a=np.zeros((2, 4)), b=np.ones((2, 4)))
    paths["text.csv"].write_text("a,b\n1,x\n")
    paths["notes.txt"].write_text("hello")
    return paths


BAD_CALLS = [
    (["convert", "{missing}"], "no such file"),
    (["convert", "{notes.txt}"], "MODEL must be a .onnx, .keras, .pt2 file"),
    (["convert", "{corrupt.pt2}"], "cannot be read as a torch.export program"),
    (["convert", "{corrupt.onnx}"], "cannot be read as an ONNX model"),
    (["convert", "{corrupt.keras}"], "exists but is no Keras file"),
    (["explain", "{iris.onnx}", "--data", "{notes.txt}", "--method", "LRP"], "--data must be a"),
    (["explain", "{iris.onnx}", "--data", "{two.npz}", "--method", "LRP"], "must hold one array"),
    (["explain", "{iris.onnx}", "--data", "{text.csv}", "--method", "LRP"], "text in columns"),
    (["explain", "{iris.onnx}", "--data", "{digits_test.npy}", "--method", "LRP"],
     "`data` has shape"),
    (["explain", "{iris.onnx}", "--data", "{iris_test.npy}", "--method", "Magic"], "`method`"),
    (["explain", "{iris.onnx}", "--data", "{iris_test.npy}", "--method", "Gradient", "--n", "3"],
     "unexpected argument(s) ['n']"),
    (["explain", "{iris.onnx}", "--data", "{iris_test.npy}", "--method", "LRP", "--rule", "foo"],
     "foo"),
    (["explain", "{iris.onnx}", "--data", "{iris_test.npy}", "--method", "LRP",
      "--output-idx", "1,x"], "--output-idx"),
    (["explain", "{iris.onnx}", "--data", "{iris_test.npy}", "--method", "LRP",
      "--format", "png,gif"], "--format"),
    (["explain", "{iris.onnx}", "--method", "LRP"], "--data"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_CALLS)
def test_bad_files_and_arguments_get_one_line_errors(demo, tmp_path, capsys, argv, message):
    files = {**{p.name: p for p in (demo / "models").iterdir()},
             **{p.name: p for p in (demo / "data").iterdir()},
             **write_bad_files(tmp_path), "missing": tmp_path / "missing.onnx"}
    argv = [files[a[1:-1]].as_posix() if a.startswith("{") else a for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(error) == 1 and message in error[0], error
    assert "Traceback" not in error[0]
