"""Start-up steps shared by the ``precision`` commands (compare, bisect, pin): open the data for a
model, and read the INT8 ranges from a calibration cache or calibrate them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import onnx

from trtq._core.cli import progress_bar
from trtq._core.config import resolve_path


def open_data(proto: onnx.ModelProto, opts: dict, config: dict, config_path, batch_size: int | None = None):
    """The dataset of ``opts`` for the model, its batch size (``batch_size`` or the model's default)
    and the data path (for the ``data`` block). Returns ``(dataset, batch_size, data_path)``."""
    from trtq.datasets import default_batch_size
    from trtq.datasets.cli_options import dataset_from_options
    from trtq.runtime.onnxruntime import OnnxRuntimeRunner

    # A session, not just the declared inputs: a model ONNX Runtime cannot load fails here, before any work.
    with OnnxRuntimeRunner(proto, optimize=False) as probe:
        inputs = probe.inputs()
    batch_size = int(batch_size if batch_size is not None else default_batch_size(inputs))
    dataset, _ = dataset_from_options(inputs, batch_size, opts, config, config_path=config_path)
    data_path = opts.get("data") or resolve_path(config.get("data"), config_path)
    return dataset, batch_size, data_path


def read_or_calibrate(
    proto: onnx.ModelProto,
    cache_path: str | None,
    method: str,
    quiet: bool,
    total: int | None,
    batches: Iterable[Any] | Callable[[Any], Iterable[Any]],
) -> dict[str, float]:
    """The amax per tensor from ``cache_path``, else calibrated with ``method`` under a progress bar.

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
            return dict(calibrate(proto, batches(progress), method=method).amax)
        return dict(calibrate(proto, batches, method=method, progress=progress).amax)
