"""Which calibrators exist: built-ins, the ``trtq.calibrators`` entry-point group, registrations,
and ``package.module:Class`` specs given on the command line.

A calibrator is a :class:`~trtq.calib.tensorrt.adapter.CalibratorAdapter` subclass. A package
adds one with an entry point::

    [project.entry-points."trtq.calibrators"]
    percentile999 = "mypkg.calib:Percentile999"

Nothing here imports TensorRT, so ``calib list`` works without it.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from importlib.metadata import entry_points

from trtq._core.errors import InputError
from trtq.calib.tensorrt.adapter import CalibratorAdapter
from trtq.calib.tensorrt.builtin import BUILTIN

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "trtq.calibrators"
_REGISTERED: dict[str, type[CalibratorAdapter]] = {}


def register_calibrator(cls: type[CalibratorAdapter]) -> type[CalibratorAdapter]:
    """Class decorator: make ``cls`` available under ``cls.name`` in this process."""
    _check(cls, repr(cls))
    _REGISTERED[cls.name] = cls
    return cls


def _check(obj: object, where: str) -> type[CalibratorAdapter]:
    if not (isinstance(obj, type) and issubclass(obj, CalibratorAdapter)):
        raise InputError(f"calibrator {where} is not a subclass of trtq.calib.tensorrt.CalibratorAdapter")
    if not obj.trt_base:
        raise InputError(f"calibrator {where} does not set trt_base (e.g. 'IInt8EntropyCalibrator2')")
    return obj


def _entry_points() -> dict[str, tuple[str, Callable[[], object]]]:
    found = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(getattr(ep, "dist", None), "name", None) or ep.value
        found[ep.name] = (f"entry point ({dist})", ep.load)
    return found


def _load_spec(spec: str) -> type[CalibratorAdapter]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InputError(f"calibrator '{spec}': expected a name or 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"calibrator '{spec}': cannot import {module_name} ({exc})") from exc
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise InputError(f"calibrator '{spec}': {module_name} has no attribute {attr}")
    return _check(obj, f"'{spec}'")


def calibrator_names() -> list[str]:
    return sorted({c.name for c in BUILTIN} | set(_REGISTERED) | set(_entry_points()))


def get_calibrator(spec: str) -> type[CalibratorAdapter]:
    """The calibrator named ``spec`` (built-in, registered, entry point) or ``package.module:Class``."""
    if ":" in spec:
        return _load_spec(spec)
    for cls in BUILTIN:
        if cls.name == spec:
            return cls
    if spec in _REGISTERED:
        return _REGISTERED[spec]
    eps = _entry_points()
    if spec in eps:
        try:
            obj = eps[spec][1]()
        except Exception as exc:
            raise InputError(f"calibrator '{spec}' (entry point) failed to load: {exc}") from exc
        return _check(obj, f"'{spec}' (entry point)")
    raise InputError(
        f"unknown calibrator '{spec}'; choose one of: {', '.join(calibrator_names())}, or give 'package.module:Class'"
    )


def calibrator_for_algorithm(algorithm: str) -> type[CalibratorAdapter]:
    """The built-in calibrator whose cache header names ``algorithm`` (e.g. ``MinMaxCalibration``)."""
    for cls in BUILTIN:
        if cls.algorithm == algorithm:
            return cls
    raise InputError(f"no calibrator writes caches of algorithm '{algorithm}'")


def list_calibrators() -> list[dict[str, str]]:
    """``[{name, base, description, source}]`` for ``calib list``: built-ins first, then the rest."""
    rows = [
        {"name": c.name, "base": c.trt_base, "description": c.description, "source": "builtin"}
        for c in BUILTIN
    ]
    seen = {r["name"] for r in rows}
    for name, cls in sorted(_REGISTERED.items()):
        if name not in seen:
            rows.append(
                {"name": name, "base": cls.trt_base, "description": cls.description, "source": "registered"}
            )
            seen.add(name)
    for name, (source, load) in sorted(_entry_points().items()):
        if name in seen:
            continue
        try:
            cls = _check(load(), f"'{name}' (entry point)")
            rows.append(
                {"name": name, "base": cls.trt_base, "description": cls.description, "source": source}
            )
        except Exception as exc:  # listing must not die on one broken plugin
            rows.append(
                {"name": name, "base": "?", "description": f"failed to load: {exc}", "source": source}
            )
    return rows
