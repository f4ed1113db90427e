"""The demo's work on one task: convert the model from each framework, check the
conversions against the originals, run every method on all three with
``compare_models``, and write figures, CSV files and the numbers for the summary."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import innsight as ins
from innsight._import_order import import_keras
from innsight.demo.tasks import DIGITS_SHOWN, Task, shown_samples

#: Rows of the training data that serve as references (ExpectedGradient, DeepSHAP,
#: LIME, SHAP).
N_REFERENCES = 50
#: The framework whose results the per-method figures show (all three agree).
SHOWN_FRAMEWORK = "torch"


class Timer:
    """Seconds per named step, in the order the steps ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[step] = time.perf_counter() - start


def patches(size: int, patch: int) -> torch.Tensor:
    """Player ids ``(1, size, size)``: one id per ``patch x patch`` square."""
    block = torch.arange(size) // patch
    return (block[:, None] * (size // patch) + block[None, :])[None]


def method_args(task: Task) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every method, with the arguments the demo runs it with: label -> (class name, args)."""
    references = torch.from_numpy(task.x_train[:N_REFERENCES])
    groups = {"feature_groups": patches(8, 2)} if task.is_image else {}
    return {
        "Gradient": ("Gradient", {}),
        "SmoothGrad": ("SmoothGrad", {"n": 50, "noise_level": 0.1}),
        "IntegratedGradient": ("IntegratedGradient", {"n": 50}),
        "ExpectedGradient": ("ExpectedGradient", {"data_ref": references, "n": 50}),
        "DeepLift": ("DeepLift", {}),
        "DeepSHAP": ("DeepSHAP", {"data_ref": references}),
        "LRP": ("LRP", {"rule_name": "epsilon"}),
        "ConnectionWeights": ("ConnectionWeights", {"times_input": True}),
        "LIME": ("LIME", {"data_ref": references, "n": 300, **groups}),
        "SHAP": ("SHAP", {"data_ref": references, "n": 20, **groups}),
    }


@dataclass
class TaskReport:
    """What the demo found on one task, for the summary and the tests."""

    task: Task
    explained: np.ndarray  # the explained test rows
    output_idx: list[int]
    accuracy: dict[str, float] = field(default_factory=dict)  # per framework, own forward
    conversion_error: dict[str, float] = field(default_factory=dict)  # max |converted - original|
    comparisons: dict[str, ins.Comparison] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def agreement(self) -> pd.DataFrame:
        """Per method and pair of frameworks, the largest differences of the values."""
        frames = [cmp.differences().assign(method=label) for label, cmp in self.comparisons.items()]
        frame = pd.concat(frames, ignore_index=True)
        return frame[["method", *[c for c in frame.columns if c != "method"]]]

    def completeness(self) -> pd.DataFrame:
        """For methods with a decomposition goal: the largest gap between the sum of a
        sample's values and its goal, absolute and relative to the largest goal."""
        rows = []
        for label, cmp in self.comparisons.items():
            result = cmp.results[SHOWN_FRAMEWORK]
            if result.decomp_goal is None:
                continue
            goal, total = result.decomp_goal[0], result.decomp_sum[0]
            gap = float((total - goal).abs().max())
            rows.append({"method": label, "max_abs_gap": gap,
                         "max_rel_gap": gap / float(goal.abs().max())})
        return pd.DataFrame(rows)


def _originals(task: Task) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Each framework's own forward pass, taking channels-first numpy data."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(task.files["onnx"]),
                                           providers=["CPUExecutionProvider"])

    def torch_forward(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return task.torch_model(torch.from_numpy(x)).numpy()

    return {
        "torch": torch_forward,
        "keras": lambda x: import_keras().ops.convert_to_numpy(
            task.keras_model(task.keras_layout(x), training=False)),
        "onnx": lambda x: session.run(None, {"x": x})[0],
    }


def convert_all(task: Task) -> dict[str, ins.Converter]:
    """The model from each framework, converted: torch (the module), Keras and ONNX (the
    files), all with the task's feature and class names."""
    names = {"input_names": [task.feature_names] if not task.is_image else None,
             "output_names": [task.class_names]}
    return {"torch": ins.convert(task.torch_model, input_dim=list(task.x_test.shape[1:]), **names),
            "keras": ins.convert(task.files["keras"], **names),
            "onnx": ins.convert(task.files["onnx"], **names)}


def explain(task: Task, timer: Timer) -> TaskReport:
    """Convert the three models, check them against their frameworks, and run every
    method on all three (in float64, so that differences show conversion errors, not
    rounding)."""
    with timer(f"{task.name}: convert torch, Keras and ONNX models"):
        converters = convert_all(task)
    report = TaskReport(task, *_explained(task))
    for name, forward in _originals(task).items():
        original = forward(task.x_test)
        converted = converters[name].model(torch.from_numpy(task.x_test)).detach().numpy()
        report.accuracy[name] = float((original.argmax(1) == task.y_test).mean())
        report.conversion_error[name] = float(np.abs(converted - original).max())
    x = torch.from_numpy(task.x_test[report.explained]).double()
    for label, (method, args) in method_args(task).items():
        with timer(f"{task.name}: {label} on 3 models ({len(x)} samples)"):
            report.comparisons[label] = ins.compare_models(
                converters, x, method, output_idx=report.output_idx, dtype="double",
                verbose=False, **args)
    return report


def _explained(task: Task) -> tuple[np.ndarray, list[int]]:
    """The test rows and output nodes to explain: every test row and class of a table;
    the shown digits and their classes."""
    if task.is_image:
        return shown_samples(task), list(DIGITS_SHOWN)
    return np.arange(len(task.x_test)), list(range(len(task.class_names)))
