"""Every kind of source gives the values of the method on the same data in memory, with
its labels in the shards. (Ray data sets: ``test_ray.py``.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

import innsight as ins


def _labels(res: ins.DatasetResult) -> np.ndarray:
    frame = pd.read_parquet(res.out / "shards", columns=["sample_id", "label"])
    return frame.sort_values("sample_id")["label"].to_numpy()


def test_numpy_with_labels(mlp, table, in_memory, assert_close, tmp_path):
    x, y = table(23), np.arange(23) % 3
    res = ins.explain_dataset(mlp, (x, y), out=tmp_path, batch_size=5, n=5, verbose=False)
    assert_close(res.get_result(), in_memory(mlp, x, n=5))
    np.testing.assert_array_equal(_labels(res), y)


def test_memory_map(mlp, table, in_memory, assert_close, tmp_path):
    x = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(21, 5))
    x[:] = table(21)
    res = ins.explain_dataset(mlp, np.load(tmp_path / "x.npy", mmap_mode="r"), out=tmp_path / "o",
                              batch_size=4, n=5, verbose=False)
    assert_close(res.get_result(), in_memory(mlp, np.asarray(x), n=5))


def test_a_memory_map_travels_as_its_file_name(tmp_path):
    import pickle

    from innsight.datasets.sources import ArraySource

    x = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32,
                                  shape=(1000, 50))
    x[:] = np.arange(50_000, dtype=np.float32).reshape(1000, 50)
    x.flush()
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    for array in (mapped, mapped[100:300]):  # a whole map and a slice of one
        pickled = pickle.dumps(ArraySource([array], None))
        assert len(pickled) < 1000  # the file name, not 200 kB of samples
        copy = pickle.loads(pickled).arrays[0]
        assert isinstance(copy, np.memmap)
        np.testing.assert_array_equal(copy, x[100:300] if len(array) == 200 else x)


def test_pandas_frame_with_a_label_column(mlp, table, in_memory, assert_close, tmp_path):
    x = table(17)
    frame = pd.DataFrame(x, columns=list("abcde")).assign(target=np.arange(17) % 2)
    res = ins.explain_dataset(mlp, (frame, "target"), out=tmp_path, batch_size=6, n=5,
                              verbose=False)
    assert_close(res.get_result(), in_memory(mlp, x, n=5))
    assert res.get_result("data.frame", data_idx=3)["feature"].unique().tolist() == list("abcde")
    np.testing.assert_array_equal(_labels(res), np.arange(17) % 2)


@pytest.mark.parametrize("as_folder", [False, True])
def test_parquet_file_or_folder(as_folder, mlp, table, in_memory, assert_close, tmp_path):
    x = table(40)
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(5)]).assign(y=np.arange(40) % 3)
    source = tmp_path / "data"
    if as_folder:  # three files, the middle one with two row groups
        source.mkdir()
        for name, part in zip("abc", (frame[:11], frame[11:30], frame[30:])):
            pq.write_table(pa.Table.from_pandas(part, preserve_index=False),
                           source / f"{name}.parquet", row_group_size=10)
    else:
        source = tmp_path / "data.parquet"
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), source,
                       row_group_size=7)
    res = ins.explain_dataset(mlp, (source, "y"), out=tmp_path / "out", batch_size=9, n=5,
                              verbose=False)
    assert_close(res.get_result(), in_memory(mlp, x, n=5))
    np.testing.assert_array_equal(_labels(res), np.arange(40) % 3)


def test_folder_of_images_with_class_subfolders(cnn, in_memory, assert_close, tmp_path):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(7, 8, 8, 3), dtype=np.uint8)
    for i, image in enumerate(images):  # files sorted: cat/0..3, dog/4..6
        folder = tmp_path / "images" / ("cat" if i < 4 else "dog")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i}.png")
    res = ins.explain_dataset(cnn, tmp_path / "images", out=tmp_path / "out", batch_size=3, n=4,
                              channels_first=False, verbose=False)
    expected = in_memory(cnn, images.astype(np.float32), n=4, channels_first=False)
    assert_close(res.get_result(), expected)
    np.testing.assert_array_equal(_labels(res), [0, 0, 0, 0, 1, 1, 1])


class Pairs(torch.utils.data.Dataset):
    def __init__(self, x: np.ndarray) -> None:
        self.x = torch.as_tensor(x)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], i % 3


@pytest.mark.parametrize("loader", [False, True])
def test_torch_dataset_or_loader_of_pairs(loader, mlp, table, in_memory, assert_close, tmp_path):
    x = table(26)
    source = Pairs(x)
    if loader:  # its batches of 7 are re-cut to batches of 5
        source = torch.utils.data.DataLoader(source, batch_size=7)
    res = ins.explain_dataset(mlp, source, out=tmp_path, batch_size=5, n=5, verbose=False)
    assert_close(res.get_result(), in_memory(mlp, x, n=5))
    np.testing.assert_array_equal(_labels(res), np.arange(26) % 3)


def test_tf_data_dataset(mlp, table, in_memory, assert_close, tmp_path):
    import tensorflow as tf

    x = table(19)
    dataset = tf.data.Dataset.from_tensor_slices((x, np.arange(19) % 2))
    res = ins.explain_dataset(mlp, dataset, out=tmp_path, batch_size=6, n=5, verbose=False)
    assert_close(res.get_result(), in_memory(mlp, x, n=5))
    np.testing.assert_array_equal(_labels(res), np.arange(19) % 2)


def test_several_input_and_output_layers(two_in_two_out, assert_close, tmp_path):
    conv = ins.convert(two_in_two_out, input_dim=[[2, 6, 6], [4]])
    rng = np.random.default_rng(4)
    a = rng.normal(size=(11, 2, 6, 6)).astype(np.float32)
    b = rng.normal(size=(11, 4)).astype(np.float32)
    output_idx = [[0, 2], [1]]
    res = ins.explain_dataset(conv, [a, b], out=tmp_path, batch_size=4, n=5,
                              output_idx=output_idx, verbose=False)
    expected = ins.run_intgrad(conv, [a, b], n=5, output_idx=output_idx).get_result()
    got = res.get_result()
    for o in range(2):
        for k in range(2):
            assert_close(got[o][k], expected[o][k])
    assert len(res.summary_frame()) == 2 * (2 * 6 * 6 + 4) + 1 * (2 * 6 * 6 + 4)
