"""Calibration of a dataset into a TensorRT cache that survives interruption.

:func:`calibrate_dataset` is what ``calib run`` does, as a library call: stream the dataset through
:func:`~trtq.calib.run.calibrate`, checkpoint the histograms beside the cache every
``checkpoint_every`` batches, and at the end write the cache and the histograms (atomically, as one).
With ``resume=True`` it continues from the saved histograms: the samples they already hold are
skipped, which is exact because histograms do not depend on batch order or batching
(:mod:`trtq.calib.histogram`). Resuming needs the same files in the same order: the histograms
record their source files, and a mismatch is an input error, never a silent double count. With
``auto`` (the default method) the resumed run is exact too: the batches it measures on are chosen
by their index alone (:class:`~trtq.calib.auto.MeasuredSubset`), so the skipped batches are offered
to it as they are read (:func:`~trtq.calib.run.calibrate`'s ``skipped``); they are read anyway, to
find where the run stopped.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx

from trtq._core.atomic import output_group, outside_group
from trtq._core.errors import InputError, TrtqError
from trtq._core.onnx_model import tensor_names
from trtq._core.progress import ProgressFn, null_progress
from trtq.calib.cache import DEFAULT_TRT_VERSION, CalibrationCache, write_cache
from trtq.calib.histogram import DEFAULT_BINS, HistogramSet
from trtq.calib.methods import get_method
from trtq.calib.run import CalibrationResult, calibrate, histogram_path_for
from trtq.runtime.build import BuildTools

#: Batches between two histogram checkpoints.
CHECKPOINT_EVERY = 25


class BatchSource(Protocol):
    """What :func:`calibrate_dataset` reads (a :class:`trtq.datasets.Dataset` is one): its length in
    samples, its files (for resume checks; may be empty) and its batches."""

    def __len__(self) -> int: ...

    def batches(
        self, batch_size: int, *, progress: ProgressFn = ...
    ) -> Iterable[Mapping[str, np.ndarray]]: ...


@dataclass
class CalibrationRun:
    """A finished :func:`calibrate_dataset`: the result, the cache written, where, and how much
    of the data came from the resumed histograms (``resumed_samples``)."""

    result: CalibrationResult
    cache: CalibrationCache
    cache_path: Path
    histogram_path: Path
    resumed_samples: int = 0


def resume_point(histograms: HistogramSet, files: Sequence[str], batch_size: int, where: str) -> int:
    """Batches to skip to continue ``histograms`` on ``files``; raises when the files differ."""
    if histograms.sources and list(files[: len(histograms.sources)]) != list(histograms.sources):
        raise InputError(
            f"{where}: --resume needs the same data in the same order; the saved histograms came from other files"
        )
    return histograms.samples // batch_size


def calibrate_dataset(
    model: onnx.ModelProto,
    dataset: BatchSource,
    cache_path: str | os.PathLike,
    *,
    batch_size: int,
    method: str = "auto",
    params: Mapping[str, object] | None = None,
    num_bins: int = DEFAULT_BINS,
    trt_version: str = DEFAULT_TRT_VERSION,
    cache_algorithm: str | None = None,
    backend: str = "onnxruntime",
    threads: int | None = None,
    resume: bool = False,
    histogram_path: str | os.PathLike | None = None,
    checkpoint_every: int = CHECKPOINT_EVERY,
    progress: ProgressFn = null_progress,
    tools: BuildTools | None = None,
) -> CalibrationRun:
    """Calibrate ``model`` on ``dataset`` and write the TensorRT cache and its histograms.

    ``histogram_path`` defaults to ``CACHE.hist.npz``. ``progress`` is advanced per sample
    (skipped samples included); ``tools``: see :func:`trtq.calib.run.calibrate`. An interruption (Ctrl-C) keeps the last checkpoint and raises a
    :class:`TrtqError` that says to resume.
    """
    cache_path = Path(cache_path)
    hist_path = Path(histogram_path) if histogram_path else histogram_path_for(cache_path)
    files = [str(f) for f in getattr(dataset, "files", [])]
    histograms = None
    skip = 0
    if resume:
        if not hist_path.exists():
            raise InputError(f"{hist_path}: nothing to resume from (no histogram file)")
        histograms = HistogramSet.load(hist_path)
        known = tensor_names(model)
        foreign = [t for t in histograms.names if t not in known]
        if foreign:
            raise InputError(
                f"{hist_path}: --resume: the saved histograms hold tensors this model does not have "
                f"('{foreign[0]}'): they were made for another model"
            )
        skip = resume_point(histograms, files, batch_size, str(hist_path))

    def checkpoint(hs: HistogramSet, n: int) -> None:
        if n % checkpoint_every == 0:
            hs.sources = files[: hs.samples]
            with outside_group():  # kept when the run then fails or is interrupted: it is what --resume reads
                hs.save(hist_path)

    progress(0, total=len(dataset), description="calibrating")
    batches: Iterable[Mapping[str, Any]] = dataset.batches(batch_size, progress=progress)
    skipped: Iterable[Mapping[str, Any]] = ()
    if skip:
        progress(0, description=f"skipping {skip * batch_size} samples already collected")
        batches = iter(batches)
        if get_method(method).needs_data:  # auto: calibrate() takes them all before the rest
            skipped = itertools.islice(batches, skip)
        else:
            batches = itertools.islice(batches, skip, None)
    t0 = time.perf_counter()
    try:
        result = calibrate(
            model,
            batches,
            method=method,
            num_bins=num_bins,
            params=params,
            histograms=histograms,
            skipped=skipped,
            threads=threads,
            on_batch=checkpoint,
            backend=backend,
            tools=tools,
        )
    except KeyboardInterrupt:
        raise TrtqError("interrupted; rerun with --resume to continue from the last checkpoint") from None
    result.histograms.sources = files[: result.histograms.samples]
    result.seconds = time.perf_counter() - t0
    cache = result.cache(trt_version, cache_algorithm)
    with output_group():  # the cache and its histograms land together (also for library callers)
        write_cache(cache_path, cache)
        result.histograms.save(hist_path)
    return CalibrationRun(result, cache, cache_path, hist_path, skip * batch_size)
