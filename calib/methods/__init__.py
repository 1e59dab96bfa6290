"""Threshold methods: pure functions turning a histogram of |x| into an amax.

Each method lives in its own module and registers itself with :func:`register_method`. Its
signature is ``fn(counts, edges, *, max_abs, **params) -> amax`` where ``counts[j]`` counts
``edges[j] <= |x| < edges[j+1]`` (see :mod:`trtq.calib.histogram`) and ``max_abs`` is the
exact largest finite |x|. amax is in the tensor's units; the TensorRT scale is ``amax / 127``.

Degenerate histograms give the same documented result under every method (through
:meth:`Method.amax`, which :func:`trtq.calib.compute_amax` uses, and when a method function is
called directly), because there is nothing to choose between:

- **empty** (no finite value: an unseen tensor, or only NaN/Inf): :data:`EMPTY_AMAX`;
- **only zeros** (every count in bin 0 and ``max_abs == 0``, e.g. an attention mask of 0 and
  -inf, whose -inf is never binned): :data:`EMPTY_AMAX`;
- **a single non-empty bin** (a constant tensor; bin 0 too when ``max_abs > 0``): ``max_abs``,
  the exact value, which no bin edge improves on (one bin says nothing about the shape of the
  distribution; ``mse``'s uniform-within-a-bin model would otherwise clip a constant).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from trtq._core.errors import InputError

# amax used for a tensor that never held a non-zero finite value: any positive scale is valid
# for TensorRT (zeros quantize to zero); 0 would not be.
EMPTY_AMAX = 1e-6


def degenerate_amax(counts: np.ndarray, max_abs: float) -> float | None:
    """amax for a histogram with at most one non-empty bin (see the module docstring), else ``None``.

    Empty or only zeros: :data:`EMPTY_AMAX`; one non-empty bin: ``max_abs``.
    """
    nonempty = np.count_nonzero(counts)
    if nonempty > 1:
        return None
    if nonempty == 0 or not max_abs > 0:
        return EMPTY_AMAX
    return float(max_abs)


@dataclass(frozen=True)
class Method:
    """A registered threshold method."""

    name: str
    fn: Callable[..., float]
    algorithm: str  # the TensorRT cache header algorithm this method's caches carry by default
    description: str
    params: dict[str, object] = field(default_factory=dict)  # parameter -> default
    needs_data: bool = False  # True: thresholds need the model and data, not histograms alone (auto)

    def amax(self, counts: np.ndarray, edges: np.ndarray, *, max_abs: float, **params: object) -> float:
        degenerate = degenerate_amax(counts, max_abs)
        if degenerate is not None:
            return degenerate
        known = {k: v for k, v in params.items() if k in self.params and v is not None}
        value = float(self.fn(counts, edges, max_abs=max_abs, **known))
        return value if value > 0 else EMPTY_AMAX


_REGISTRY: dict[str, Method] = {}


def register_method(name: str, *, algorithm: str, description: str, needs_data: bool = False) -> Callable:
    """Decorator registering ``fn(counts, edges, *, max_abs, **params)`` under ``name``.

    ``needs_data``: the method measures on the model and the calibration data (``auto``,
    :mod:`trtq.calib.auto`); ``fn`` then only documents its parameters and is never called."""

    def deco(fn: Callable[..., float]) -> Callable[..., float]:
        sig = inspect.signature(fn)
        params = {
            p.name: p.default
            for p in sig.parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "max_abs"
        }
        _REGISTRY[name] = Method(name, fn, algorithm, description, params, needs_data)
        return fn

    return deco


def _load_builtin() -> None:
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")


def available_methods() -> list[Method]:
    _load_builtin()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get_method(name: str) -> Method:
    """The method called ``name``; an unknown name raises :class:`InputError` listing the choices."""
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(
            f"unknown calibration method '{name}'; choose one of: {', '.join(sorted(_REGISTRY))}"
        ) from None
