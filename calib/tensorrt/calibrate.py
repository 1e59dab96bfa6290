"""``calib run --backend tensorrt``: calibrate INT8 on the GPU with a TensorRT 10 calibrator.

TensorRT computes the thresholds while building an INT8 engine; the engine is discarded (or
saved with ``engine_path``) and the calibration cache is the result. Dynamic-shape models are
calibrated at the shapes of the first batch, which become the single optimization profile's
MIN = OPT = MAX and the calibration profile (``config.set_calibration_profile``).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from trtq._core.errors import InputError, TrtqError
from trtq._core.onnx_model import load_onnx, real_inputs
from trtq._core.progress import ProgressFn, null_progress
from trtq._core.tensors import TensorInfo
from trtq._core.trt_import import (
    CPU_HINT,
    import_tensorrt,
    require_gpu,
    targets,
    trt_major,
    trt_version_string,
)
from trtq.calib.cache import read_cache
from trtq.calib.tensorrt.factory import make_calibrator
from trtq.calib.tensorrt.registry import get_calibrator

log = logging.getLogger(__name__)


def _batches(
    source: Any, batch_size: int, max_batches: int | None, progress: ProgressFn
) -> tuple[Iterable[Mapping[str, np.ndarray]], ProgressFn]:
    """The batch iterable, and the progress callback the calibrator should advance per batch.

    A ``trtq.datasets`` dataset (``.batches(n, progress=)``) reports its own progress in samples;
    for any other iterable of dicts the calibrator reports batches.
    """
    if hasattr(source, "batches") and callable(source.batches):
        return source.batches(batch_size, progress=progress), null_progress
    if isinstance(source, Mapping) or not hasattr(source, "__iter__"):
        raise InputError("calibration data must be a dataset or an iterable of {input name: array} dicts")
    total = max_batches if max_batches is not None else (len(source) if hasattr(source, "__len__") else None)
    progress(0, total=total, description="TensorRT calibration")
    return source, progress


@targets(10)
def calibrate_with_tensorrt(
    model_path: str | os.PathLike,
    batches_source: Any,
    cache_path: str | os.PathLike,
    *,
    calibrator: str = "entropy2",
    batch_size: int,
    trt_version_hint: str | None = None,
    progress: ProgressFn = null_progress,
    calibrator_options: Mapping[str, Any] | None = None,
    max_batches: int | None = None,
    reuse_cache: bool = False,
    engine_path: str | os.PathLike | None = None,
    timing_cache: str | os.PathLike | None = None,
    workspace_bytes: int | None = None,
) -> dict[str, Any]:
    """Calibrate ``model_path`` with TensorRT and write the cache to ``cache_path`` (atomically).

    Args:
        batches_source: a ``trtq.datasets`` dataset or an iterable of ``{input: array}`` with
            exactly ``batch_size`` samples each.
        calibrator: a registered name (``entropy2``, ``entropy``, ``minmax``, ``legacy``, entry
            points) or ``package.module:Class``.
        trt_version_hint: the TensorRT version the user expects; the cache header always names
            the running TensorRT (a differing hint is logged as a warning).
        calibrator_options: extra keyword arguments for the calibrator (``quantile=`` ...).
        reuse_cache: if ``cache_path`` exists, hand it to TensorRT (no GPU calibration).
        engine_path: also keep the INT8 engine built during calibration.

    Returns a summary: ``backend``, ``calibrator``, ``algorithm``, ``trt_version``,
    ``batch_size``, ``batches``, ``cache``, ``reused_cache``, ``tensors`` (``[{name, scale,
    amax}]``, scale = amax / 127) and ``time_s``.
    """
    from trtq.runtime.tensorrt_build import BuildSettings, build_engine, shapes_tuple

    trt = import_tensorrt()
    running = trt_version_string(trt)
    if trt_major(trt) >= 11:
        raise InputError(
            f"TensorRT {trt.__version__} has no INT8 calibrators; make the cache with `calib run --backend onnxruntime` "
            "(TensorRT 11 builds INT8 from a Q/DQ model written from that cache)"
        )
    require_gpu()
    cls = get_calibrator(calibrator)
    if trt_version_hint and trt_version_hint.split(".")[:3] != running.split("."):
        log.warning(
            "TensorRT %s is running; the cache header will name it, not %s", running, trt_version_hint
        )
    model_file = Path(model_path)
    # the TensorRT network's inputs have the ONNX graph inputs' dtypes
    dtypes = {t.name: t.dtype for t in real_inputs(load_onnx(model_file, load_external_data=False))}
    cache_file = Path(cache_path)
    reused = reuse_cache and cache_file.is_file()

    source, batch_progress = _batches(batches_source, batch_size, max_batches, progress)
    it = iter(source)
    first = next(it, None)
    if first is None:
        raise InputError("calibration data is empty: no batch to calibrate with")
    missing = [n for n in dtypes if n not in first]
    if missing:
        raise InputError(f"batches have no array for model input(s) {missing}; they have {sorted(first)}")
    shapes = {n: tuple(int(d) for d in np.shape(first[n])) for n in dtypes}
    specs = [TensorInfo(n, shapes[n], dtypes[n]) for n in dtypes]

    start = time.perf_counter()
    calib = make_calibrator(
        trt,
        cls,
        itertools.chain([first], it),
        batch_size=batch_size,
        inputs=specs,
        cache_path=cache_file,
        read_cache=reuse_cache,
        max_batches=max_batches,
        progress=batch_progress,
        **dict(calibrator_options or {}),
    )
    settings = BuildSettings(
        int8=True,
        shapes=shapes_tuple(shapes),
        timing_cache=Path(timing_cache) if timing_cache else None,
        engine_path=Path(engine_path) if engine_path else None,
        workspace_bytes=workspace_bytes,
    )
    with calib:
        build_engine(trt, model_file, settings, calibrator=calib)
    if not (calib.cache_written or calib.cache_read):
        raise TrtqError(
            f"TensorRT built {model_file} without producing a calibration cache; {CPU_HINT} to make one"
        )
    cache = read_cache(cache_file)
    return {
        "backend": f"tensorrt {running}",
        "calibrator": cls.name,
        "algorithm": cache.algorithm,
        "trt_version": cache.trt_version,
        "batch_size": int(batch_size),
        "batches": calib.batches_fed,
        "cache": str(cache_file),
        "reused_cache": bool(reused and calib.cache_read),
        "tensors": [{"name": n, "scale": s, "amax": s * 127.0} for n, s in cache.scales.items()],
        "time_s": time.perf_counter() - start,
    }
