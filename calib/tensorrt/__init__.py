"""TensorRT INT8 calibrators (TensorRT 10.x) fed from trtq datasets through cuda-python buffers.

Nothing here imports TensorRT at import time. Public API:

- :func:`calibrate_with_tensorrt` — ``calib run --backend tensorrt``;
- :func:`list_calibrators` / :func:`get_calibrator` / :func:`register_calibrator` — the registry
  (built-ins, entry-point group ``trtq.calibrators``, ``package.module:Class``);
- :class:`CalibratorAdapter` — subclass it (set ``name``, ``trt_base``, ``algorithm``,
  ``description``) to add a calibrator;
- :func:`make_calibrator` — instantiate one on its TensorRT base class.
"""

from trtq.calib.tensorrt.adapter import CalibrationBatchError, CalibratorAdapter
from trtq.calib.tensorrt.calibrate import calibrate_with_tensorrt
from trtq.calib.tensorrt.device_buffers import CudaError, DeviceBuffers
from trtq.calib.tensorrt.factory import calibrator_class, make_calibrator
from trtq.calib.tensorrt.registry import get_calibrator, list_calibrators, register_calibrator

__all__ = [
    "CalibrationBatchError",
    "CalibratorAdapter",
    "CudaError",
    "DeviceBuffers",
    "calibrate_with_tensorrt",
    "calibrator_class",
    "get_calibrator",
    "list_calibrators",
    "make_calibrator",
    "register_calibrator",
]
