"""The local engine: values, shards, resume after a crash, summaries and plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import innsight as ins


def test_values_equal_the_closed_form_and_the_in_memory_run(linear, table, in_memory, assert_close,
    tmp_path):
    conv, weight = linear
    x = table(103)
    res = ins.explain_dataset(conv, x, out=tmp_path, batch_size=20, n=7, verbose=False)
    values = res.get_result()
    # IntegratedGradient of a linear model from the zero reference: W[c, f] * x[f]
    np.testing.assert_allclose(values, x[:, :, None] * weight.T[None], rtol=1e-5, atol=1e-6)
    assert_close(values, in_memory(conv, x, n=7))
    assert res.complete and len(res) == 103
    assert len(list((tmp_path / "shards").glob("*.parquet"))) == 6  # ceil(103 / 20)


def test_images_channels_last_and_every_column(cnn, in_memory, assert_close,
    tmp_path):
    x = np.random.default_rng(1).normal(size=(9, 8, 8, 3)).astype(np.float32)
    res = ins.explain_dataset(cnn, x, out=tmp_path, batch_size=4, n=5, channels_first=False,
                              verbose=False)
    assert_close(res.get_result(), in_memory(cnn, x, n=5, channels_first=False))
    shard = pq.read_table(tmp_path / "shards" / "part-000000.parquet")
    assert shard.column_names == ["sample_id", "values_o0_i0", "pred_o0", "sum_o0", "goal_o0"]
    assert shard.column("values_o0_i0").type.list_size == 8 * 8 * 3 * 4  # one array column
    reference = ins.run_intgrad(cnn, x[:4], n=5, channels_first=False, verbose=False)
    np.testing.assert_array_equal(np.stack(shard.column("pred_o0").to_numpy(zero_copy_only=False)),
                                  reference.preds[0].numpy())
    frame = res.get_result("data.frame", data_idx=[7, 2])
    assert list(frame["data"].unique()) == [7, 2]


def test_get_result_of_a_slice_in_the_order_asked(mlp, table, in_memory, assert_close,
    tmp_path):
    x = table(50)
    res = ins.explain_dataset(mlp, x, out=tmp_path, batch_size=8, n=5, verbose=False)
    whole = in_memory(mlp, x, n=5)
    assert_close(res.get_result(data_idx=[33, 2, 17]), whole[[33, 2, 17]])
    assert_close(res.get_result(data_idx=slice(10, 20)), whole[10:20])
    assert_close(res.get_result("torch_tensor", data_idx=4).numpy(), whole[[4]])
    np.testing.assert_array_equal(res.sample_ids(), np.arange(50))


def test_stochastic_methods_are_seeded_per_batch(mlp, table, tmp_path):
    x = table(30)
    runs = [ins.explain_dataset(mlp, x, method="SmoothGrad", out=tmp_path / name, batch_size=8,
                                n=4, seed=5, verbose=False).get_result() for name in "ab"]
    np.testing.assert_array_equal(*runs)
    other = ins.explain_dataset(mlp, x, method="SmoothGrad", out=tmp_path / "c", batch_size=8,
                                n=4, seed=6, verbose=False).get_result()
    assert not np.array_equal(runs[0], other)


class Crashing(torch.utils.data.Dataset):
    """Rows of an array; reading row ``crash_at`` raises once (a run killed half way)."""

    def __init__(self, x: np.ndarray, crash_at: int) -> None:
        self.x, self.crash_at = torch.as_tensor(x), crash_at

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        if i == self.crash_at:
            self.crash_at = -1
            raise RuntimeError("killed")
        return self.x[i]


def _shard_stamps(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.parquet")}


def test_a_killed_run_resumes_with_every_sample_exactly_once(linear, table, in_memory, assert_close,
    tmp_path):
    conv, _ = linear
    x = table(100)
    source = Crashing(x, crash_at=55)
    with pytest.raises(RuntimeError, match="killed"):
        ins.explain_dataset(conv, source, out=tmp_path, batch_size=10, n=5, verbose=False)
    stopped = ins.DatasetResult(tmp_path)
    assert not stopped.complete and len(stopped) == 50
    before = _shard_stamps(tmp_path)
    res = ins.explain_dataset(conv, source, out=tmp_path, batch_size=10, n=5, verbose=False)
    assert res.complete
    after = _shard_stamps(tmp_path)
    assert {name: after[name] for name in before} == before  # committed shards not rewritten
    ids = np.concatenate([pq.read_table(tmp_path / "shards" / n, columns=["sample_id"])
                          .column("sample_id").to_numpy() for n in sorted(after)])
    np.testing.assert_array_equal(np.sort(ids), np.arange(100))  # each sample exactly once
    assert_close(res.get_result(), in_memory(conv, x, n=5))
    # the summary of the resumed run counts every sample once
    np.testing.assert_allclose(res.summary.mean_abs(0, 0), np.abs(in_memory(conv, x, n=5)).mean(0),
                               rtol=1e-6)


def test_a_finished_shard_missing_from_the_manifest_is_adopted(mlp, table, tmp_path):
    x = table(40)
    ins.explain_dataset(mlp, x, out=tmp_path, batch_size=10, n=5, verbose=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    del manifest["shards"]["part-000003.parquet"]  # stopped after the file, before the manifest
    manifest["complete"] = False
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    before = _shard_stamps(tmp_path)
    res = ins.explain_dataset(mlp, x, out=tmp_path, batch_size=10, n=5, verbose=False)
    assert res.complete and len(res) == 40
    assert _shard_stamps(tmp_path) == before  # not written twice


def test_another_run_in_the_same_folder_is_refused_unless_resume_is_false(mlp, table, assert_close,
    tmp_path):
    x = table(12)
    ins.explain_dataset(mlp, x, out=tmp_path, batch_size=5, n=5, verbose=False)
    with pytest.raises(ValueError, match="`out` folder .* another model, method"):
        ins.explain_dataset(mlp, x, out=tmp_path, batch_size=5, n=6, verbose=False)
    res = ins.explain_dataset(mlp, x, out=tmp_path, batch_size=5, n=6, resume=False, verbose=False)
    assert_close(res.get_result(), ins.run_intgrad(mlp, x, n=6).get_result())


def test_summaries_are_the_mean_magnitude_per_feature_and_class(linear, table, tmp_path):
    conv, weight = linear
    x = table(64)
    res = ins.explain_dataset(conv, x, out=tmp_path, batch_size=16, n=3, verbose=False)
    exact = x[:, :, None].astype(np.float64) * weight.T[None]  # (n, feature, class)
    frame = res.summary_frame()
    assert len(frame) == 5 * 3 and (frame["n"] == 64).all()
    by_cell = frame.set_index(["feature", "output_node"])
    for f in range(5):
        for c in range(3):
            row = by_cell.loc[(f"X{f + 1}", f"Y{c + 1}")]
            np.testing.assert_allclose(row["mean_abs"], np.abs(exact[:, f, c]).mean(), rtol=1e-5)
            np.testing.assert_allclose(row["mean"], exact[:, f, c].mean(), rtol=1e-4, atol=1e-7)
            np.testing.assert_allclose(row["std"], exact[:, f, c].std(), rtol=1e-4)
    # an incomplete run's summary is added up from its shards
    (tmp_path / "summary.npz").unlink()
    reopened = ins.DatasetResult(tmp_path)
    reopened.manifest.complete = False
    np.testing.assert_allclose(reopened.summary.mean_abs(0, 0), np.abs(exact).mean(0), rtol=1e-5)


def test_global_plots_draw_the_summaries(cnn, tmp_path):
    import plotnine as p9

    x = np.random.default_rng(2).normal(size=(6, 3, 8, 8)).astype(np.float32)
    res = ins.explain_dataset(cnn, x, out=tmp_path, batch_size=4, n=3, verbose=False)
    plot = res.plot_global(output_idx=[0, 1])
    assert isinstance(plot, p9.ggplot)
    # the mean heatmap: channels summed after taking magnitudes, averaged over all samples
    values = ins.run_intgrad(cnn, x, n=3, verbose=False).get_result()  # (6, 3, 8, 8, 4)
    expected = np.abs(values).sum(axis=1).mean(axis=0)[..., :2]  # (8, 8, 2)
    drawn = plot.data.sort_values(["output_node", "y", "x"], ascending=[True, False, True])
    np.testing.assert_allclose(drawn["value"].to_numpy(),
                               expected.transpose(2, 0, 1).ravel(), rtol=1e-5)
    assert isinstance(res.boxplot(), p9.ggplot)
    assert type(res.plot_global(as_plotly=True)).__name__ == "Figure"
