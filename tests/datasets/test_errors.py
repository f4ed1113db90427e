"""Bad arguments are refused by name, before any work."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import innsight as ins


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"engine": "spark"}, ValueError, "`engine` must be one of"),
    ({"batch_size": 0}, ValueError, "`batch_size` must be a positive int"),
    ({"out": 3}, TypeError, "`out` must be a folder path"),
    ({"method": "Nope"}, ValueError, "`method` must be an interpretation method"),
    ({"resume": "yes"}, TypeError, "resume"),
    ({"verbose": 1}, TypeError, "verbose"),
    ({"concurrency": 2}, ValueError, "`concurrency` and `num_gpus` are for engine='ray'"),
    ({"engine": "ray", "concurrency": 0}, ValueError, "`concurrency` must be a positive int"),
    ({"engine": "ray", "num_gpus": -1}, ValueError, "`num_gpus` must be a number >= 0"),
    ({"seed": 1.5}, TypeError, "`seed` must be an int"),
    ({"targets": "labels"}, ValueError, "`targets='labels'` needs labels"),
    ({"data": np.zeros((2, 5))}, TypeError, "must not hold 'data' or 'verbose'"),
    ({"n_steps": 3}, TypeError, r"unexpected argument\(s\) \['n_steps'\]"),
])
def test_bad_arguments(kwargs, error, match, mlp, table, tmp_path):
    kwargs = {"out": tmp_path, **kwargs}
    with pytest.raises(error, match=match):
        ins.explain_dataset(mlp, table(4), **kwargs)
    assert not (tmp_path / "manifest.json").exists()


@pytest.mark.parametrize(("source", "error", "match"), [
    ("nowhere/at/all", ValueError, "`source` path .* does not exist"),
    ({"x": 1}, TypeError, "`source` must be a torch DataLoader or Dataset"),
    ((np.zeros((3, 5)), np.zeros(3), 1), ValueError, r"\(data, labels\), got a tuple of 3"),
    ((np.zeros((3, 5), np.float32), np.zeros(4)), ValueError, "one label per sample"),
    ((np.zeros((3, 5), np.float32), "y"), TypeError, "labels given as a column name"),
    (np.zeros((3, 4), np.float32), ValueError, r"`data` has shape \(1, 4\)"),
])
def test_bad_sources(source, error, match, mlp, tmp_path):
    with pytest.raises(error, match=match):
        ins.explain_dataset(mlp, source, out=tmp_path / "out")


def test_out_must_be_a_folder(mlp, table, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ValueError, match="`out` must be a folder, got the file"):
        ins.explain_dataset(mlp, table(3), out=tmp_path / "file")


def test_a_shuffled_loader_and_a_missing_label_column(mlp, table, tmp_path):
    import pandas as pd

    loader = torch.utils.data.DataLoader(torch.as_tensor(table(6)), shuffle=True)
    with pytest.raises(ValueError, match="DataLoader must read its data in order"):
        ins.explain_dataset(mlp, loader, out=tmp_path)
    with pytest.raises(ValueError, match="no column 'y' in the frame"):
        ins.explain_dataset(mlp, (pd.DataFrame(table(3)), "y"), out=tmp_path)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match="holds no image files"):
        ins.explain_dataset(mlp, tmp_path / "nothing", out=tmp_path)


def test_reading_results_refuses_other_folders_and_ids(mlp, table, tmp_path):
    with pytest.raises(ValueError, match="holds no results of explain_dataset"):
        ins.DatasetResult(tmp_path)
    res = ins.explain_dataset(mlp, table(6), out=tmp_path, n=3, verbose=False)
    with pytest.raises(ValueError, match=r"ids without results: \[6\]"):
        res.get_result(data_idx=[1, 6])
    with pytest.raises(TypeError, match="`data_idx` must be a sample id"):
        res.get_result(data_idx="first")
    with pytest.raises(ValueError, match="`type` must be one of"):
        res.get_result("list")


def test_ray_engine_needs_a_converter(table, tmp_path):
    with pytest.raises(TypeError, match="`model` must be an innsight Converter for engine='ray'"):
        ins.explain_dataset(torch.nn.Linear(5, 2), table(3), method="SHAP", engine="ray",
                            out=tmp_path, data_ref=table(4))
