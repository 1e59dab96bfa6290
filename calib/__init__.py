"""trtq.calib: INT8 calibration.

Collect per-tensor histograms of |x| (:mod:`.histogram`), turn them into thresholds with a
registered method (:mod:`.methods`), write TensorRT's calibration cache (:mod:`.cache`).
:func:`calibrate` runs the CPU pipeline on ONNX Runtime; :mod:`.tensorrt` holds TensorRT's own
calibrators for GPU builds.
"""

from trtq.calib.cache import CalibrationCache, parse_cache, read_cache, write_cache
from trtq.calib.histogram import HistogramSet
from trtq.calib.methods import available_methods, get_method, register_method
from trtq.calib.run import CalibrationResult, calibrate, compute_amax, result_from_histograms

__all__ = [
    "CalibrationCache",
    "CalibrationResult",
    "HistogramSet",
    "available_methods",
    "calibrate",
    "compute_amax",
    "get_method",
    "parse_cache",
    "read_cache",
    "register_method",
    "result_from_histograms",
    "write_cache",
]
