"""Device buffers for calibration batches, through the CUDA runtime of cuda-python.

:class:`DeviceBuffers` holds one ``cudaMalloc`` allocation per network input, sized for one
batch (bytes = prod(shape) * itemsize of the network's dtype). :meth:`DeviceBuffers.upload`
converts each array to that dtype, makes it C-contiguous, copies it host->device on the
buffers' own stream, waits for the copy, and returns the device pointers in the order asked
for (the order TensorRT passes to ``get_batch``). The allocations are reused for every batch
and freed by :meth:`close`, by the context manager, at garbage collection or at interpreter
exit, whichever comes first.

Every CUDA call is checked: a failure raises :class:`CudaError` whose message carries the CUDA
error name (e.g. ``cudaErrorMemoryAllocation``).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from trtq._core.errors import InputError, TrtqError
from trtq._core.tensors import TensorInfo
from trtq._core.trt_import import _error_name, import_cudart


class CudaError(TrtqError):
    """A CUDA runtime call failed; ``.name`` is the CUDA error name, ``.code`` its number."""

    def __init__(self, call: str, code: int, name: str) -> None:
        super().__init__(f"CUDA error in {call}: {name} ({code})")
        self.call, self.code, self.name = call, code, name


def cuda_check(cudart: ModuleType, call: str, result: Any) -> Any:
    """Unpack a cuda-python result tuple ``(err, *values)``; raise :class:`CudaError` on failure.

    Returns ``None`` for no values, the value for one, a tuple for several.
    """
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if int(err) != 0:
        raise CudaError(call, int(err), _error_name(cudart, err))
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _release(cudart: ModuleType, pointers: dict[str, int], stream_box: list) -> None:
    """Free every allocation and the stream; safe to call twice (the containers are emptied)."""
    for ptr in list(pointers.values()):
        cudart.cudaFree(ptr)
    pointers.clear()
    while stream_box:
        cudart.cudaStreamDestroy(stream_box.pop())


class DeviceBuffers:
    """One device allocation per input, reused for every batch. A context manager.

    Args:
        specs: the inputs (:class:`~trtq._core.tensors.TensorInfo`), each with its full batch
            shape (batch dimension first) and the network's dtype.
        cudart: the CUDA runtime module (default: ``cuda.bindings.runtime``).
    """

    def __init__(self, specs: Sequence[TensorInfo], *, cudart: ModuleType | None = None) -> None:
        self._rt = cudart or import_cudart()
        self.specs = {s.name: s for s in specs}
        self._ptrs: dict[str, int] = {}
        self._stream: list = []
        # Registered before the first allocation so that nothing allocated can escape it.
        self._finalizer = weakref.finalize(self, _release, self._rt, self._ptrs, self._stream)
        try:
            self._stream.append(cuda_check(self._rt, "cudaStreamCreate", self._rt.cudaStreamCreate()))
            for spec in specs:
                ptr = cuda_check(self._rt, "cudaMalloc", self._rt.cudaMalloc(max(spec.nbytes, 1)))
                self._ptrs[spec.name] = int(ptr)
        except BaseException:
            # Free now: the traceback keeps this half-built object alive, so waiting for the
            # garbage collector would hold the allocations as long as the exception is held.
            self._finalizer()
            raise

    # -- context manager --------------------------------------------------------------------
    def __enter__(self) -> DeviceBuffers:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Free the device memory now (idempotent)."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    # -- copies ------------------------------------------------------------------------------
    def upload(self, batch: Mapping[str, np.ndarray], names: Sequence[str] | None = None) -> list[int]:
        """Copy one batch to the device; return the pointers in the order of ``names``.

        Each array is converted to its input's dtype and made C-contiguous first. A missing
        input, an unknown name or a shape other than the buffer's raises :class:`InputError`.
        """
        self._check_open()
        order = list(names) if names is not None else list(self.specs)
        unknown = [n for n in order if n not in self.specs]
        if unknown:
            raise InputError(f"TensorRT asked for input(s) {unknown} that the calibrator has no buffer for")
        missing = [n for n in order if n not in batch]
        if missing:
            raise InputError(f"batch has no array for input(s) {missing}; it has {sorted(batch)}")
        stream = self._stream[0]
        hosts = []
        for name in order:
            spec = self.specs[name]
            host = np.ascontiguousarray(batch[name], dtype=spec.dtype)
            if tuple(host.shape) != tuple(spec.shape):
                raise InputError(
                    f"input '{name}': batch has shape {tuple(host.shape)}, expected {tuple(spec.shape)}"
                )
            hosts.append(host)  # keep alive until the stream is synchronised
            cuda_check(
                self._rt,
                "cudaMemcpyAsync",
                self._rt.cudaMemcpyAsync(
                    self._ptrs[name],
                    host.ctypes.data,
                    spec.nbytes,
                    self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
                    stream,
                ),
            )
        cuda_check(self._rt, "cudaStreamSynchronize", self._rt.cudaStreamSynchronize(stream))
        return [self._ptrs[n] for n in order]

    def download(self, name: str) -> np.ndarray:
        """Copy ``name``'s buffer back to a new host array (for checks and debugging)."""
        self._check_open()
        spec = self.specs[name]
        out = np.empty(spec.shape, dtype=spec.dtype)
        cuda_check(
            self._rt,
            "cudaMemcpy",
            self._rt.cudaMemcpy(
                out.ctypes.data, self._ptrs[name], spec.nbytes, self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
            ),
        )
        return out

    def _check_open(self) -> None:
        if self.closed:
            raise TrtqError("device buffers were already freed (the calibrator was closed)")


def free_device_memory(cudart: ModuleType | None = None) -> tuple[int, int]:
    """``(free, total)`` device memory in bytes, from ``cudaMemGetInfo``."""
    rt = cudart or import_cudart()
    free, total = cuda_check(rt, "cudaMemGetInfo", rt.cudaMemGetInfo())
    return int(free), int(total)
