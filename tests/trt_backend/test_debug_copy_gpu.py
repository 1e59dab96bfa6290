"""GPU test of the debug-tensor copy (cuda-python), no TensorRT needed: what the TensorRT debug
listener does with a device address TensorRT reports, on a real device buffer and stream.

Marked ``gpu``: skipped without cuda-python or a CUDA device (CI has neither). Run on a GPU
machine with ``pytest tests/trt_backend -m gpu``.
"""

from __future__ import annotations

import numpy as np
import pytest

from trtq.runtime.tensorrt_debug import cuda_copy

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cudart():
    rt = pytest.importorskip("cuda.bindings.runtime", reason="needs cuda-python")
    err, count = rt.cudaGetDeviceCount()
    if int(err) != 0 or count < 1:
        pytest.skip(f"no CUDA device ({err})")
    return rt


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int64, np.int8])
def test_device_tensor_is_copied_to_the_host_on_the_given_stream(cudart, dtype):
    src = (np.arange(3 * 5 * 7) - 50).astype(dtype).reshape(3, 5, 7)
    err, ptr = cudart.cudaMalloc(src.nbytes)
    assert int(err) == 0
    err, stream = cudart.cudaStreamCreate()
    assert int(err) == 0
    try:
        (err,) = cudart.cudaMemcpy(
            ptr, src.ctypes.data, src.nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        )
        assert int(err) == 0
        dst = np.empty_like(src)
        cuda_copy(dst, int(ptr), True, int(stream))
        np.testing.assert_array_equal(dst, src)
    finally:
        cudart.cudaStreamDestroy(stream)
        cudart.cudaFree(ptr)


def test_host_tensor_is_copied_without_cuda():
    src = np.linspace(-1, 1, 24, dtype=np.float32).reshape(4, 6)
    dst = np.empty_like(src)
    cuda_copy(dst, src.ctypes.data, False, 0)
    np.testing.assert_array_equal(dst, src)
