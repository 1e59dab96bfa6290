"""Per-layer values of the deployed engine through TensorRT's debug tensors (TensorRT >= 10.12).

Marking outputs changes fusions (every marked tensor must survive). Debug tensors do not: the
network marks its *unfused* tensors as debug tensors
(``INetworkDefinition.mark_unfused_tensors_as_debug_tensors``), the engine keeps the fusions it
would have anyway, and at run time an ``IDebugListener`` set on the execution context
(``set_debug_listener``, ``set_all_tensors_debug_state``, ``unfused_tensors_debug_state``) gets
every tensor that survived: ``process_debug_tensor(addr, location, type, shape, name, stream)``
with ``addr`` a capsule around the buffer (device or host, per ``location``), valid only during
the call. Tensors fused away are never reported, so a comparison sees only the ones that exist.
Older TensorRT falls back to marking outputs (:func:`fetch_mode`).

Checked against the real 10.16 and 11.4 bindings for API shape only; no engine was run here.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Callable, Collection
from types import ModuleType
from typing import Any

import numpy as np

from trtq._core.errors import InputError, TrtqError
from trtq._core.trt_import import import_cudart, targets, trt_version

log = logging.getLogger(__name__)

#: The first TensorRT with ``mark_unfused_tensors_as_debug_tensors``.
DEBUG_TENSORS_SINCE = (10, 12)
#: How compared tensors are read back: "debug" (debug tensors, fusions kept) or "outputs"
#: (marked as network outputs); "auto" picks by version.
FETCH_MODES = ("auto", "debug", "outputs")

#: ``copy(dst, src_pointer, on_device, stream)`` fills the host array ``dst`` from ``src_pointer``.
CopyFn = Callable[[np.ndarray, int, bool, int], None]


def debug_tensors_available(trt: ModuleType) -> bool:
    """True when this TensorRT reads tensors through debug tensors without changing fusions."""
    return trt_version(trt)[:2] >= DEBUG_TENSORS_SINCE and hasattr(
        trt.INetworkDefinition, "mark_unfused_tensors_as_debug_tensors"
    )


def fetch_mode(trt: ModuleType, requested: str = "auto") -> str:
    """``"debug"`` or ``"outputs"``: ``auto`` is debug on TensorRT >= 10.12, outputs (mark-all)
    before; ``debug`` on an older TensorRT is an error."""
    if requested not in FETCH_MODES:
        raise InputError(f"unknown fetch mode '{requested}'; choose one of: {', '.join(FETCH_MODES)}")
    available = debug_tensors_available(trt)
    if requested == "debug" and not available:
        raise InputError(
            f"TensorRT {trt.__version__} has no unfused debug tensors (needs >= "
            f"{'.'.join(map(str, DEBUG_TENSORS_SINCE))}); use fetch 'outputs' (marks outputs)"
        )
    if requested == "auto":
        return "debug" if available else "outputs"
    return requested


def capsule_pointer(addr: Any) -> int:
    """The address inside the ``addr`` TensorRT passes (a PyCapsule around ``void*``; an int is
    taken as is)."""
    if isinstance(addr, int):
        return addr
    api = ctypes.pythonapi
    api.PyCapsule_GetName.restype = ctypes.c_char_p
    api.PyCapsule_GetName.argtypes = [ctypes.py_object]
    api.PyCapsule_GetPointer.restype = ctypes.c_void_p
    api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    pointer = api.PyCapsule_GetPointer(addr, api.PyCapsule_GetName(addr))
    if not pointer:
        raise TrtqError("TensorRT passed a debug tensor without an address")
    return int(pointer)


def cuda_copy(dst: np.ndarray, src: int, on_device: bool, stream: int) -> None:
    """Copy ``dst.nbytes`` from ``src`` into ``dst``: ``cudaMemcpyAsync`` device-to-host on
    ``stream`` then a stream sync (the buffer is valid only during the callback), or a host copy."""
    if not on_device:
        ctypes.memmove(dst.ctypes.data, src, dst.nbytes)
        return
    cudart = import_cudart()
    (err,) = cudart.cudaMemcpyAsync(
        dst.ctypes.data, src, dst.nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream
    )
    if int(err) == 0:
        (err,) = cudart.cudaStreamSynchronize(stream)
    if int(err) != 0:
        raise TrtqError(f"copying a debug tensor to the host failed: {err}")


@functools.cache
def _listener_class(trt: ModuleType) -> type:
    class DebugTensorCollector(trt.IDebugListener):
        """Keeps a host copy of each wanted debug tensor TensorRT reports during a run.

        An exception inside the callback would be lost in TensorRT: it is kept and re-raised by
        :meth:`raise_if_failed` after the run."""

        def __init__(self, wanted: Collection[str] | None, copy: CopyFn) -> None:
            trt.IDebugListener.__init__(self)
            self.wanted = None if wanted is None else set(wanted)
            self.copy = copy
            self.tensors: dict[str, np.ndarray] = {}
            self.unreadable: dict[str, str] = {}  # name -> why it was not copied
            self.error: BaseException | None = None

        def reset(self) -> None:
            self.tensors = {}
            self.error = None

        def process_debug_tensor(self, addr, location, type, shape, name, stream) -> None:  # noqa: A002
            if self.wanted is not None and name not in self.wanted:
                return
            try:
                try:
                    dtype = np.dtype(trt.nptype(type))
                except TypeError:
                    self.unreadable[name] = f"no numpy type for {type}"
                    return
                out = np.empty(tuple(int(d) for d in shape), dtype)
                on_device = location == trt.TensorLocation.DEVICE
                self.copy(out, capsule_pointer(addr), on_device, int(stream))
                self.tensors[name] = out
            except BaseException as exc:  # TensorRT cannot carry a Python exception back
                if self.error is None:
                    self.error = exc

        def raise_if_failed(self) -> None:
            if self.error is not None:
                raise TrtqError(f"reading debug tensors failed: {self.error}") from self.error

    return DebugTensorCollector


def make_listener(trt: ModuleType, wanted: Collection[str] | None, copy: CopyFn = cuda_copy) -> Any:
    """A ``trt.IDebugListener`` that copies the debug tensors named in ``wanted`` (``None``: all)
    into ``.tensors`` with ``copy`` (default: :func:`cuda_copy`)."""
    return _listener_class(trt)(wanted, copy)


@targets(10, 11)
def attach_listener(trt: ModuleType, context: Any, listener: Any) -> None:
    """Report every debug tensor, the unfused ones included, to ``listener`` on ``context``."""
    if not context.set_debug_listener(listener):
        raise TrtqError("TensorRT refused the debug listener")
    context.set_all_tensors_debug_state(True)
    context.unfused_tensors_debug_state = True


class DebugTensors:
    """The runner's side of debug tensors: the requested ``candidates``, the listener that
    collects them, and which of them the last run reported (those that survived fusion)."""

    def __init__(self, trt: ModuleType, candidates: Collection[str], copy: CopyFn = cuda_copy) -> None:
        self.trt = trt
        self.candidates = list(candidates)
        self.listener = make_listener(trt, self.candidates, copy)
        self.reported: list[str] | None = None  # None until the first run

    @property
    def marked(self) -> list[str]:
        """The candidates before the first run; then the ones the engine reported."""
        return list(self.candidates if self.reported is None else self.reported)

    def attach(self, context: Any) -> None:
        attach_listener(self.trt, context, self.listener)

    def run(self, infer: Callable[[], Any], names: Collection[str]) -> dict[str, np.ndarray]:
        """``infer()`` (the engine's outputs by name) with the debug tensors collected meanwhile;
        of ``names``, a tensor the engine did not report (fused away) is left out."""
        self.listener.reset()
        result = infer()
        self.listener.raise_if_failed()
        got = self.listener.tensors
        if self.reported is None:
            missing = [n for n in self.candidates if n not in got]
            if missing:
                log.info("%d tensor(s) fused away, not compared: %s", len(missing), ", ".join(missing[:10]))
        self.reported = [n for n in self.candidates if n in got]
        out = {}
        for n in names:
            if n in result:
                out[n] = np.asarray(result[n])
            elif n in got:
                out[n] = got[n]
        return out
