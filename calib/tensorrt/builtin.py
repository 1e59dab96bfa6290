"""The built-in calibrators: one thin class per TensorRT 10 calibrator base class.

Each sets only the base class it is combined with, the cache algorithm TensorRT writes in the
header, and a description for ``calib list``. TensorRT computes the thresholds itself; these
classes only feed it data (see :mod:`trtq.calib.tensorrt.adapter`).
"""

from __future__ import annotations

from typing import Any

from trtq._core.errors import InputError
from trtq.calib.tensorrt.adapter import CalibratorAdapter


class Entropy2Calibrator(CalibratorAdapter):
    name = "entropy2"
    trt_base = "IInt8EntropyCalibrator2"
    algorithm = "EntropyCalibration2"
    description = (
        "KL-divergence thresholds, computed before layer fusion (TensorRT's default; needed for DLA)"
    )


class EntropyCalibrator(CalibratorAdapter):
    name = "entropy"
    trt_base = "IInt8EntropyCalibrator"
    algorithm = "EntropyCalibration"
    description = "the original KL-divergence calibrator, computed after layer fusion"


class MinMaxCalibrator(CalibratorAdapter):
    name = "minmax"
    trt_base = "IInt8MinMaxCalibrator"
    algorithm = "MinMaxCalibration"
    description = "amax = largest |x| seen, computed before layer fusion"


class LegacyCalibrator(CalibratorAdapter):
    """TensorRT's legacy calibrator, parameterised by a quantile and a regression cutoff.

    Args (besides :class:`CalibratorAdapter`'s):
        quantile: in (0, 1], the quantile of |x| that selects the region maximum (default 0.9999).
        regression_cutoff: in (0, 1], the fraction of the maximum that bounds the regression
            (default 1.0).
    The histogram cache of this calibrator is not kept: ``read_histogram_cache`` returns ``None``.
    """

    name = "legacy"
    trt_base = "IInt8LegacyCalibrator"
    algorithm = "LegacyCalibration"
    description = "quantile / regression-cutoff calibrator (options quantile=, regression_cutoff=)"

    def __init__(
        self, *args: Any, quantile: float = 0.9999, regression_cutoff: float = 1.0, **kwargs: Any
    ) -> None:
        for label, value in (("quantile", quantile), ("regression_cutoff", regression_cutoff)):
            if not 0.0 < float(value) <= 1.0:
                raise InputError(f"legacy calibrator: {label} must be in (0, 1], got {value}")
        self.quantile = float(quantile)
        self.regression_cutoff = float(regression_cutoff)
        super().__init__(*args, **kwargs)

    def get_quantile(self) -> float:
        return self.quantile

    def get_regression_cutoff(self) -> float:
        return self.regression_cutoff

    def read_histogram_cache(self, length: int) -> None:
        return None

    def write_histogram_cache(self, ptr: Any, length: int) -> None:
        return None


BUILTIN = (Entropy2Calibrator, EntropyCalibrator, MinMaxCalibrator, LegacyCalibrator)
