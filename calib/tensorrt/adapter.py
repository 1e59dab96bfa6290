"""The shared calibrator logic, written once and mixed into each TensorRT base class.

:class:`CalibratorAdapter` adapts any iterable of batches (``dict`` input name -> array of
exactly ``batch_size`` samples; e.g. ``trtq.datasets.open_dataset(...).batches(n)`` or
``trtq.datasets.from_iterable(...)``) to TensorRT's calibrator protocol:

- ``get_batch_size() -> int``;
- ``get_batch(names) -> list[int] | None``: copies the next batch to device buffers and returns
  their pointers in ``names`` order; ``None`` ends calibration;
- ``read_calibration_cache() -> bytes | None``: an existing cache, so that a cache made on the CPU
  by ``calib run`` skips GPU calibration;
- ``write_calibration_cache(cache: memoryview)``: written atomically.

It is a plain Python class: :func:`trtq.calib.tensorrt.factory.calibrator_class` combines it with
the TensorRT base class named by ``trt_base`` once TensorRT is imported. A new calibrator is one
subclass that sets ``name``, ``trt_base``, ``algorithm`` and ``description``.

TensorRT prints an exception raised inside ``get_batch`` and treats it as the end of the data,
so calibration would silently use fewer batches. The adapter keeps the first such exception
with its batch index (0-based), returns ``None``, and :meth:`raise_if_failed` raises it after the
build.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from trtq._core.atomic import atomic_write_bytes
from trtq._core.errors import InputError, TrtqError, first_line
from trtq._core.progress import ProgressFn, null_progress
from trtq._core.tensors import TensorInfo
from trtq.calib.cache import encode_trt_version, parse_cache
from trtq.calib.tensorrt.device_buffers import DeviceBuffers

log = logging.getLogger(__name__)

BuffersFactory = Callable[[Sequence[TensorInfo]], Any]


class CalibrationBatchError(TrtqError):
    """A batch could not be fed to TensorRT; ``batch_index`` is 0-based."""

    def __init__(self, batch_index: int, cause: BaseException) -> None:
        super().__init__(f"calibration batch {batch_index} failed: {first_line(cause)}")
        self.batch_index = batch_index
        self.exit_code = getattr(cause, "exit_code", 1)


class CalibratorAdapter:
    """Shared implementation of every trtq TensorRT calibrator (see the module docstring).

    Args:
        batches: iterable of ``{input name: array}`` with exactly ``batch_size`` samples each, or
            ``None`` for a cache-only calibrator (``read_cache=True`` and an existing cache).
        batch_size: samples per batch (the first dimension of every array).
        inputs: the network inputs, each with its batch shape and dtype (the buffers' layout).
        cache_path: where ``write_calibration_cache`` writes, and ``read_calibration_cache``
            reads when ``read_cache`` is true.
        read_cache: return the existing cache at ``cache_path`` so TensorRT skips calibration.
        trt_version: the running TensorRT version (``"10.16.1"``); a cache whose header names
            another version is given the running version's header when read, since TensorRT
            ignores a cache whose header does not match (the scales themselves do not depend
            on the version).
        max_batches: stop after this many batches (``None``: all).
        progress: ProgressFn, advanced by one per batch.
        buffers_factory: builds the device buffers from the input specs (default
            :class:`DeviceBuffers`, through cuda-python).
    """

    name: ClassVar[str] = ""
    trt_base: ClassVar[str] = ""
    algorithm: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(
        self,
        batches: Iterable[Mapping[str, np.ndarray]] | None,
        *,
        batch_size: int,
        inputs: Sequence[TensorInfo],
        cache_path: str | os.PathLike | None = None,
        read_cache: bool = False,
        trt_version: str | None = None,
        max_batches: int | None = None,
        progress: ProgressFn = null_progress,
        buffers_factory: BuffersFactory = DeviceBuffers,
    ) -> None:
        if batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.inputs = list(inputs)
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.read_cache = read_cache
        self.trt_version = trt_version
        self.max_batches = max_batches
        self._progress = progress
        self._iter: Iterator[Mapping[str, np.ndarray]] | None = iter(batches) if batches is not None else None
        self._buffers_factory = buffers_factory
        self._buffers: Any = None
        self.batches_fed = 0
        self.cache_read = False
        self.cache_written = False
        self.error: CalibrationBatchError | None = None

    # -- TensorRT's protocol ------------------------------------------------------------------
    def get_batch_size(self) -> int:
        return self.batch_size

    def get_batch(self, names: Sequence[str]) -> list[int] | None:
        """Next batch on the device, pointers in ``names`` order; ``None`` when done or failed."""
        if self.error is not None or self._iter is None:
            return None
        if self.max_batches is not None and self.batches_fed >= self.max_batches:
            return None
        index = self.batches_fed
        try:
            batch = next(self._iter, None)
            if batch is None:
                return None
            self._check_batch(batch)
            if self._buffers is None:
                self._buffers = self._buffers_factory(self.inputs)
            pointers = self._buffers.upload(batch, list(names))
        except BaseException as exc:  # noqa: BLE001 - TensorRT would swallow it; keep it
            self.error = CalibrationBatchError(index, exc)
            self.error.__cause__ = exc
            log.debug("calibration batch %d failed", index, exc_info=True)
            return None
        self.batches_fed += 1
        self._progress(1)
        return [int(p) for p in pointers]

    def read_calibration_cache(self) -> bytes | None:
        """The existing cache at ``cache_path`` (if ``read_cache``), else ``None``."""
        if not self.read_cache or self.cache_path is None or not self.cache_path.is_file():
            return None
        data = self.cache_path.read_bytes()
        cache = parse_cache(data, str(self.cache_path))  # a bad file is an InputError, not a crash in TRT
        if self.algorithm and cache.algorithm != self.algorithm:
            log.warning(
                "%s was made with %s but the calibrator is %s; TensorRT will recalibrate",
                self.cache_path,
                cache.algorithm,
                self.algorithm,
            )
        if self.trt_version and encode_trt_version(cache.trt_version) != encode_trt_version(self.trt_version):
            log.info(
                "%s: header retargeted from TensorRT %s to %s",
                self.cache_path,
                cache.trt_version,
                self.trt_version,
            )
            cache.trt_version = self.trt_version
            data = cache.to_bytes()
        self.cache_read = True
        return bytes(data)

    def write_calibration_cache(self, cache: memoryview | bytes) -> None:
        """Write TensorRT's cache to ``cache_path`` atomically. ``cache`` is a memoryview."""
        if self.cache_path is None:
            return
        data = bytes(cache)
        atomic_write_bytes(self.cache_path, data)
        self.cache_written = True

    # -- our side ----------------------------------------------------------------------------
    def raise_if_failed(self) -> None:
        """Re-raise the exception kept from ``get_batch`` (call after the build)."""
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Free the device buffers (idempotent)."""
        if self._buffers is not None:
            self._buffers.close()
            self._buffers = None

    def __enter__(self) -> CalibratorAdapter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _check_batch(self, batch: Mapping[str, np.ndarray]) -> None:
        if not isinstance(batch, Mapping):
            raise InputError(f"a batch must be a dict of input name -> array, got {type(batch).__name__}")
        for spec in self.inputs:
            arr = batch.get(spec.name)
            if arr is not None and np.shape(arr)[:1] != (self.batch_size,):
                raise InputError(
                    f"input '{spec.name}': batch has {np.shape(arr)[:1] or 'no'} samples, expected exactly {self.batch_size}"
                )
