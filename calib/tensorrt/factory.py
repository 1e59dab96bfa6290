"""Combine a :class:`CalibratorAdapter` subclass with its TensorRT base class.

The TensorRT base (``trt.IInt8EntropyCalibrator2`` ...) exists only once TensorRT is imported,
and only in TensorRT 10 (calibrators were removed in 11), so the concrete class is built here, at
run time, and cached per (TensorRT module, adapter class). Its ``__init__`` runs the TensorRT
base's ``__init__`` first, as pybind11 requires, then the adapter's.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

from trtq._core.errors import InputError, MissingDependencyError
from trtq._core.trt_import import CPU_HINT, trt_version_string
from trtq.calib.tensorrt.adapter import CalibratorAdapter


@functools.cache
def calibrator_class(trt: ModuleType, adapter: type[CalibratorAdapter]) -> type:
    """The class ``(adapter, trt.<adapter.trt_base>)``; raises if this TensorRT lacks the base."""
    if not (isinstance(adapter, type) and issubclass(adapter, CalibratorAdapter)):
        raise InputError(f"{adapter!r} is not a trtq CalibratorAdapter subclass")
    base = getattr(trt, adapter.trt_base, None) if adapter.trt_base else None
    if base is None:
        raise MissingDependencyError(
            f"TensorRT {trt.__version__} has no calibrator base '{adapter.trt_base}' "
            f"(implicit INT8 calibration was removed in TensorRT 11); {CPU_HINT}, "
            "or build explicitly quantized (Q/DQ) engines"
        )

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        base.__init__(self)
        adapter.__init__(self, *args, **kwargs)

    return type(
        f"{adapter.__name__}_{adapter.trt_base}",
        (adapter, base),
        {"__init__": __init__, "__module__": adapter.__module__, "__doc__": adapter.__doc__},
    )


def make_calibrator(trt: ModuleType, adapter: type[CalibratorAdapter], *args: Any, **kwargs: Any) -> Any:
    """Instantiate ``adapter`` on its TensorRT base, passing the running TensorRT version."""
    kwargs.setdefault("trt_version", trt_version_string(trt))
    return calibrator_class(trt, adapter)(*args, **kwargs)
