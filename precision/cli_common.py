"""Start-up steps shared by the ``precision`` commands (compare, bisect, pin): open the data for a
model, and read the INT8 ranges from a calibration cache or calibrate them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import onnx

from trtq._core.cli import progress_bar


def open_data(proto: onnx.ModelProto, data: Any, batch_size: int | None = None):
    """The dataset of ``data`` (:class:`~trtq.datasets.cli_options.DataSettings`) for the model,
    and its batch size (``batch_size``, else the data's, else the model's default)."""
    from trtq.runtime.onnxruntime import OnnxRuntimeRunner

    # A session, not just the declared inputs: a model ONNX Runtime cannot load fails here, before any work.
    with OnnxRuntimeRunner(proto, optimize=False) as probe:
        inputs = probe.inputs()
    batch_size = int(batch_size) if batch_size is not None else data.batch_size_for(inputs)
    return data.open(inputs, batch_size), batch_size


def read_or_calibrate(
    proto: onnx.ModelProto,
    cache_path: str | None,
    method: str,
    quiet: bool,
    total: int | None,
    batches: Iterable[Any] | Callable[[Any], Iterable[Any]],
    params: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """The amax per tensor from ``cache_path``, else calibrated with ``method`` (and its
    ``params``) under a progress bar.

    ``batches`` is the data, or a callable ``progress -> batches`` whose batches report the
    progress themselves (a data loader).
    """
    if cache_path:
        from trtq.calib.cache import read_cache

        return read_cache(cache_path).amax()
    from trtq.calib.run import calibrate

    with progress_bar(quiet, unit="img") as progress:
        progress(0, total=total, description=f"calibrating ({method})")
        if callable(batches):
            return dict(calibrate(proto, batches(progress), method=method, params=params).amax)
        return dict(calibrate(proto, batches, method=method, params=params, progress=progress).amax)
