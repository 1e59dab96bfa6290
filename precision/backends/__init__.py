"""Backends run a model. ``onnxruntime`` (default, CPU) and ``tensorrt`` (needs TensorRT + GPU).

A new backend is one class in one file, registered with :func:`register_backend` or through the
``trtq.backends`` entry-point group.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points

from trtq._core.errors import InputError
from trtq.precision.backends.base import Backend, TensorInfo

__all__ = ["Backend", "TensorInfo", "register_backend", "get_backend", "available_backends"]

# name -> "module:attr" (imported lazily so that tensorrt is never imported unless asked for)
_BUILTIN = {
    "onnxruntime": "trtq.precision.backends.onnxruntime:OnnxRuntimeBackend",
    "tensorrt": "trtq.precision.backends.tensorrt:TensorRTBackend",
}
_REGISTERED: dict[str, type[Backend]] = {}


def register_backend(name: str) -> Callable[[type[Backend]], type[Backend]]:
    """Class decorator registering a backend under ``name``."""

    def deco(cls: type[Backend]) -> type[Backend]:
        _REGISTERED[name] = cls
        return cls

    return deco


def available_backends() -> list[str]:
    names = set(_BUILTIN) | set(_REGISTERED)
    names |= {ep.name for ep in entry_points(group="trtq.backends")}
    return sorted(names)


def get_backend(name: str) -> type[Backend]:
    """Return the backend class called ``name``; unknown names list the choices."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    target = _BUILTIN.get(name)
    if target is None:
        for ep in entry_points(group="trtq.backends"):
            if ep.name == name:
                return ep.load()
        raise InputError(f"unknown backend '{name}'; choose one of: {', '.join(available_backends())}")
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)
