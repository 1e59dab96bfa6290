"""Backends run a model. ``onnxruntime`` (default, CPU) and ``tensorrt`` (needs TensorRT + GPU).

A new backend is one class in one file, registered with :func:`register_backend` or through the
``trtq.backends`` entry-point group.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points

from trtq._core.errors import InputError
from trtq.runtime.runner import Runner, TensorInfo

__all__ = ["Runner", "TensorInfo", "register_backend", "get_backend", "available_backends"]

# name -> "module:attr" (imported lazily so that tensorrt is never imported unless asked for)
_BUILTIN = {
    "onnxruntime": "trtq.runtime.onnxruntime:OnnxRuntimeRunner",
    "tensorrt": "trtq.runtime.tensorrt:TensorRTRunner",
}
_REGISTERED: dict[str, type[Runner]] = {}


def register_backend(name: str) -> Callable[[type[Runner]], type[Runner]]:
    """Class decorator registering a backend under ``name``."""

    def deco(cls: type[Runner]) -> type[Runner]:
        _REGISTERED[name] = cls
        return cls

    return deco


def available_backends() -> list[str]:
    names = set(_BUILTIN) | set(_REGISTERED)
    names |= {ep.name for ep in entry_points(group="trtq.backends")}
    return sorted(names)


def get_backend(name: str) -> type[Runner]:
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
