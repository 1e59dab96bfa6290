"""trtq.calib: INT8 calibration.

Collect per-tensor histograms of |x| (:mod:`.histogram`), turn them into thresholds with a
registered method (:mod:`.methods`), write TensorRT's calibration cache (:mod:`.cache`).
:func:`calibrate` runs the CPU pipeline on ONNX Runtime; :mod:`.tensorrt` holds TensorRT's own
calibrators for GPU builds. Default methods: ``auto`` where the data is at hand (:func:`calibrate`,
:func:`~trtq.calib.resumable.calibrate_dataset`), ``entropy2`` from histograms alone
(:func:`compute_amax`, :func:`result_from_histograms`).

The names below are attributes of this package, imported on first use, so that ``calib show``
or ``--help`` does not load numba and ONNX.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CalibrationCache": "trtq.calib.cache",
    "parse_cache": "trtq.calib.cache",
    "read_cache": "trtq.calib.cache",
    "write_cache": "trtq.calib.cache",
    "HistogramSet": "trtq.calib.histogram",
    "available_methods": "trtq.calib.methods",
    "get_method": "trtq.calib.methods",
    "register_method": "trtq.calib.methods",
    "CalibrationResult": "trtq.calib.run",
    "calibrate": "trtq.calib.run",
    "compute_amax": "trtq.calib.run",
    "result_from_histograms": "trtq.calib.run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'trtq.calib' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)
