"""GPU tests of the calibrator's device buffers (cuda-python), no TensorRT needed.

Marked ``gpu``: skipped without cuda-python or a CUDA device (CI has neither). Run on a GPU
machine with ``pytest tests/trt_backend -m gpu``.
"""

from __future__ import annotations

import numpy as np
import pytest

from trtq._core.tensors import TensorInfo
from trtq.calib.tensorrt.adapter import CalibratorAdapter
from trtq.calib.tensorrt.device_buffers import (
    CudaError,
    DeviceBuffers,
    cuda_check,
    free_device_memory,
)

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cudart():
    rt = pytest.importorskip("cuda.bindings.runtime", reason="needs cuda-python")
    err, count = rt.cudaGetDeviceCount()
    if int(err) != 0 or count < 1:
        pytest.skip(f"no CUDA device ({err})")
    cuda_check(rt, "cudaFree", rt.cudaFree(0))  # create the context before measuring memory
    return rt


class PlainCalibrator(CalibratorAdapter):
    """The shared adapter without a TensorRT base (there is no TensorRT on the GPU machine)."""

    name = "plain"
    trt_base = "IInt8EntropyCalibrator2"
    algorithm = "EntropyCalibration2"


SPECS = [
    TensorInfo("image", (4, 3, 32, 48), np.dtype(np.float32)),
    TensorInfo("scale", (4, 2), np.dtype(np.float16)),
    TensorInfo("ids", (4, 7), np.dtype(np.int64)),
]


def _batches(n, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield {
            # float64 and channels-last transposed: must be converted and packed before the copy
            "image": rng.normal(size=(4, 32, 48, 3)).transpose(0, 3, 1, 2),
            "scale": rng.uniform(0, 2, size=(4, 2)),
            "ids": rng.integers(-(2**40), 2**40, size=(4, 7)),
        }


def _read_device(cudart, ptr, spec):
    out = np.empty(spec.shape, spec.dtype)
    cuda_check(
        cudart,
        "cudaMemcpy",
        cudart.cudaMemcpy(out.ctypes.data, ptr, spec.nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost),
    )
    return out


def test_each_batch_lands_exactly_in_device_memory(cudart):
    calib = PlainCalibrator(_batches(5), batch_size=4, inputs=SPECS)
    names = ["ids", "image", "scale"]  # TensorRT's order, not the specs'
    with calib:
        for i, batch in enumerate(_batches(5)):
            ptrs = calib.get_batch(names)
            assert ptrs is not None and len(ptrs) == 3, f"batch {i}"
            for name, ptr in zip(names, ptrs, strict=True):
                spec = next(s for s in SPECS if s.name == name)
                want = np.ascontiguousarray(batch[name], dtype=spec.dtype)
                got = _read_device(cudart, ptr, spec)
                assert got.tobytes() == want.tobytes(), f"batch {i} input {name}"
        assert calib.get_batch(names) is None
        calib.raise_if_failed()
        assert calib.batches_fed == 5


def test_download_round_trips_the_uploaded_bytes(cudart):
    batch = next(_batches(1, seed=3))
    with DeviceBuffers(SPECS) as buffers:
        buffers.upload(batch)
        for spec in SPECS:
            assert (
                buffers.download(spec.name).tobytes()
                == np.ascontiguousarray(batch[spec.name], spec.dtype).tobytes()
            )


def test_thousand_batches_do_not_leak_device_memory(cudart):
    before, _ = free_device_memory(cudart)
    calib = PlainCalibrator(_batches(1000, seed=1), batch_size=4, inputs=SPECS)
    assert calib.get_batch(["image", "scale", "ids"]) is not None
    after_first, _ = free_device_memory(cudart)
    while calib.get_batch(["image", "scale", "ids"]) is not None:
        pass
    calib.raise_if_failed()
    assert calib.batches_fed == 1000
    after_last, _ = free_device_memory(cudart)
    calib.close()
    after_close, _ = free_device_memory(cudart)
    print(f"free bytes: before={before} first={after_first} last={after_last} closed={after_close}")
    assert after_last == after_first  # no growth over 999 more batches
    assert after_close == before  # everything freed


def test_cuda_errors_become_exceptions_with_the_cuda_error_name(cudart):
    before, _ = free_device_memory(cudart)
    huge = TensorInfo("huge", (1 << 20, 1 << 20, 1 << 10), np.dtype(np.float32))  # 4 PiB
    with pytest.raises(CudaError, match="cudaMalloc: cudaErrorMemoryAllocation") as info:
        DeviceBuffers([SPECS[0], huge], cudart=cudart)
    assert info.value.name == "cudaErrorMemoryAllocation"
    assert free_device_memory(cudart)[0] == before  # the first buffer was freed on the way out
    with pytest.raises(CudaError, match="cudaErrorInvalidValue"):
        cuda_check(
            cudart, "cudaMemcpy", cudart.cudaMemcpy(0, 0, 16, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice)
        )


def test_buffers_are_freed_when_the_calibrator_is_dropped(cudart):
    import gc

    # 48 MiB, so that cudaMemGetInfo sees the buffer: the driver can place a small one in memory
    # it already holds (on an H200, SPECS' 73 KB left the free figure unchanged)
    spec = TensorInfo("image", (4, 3, 1024, 1024), np.dtype(np.float32))
    size = 4 * 3 * 1024 * 1024 * 4
    before, _ = free_device_memory(cudart)
    calib = PlainCalibrator(iter([{"image": np.ones(spec.shape, np.float32)}]), batch_size=4, inputs=[spec])
    assert calib.get_batch(["image"]) is not None
    assert free_device_memory(cudart)[0] <= before - size
    del calib
    gc.collect()
    assert free_device_memory(cudart)[0] == before
