"""Search strategies for ``precision bisect``, one per module, registered by name.

- ``ranked`` (default): binary-search the shortest passing prefix of the layerwise-sensitivity
  ranking, then drop every member whose removal still passes (each claim verified).
- ``contiguous``: Polygraphy ``debug precision`` style: the first K (then the last K) layers in
  topological order, K bisected; the smaller passing block wins.
- ``linear``: pin layers one at a time in ranked order until the model passes.
- ``emulation-first``: ``ranked`` on the ONNX Runtime emulation, then the answer confirmed on the
  engine (``--backend tensorrt``), the search continued there only if the engine disagrees.

A new strategy is one :class:`~trtq.precision.strategies.base.Strategy` subclass in one module,
registered with :func:`register_strategy` or through the ``trtq.strategies`` entry-point group.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points

from trtq._core.errors import InputError
from trtq.precision.strategies.base import Layer, SearchSpace, Strategy

__all__ = ["Layer", "SearchSpace", "Strategy", "register_strategy", "get_strategy", "available_strategies"]

# name -> module holding a class registered under that name (imported on first use)
_BUILTIN = {
    "ranked": "trtq.precision.strategies.ranked",
    "contiguous": "trtq.precision.strategies.contiguous",
    "linear": "trtq.precision.strategies.linear",
    "prefix": "trtq.precision.strategies.prefix",
    "emulation-first": "trtq.precision.strategies.emulation_first",
}
_REGISTERED: dict[str, type[Strategy]] = {}


def register_strategy(name: str) -> Callable[[type[Strategy]], type[Strategy]]:
    """Class decorator registering a strategy under ``name``."""

    def deco(cls: type[Strategy]) -> type[Strategy]:
        cls.name = name
        _REGISTERED[name] = cls
        return cls

    return deco


def available_strategies() -> list[str]:
    names = set(_BUILTIN) | set(_REGISTERED)
    names |= {ep.name for ep in entry_points(group="trtq.strategies")}
    return sorted(names)


def get_strategy(name: str) -> type[Strategy]:
    """Return the strategy class called ``name``; an unknown name lists the choices."""
    if name not in _REGISTERED and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    if name in _REGISTERED:
        return _REGISTERED[name]
    for ep in entry_points(group="trtq.strategies"):
        if ep.name == name:
            return ep.load()
    raise InputError(f"unknown bisect strategy '{name}'; choose one of: {', '.join(available_strategies())}")
