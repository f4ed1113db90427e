"""The Ray engine on a local Ray started inside the test run (``ray.init(num_cpus=2)``):
the same values as the local engine and as the method on the whole data in memory.

Ray is part of the ``test`` extra; starting it and a first job take 10-25 s here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import ray

import innsight as ins


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_and_local_engines_give_the_same_values(mlp, table, in_memory, assert_close,
                                                    tmp_path):
    x = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32,
                                  shape=(45, 5))
    x[:] = table(45)
    x.flush()
    runs = {engine: ins.explain_dataset(mlp, x, method="SmoothGrad", out=tmp_path / engine,
                                        engine=engine, batch_size=10, n=4, seed=3,
                                        verbose=False)
            for engine in ("local", "ray")}
    assert runs["ray"].complete and len(runs["ray"]) == 45
    np.testing.assert_array_equal(runs["ray"].get_result(), runs["local"].get_result())
    np.testing.assert_allclose(runs["ray"].summary.mean_abs(0, 0),
                               runs["local"].summary.mean_abs(0, 0), rtol=1e-12)
    intgrad = ins.explain_dataset(mlp, x, out=tmp_path / "ig", engine="ray", batch_size=10,
                                  n=5, verbose=False)
    assert_close(intgrad.get_result(), in_memory(mlp, np.asarray(x), n=5))
    shards = sorted((tmp_path / "ig" / "shards").glob("*.parquet"))
    stamps = [p.stat().st_mtime_ns for p in shards]
    again = ins.explain_dataset(mlp, x, out=tmp_path / "ig", engine="ray", batch_size=10, n=5,
                                verbose=False)  # complete: returned as it is
    assert again.complete and [p.stat().st_mtime_ns for p in shards] == stamps


def test_a_ray_dataset_with_labels_on_both_engines(mlp, table, in_memory, assert_close,
                                                   tmp_path):
    x = table(30)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(5)]).assign(y=np.arange(30) % 3)
    dataset = ray.data.from_pandas(frame)
    expected = in_memory(mlp, x, n=5)
    for engine in ("local", "ray"):
        res = ins.explain_dataset(mlp, (dataset, "y"), out=tmp_path / engine, engine=engine,
                                  batch_size=8, n=5, verbose=False)
        assert_close(res.get_result(), expected)
        names = res.get_result("data.frame", data_idx=[0])["feature"].unique().tolist()
        assert names == [f"f{i}" for i in range(5)]
    labels = pd.read_parquet(tmp_path / "ray" / "shards").sort_values("sample_id")["label"]
    np.testing.assert_array_equal(labels.to_numpy(), np.arange(30) % 3)
