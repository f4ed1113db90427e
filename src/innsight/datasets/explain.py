"""``explain_dataset``: one method over a whole data set, streamed to Parquet shards."""

from __future__ import annotations

import hashlib
import math
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from innsight._validation import check_bool, describe, is_int, is_number
from innsight.converter import Converter
from innsight.datasets.result import DatasetResult
from innsight.methods.comparison import resolve_method

ENGINES = ("local", "ray")
#: Default samples per batch: as many as keep one batch's values within this many bytes,
#: between 1 and MAX_DEFAULT_BATCH.
BATCH_BYTES = 2**25
MAX_DEFAULT_BATCH = 1024


def explain_dataset(
    model: Any,
    source: Any,
    method: Any = "IntegratedGradient",
    out: str | os.PathLike = "results/",
    engine: str = "local",
    batch_size: int | None = None,
    resume: bool = True,
    verbose: bool = True,
    *,
    concurrency: int | None = None,
    num_gpus: float | None = None,
    **method_args: Any,
) -> DatasetResult:
    """Explain every sample of a data set with one method, writing results to disk.

    Samples are read and explained in batches of ``batch_size``; each batch becomes
    one Parquet shard under ``out/shards/`` and is listed in ``out/manifest.json``.
    Memory holds one batch at a time, whatever the data set size. A stopped run
    called again with ``resume=True`` explains only the missing batches.

    Parameters
    ----------
    model : Converter
        The converted model (``ins.convert(...)``); for the local engine anything the
        method takes (LIME and SHAP also take raw models).
    source
        The samples, in a fixed order (a sample's id is its position): a numpy array
        or memory map ``(n, *input_dim)`` (a list of them for several input layers), a
        pandas DataFrame, the path of a Parquet file or of a folder of Parquet files,
        the path of a folder of images (one subfolder per class gives labels), a torch
        ``Dataset`` or ``DataLoader`` (``shuffle=False``) of ``x`` or ``(x, y)``, a
        ``tf.data.Dataset`` of ``x`` or ``(x, y)`` or a ``ray.data.Dataset``. Labels:
        ``(data, labels)`` with an array of one label per sample, or the name of a
        column for frames, Parquet and Ray data sets.
    method : str or InterpretingMethod subclass
        The method (``"IntegratedGradient"``, ``ins.LRP``, ...).
    out : str or path
        The results folder (created when missing).
    engine : {"local", "ray"}
        ``"local"``: this process, batch after batch. ``"ray"``: actors of Ray Data on
        the cluster ``ray.init(address=...)`` connected to (a local Ray is started
        when none is); needs ``pip install innsight[ray]``.
    batch_size : int, optional
        Samples per batch and shard; default: as many as keep a batch's values
        within 32 MiB (at most 1024). The method's own chunking (rows through the
        model at once) keeps its default.
    resume : bool
        Continue a stopped run of the same model, method, arguments, source and
        batch size in ``out`` (a complete one is returned as it is); ``False``
        deletes a previous run there first. The Ray engine starts a stopped run again.
    verbose : bool
        Show a progress bar over the batches (local engine).
    concurrency, num_gpus : optional
        Ray engine: number of actors (default: one per CPU, or per GPU with
        ``num_gpus``) and GPUs per actor.
    **method_args
        The method's arguments (``n``, ``x_ref``, ``output_idx``, ``seed``,
        ``channels_first``, ...). ``seed`` seeds each batch from it and the batch's
        first sample, so that results do not depend on the engine. ``targets=
        "labels"`` passes each batch's labels as per-sample ``targets`` (for methods
        that take them).

    Returns
    -------
    DatasetResult
        Reads the shards lazily: ``get_result(type, data_idx)``, ``summary_frame()``,
        ``plot_global()``, ``boxplot()``.
    """
    from innsight.datasets.shards import Manifest, clear
    from innsight.datasets.sources import as_source

    method_cls = resolve_method(method)
    if not isinstance(engine, str) or engine not in ENGINES:
        raise ValueError(f"`engine` must be one of {list(ENGINES)}, got {describe(engine)}.")
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"`out` must be a folder path (str or os.PathLike), got {describe(out)}.")
    if Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"`out` must be a folder, got the file {str(out)!r}.")
    if batch_size is not None and (not is_int(batch_size) or batch_size < 1):
        raise ValueError(f"`batch_size` must be a positive int or None, got {describe(batch_size)}.")
    check_bool(resume, "resume")
    check_bool(verbose, "verbose")
    _check_ray_args(engine, concurrency, num_gpus)
    if "verbose" in method_args or "data" in method_args:
        raise TypeError("`method_args` must not hold 'data' or 'verbose': the data come from "
                        "`source` and the progress bar is explain_dataset's `verbose`.")
    if engine == "ray" and not isinstance(model, Converter):
        raise TypeError(f"`model` must be an innsight Converter for engine='ray' (it travels to "
                        f"the workers as its model dict), got {describe(model)}.")
    seed = method_args.pop("seed", None)
    if seed is not None and not is_int(seed):
        raise TypeError(f"`seed` must be an int or None, got {describe(seed)}.")

    from innsight.datasets.explainer import LABELS, Explainer
    from innsight.datasets.layout import Layout

    n_inputs = len(model.input_dim) if isinstance(model, Converter) else 1
    data = as_source(source, n_inputs)
    if isinstance(method_args.get("targets"), str) and method_args["targets"] == LABELS \
            and not data.has_labels:
        raise ValueError("`targets='labels'` needs labels, but `source` has none; pass "
                         "(data, labels) or a source that yields (x, y).")
    explainer = Explainer(model, method_cls, method_args, seed)
    layout = Layout.of(explainer.result(data.first()))  # checks model, method and arguments
    if batch_size is None:
        batch_size = _default_batch_size(layout)
    out = Path(out)
    fingerprint = _fingerprint(model, method_cls.method_name, method_args, seed, batch_size, data)
    manifest = Manifest.read(out) if out.is_dir() else None
    if manifest is not None and resume and manifest.fingerprint != fingerprint:
        raise ValueError(
            f"`out` folder {str(out)!r} holds a run with another model, method, arguments, "
            "source or batch_size; pass another `out`, or resume=False to replace it.")
    if manifest is not None and resume and manifest.complete:
        return DatasetResult(out)
    if manifest is None or not resume:
        clear(out)
        (out / "shards").mkdir(parents=True, exist_ok=True)
        manifest = Manifest(fingerprint, engine, batch_size, layout.to_dict(), data.has_labels,
                            data.n_samples)
        manifest.write(out)
    if engine == "local":
        from innsight.datasets.local import run_local
        run_local(out, data, explainer, manifest, verbose)
    else:
        from innsight.datasets.ray_engine import run_ray
        manifest.engine = "ray"
        run_ray(out, data, model, explainer, manifest, concurrency, num_gpus)
    return DatasetResult(out)


