"""Where the samples of a data set come from: one :class:`Source` per kind of input.

Every source yields :class:`Batch` es of consecutive samples in a fixed order, so
that a sample's id is its position in the data set and a batch's samples are the
same on every run (what resuming and the Ray engine rely on). Sources with random
access (arrays, memory maps, frames, Parquet, image folders, torch ``Dataset`` s)
read batch ``b`` directly; streams (a ``DataLoader``, a ``tf.data.Dataset``, a
``ray.data.Dataset`` read locally) are read in order, and a resumed run reads past
what it has done without explaining it.

Labels: a ``(data, labels)`` tuple gives them, where ``labels`` is an array of one
label per sample or, for frames, Parquet and Ray data sets, the name of a column;
torch and TensorFlow data sets that yield ``(x, y)`` pairs and image folders with
one subfolder per class carry their own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from innsight._validation import describe

#: The column of a Ray data set that holds sample ids (not a feature).
ID_COLUMN = "sample_id"
#: Image file types a folder of images is read from (with Pillow).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class Batch:
    """Consecutive samples ``ids`` ``(n,)`` (their positions in the data set), their
    inputs (one array ``(n, *dim)`` per input layer, in the user's layout) and their
    labels ``(n,)`` or ``None``."""

    ids: np.ndarray
    inputs: list[np.ndarray]
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)


def _stack(items: Sequence[Any]) -> np.ndarray:
    """Samples (arrays, tensors, numbers) stacked into one numpy array."""
    return np.stack([np.asarray(_numpy(item)) for item in items])


def _numpy(value: Any) -> Any:
    """A torch tensor or TensorFlow tensor as numpy; anything else unchanged."""
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        return value.numpy()
    return value


class Source:
    """Samples in a fixed order. Subclasses with random access implement
    :meth:`rows`; streams implement :meth:`stream`."""

    #: Number of samples, or ``None`` where a stream does not say.
    n_samples: int | None = None
    has_labels = False
    random_access = True

    def rows(self, start: int, stop: int) -> Batch:
        """Samples ``start..stop`` (random access)."""
        raise NotImplementedError

    def stream(self) -> Iterator[tuple[list[np.ndarray], np.ndarray | None]]:
        """Inputs and labels in order, in chunks of any size (streams)."""
        raise NotImplementedError

    def batch(self, index: int, batch_size: int) -> Batch:
        """Batch ``index``: samples ``index * batch_size`` up to the next batch."""
        assert self.random_access and self.n_samples is not None
        start = index * batch_size
        return self.rows(start, min(start + batch_size, self.n_samples))

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """Streams: all batches of ``batch_size`` samples in order (the last may be short)."""
        yield from _rechunk(self.stream(), batch_size)

    def first(self) -> Batch:
        """The first sample, as a batch of one."""
        if self.random_access:
            return self.rows(0, 1)
        return next(_rechunk(self.stream(), 1))


def _rechunk(chunks: Iterator[tuple[list[np.ndarray], np.ndarray | None]], size: int
             ) -> Iterator[Batch]:
    """Chunks of any size as batches of ``size`` consecutive samples; only one batch and
    one chunk are held at a time."""
    pending: list[tuple[list[np.ndarray], np.ndarray | None]] = []
    held, position = 0, 0  # samples pending; id of the first pending sample
    for inputs, labels in chunks:
        pending.append((inputs, labels))
        held += len(inputs[0])
        while held >= size:
            batch, pending = _take(pending, size)
            held -= size
            yield Batch(np.arange(position, position + size), *batch)
            position += size
    if held:
        batch, _ = _take(pending, held)
        yield Batch(np.arange(position, position + held), *batch)


def _take(pending: list[tuple[list[np.ndarray], np.ndarray | None]], size: int
          ) -> tuple[tuple[list[np.ndarray], np.ndarray | None], list[tuple[list[np.ndarray], np.ndarray | None]]]:
    """The first ``size`` samples of the pending chunks, and what is left."""
    inputs: list[list[np.ndarray]] = []
    labels: list[np.ndarray] = []
    rest, needed = [], size
    for chunk_inputs, chunk_labels in pending:
        n = len(chunk_inputs[0])
        if needed == 0:
            rest.append((chunk_inputs, chunk_labels))
            continue
        take = min(n, needed)
        inputs.append([x[:take] for x in chunk_inputs])  # frames: rows too
        if chunk_labels is not None:
            labels.append(chunk_labels[:take])
        if take < n:
            rest.append(([x[take:] for x in chunk_inputs],
                         None if chunk_labels is None else chunk_labels[take:]))
        needed -= take
    merged = [_concat(parts) for parts in zip(*inputs)]
    return (merged, np.concatenate(labels) if labels else None), rest


def _concat(parts: Sequence[Any]) -> Any:
    """Chunks of one input layer joined: frames (their column names kept) or arrays."""
    if hasattr(parts[0], "iloc"):
        import pandas as pd

        return pd.concat(parts, ignore_index=True)
    return np.concatenate(parts)


# ---- arrays and frames ------------------------------------------------------------------


class ArraySource(Source):
    """Numpy arrays or memory maps, one per input layer, read by slicing (a memory map
    reads only the slice). A memory map travels to Ray workers as its file name."""

    def __init__(self, arrays: list[np.ndarray], labels: np.ndarray | None) -> None:
        self.arrays = arrays
        self.labels = labels
        self.n_samples = len(arrays[0])
        self.has_labels = labels is not None

    def rows(self, start: int, stop: int) -> Batch:
        inputs = [np.asarray(a[start:stop]) for a in self.arrays]
        labels = None if self.labels is None else np.asarray(self.labels[start:stop])
        return Batch(np.arange(start, stop), inputs, labels)

    def __getstate__(self) -> dict[str, Any]:
        arrays = [_MapFile.of(a) if isinstance(a, np.memmap) else a for a in self.arrays]
        return {**self.__dict__, "arrays": arrays}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state["arrays"] = [a.open() if isinstance(a, _MapFile) else a for a in state["arrays"]]
        self.__dict__.update(state)


@dataclass(frozen=True)
class _MapFile:
    """What reopens a memory map read-only: file, dtype, shape, offset, order."""

    filename: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    order: str

    @classmethod
    def of(cls, array: np.memmap) -> _MapFile:
        base = array
        while isinstance(base.base, np.memmap):  # a slice of a map: reopen the slice
            base = base.base
        if array.filename is None or not (array.flags.c_contiguous or array.flags.f_contiguous):
            raise ValueError("`source` memory maps must be whole files or contiguous slices "
                             "of them to travel to Ray workers; pass np.asarray(...) instead.")
        start = array.__array_interface__["data"][0] - base.__array_interface__["data"][0]
        return cls(str(array.filename), array.dtype.str, array.shape, array.offset + start,
                   "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C")

    def open(self) -> np.memmap:
        return np.memmap(self.filename, dtype=np.dtype(self.dtype), mode="r", shape=self.shape,
                         offset=self.offset, order=self.order)


class FrameSource(Source):
    """A pandas DataFrame, one row per sample; its columns are the features."""

    def __init__(self, frame: Any, labels: np.ndarray | None) -> None:
        self.frame = frame
        self.labels = labels
        self.n_samples = len(frame)
        self.has_labels = labels is not None

    def rows(self, start: int, stop: int) -> Batch:
        labels = None if self.labels is None else np.asarray(self.labels[start:stop])
        return Batch(np.arange(start, stop), [self.frame.iloc[start:stop]], labels)


class ParquetSource(Source):
    """A Parquet file or a folder of them (files in name order): every column but the
    label column is a feature; a batch reads only the row groups it needs."""

    def __init__(self, path: Path, label_column: str | None) -> None:
        import pyarrow.parquet as pq

        files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
        if not files:
            raise ValueError(f"`source` folder {str(path)!r} holds no '.parquet' files.")
        self.files = [str(f) for f in files]
        self.label_column = label_column
        metas = [pq.ParquetFile(f).metadata for f in self.files]
        # (file, row group, first row) of every row group, in order
        self.groups: list[tuple[int, int, int]] = []
        first = 0
        for f, meta in enumerate(metas):
            for g in range(meta.num_row_groups):
                self.groups.append((f, g, first))
                first += meta.row_group(g).num_rows
        self.n_samples = first
        names = pq.ParquetFile(self.files[0]).schema_arrow.names
        if label_column is not None and label_column not in names:
            raise ValueError(f"`source` labels: no column {label_column!r} in {self.files[0]!r}; "
                             f"its columns are {names}.")
        self.features = [n for n in names if n != label_column]
        self.has_labels = label_column is not None

    def rows(self, start: int, stop: int) -> Batch:
        import pyarrow as pa
        import pyarrow.parquet as pq

        starts = [g[2] for g in self.groups]
        lo = int(np.searchsorted(starts, start, side="right")) - 1
        hi = int(np.searchsorted(starts, stop, side="left"))
        parts = [pq.ParquetFile(self.files[f]).read_row_group(g) for f, g, _ in self.groups[lo:hi]]
        table = pa.concat_tables(parts).slice(start - self.groups[lo][2], stop - start)
        frame = table.select(self.features).to_pandas()
        labels = None if self.label_column is None else table.column(self.label_column).to_numpy()
        return Batch(np.arange(start, stop), [frame], labels)


class ImageFolderSource(Source):
    """Image files in a folder (name order), read with Pillow as ``(H, W, C)`` arrays
    (channels last, as files store them). Subfolders are classes, as in torchvision's
    ``ImageFolder``: a folder of subfolders labels each image by its subfolder's
    position in name order."""

    def __init__(self, path: Path) -> None:
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"`source` folder {str(path)!r} holds no image files "
                             f"({', '.join(IMAGE_SUFFIXES)}) and no '.parquet' files.")
        self.files = [str(f) for f in files]
        classes = sorted({f.parent for f in files} - {path})
        self.classes = [c.name for c in classes]
        self.has_labels = bool(classes) and all(f.parent != path for f in files)
        position = {c: i for i, c in enumerate(classes)}
        self.labels = np.array([position[f.parent] for f in files]) if self.has_labels else None
        self.n_samples = len(files)

    def rows(self, start: int, stop: int) -> Batch:
        from PIL import Image

        images = []
        for name in self.files[start:stop]:
            with Image.open(name) as image:
                array = np.asarray(image, dtype=np.float32)
            images.append(array[..., None] if array.ndim == 2 else array)
        labels = None if self.labels is None else self.labels[start:stop]
        return Batch(np.arange(start, stop), [np.stack(images)], labels)


# ---- torch, TensorFlow and Ray ------------------------------------------------------------


class TorchDatasetSource(Source):
    """A map-style torch ``Dataset``: items ``x`` (a list of tensors for several input
    layers) or ``(x, y)`` pairs, read by index."""

    def __init__(self, dataset: Any, n_inputs: int) -> None:
        self.dataset = dataset
        self.n_inputs = n_inputs
        self.n_samples = len(dataset)
        self.has_labels = self.n_samples > 0 and _split_item(dataset[0], n_inputs)[1] is not None

    def rows(self, start: int, stop: int) -> Batch:
        items = [_split_item(self.dataset[i], self.n_inputs) for i in range(start, stop)]
        inputs = [_stack([item[0][k] for item in items]) for k in range(self.n_inputs)]
        labels = _stack([item[1] for item in items]) if self.has_labels else None
        return Batch(np.arange(start, stop), inputs, labels)


def _split_item(item: Any, n_inputs: int) -> tuple[list[Any], Any]:
    """A data set item as (inputs, label or None): ``x``, ``[x1, x2]``, ``(x, y)`` or
    ``([x1, x2], y)``, told apart by the model's number of input layers."""
    if isinstance(item, (tuple, list)):
        if n_inputs > 1 and len(item) == n_inputs and all(hasattr(x, "shape") for x in item):
            return list(item), None
        if len(item) == 2:
            x, y = item
            return (list(x) if n_inputs > 1 else [x]), y
        raise ValueError(f"`source` items must be x or (x, y) pairs, got a {type(item).__name__} "
                         f"of {len(item)} elements.")
    return [item], None


class LoaderSource(Source):
    """A torch ``DataLoader`` read in order; its batches are re-cut to ``batch_size``."""

    random_access = False

    def __init__(self, loader: Any, n_inputs: int) -> None:
        import torch.utils.data as tud

        if not isinstance(loader.sampler, tud.SequentialSampler) and loader.batch_sampler is not None:
            raise ValueError("`source` DataLoader must read its data in order (shuffle=False, "
                             f"no custom sampler), got a {type(loader.sampler).__name__}; sample "
                             "ids are positions in the data set and resuming needs them fixed.")
        self.loader = loader
        self.n_inputs = n_inputs
        self.n_samples = len(loader.dataset) if hasattr(loader.dataset, "__len__") else None
        first = next(iter(loader))
        self.has_labels = _split_item(first, n_inputs)[1] is not None

    def stream(self) -> Iterator[tuple[list[np.ndarray], np.ndarray | None]]:
        for item in self.loader:
            inputs, labels = _split_item(item, self.n_inputs)
            yield [np.asarray(_numpy(x)) for x in inputs], (
                None if labels is None else np.asarray(_numpy(labels)))


class TensorFlowSource(Source):
    """A ``tf.data.Dataset`` of samples ``x`` or ``(x, y)`` (unbatched), read in order."""

    random_access = False

    def __init__(self, dataset: Any, n_inputs: int) -> None:
        import tensorflow as tf

        self.dataset = dataset
        self.n_inputs = n_inputs
        cardinality = int(dataset.cardinality())
        self.n_samples = cardinality if cardinality >= 0 else None
        spec = dataset.element_spec
        self.has_labels = isinstance(spec, tuple) and len(spec) == 2 and not (
            n_inputs > 1 and len(spec) == n_inputs and all(
                isinstance(s, tf.TensorSpec) and s.shape.rank > 0 for s in spec))

    def stream(self) -> Iterator[tuple[list[np.ndarray], np.ndarray | None]]:
        for chunk in self.dataset.batch(256).as_numpy_iterator():
            inputs, labels = (chunk if self.has_labels else (chunk, None))
            inputs = list(inputs) if self.n_inputs > 1 else [inputs]
            yield [np.asarray(x) for x in inputs], None if labels is None else np.asarray(labels)


class RaySource(Source):
    """A ``ray.data.Dataset``: one column of arrays (images, signals) is the input, else
    every numeric column but the label column is a feature."""

    random_access = False

    def __init__(self, dataset: Any, label_column: str | None) -> None:
        names = list(dataset.schema().names)
        if label_column is not None and label_column not in names:
            raise ValueError(f"`source` labels: no column {label_column!r} in the Ray data set; "
                             f"its columns are {names}.")
        self.dataset = dataset
        self.label_column = label_column
        self.features = [n for n in names if n not in (label_column, ID_COLUMN)]
        self.has_labels = label_column is not None
        self.n_samples = None  # counting would run the whole pipeline

    def to_inputs(self, columns: dict[str, np.ndarray]) -> tuple[list[Any], np.ndarray | None]:
        """A batch of columns (numpy format) as the inputs and labels."""
        import pandas as pd

        labels = None if self.label_column is None else np.asarray(columns[self.label_column])
        if len(self.features) == 1 and np.asarray(columns[self.features[0]]).ndim > 1:
            return [np.asarray(columns[self.features[0]])], labels
        return [pd.DataFrame({n: columns[n] for n in self.features})], labels

    def stream(self) -> Iterator[tuple[list[np.ndarray], np.ndarray | None]]:
        for columns in self.dataset.iter_batches(batch_size=256, batch_format="numpy"):
            inputs, labels = self.to_inputs(columns)
            yield inputs, labels


# ---- choosing a source ------------------------------------------------------------------


def as_source(source: Any, n_inputs: int) -> Source:
    """The :class:`Source` for what the user gave (see the module docs)."""
    data, labels = source, None
    if isinstance(source, tuple):
        if len(source) != 2:
            raise ValueError("`source` as a tuple must be (data, labels), got a tuple of "
                             f"{len(source)} elements.")
        data, labels = source
    kind = _kind(data)
    label_column = labels if isinstance(labels, str) else None
    if label_column is not None and kind not in ("frame", "parquet", "ray"):
        raise TypeError(f"`source` labels given as a column name ({labels!r}) need a pandas "
                        f"frame, Parquet or a Ray data set, got {describe(data)}.")
    if labels is not None and label_column is None and kind not in ("arrays", "frame"):
        raise TypeError(f"`source` labels as an array go with numpy arrays or a pandas frame; "
                        f"a {kind} source carries its own (got {describe(data)}).")
    if kind == "arrays":
        arrays = list(data) if isinstance(data, list) else [data]
        return ArraySource([np.asarray(a) if not isinstance(a, np.ndarray) else a for a in arrays],
                           _label_array(labels, len(arrays[0])))
    if kind == "frame":
        if label_column is not None:
            if label_column not in data.columns:
                raise ValueError(f"`source` labels: no column {label_column!r} in the frame; its "
                                 f"columns are {list(data.columns)}.")
            return FrameSource(data.drop(columns=label_column), data[label_column].to_numpy())
        return FrameSource(data, _label_array(labels, len(data)))
    if kind == "parquet":
        return ParquetSource(Path(data), label_column)
    if kind == "images":
        return ImageFolderSource(Path(data))
    if kind == "loader":
        return LoaderSource(data, n_inputs)
    if kind == "torch":
        return TorchDatasetSource(data, n_inputs)
    if kind == "tf":
        return TensorFlowSource(data, n_inputs)
    return RaySource(data, label_column)


def _label_array(labels: Any, n_samples: int) -> np.ndarray | None:
    if labels is None:
        return None
    array = np.asarray(_numpy(labels))
    if array.ndim != 1 or len(array) != n_samples:
        raise ValueError(f"`source` labels must hold one label per sample, shape ({n_samples},), "
                         f"got {describe(labels)}.")
    return array


def _kind(data: Any) -> str:
    """Which source ``data`` is, by duck type (no optional library is imported here)."""
    module = type(data).__module__
    if isinstance(data, np.ndarray) or hasattr(data, "detach") or (
            isinstance(data, list) and data and all(isinstance(a, np.ndarray) or hasattr(a, "detach")
                                                    for a in data)):
        return "arrays"
    if module.startswith("pandas") and hasattr(data, "iloc"):
        return "frame"
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.exists():
            raise ValueError(f"`source` path {str(path)!r} does not exist.")
        if path.is_file():
            if path.suffix != ".parquet":
                raise ValueError(f"`source` file must be a '.parquet' file, got {str(path)!r}.")
            return "parquet"
        return "parquet" if any(path.rglob("*.parquet")) else "images"
    if module.startswith("torch.utils.data") and hasattr(data, "batch_sampler"):
        return "loader"
    if hasattr(data, "__getitem__") and hasattr(data, "__len__") and any(
            c.__module__.startswith("torch.utils.data") for c in type(data).__mro__):
        return "torch"
    if module.startswith("tensorflow") and hasattr(data, "element_spec"):
        return "tf"
    if module.startswith("ray.data") and hasattr(data, "map_batches"):
        return "ray"
    raise TypeError(
        "`source` must be a torch DataLoader or Dataset, a numpy array or memory map (or a "
        "list of them, one per input layer), a pandas DataFrame, the path of a Parquet file "
        "or of a folder of Parquet files or images, a tf.data.Dataset or a ray.data.Dataset, "
        f"optionally as a (data, labels) tuple; got {describe(data)} of type "
        f"{type(data).__name__}."
    )