def _check_ray_args(engine: str, concurrency: Any, num_gpus: Any) -> None:
    if engine != "ray" and (concurrency is not None or num_gpus is not None):
        raise ValueError("`concurrency` and `num_gpus` are for engine='ray', got engine="
                         f"{engine!r} with concurrency={concurrency!r}, num_gpus={num_gpus!r}.")
    if concurrency is not None and (not is_int(concurrency) or concurrency < 1):
        raise ValueError(f"`concurrency` must be a positive int or None, got {describe(concurrency)}.")
    if num_gpus is not None and (not is_number(num_gpus) or num_gpus < 0):
        raise ValueError(f"`num_gpus` must be a number >= 0 or None, got {describe(num_gpus)}.")
    if engine == "ray":
        try:
            import ray  # noqa: F401
        except ImportError as error:
            raise ImportError("engine='ray' needs Ray Data: pip install innsight[ray]") from error


def _default_batch_size(layout: Any) -> int:
    itemsize = np.dtype(layout.dtype).itemsize
    per_sample = sum(math.prod(shape) for _, _, shape in layout.blocks()) * itemsize
    return int(min(MAX_DEFAULT_BATCH, max(1, BATCH_BYTES // max(per_sample, 1))))


def _fingerprint(model: Any, method: str, method_args: dict[str, Any], seed: int | None,
                 batch_size: int, source: Any) -> str:
    """A digest of what makes a run: model weights and structure, method, arguments,
    seed, batch size and the source's kind, size and labels."""
    digest = hashlib.sha256()
    module = model.model if isinstance(model, Converter) else model
    if isinstance(module, torch.nn.Module):
        digest.update(repr(module).encode())
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    else:
        digest.update(type(model).__qualname__.encode())
    digest.update(pickle.dumps((method, _plain(method_args), seed, batch_size,
                                type(source).__name__, source.n_samples, source.has_labels)))
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """Arguments with arrays and tensors replaced by digests of their values."""
    if isinstance(value, dict):
        return sorted((str(k), _plain(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return (value.shape, str(value.dtype), hashlib.sha256(value.tobytes()).hexdigest())
    return repr(value)
